"""Reading benchmark results back: every run's summary rows, one run in full, the run listing.

The layout is the one `docs/results.md` defines: hive-partitioned Parquet under
`<results>/runs/run_id=<id>/store=<store>/`, with a `run.json` beside the tables.
Nothing here writes results; it only reads them, and it reads what older versions
wrote too (columns added since are null for them).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from workloads.errors import OptiStackError

log = logging.getLogger(__name__)

RUNS_DIR = "runs"
REPORTS_DIR = "reports"
SUMMARY_FILE = "summary.parquet"
TIMESERIES_FILE = "timeseries.parquet"
ERRORS_FILE = "errors.parquet"
SLOWEST_FILE = "slowest.parquet"
RESOURCES_FILE = "resources.parquet"
RUN_FILE = "run.json"
VALIDATION_FILE = "validation.json"

# Worst first: a run's overall status is the worst of its stores'.
STATUS_ORDER = ("failed", "degraded", "unknown", "ok")

_PARTITIONING_SCHEMA = pa.schema([("run_id", pa.string()), ("store", pa.string())])


@dataclass(frozen=True)
class StoreResults:
    """Everything one store produced in one run; a table is None when its file is absent."""

    store: str
    run: dict[str, Any]
    summary: pd.DataFrame | None = None
    timeseries: pd.DataFrame | None = None
    errors: pd.DataFrame | None = None
    validation: dict[str, Any] | None = None
    slowest: pd.DataFrame | None = None  # the slowest single operations, when the engine kept them
    resources: pd.DataFrame | None = None  # CPU, memory and server statistics, when sampled

    @property
    def status(self) -> str:
        """`ok`, `degraded` or `failed` as run.json says; `unknown` when it does not say."""
        return str(self.run.get("status") or "unknown")

    @property
    def error(self) -> str | None:
        """Why the store failed (run.json `error`), or None."""
        error = self.run.get("error")
        return None if error in (None, "") else str(error)


@dataclass(frozen=True)
class RunResults:
    """One run: its id and the results of each store, by store name (sorted)."""

    run_id: str
    stores: dict[str, StoreResults] = field(default_factory=dict)

    def first(self, key: str, default: Any = None) -> Any:
        """The first non-empty value of a run.json key across stores (they share the run's spec)."""
        for store in self.stores.values():
            value = store.run.get(key)
            if value not in (None, "", {}, []):
                return value
        return default

    @property
    def label(self) -> str | None:
        """An optional free-text label given to the run (run.json `label`)."""
        label = self.first("label") or (self.first("settings") or {}).get("label")
        return None if label is None else str(label)

    @property
    def started_at(self) -> str | None:
        """The earliest `started_at` of the run's stores (ISO 8601), or None."""
        starts = [s.run.get("started_at") for s in self.stores.values() if s.run.get("started_at")]
        return min(starts, key=parse_time) if starts else None

    @property
    def finished_at(self) -> str | None:
        """The latest `finished_at` of the run's stores (ISO 8601), or None."""
        ends = [s.run.get("finished_at") for s in self.stores.values() if s.run.get("finished_at")]
        return max(ends, key=parse_time) if ends else None

    @property
    def status(self) -> str:
        """The worst store status: one failed store makes the run `failed`."""
        return worst_status(s.status for s in self.stores.values())


def worst_status(statuses: Any) -> str:
    """The worst of some store statuses (`failed` > `degraded` > `unknown` > `ok`)."""
    ranked = [s if s in STATUS_ORDER else "unknown" for s in statuses]
    return min(ranked, key=STATUS_ORDER.index) if ranked else "unknown"


def parse_time(value: Any) -> datetime:
    """An aware datetime for sorting; unparseable or missing values sort as the oldest."""
    try:
        parsed = datetime.fromisoformat(str(value))
    except (TypeError, ValueError):
        return datetime.min.replace(tzinfo=UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _partition_value(name: str, key: str) -> str | None:
    """`run_id=abc` -> `abc` (hive values are URI-encoded, as pyarrow writes them)."""
    prefix = f"{key}="
    return unquote(name[len(prefix) :]) if name.startswith(prefix) else None


def _visible_dirs(path: Path, key: str) -> dict[str, Path]:
    # Folders being written are hidden siblings (`.store=x.<random>`): never read them.
    found: dict[str, Path] = {}
    if not path.is_dir():
        return found
    for child in sorted(path.iterdir()):
        value = _partition_value(child.name, key)
        if value is not None and child.is_dir():
            found[value] = child
    return found


def check_run_id(run_id: str) -> str:
    """Reject run ids that could escape the results root (they become file names)."""
    run_id = str(run_id)
    if not run_id or run_id.startswith((".", "_")) or any(c in run_id for c in "/\\\0") or ".." in run_id:
        raise OptiStackError(
            f"run id {run_id!r} is not valid: use letters, digits and - _ . : (no slashes, no leading dot)"
        )
    return run_id


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from a file; None when absent. A broken file is reported, not raised."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        log.warning("cannot read %s: %s", path, error)
        return {"status": "unknown", "error": f"{path.name} is unreadable: {error}"}
    return data if isinstance(data, dict) else {"status": "unknown", "error": f"{path.name} is not an object"}


def _read_table(path: Path) -> pd.DataFrame | None:
    return pq.read_table(path).to_pandas() if path.is_file() else None


def load_runs(results_root: str | Path) -> pd.DataFrame:
    """The summary rows of every run, as one DataFrame.

    One `pyarrow.dataset` over `<results>/runs` with hive partitioning, over the
    `summary.parquet` files only. Schemas are unified first, so a run written by an
    older version without a newer column reads with that column null, and a column
    whose type widened (int64 -> float64) reads as the wider type. Returns an empty
    frame (no columns) when there are no results yet.
    """
    runs = Path(results_root) / RUNS_DIR
    files = sorted(
        str(store_dir / SUMMARY_FILE)
        for run_dir in _visible_dirs(runs, "run_id").values()
        for store_dir in _visible_dirs(run_dir, "store").values()
        if (store_dir / SUMMARY_FILE).is_file()
    )
    if not files:
        return pd.DataFrame()
    schemas = [_PARTITIONING_SCHEMA] + [pq.read_schema(f) for f in files]
    schema = pa.unify_schemas(schemas, promote_options="permissive")
    partitioning = ds.partitioning(_PARTITIONING_SCHEMA, flavor="hive")
    dataset = ds.dataset(
        files, schema=schema, format="parquet", partitioning=partitioning, partition_base_dir=str(runs)
    )
    frame = dataset.to_table().to_pandas()
    order = [c for c in ("run_id", "store", "operation") if c in frame.columns]
    return frame.sort_values(order, kind="stable").reset_index(drop=True)


def _run_dir(results_root: str | Path, run_id: str) -> Path:
    check_run_id(run_id)
    runs = _visible_dirs(Path(results_root) / RUNS_DIR, "run_id")
    if run_id not in runs:
        known = ", ".join(sorted(runs)[-5:]) or "none yet"
        raise OptiStackError(
            f"no run {run_id!r} under {Path(results_root) / RUNS_DIR} (latest known runs: {known}); "
            "check --run-id and --results"
        )
    return runs[run_id]


def load_run(results_root: str | Path, run_id: str) -> RunResults:
    """Every file of one run, per store: run.json, summary, timeseries, errors, validation, slowest,
    resources.

    A store that failed before measuring has only a run.json; its tables are None.
    Raises `OptiStackError` when the run does not exist.
    """
    run_dir = _run_dir(results_root, run_id)
    stores: dict[str, StoreResults] = {}
    for store, store_dir in _visible_dirs(run_dir, "store").items():
        run = _read_json(store_dir / RUN_FILE)
        if run is None:
            run = {"status": "unknown", "error": f"{RUN_FILE} is missing"}
        stores[store] = StoreResults(
            store=store,
            run=run,
            summary=_read_table(store_dir / SUMMARY_FILE),
            timeseries=_read_table(store_dir / TIMESERIES_FILE),
            errors=_read_table(store_dir / ERRORS_FILE),
            validation=_read_json(store_dir / VALIDATION_FILE),
            slowest=_read_table(store_dir / SLOWEST_FILE),
            resources=_read_table(store_dir / RESOURCES_FILE),
        )
    return RunResults(run_id=run_id, stores=stores)


def list_runs(results_root: str | Path) -> list[dict[str, Any]]:
    """Every run, newest first, as JSON-serialisable dicts (the plugin serves this list).

    Each item: `run_id`, `label`, `workload` (its name), `started_at`, `finished_at`
    (ISO 8601 strings or None), `stores` (sorted names), `statuses` ({store: status}),
    `status` (the worst store status) and `report` (the report's path relative to the
    results root, or None when no report was written yet). Only run.json files are read.
    """
    root = Path(results_root)
    items: list[tuple[datetime, dict[str, Any]]] = []
    for run_id, run_dir in _visible_dirs(root / RUNS_DIR, "run_id").items():
        runs = {
            store: _read_json(store_dir / RUN_FILE) or {"status": "unknown"}
            for store, store_dir in _visible_dirs(run_dir, "store").items()
        }
        if not runs:
            continue
        results = RunResults(run_id, {s: StoreResults(s, r) for s, r in runs.items()})
        workload = results.first("workload")
        report = root / REPORTS_DIR / f"{run_id}.html"
        item = {
            "run_id": run_id,
            "label": results.label,
            "workload": str(workload.get("name"))
            if isinstance(workload, dict) and workload.get("name")
            else None,
            "started_at": _json_text(results.started_at),
            "finished_at": _json_text(results.finished_at),
            "stores": sorted(runs),
            "statuses": {s: results.stores[s].status for s in sorted(runs)},
            "status": results.status,
            "report": f"{REPORTS_DIR}/{report.name}" if report.is_file() else None,
        }
        # A run without a start time (a very early failure) sorts by when its folder appeared.
        when = (
            parse_time(results.started_at)
            if results.started_at
            else datetime.fromtimestamp(run_dir.stat().st_mtime, UTC)
        )
        items.append((when, item))
    items.sort(key=lambda pair: (pair[0], pair[1]["run_id"]), reverse=True)
    return [item for _, item in items]


def _json_text(value: Any) -> str | None:
    return None if value is None else str(value)


def sweep_points(results_root: str | Path, sweep_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every measured step of a sweep, per store: the step's value, throughput and p99.

    A sweep's steps are the runs `<sweep id>.<step>` whose run.json names the sweep;
    steps that failed or have no summary are left out. Sorted by the step's value.
    """
    import json

    points: dict[str, list[dict[str, Any]]] = {}
    runs = Path(results_root) / "runs"
    for info_path in sorted(runs.glob(f"run_id={sweep_id}.*/store=*/run.json")):
        info = json.loads(info_path.read_text())
        sweep = info.get("sweep") or {}
        summary_path = info_path.with_name("summary.parquet")
        if sweep.get("id") != sweep_id or not summary_path.exists():
            continue
        summary = pd.read_parquet(summary_path)
        rows = summary[summary["operation"] == "ALL"]
        if rows.empty:
            continue
        row = rows.iloc[0]
        points.setdefault(info["store"], []).append(
            {
                "parameter": sweep.get("parameter"),
                "value": sweep.get("value"),
                "throughput_ops_s": float(row["throughput_ops_s"]),
                "latency_p99_us": float(row["latency_p99_us"]),
            }
        )
    for steps in points.values():
        steps.sort(key=lambda point: point["value"])
    return points
