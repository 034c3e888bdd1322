"""A real headless Chromium opens the report from disk: charts in the DOM, no console errors.

Needs Debian's `chromium` package (`apt-get install -y chromium`; CI installs it).
Chromium's `--enable-logging=stderr` prints every console message, uncaught exception
and Content-Security-Policy violation as a `...:CONSOLE...` line; the report runs no
script at all, so any such line is a failure. A deliberately broken page checks that
the detector really sees them.

`OPTISTACK_UPDATE_SCREENSHOT=1` also copies the screenshot to docs/report-screenshot.png.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "report-screenshot.png"
WINDOW = (1400, 2400)
TIMEOUT_S = 120

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="/usr/bin/chromium is missing (apt-get install -y chromium); CI installs it",
    ),
]

CONSOLE_LINE = re.compile(r":CONSOLE[:(]|Uncaught")


def chromium(profile: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium once; on a hang, end its whole process group (it forks helpers)."""
    argv = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args, url,
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish within {TIMEOUT_S}s: {' '.join(argv)}")
    # Helpers may outlive the browser process for a moment; end only this session's group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE_LINE.search(line)]


def test_the_console_detector_sees_errors_and_blocked_fetches(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text(
        '<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="img-src data:">'
        '</head><body><img src="http://example.invalid/x.png">'
        '<script>console.error("boom"); notAFunction();</script></body></html>'
    )
    result = chromium(tmp_path / "profile", page.as_uri(), "--dump-dom")
    errors = "\n".join(console_errors(result.stderr))
    assert '"boom"' in errors
    assert "Uncaught ReferenceError: notAFunction is not defined" in errors
    assert "violates the following Content Security Policy" in errors


def test_chromium_renders_the_report_with_its_charts_and_no_console_errors(tmp_path, realistic_report):
    from PIL import Image

    url = realistic_report.as_uri()
    png = tmp_path / "report.png"

    shot = chromium(
        tmp_path / "profile-shot", url, f"--screenshot={png}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--hide-scrollbars",
    )  # fmt: skip
    dom = chromium(tmp_path / "profile-dom", url, "--dump-dom")

    assert shot.returncode == 0, shot.stderr[-2000:]
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_errors(shot.stderr) == []
    assert console_errors(dom.stderr) == []

    # The rendered DOM, not just the file: the page parsed as intended.
    html = dom.stdout
    assert re.search(r"<h1>Run 20261204T201500Z-ab12</h1>", html)
    for chart in ("throughput", "latency", "timeseries"):
        section = html[html.index(f'<section class="card" id="{chart}">') :]
        section = section[: section.index("</section>")]
        assert re.search(r"<svg\b[^>]*>", section), f"no <svg> in the {chart} section"
        assert "<path" in section or "<use" in section
    assert len(re.findall(r"<svg\b", html)) == 3

    with Image.open(png) as image:
        assert image.size == WINDOW
        # A page really painted: many distinct colours, not a blank or error page.
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
        assert colours is not None and len(colours) > 200

    if os.environ.get("OPTISTACK_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(png, DOCS_SCREENSHOT)
