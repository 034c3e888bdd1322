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

from workloads.recorder import ALL, decode, latency_stats, new_histogram

OPERATION_ORDER = ["READ", "UPDATE", "INSERT", "SCAN", "READ_MODIFY_WRITE", "DELETE", ALL]


def run_dir(root: Path, run_id: str) -> Path:
    """`<results>/runs/run_id=<id>`."""
    return root / "runs" / f"run_id={run_id}"


def store_dir(root: Path, run_id: str, store: str) -> Path:
    """`<results>/runs/run_id=<id>/store=<store>` (the published folder)."""
    return run_dir(root, run_id) / f"store={store}"


def staging_dir(root: Path, run_id: str, store: str) -> Path:
    """Hidden sibling of the store folder where a run is assembled (pyarrow skips dot-names)."""
    return run_dir(root, run_id) / f".store={store}.staging"


def publish(root: Path, run_id: str, store: str) -> Path:
    """Move the staging folder into place, replacing an earlier publication of the same run."""
    staging = staging_dir(root, run_id, store)
    final = store_dir(root, run_id, store)
    if not staging.is_dir():
        raise FileNotFoundError(f"nothing staged for {store} in run {run_id}")
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
    from workloads.recorder import encode

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
    rows = pd.DataFrame(load["rows"])
    seconds = max(1, round(load["window"]["duration_s"]))
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
    return frame[
        [
            *identity,
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
