"""Live figures of a running load: `live.json` in the store's staging folder, and OTel metrics.

The Locust master prints one `live {json}` line per finished second of the measured window
(the merged per-second rows of every load process), a `live` line with `"second": null`
while nothing new has finished (starting, warm-up), and a last one with
`"phase": "finished"`. The runner hands each of them to a `LiveFeed`, which

- writes `<results>/runs/run_id=<id>/.store=<store>.staging/live.json` atomically (the
  latest finished second per operation, totals so far, phase, elapsed time), which the
  Airflow plugin serves while the run goes, and
- turns each finished second into OpenTelemetry metrics (`telemetry.record_second`).

`live.json` is removed when the store is published: it describes a run in progress.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

from workloads import telemetry
from workloads.results import LIVE_FILE, STAGING_PREFIX, STAGING_SUFFIX, run_dir, staging_dir, write_json

LIVE_PREFIX = "live "


class LiveFeed:
    """Receives one load process's parsed `live` lines (call it with each one)."""

    def __init__(self, root: Path, run_id: str, store: str, workload: str, repeat: int = 0) -> None:
        self.path = staging_dir(root, run_id, store) / LIVE_FILE
        self.identity = {"run_id": run_id, "store": store, "workload": workload}
        self.repeat = repeat
        self.totals: dict[str, dict[str, int]] = {}
        self.latest: dict[str, Any] | None = None
        self.seconds = 0
        self.failed_write: str | None = None

    def __call__(self, data: dict[str, Any]) -> None:
        """Take one `live` line: count its second, export its metrics, rewrite live.json."""
        operations = data.get("operations") or {}
        if data.get("second") is not None:
            self.seconds += 1
            self.latest = {"second": data["second"], "operations": operations}
            for operation, row in operations.items():
                total = self.totals.setdefault(operation, {"ops": 0, "errors": 0})
                total["ops"] += int(row.get("ops") or 0)
                total["errors"] += int(row.get("errors") or 0)
            telemetry.record_second(self.identity, operations)
        state = {
            **self.identity,
            "stage": "load",
            "repeat": self.repeat,
            "phase": data.get("phase"),
            "elapsed_s": data.get("elapsed_s"),
            "updated_at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "seconds_measured": self.seconds,
            "latest": self.latest,
            "totals": self.totals,
        }
        try:
            write_json(self.path, state)
        except OSError as error:  # live figures are a convenience: never fail the run for them
            self.failed_write = str(error)


def parse_line(line: str) -> dict[str, Any] | None:
    """The JSON of a `live ...` output line, or None when the line is not one."""
    if not line.startswith(LIVE_PREFIX):
        return None
    try:
        data = json.loads(line[len(LIVE_PREFIX) :])
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def read_live(root: Path, run_id: str) -> dict[str, Any] | None:
    """Per store, the `live.json` of a run still being staged; None when there is none.

    `run_id` comes from a URL: it must be one plain path component, and neither the run
    folder nor a staging folder nor the file may be a symlink (nothing outside the results
    root is ever read).
    """
    if (
        not run_id
        or run_id.startswith(".")
        or any(c in run_id for c in "/\\\0")
        or ".." in run_id
        or os.path.isabs(run_id)
    ):
        return None
    folder = run_dir(Path(root), run_id)
    if folder.is_symlink() or not folder.is_dir():
        return None
    found: dict[str, Any] = {}
    for child in sorted(folder.iterdir()):
        name = child.name
        if not (name.startswith(STAGING_PREFIX) and name.endswith(STAGING_SUFFIX)):
            continue
        if child.is_symlink() or not child.is_dir():
            continue
        data = _read_regular_json(child / LIVE_FILE)
        if data is not None:
            found[name[len(STAGING_PREFIX) : -len(STAGING_SUFFIX)]] = data
    return found or None


def _read_regular_json(path: Path) -> dict[str, Any] | None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            return None
        try:
            data = json.loads(handle.read())
        except ValueError:  # cannot happen with atomic writes; a foreign file is skipped
            return None
    if not isinstance(data, dict):
        return None
    # A running load rewrites the file every second: a large age means the run stopped
    # without publishing (a killed runner), which the figures alone cannot tell.
    data["age_s"] = round(max(0.0, time.time() - info.st_mtime), 1)
    return data
