"""Writing the HTML reports: one self-contained page per run, and an index of them all.

A report is one file that opens from disk, offline, in any browser: CSS inline, charts
inline SVG drawn by matplotlib, no JavaScript, no fonts or scripts from anywhere.
Templates are Jinja2 with autoescaping on, so every string that came from a store or
a user (server version, run label, error text) is printed as text.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from reports.history import (
    REPORTS_DIR,
    RunResults,
    check_run_id,
    list_runs,
    load_run,
    parse_time,
    sweep_points,
)
from reports.model import (
    Report,
    build_report,
    fmt_time,
    latency_curves,
    store_colors,
    throughputs,
    timeseries,
)
from workloads.errors import OptiStackError

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
INDEX_FILE = "index.html"
TREND_FILE = "trend.html"  # reports/trend.py writes it; not a run's report


@dataclass
class Chart:
    """An inline SVG, or why there is none (no data, or drawing failed)."""

    svg: Markup | None = None
    note: str | None = None


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template is HTML; never rely on file extensions for this
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _chart(name: str, draw: Any, *args: Any) -> Chart:
    try:
        # matplotlib escapes all text it writes into the SVG, so the markup is safe to inline.
        return Chart(svg=Markup(draw(*args)))
    except Exception as error:  # one broken chart must not cost the whole report
        log.exception("the %s chart could not be drawn", name)
        return Chart(note=f"This chart could not be drawn: {error}")


def build_charts(run: RunResults, report: Report, root: Path | None = None) -> dict[str, Chart]:
    """The report's charts: throughput, latency percentiles, time series, resources per store
    (`resources-<index>`, when sampled), and, for a run that is a step of a sweep, the
    sweep's latency-throughput curve."""
    from reports import charts

    out: dict[str, Chart] = {}
    sweep_ids = {(s.run.get("sweep") or {}).get("id") for s in run.stores.values()} - {None}
    if root is not None and sweep_ids:
        points = sweep_points(root, sorted(sweep_ids)[0])
        if any(len(steps) >= 2 for steps in points.values()):
            out["sweep"] = _chart("sweep", charts.sweep_chart, points, store_colors(points))
    values = throughputs(run)
    if any(value is not None for _, value, _ in values):
        out["throughput"] = _chart("throughput", charts.throughput_chart, values, report.colors)
    else:
        out["throughput"] = Chart(note="No store produced measurements.")
    curves = latency_curves(run)
    out["latency"] = (
        _chart("latency", charts.latency_chart, curves, report.colors)
        if curves
        else Chart(note="No latency measurements.")
    )
    for index, resources in enumerate(report.resources):
        if resources.has_chart:
            chart_id = f"resources-{index}"  # store names may hold characters an id must not
            out[chart_id] = _chart(chart_id, charts.resources_chart, chart_id, resources.store, resources)
    ops = timeseries(run, "throughput_ops_s")
    p99 = timeseries(run, "latency_p99_us")
    out["timeseries"] = (
        _chart("timeseries", charts.timeseries_chart, ops, p99, report.colors)
        if ops or p99
        else Chart(note="No per-second measurements.")
    )
    return out


def render_report(run: RunResults, now: datetime | None = None, root: Path | None = None) -> str:
    """The report of one run as an HTML string (`root` lets it find a sweep's other steps)."""
    report = build_report(run, now=now)
    charts = build_charts(run, report, root)
    return _environment().get_template("report.html.j2").render(report=report, charts=charts)


def _atomic_write(path: Path, text: str) -> Path:
    """Write aside, then rename: a reader (or the plugin) never sees half a page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name starts with a dot, so the index never lists it.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a report is meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def latest_run_id(results_root: str | Path) -> str:
    """The newest run's id; `OptiStackError` when there is none."""
    runs = list_runs(results_root)
    if not runs:
        raise OptiStackError(f"no runs under {Path(results_root) / 'runs'}; run `optistack run` first")
    return runs[0]["run_id"]


def write_report(results_root: str | Path, run_id: str | None = None, update_index: bool = True) -> Path:
    """Write `<results>/reports/<run_id>.html` atomically and return its path.

    `run_id=None` means the newest run. The index is rewritten too (unless
    `update_index=False`), so it always lists the new report. Renders even when some
    or all stores failed. Raises `OptiStackError` for an unknown run.
    """
    root = Path(results_root)
    run_id = check_run_id(run_id) if run_id is not None else latest_run_id(root)
    html = render_report(load_run(root, run_id), root=root)
    path = _atomic_write(root / REPORTS_DIR / f"{run_id}.html", html)
    if update_index:
        write_index(root)
    return path


@dataclass
class IndexEntry:
    run_id: str
    href: str
    label: str | None
    workload: str | None
    started_at: str
    statuses: list[tuple[str, str]]


def index_entries(results_root: str | Path) -> list[IndexEntry]:
    """Every report file under `<results>/reports/`, newest run first."""
    reports = Path(results_root) / REPORTS_DIR
    files = {
        p.name[: -len(".html")]: p
        for p in (reports.glob("*.html") if reports.is_dir() else [])
        if p.name not in (INDEX_FILE, TREND_FILE) and not p.name.startswith((".", "_"))
    }
    runs = {item["run_id"]: item for item in list_runs(results_root)}
    keyed = []
    for run_id, path in files.items():
        item = runs.get(run_id, {})
        # A report whose results were deleted still lists, by when it was written.
        when = (
            parse_time(item["started_at"])
            if item.get("started_at")
            else datetime.fromtimestamp(path.stat().st_mtime, UTC)
        )
        entry = IndexEntry(
            run_id=run_id,
            href=path.name,
            label=item.get("label"),
            workload=item.get("workload"),
            started_at=fmt_time(when.isoformat()),
            statuses=list(item.get("statuses", {}).items()),
        )
        keyed.append((when, run_id, entry))
    keyed.sort(key=lambda k: (k[0], k[1]), reverse=True)
    return [entry for _, _, entry in keyed]


def render_index(results_root: str | Path, now: datetime | None = None) -> str:
    """The index page as an HTML string."""
    return (
        _environment()
        .get_template("index.html.j2")
        .render(
            entries=index_entries(results_root),
            trend_href=TREND_FILE if (Path(results_root) / REPORTS_DIR / TREND_FILE).is_file() else None,
            generated_at=fmt_time((now or datetime.now(UTC)).isoformat(timespec="seconds")),
        )
    )


def write_index(results_root: str | Path) -> Path:
    """Write `<results>/reports/index.html` (every report, newest first) atomically."""
    root = Path(results_root)
    return _atomic_write(root / REPORTS_DIR / INDEX_FILE, render_index(root))
