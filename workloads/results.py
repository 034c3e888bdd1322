"""From a load process's merged output to the results files of docs/results.md.

A store's files are written into a hidden staging folder beside their final place and
renamed into place when complete, so readers never see half a run, and a rerun of the
same run id replaces exactly that store's folder.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from workloads.recorder import ALL, decode, encode, latency_stats, merge_encoded, new_histogram

OPERATION_ORDER = ["READ", "UPDATE", "INSERT", "SCAN", "READ_MODIFY_WRITE", "DELETE", ALL]
LIVE_FILE = "live.json"  # a running load's latest figures (workloads/live.py); never published


def run_dir(root: Path, run_id: str) -> Path:
    """`<results>/runs/run_id=<id>`."""
    return root / "runs" / f"run_id={run_id}"


def store_dir(root: Path, run_id: str, store: str) -> Path:
    """`<results>/runs/run_id=<id>/store=<store>` (the published folder)."""
    return run_dir(root, run_id) / f"store={store}"


STAGING_PREFIX, STAGING_SUFFIX = ".store=", ".staging"


def staging_dir(root: Path, run_id: str, store: str) -> Path:
    """Hidden sibling of the store folder where a run is assembled (pyarrow skips dot-names)."""
    return run_dir(root, run_id) / f"{STAGING_PREFIX}{store}{STAGING_SUFFIX}"


def publish(root: Path, run_id: str, store: str) -> Path:
    """Move the staging folder into place, replacing an earlier publication of the same run."""
    staging = staging_dir(root, run_id, store)
    final = store_dir(root, run_id, store)
    if not staging.is_dir():
        raise FileNotFoundError(f"nothing staged for {store} in run {run_id}")
    (staging / LIVE_FILE).unlink(missing_ok=True)  # describes the run in progress, not its result
    old = None
    if final.exists():
        old = final.with_name(f".store={store}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    """Write one Parquet file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
    os.replace(tmp, path)


def _op_sort_key(op: str) -> int:
    return OPERATION_ORDER.index(op) if op in OPERATION_ORDER else len(OPERATION_ORDER)


def summary_frame(load: dict[str, Any], identity: dict[str, Any]) -> pd.DataFrame:
    """One row per operation plus ALL, from the load output's merged histograms."""
    duration = load["window"]["duration_s"]
    totals = load["totals"]
    all_service, all_intended, all_errors = new_histogram(), new_histogram(), 0
    rows = []
    histograms = {}
    for op, data in totals.items():
        service = decode(data["service"])
        intended = decode(data["intended"]) if data.get("intended") else None
        histograms[op] = (service, intended, data["errors"], data["service"])
        all_service.add(service)
        if intended is not None:
            all_intended.add(intended)
        all_errors += data["errors"]
    histograms[ALL] = (
        all_service,
        all_intended if all_intended.get_total_count() else None,
        all_errors,
        encode(all_service),
    )
    for op in sorted(histograms, key=_op_sort_key):
        service, intended, errors, encoded = histograms[op]
        ops = service.get_total_count()
        row = {
            **identity,
            "operation": op,
            "ops": ops,
            "errors": errors,
            "duration_s": duration,
            "throughput_ops_s": ops / duration if duration > 0 else 0.0,
            **latency_stats(service),
        }
        intended_stats = latency_stats(intended or new_histogram(), prefix="intended_latency")
        if identity.get("target_rate") is None:
            intended_stats = dict.fromkeys(intended_stats)
        row.update(intended_stats)
        row["histogram"] = encoded
        rows.append(row)
    return pd.DataFrame(rows)


def timeseries_frame(load: dict[str, Any], identity: dict[str, Any]) -> pd.DataFrame:
    """One row per measured second and operation; seconds nobody completed anything in
    appear as zero rows, so a stall shows as a dip instead of a hole."""
    rows = pd.DataFrame(load["rows"]).drop(columns=["repeat"], errors="ignore")
    seconds = load["window"].get("seconds") or max(1, round(load["window"]["duration_s"]))
    ops_seen = sorted(set(rows["operation"]) if len(rows) else {ALL}, key=_op_sort_key)
    full = pd.MultiIndex.from_product([range(seconds), ops_seen], names=["second", "operation"]).to_frame(
        index=False
    )
    if len(rows):
        rows = rows[rows["second"] < seconds]
        frame = full.merge(rows, on=["second", "operation"], how="left")
    else:
        frame = full.assign(ops=0, errors=0, latency_p50_us=None, latency_p99_us=None, latency_max_us=None)
    frame["ops"] = frame["ops"].fillna(0).astype("int64")
    frame["errors"] = frame["errors"].fillna(0).astype("int64")
    frame["throughput_ops_s"] = frame["ops"].astype("float64")
    for col in ("latency_p50_us", "latency_p99_us", "latency_max_us"):
        frame[col] = frame[col].astype("float64")
    for key, value in reversed(identity.items()):
        frame.insert(0, key, value)
    # Repeated measured phases follow each other; say which repeat a second belongs to.
    starts = load["window"].get("repeat_starts", [0])
    frame["repeat"] = frame["second"].map(lambda second: sum(1 for start in starts if start <= second) - 1)
    return frame[
        [
            *identity,
            "repeat",
            "operation",
            "second",
            "ops",
            "errors",
            "throughput_ops_s",
            "latency_p50_us",
            "latency_p99_us",
            "latency_max_us",
        ]
    ]


def errors_frame(load: dict[str, Any], identity: dict[str, Any]) -> pd.DataFrame:
    """One row per (operation, error type) with its count and first message."""
    counts: dict[tuple[str, str], int] = {}
    for op, data in load["totals"].items():
        for error_type, count in data.get("error_types", {}).items():
            counts[(op, error_type)] = count
    examples = {(op, et): msg for op, et, msg in load.get("error_examples", [])}
    rows = [
        {**identity, "operation": op, "error_type": et, "count": count, "example": examples.get((op, et))}
        for (op, et), count in sorted(counts.items())
    ]
    columns = [*identity, "operation", "error_type", "count", "example"]
    return pd.DataFrame(rows, columns=columns)


def slowest_frame(load: dict[str, Any], identity: dict[str, Any]) -> pd.DataFrame:
    """The slowest operations of the run (operation, key, start offset, latency, error)."""
    rows = [
        {
            **identity,
            "operation": op,
            "key": key,
            "start_offset_ms": offset,
            "latency_us": latency,
            "error": error or None,
        }
        for latency, op, key, offset, error in load.get("slowest", [])
    ]
    return pd.DataFrame(
        rows, columns=[*identity, "operation", "key", "start_offset_ms", "latency_us", "error"]
    )


def merge_loads(loads: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge the outputs of repeated measured phases into one, exactly.

    Histograms are added, counts summed, and each repeat's seconds follow the previous
    repeat's in the time series (with a `repeat` column), so the merged output reads
    like one longer window. The separate outputs stay in `repeat_loads`.
    """
    if len(loads) == 1:
        return {**loads[0], "repeat_loads": loads}
    totals: dict[str, dict[str, Any]] = {}
    for load in loads:
        for op, data in load["totals"].items():
            entry = totals.setdefault(op, {"service": [], "intended": [], "errors": 0, "error_types": {}})
            entry["service"].append(data["service"])
            if data.get("intended"):
                entry["intended"].append(data["intended"])
            entry["errors"] += data["errors"]
            for error_type, count in data.get("error_types", {}).items():
                entry["error_types"][error_type] = entry["error_types"].get(error_type, 0) + count
    for entry in totals.values():
        entry["service"] = encode(merge_encoded(entry["service"]))
        entry["intended"] = encode(merge_encoded(entry["intended"])) if entry["intended"] else None
    rows, offset, starts = [], 0, []
    for repeat, load in enumerate(loads):
        starts.append(offset)
        rows += [{**row, "second": row["second"] + offset, "repeat": repeat} for row in load["rows"]]
        offset += max(1, round(load["window"]["duration_s"]))
    examples = {}
    for load in loads:
        for op, error_type, message in load.get("error_examples", []):
            examples.setdefault((op, error_type), message)
    processes = max(len(load.get("process_cpu", [])) for load in loads)
    return {
        "window": {
            "duration_s": sum(load["window"]["duration_s"] for load in loads),
            "seconds": offset,
            "repeat_starts": starts,
        },
        "totals": totals,
        "rows": rows,
        "error_examples": [[op, et, msg] for (op, et), msg in examples.items()],
        "slowest": sorted((s for load in loads for s in load.get("slowest", [])), reverse=True)[:50],
        "process_cpu": [
            [sample for load in loads for sample in (load.get("process_cpu") or [[]] * processes)[i]]
            for i in range(processes)
        ],
        "late_samples": sum(load.get("late_samples", 0) for load in loads),
        "lost_processes": sum(load.get("lost_processes", 0) for load in loads),
        "per_process": _merge_per_process(loads),
        "repeat_loads": loads,
    }


def _merge_per_process(loads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each load process index's figures over every repeat (histograms added exactly)."""
    merged: dict[int, dict[str, Any]] = {}
    for load in loads:
        for row in load.get("per_process", []):
            entry = merged.setdefault(row["process"], {"errors": 0, "histograms": []})
            entry["errors"] += row["errors"]
            entry["histograms"].append(row["histogram"])
    rows = []
    for process in sorted(merged):
        histogram = merge_encoded(merged[process]["histograms"])
        stats = latency_stats(histogram)
        rows.append(
            {
                "process": process,
                "ops": histogram.get_total_count(),
                "errors": merged[process]["errors"],
                "latency_p50_us": stats["latency_p50_us"],
                "latency_p99_us": stats["latency_p99_us"],
                "histogram": encode(histogram),
            }
        )
    return rows


def ci95(values: list[float]) -> tuple[float, float, float]:
    """Mean and the 95% confidence interval of the mean (Student's t), as (mean, low, high)."""
    from scipy import stats

    n = len(values)
    if n == 0:  # no successful operation (e.g. only CONNECT errors): nothing to average
        return float("nan"), float("nan"), float("nan")
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan"), float("nan")
    sd = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5
    half = float(stats.t.ppf(0.975, n - 1)) * sd / n**0.5
    return mean, mean - half, mean + half


def repeats_frame(loads: list[dict[str, Any]], identity: dict[str, Any]) -> pd.DataFrame:
    """One summary row per repeat and operation, with a `repeat` column."""
    frames = [summary_frame(load, identity).assign(repeat=i) for i, load in enumerate(loads)]
    return pd.concat(frames, ignore_index=True).drop(columns=["histogram"])


def with_confidence(summary: pd.DataFrame, repeats: pd.DataFrame) -> pd.DataFrame:
    """Add the repeats' mean and 95% CI of throughput and p99 to each summary row."""
    summary = summary.copy()
    summary["repeats"] = int(repeats["repeat"].nunique())
    for metric, prefix in (("throughput_ops_s", "throughput"), ("latency_p99_us", "latency_p99")):
        stats = {
            op: ci95([v for v in group[metric].tolist() if v is not None and v == v])  # None/NaN-free
            for op, group in repeats.groupby("operation")
        }
        for i, name in enumerate(("mean", "ci95_low", "ci95_high")):
            column = f"{prefix}_{name}_us" if prefix == "latency_p99" else f"{prefix}_{name}_ops_s"
            summary[column] = summary["operation"].map(
                lambda op, i=i, stats=stats: stats.get(op, (None,) * 3)[i]
            )
    return summary
