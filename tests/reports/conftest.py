"""Results folders written exactly as docs/results.md describes, with synthetic numbers.

The report only reads files, so these tests write them directly with pyarrow: a run
whose measured stores carry real encoded HdrHistograms (the `hdrh` package), and
whose failed stores have nothing but a run.json, as a failed stage leaves them.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hdrh.histogram import HdrHistogram

WORKLOAD_A = {
    "name": "a",
    "description": "Update heavy: read 50% / update 50%, zipfian",
    "record_count": 10000,
    "field_count": 10,
    "field_length": 100,
    "operations": {"read": 0.5, "update": 0.5},
    "request_distribution": "zipfian",
    "zipfian_constant": 0.99,
    "hotspot_data_fraction": 0.2,
    "hotspot_opn_fraction": 0.8,
    "max_scan_length": 1000,
    "scan_length_distribution": "uniform",
    "read_all_fields": True,
    "write_all_fields": False,
}

SERVERS = {
    "postgres": ({"product": "PostgreSQL", "version": "15.19"}, {"psycopg": "3.3.9"}, "postgresql"),
    "redis": ({"product": "Redis", "version": "7.2.5"}, {"redis": "5.2.1"}, "redis"),
    "mysql": ({"product": "MySQL", "version": "8.4.3"}, {"PyMySQL": "1.1.1"}, "mysql"),
    "mongodb": ({"product": "MongoDB", "version": "7.0.14"}, {"pymongo": "4.10.1"}, "mongodb"),
}

# Lognormal service times (median µs, sigma) per store and operation, and throughput.
PROFILES = {
    "postgres": {"rate": 4200.0, "READ": (180.0, 0.45), "UPDATE": (420.0, 0.6)},
    "redis": {"rate": 15800.0, "READ": (55.0, 0.35), "UPDATE": (70.0, 0.4)},
    "mongodb": {"rate": 7300.0, "READ": (120.0, 0.5), "UPDATE": (260.0, 0.55)},
}

DURATION_S = 30


@dataclass
class StoreSpec:
    """One store of a synthetic run."""

    name: str
    status: str = "ok"  # ok | degraded | failed
    error: str | None = None
    server_version: str | None = None  # overrides the realistic default
    errors: int = 0  # failed operations (degraded), written to errors.parquet
    validation: bool = True
    max_error_ratio: float = 0.01  # the validation threshold; 0 demands a clean run
    drop_columns: tuple[str, ...] = ()  # columns an older version did not write
    extra: dict[str, Any] = field(default_factory=dict)  # merged into run.json


def _histogram(values: np.ndarray) -> HdrHistogram:
    histogram = HdrHistogram(1, 60_000_000, 3)
    unique, counts = np.unique(np.maximum(values.astype(np.int64), 1), return_counts=True)
    for value, count in zip(unique.tolist(), counts.tolist(), strict=True):
        histogram.record_value(value, count)
    return histogram


def _latency_columns(histogram: HdrHistogram, prefix: str = "latency") -> dict[str, float]:
    at = histogram.get_percentile_to_value_dict([50, 90, 95, 99, 99.9])
    return {
        f"{prefix}_p50_us": float(at[50]),
        f"{prefix}_p90_us": float(at[90]),
        f"{prefix}_p95_us": float(at[95]),
        f"{prefix}_p99_us": float(at[99]),
        f"{prefix}_p999_us": float(at[99.9]),
        f"{prefix}_max_us": float(histogram.get_max_value()),
    }


def _write_parquet(
    path: Path, rows: list[dict[str, Any]], types: dict[str, pa.DataType], drop: tuple[str, ...]
):
    columns = [c for c in rows[0] if c not in drop]
    schema = pa.schema([(c, types.get(c, pa.float64())) for c in columns])
    table = pa.Table.from_pylist([{c: r[c] for c in columns} for r in rows], schema=schema)
    pq.write_table(table, path)


SUMMARY_TYPES = {
    "run_id": pa.string(),
    "store": pa.string(),
    "workload": pa.string(),
    "operation": pa.string(),
    "ops": pa.int64(),
    "errors": pa.int64(),
    "users": pa.int64(),
    "processes": pa.int64(),
    "histogram": pa.string(),
}
TIMESERIES_TYPES = {k: SUMMARY_TYPES[k] for k in ("run_id", "store", "operation", "ops", "errors")} | {
    "second": pa.int64()
}


def _measurements(folder: Path, run_id: str, spec: StoreSpec, users: int, seed: int) -> tuple[int, int]:
    rng = np.random.default_rng(seed)
    profile = PROFILES.get(spec.name, PROFILES["mongodb"])
    per_op: dict[str, np.ndarray] = {}
    per_second: dict[str, list[np.ndarray]] = {}
    for op in ("READ", "UPDATE"):
        median, sigma = profile[op]
        seconds = []
        for second in range(DURATION_S):
            # A dip and a latency bump mid-run, as a checkpoint or compaction would cause.
            slow = 1.8 if 14 <= second <= 16 else 1.0
            n = int(profile["rate"] / 2 * rng.uniform(0.93, 1.05) / slow)
            seconds.append(rng.lognormal(np.log(median * slow), sigma, n))
        per_second[op] = seconds
        per_op[op] = np.concatenate(seconds)
    errors_by_op = {"READ": spec.errors // 2, "UPDATE": spec.errors - spec.errors // 2}

    summary, histograms = [], {}
    for op in ("READ", "UPDATE", "ALL"):
        values = np.concatenate(list(per_op.values())) if op == "ALL" else per_op[op]
        histogram = _histogram(values)
        histograms[op] = histogram
        ops = int(histogram.get_total_count())
        errors = sum(errors_by_op.values()) if op == "ALL" else errors_by_op[op]
        summary.append(
            {
                "run_id": run_id,
                "store": spec.name,
                "workload": "a",
                "operation": op,
                "ops": ops,
                "errors": errors,
                "duration_s": float(DURATION_S),
                "throughput_ops_s": ops / DURATION_S,
                **_latency_columns(histogram),
                "latency_min_us": float(histogram.get_min_value()),
                # hdrh's mean and stddev walk every bucket in Python; the raw samples are at hand.
                "latency_mean_us": float(values.mean()),
                "latency_stddev_us": float(values.std()),
                **{k: None for k in _latency_columns(histogram, "intended_latency")},
                "intended_latency_mean_us": None,
                "users": users,
                "processes": 2,
                "target_rate": None,
                "histogram": histogram.encode().decode("ascii"),
            }
        )
    _write_parquet(folder / "summary.parquet", summary, SUMMARY_TYPES, spec.drop_columns)

    timeseries = []
    for second in range(DURATION_S):
        merged = []
        for op in ("READ", "UPDATE"):
            values = per_second[op][second]
            merged.append(values)
            timeseries.append(_second_row(run_id, spec.name, op, second, values))
        timeseries.append(_second_row(run_id, spec.name, "ALL", second, np.concatenate(merged)))
    _write_parquet(folder / "timeseries.parquet", timeseries, TIMESERIES_TYPES, ())

    if spec.errors:
        rows = [
            {
                "run_id": run_id,
                "store": spec.name,
                "operation": op,
                "error_type": "TimeoutError",
                "count": count,
                "example": "Timeout reading from 127.0.0.1:6379 after 10 s",
            }
            for op, count in errors_by_op.items()
            if count
        ]
        _write_parquet(
            folder / "errors.parquet",
            rows,
            SUMMARY_TYPES | {"count": pa.int64(), "error_type": pa.string(), "example": pa.string()},
            (),
        )
    slowest = []
    for op, values in per_op.items():
        for index in np.argsort(values)[-5:][::-1].tolist():
            slowest.append(
                {
                    "run_id": run_id,
                    "store": spec.name,
                    "operation": op,
                    "key": f"user{rng.integers(0, 10_000_000_000):010d}",
                    "start_offset_ms": round(index / len(values) * DURATION_S * 1000, 1),
                    "latency_us": float(int(values[index])),
                    "error": None,
                }
            )
    slowest.sort(key=lambda r: -r["latency_us"])
    _write_parquet(
        folder / "slowest.parquet", slowest, SUMMARY_TYPES | {"key": pa.string(), "error": pa.string()}, ()
    )

    all_row = summary[-1]
    return all_row["ops"], all_row["errors"]


def _second_row(run_id: str, store: str, op: str, second: int, values: np.ndarray) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "store": store,
        "operation": op,
        "second": second,
        "ops": len(values),
        "errors": 0,
        "throughput_ops_s": float(len(values)),
        "latency_p50_us": float(np.percentile(values, 50)),
        "latency_p99_us": float(np.percentile(values, 99)),
        "latency_max_us": float(values.max()),
    }


def _validation(
    run_id: str, store: str, summary: list[dict[str, Any]], max_error_ratio: float
) -> dict[str, Any]:
    """validation.json as `workloads.validate` writes it (docs/validation.md)."""
    rows = {r["operation"]: r for r in summary}
    ops = {op: r["ops"] for op, r in rows.items() if op != "ALL"}
    total = sum(r["ops"] + r["errors"] for op, r in rows.items() if op != "ALL")
    ratios = {op: round(r["errors"] / (r["ops"] + r["errors"]), 6) for op, r in rows.items()}
    ratio_failures = [
        f"{op} error ratio {ratio:g} ({rows[op]['errors']} errors)"
        for op, ratio in ratios.items()
        if ratio > max_error_ratio
    ]

    def outcome(name, success, observed, expected, **details):
        return {"name": name, "success": success, "observed": observed, "expected": expected,
                "details": {"failures": [], "gx": [], **details}}  # fmt: skip

    results = [
        outcome("results_schema", True,
                {"summary_missing_columns": [], "timeseries_missing_columns": [], "summary_operations": sorted(rows)},
                "summary.parquet with the columns the checks read and an ALL row"),
        outcome("seeded_count", True, 10000, "10000 records"),
        outcome("operations_executed", True, ops, "ops > 0 for each operation of the mix (read, update)"),
        outcome("operation_mix", True,
                {op: round((r["ops"] + r["errors"]) / total, 6) for op, r in rows.items() if op != "ALL"},
                "each operation's share of ops + errors within max(0.02, 4 standard errors) of the mix"),
        outcome("error_ratio", not ratio_failures, ratios,
                f"errors / (ops + errors) at most {max_error_ratio:g}, overall (ALL) and per operation",
                failures=ratio_failures),
        outcome("latency_percentiles_ordered", True,
                {op: {k: r[k] for k in ("latency_p50_us", "latency_p99_us", "latency_max_us")} for op, r in rows.items()},
                "0 ≤ p50 ≤ p90 ≤ p95 ≤ p99 ≤ p999 ≤ max on every row with measurements"),
        outcome("intended_latency_percentiles_ordered", True, None,
                "0 ≤ p50 ≤ p90 ≤ p95 ≤ p99 ≤ p999 ≤ max on every row with measurements",
                skipped="closed-loop run: no latency from the intended start"),
        outcome("timeseries_contiguous", True, {"duration_s": float(DURATION_S), "seconds": DURATION_S, "missing": []},
                f"one ALL row per second 0..{DURATION_S - 1}, no gap of 1 s or more"),
        outcome("throughput_positive", True, {op: r["throughput_ops_s"] for op, r in rows.items()},
                "throughput_ops_s > 0 on every summary row"),
    ]  # fmt: skip
    failed = [r for r in results if not r["success"]]
    message = (
        f"Validation passed for {store} run {run_id}: all {len(results)} expectations met."
        if not failed
        else f"Validation failed for {store} run {run_id}: {len(failed)} of {len(results)} expectations failed."
    )
    return {
        "run_id": run_id,
        "store": store,
        "success": not failed,
        "results": results,
        "thresholds": {"max_error_ratio": max_error_ratio, "mix_tolerance": 0.02, "max_gap_s": 1.0},
        "validated_at": "2026-12-04T20:16:12+00:00",
        "elapsed_s": 0.31,
        "gx_version": "1.24.1",
        "message": message,
    }


def write_store(
    root: Path, run_id: str, spec: StoreSpec, started_at: datetime, label: str | None = None, seed: int = 0
) -> Path:
    """One store's folder of one run, written aside and renamed into place as the engine does."""
    run_dir = root / "runs" / f"run_id={run_id}"
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".store={spec.name}.{secrets.token_hex(4)}"
    tmp.mkdir()
    server, driver, scheme = SERVERS.get(spec.name, SERVERS["mongodb"])
    server = dict(server)
    if spec.server_version is not None:
        server["version"] = spec.server_version
    users = 16
    ops = errors = 0
    if spec.status != "failed":
        ops, errors = _measurements(tmp, run_id, spec, users, seed)
    run = {
        "run_id": run_id,
        "store": spec.name,
        "status": spec.status,
        "error": spec.error,
        "started_at": started_at.isoformat(),
        "finished_at": (started_at + timedelta(seconds=70 if spec.status != "failed" else 3)).isoformat(),
        "url": f"{scheme}://optistack:***@127.0.0.1:5432/optistack",
        "server": server if spec.status != "failed" else None,
        "workload": WORKLOAD_A,
        "settings": {
            "users": users,
            "processes": 2,
            "duration_s": DURATION_S,
            "operations": None,
            "warmup_s": 5,
            "target_rate": None,
            "spawn_rate": 16,
            "seed": 42,
            "operation_timeout_s": 10,
            "insert_order": "hashed",
        },
        "seed": {"records": 10000, "count": 10000, "duration_s": 1.9, "records_per_s": 5263}
        if spec.status != "failed"
        else None,
        "load": {
            "measured_s": float(DURATION_S),
            "ops": ops,
            "errors": errors,
            "processes": 2,
            "client_cpu": [
                {"process": 0, "cpu_percent_max": 71.0, "cpu_percent_mean": 63.2},
                {"process": 1, "cpu_percent_max": 68.5, "cpu_percent_mean": 61.5},
            ],
        }
        if spec.status != "failed"
        else None,
        "versions": {"optistack": "0.1.0", "python": "3.11.7", "locust": "2.47.0", "driver": driver},
        "host": {
            "hostname": "bench-01",
            "platform": "Linux-6.1.0-x86_64",
            "cpu_count": 2,
            "memory_gib": 23.4,
        },
        "command": f"optistack run --store {spec.name} --workload a --records 10000 --duration 30 --users 16",
    }
    if label is not None:
        run["label"] = label
    run.update(spec.extra)
    (tmp / "run.json").write_text(json.dumps(run, indent=2))
    if spec.status != "failed" and spec.validation:
        summary = pq.read_table(tmp / "summary.parquet").to_pylist()
        validation = _validation(run_id, spec.name, summary, spec.max_error_ratio)
        (tmp / "validation.json").write_text(json.dumps(validation, indent=2))
    final = run_dir / f"store={spec.name}"
    os.replace(tmp, final)
    return final


DEFAULT_STORES = (
    StoreSpec("postgres"),
    StoreSpec(
        "mysql", status="failed", error="connect: connection refused at 127.0.0.1:3306 (is MySQL running?)"
    ),
)

# The run the screenshot shows: one store clean, one with a few timeouts, one failed.
REALISTIC_STORES = (
    StoreSpec("postgres"),
    # A clean run demanded (max_error_ratio 0): its 7 timeouts fail validation.
    StoreSpec("redis", status="degraded", errors=7, max_error_ratio=0.0),
    StoreSpec(
        "mysql",
        status="failed",
        error="connect: cannot reach mysql at 127.0.0.1:3306: [Errno 111] Connection refused "
        "(start it, or pass --url mysql=URL)",
    ),
)


def write_run(
    root: Path,
    run_id: str = "20261204T201500Z-ab12",
    stores: tuple[StoreSpec, ...] | list[StoreSpec] = DEFAULT_STORES,
    started_at: datetime | None = None,
    label: str | None = None,
) -> str:
    """Write a run's folders under `root/runs/` and return its id.

    The default is a realistic run of 2 stores: postgres measured (with a real
    HdrHistogram per operation), mysql failed with only a run.json.
    """
    started = started_at or datetime.fromisoformat("2026-12-04T20:15:00+00:00")
    for index, spec in enumerate(stores):
        write_store(root, run_id, spec, started, label=label, seed=index)
    return run_id


@pytest.fixture
def make_run() -> Callable[..., str]:
    """`make_run(root, run_id=..., stores=[StoreSpec...], started_at=..., label=...)`: see `write_run`."""
    return write_run


@pytest.fixture(scope="session")
def realistic_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of a realistic 3-store run, written once; tests only read it."""
    from reports.render import write_report

    root = tmp_path_factory.mktemp("results")
    run_id = write_run(root, stores=REALISTIC_STORES, label="Nightly comparison: workload a, 16 users")
    return write_report(root, run_id)
