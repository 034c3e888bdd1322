"""Validation of a store's results with Great Expectations, on results folders built here.

The folders follow docs/results.md column for column; each test breaks one thing and
checks that exactly the right expectation fails, naming the observed value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from workloads.errors import OptiStackError
from workloads.spec import CORE_WORKLOADS, parse_spec
from workloads.validate import (
    VALIDATION_FILE,
    Thresholds,
    ValidationReport,
    validate_frames,
    validate_run,
)

RUN_ID = "20261204T201500Z-ab12"
STORE = "postgres"
RECORDS = 1000
DURATION_S = 10.0
PERCENTILES = ("p50", "p90", "p95", "p99", "p999", "max")


def summary_row(operation: str, ops: int, errors: int = 0, base_us: float = 100.0) -> dict[str, Any]:
    """One summary.parquet row with every column docs/results.md lists (closed loop)."""
    row: dict[str, Any] = {
        "run_id": RUN_ID,
        "store": STORE,
        "workload": "a",
        "operation": operation,
        "ops": ops,
        "errors": errors,
        "duration_s": DURATION_S,
        "throughput_ops_s": ops / DURATION_S,
    }
    for factor, name in zip((1, 2, 3, 5, 8, 13), PERCENTILES, strict=True):
        row[f"latency_{name}_us"] = base_us * factor
    row |= {"latency_min_us": base_us / 2, "latency_mean_us": base_us * 1.5, "latency_stddev_us": base_us / 3}
    for name in (*PERCENTILES, "mean"):
        row[f"intended_latency_{name}_us"] = None
    row |= {
        "users": 16,
        "processes": 2,
        "target_rate": None,
        "histogram": "HISTFAAAAB94nJNpmSzMwMDAyQABMBoAGIEBAA==",
    }
    return row


def summary_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows per operation plus the ALL row that merges them."""
    ops = sum(r["ops"] for r in rows)
    errors = sum(r["errors"] for r in rows)
    frame = pd.DataFrame([*rows, summary_row("ALL", ops, errors)])
    float_columns = [c for c in frame.columns if c.endswith("_us") or c in ("target_rate", "duration_s")]
    return frame.astype({c: "float64" for c in float_columns} | {"ops": "int64", "errors": "int64"})


def timeseries_frame(operations: list[str], seconds: list[int], ops_per_second: int = 50) -> pd.DataFrame:
    rows = []
    for second in seconds:
        for operation in [*operations, "ALL"]:
            ops = ops_per_second * (len(operations) if operation == "ALL" else 1)
            rows.append(
                {
                    "run_id": RUN_ID,
                    "store": STORE,
                    "operation": operation,
                    "second": second,
                    "ops": ops,
                    "errors": 0,
                    "throughput_ops_s": float(ops),
                    "latency_p50_us": 100.0,
                    "latency_p99_us": 500.0,
                    "latency_max_us": 1300.0,
                }
            )
    return pd.DataFrame(rows).astype({"second": "int64", "ops": "int64", "errors": "int64"})


def run_info(seeded: int | None = RECORDS) -> dict[str, Any]:
    info: dict[str, Any] = {
        "run_id": RUN_ID,
        "store": STORE,
        "status": "ok",
        "error": None,
        "started_at": "2026-12-04T20:15:00+00:00",
        "finished_at": "2026-12-04T20:16:10+00:00",
        "url": "postgresql://postgres:***@127.0.0.1:5432/postgres",
        "server": {"product": "PostgreSQL", "version": "15.19"},
        "workload": CORE_WORKLOADS["a"].model_dump(),
        "settings": {
            "users": 16,
            "processes": 2,
            "duration_s": DURATION_S,
            "warmup_s": 0,
            "target_rate": None,
        },
        "load": {"measured_s": DURATION_S, "ops": 1000, "errors": 0, "processes": 2},
    }
    if seeded is not None:
        info["seed"] = {"records": RECORDS, "count": seeded, "duration_s": 0.2, "records_per_s": 5000}
    return info


def write_store(
    root: Path,
    summary: pd.DataFrame,
    timeseries: pd.DataFrame,
    info: dict[str, Any],
) -> Path:
    store_dir = root / "runs" / f"run_id={RUN_ID}" / f"store={STORE}"
    store_dir.mkdir(parents=True)
    summary.to_parquet(store_dir / "summary.parquet", index=False)
    timeseries.to_parquet(store_dir / "timeseries.parquet", index=False)
    (store_dir / "run.json").write_text(json.dumps(info, indent=2))
    return store_dir


def good_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    summary = summary_frame([summary_row("READ", 500), summary_row("UPDATE", 500, base_us=150.0)])
    return summary, timeseries_frame(["READ", "UPDATE"], list(range(10)))


def failed(report: ValidationReport) -> dict[str, Any]:
    return {outcome.name: outcome for outcome in report.results if not outcome.success}


SPEC_A = CORE_WORKLOADS["a"]


def test_a_good_run_passes_every_expectation(tmp_path: Path) -> None:
    summary, timeseries = good_frames()
    store_dir = write_store(tmp_path, summary, timeseries, run_info())

    report = validate_run(store_dir, SPEC_A, RECORDS, Thresholds())

    assert report.success, report.summary_message()
    assert [o.name for o in report.results] == [
        "results_schema",
        "seeded_count",
        "operations_executed",
        "operation_mix",
        "error_ratio",
        "latency_percentiles_ordered",
        "intended_latency_percentiles_ordered",
        "timeseries_contiguous",
        "throughput_positive",
    ]
    assert all(o.success for o in report.results)
    assert (report.run_id, report.store) == (RUN_ID, STORE)
    assert report.summary_message().startswith(f"Validation passed for {STORE} run {RUN_ID}")
    # Every evaluated check came from GX expectations; the closed-loop run skips intended latencies.
    by_name = {o.name: o for o in report.results}
    assert by_name["intended_latency_percentiles_ordered"].details["skipped"]
    assert by_name["latency_percentiles_ordered"].details["gx"][0]["expectation"] == (
        "expect_column_pair_values_a_to_be_greater_than_b"
    )
    assert by_name["operation_mix"].observed == {"READ": 0.5, "UPDATE": 0.5}
    assert report.gx_version and report.gx_version.startswith("1.")


def test_wrong_seeded_count_fails_seeded_count(tmp_path: Path) -> None:
    summary, timeseries = good_frames()
    store_dir = write_store(tmp_path, summary, timeseries, run_info(seeded=900))

    report = validate_run(store_dir, SPEC_A, RECORDS, Thresholds())

    assert not report.success
    assert set(failed(report)) == {"seeded_count"}
    assert failed(report)["seeded_count"].observed == 900
    message = report.summary_message()
    assert (
        "seeded_count failed" in message and "900 records" in message and "expected 1000 records" in message
    )


def test_missing_seed_count_fails_readably() -> None:
    summary, timeseries = good_frames()
    report = validate_frames(summary, timeseries, run_info(seeded=None), SPEC_A, RECORDS, Thresholds())
    assert set(failed(report)) == {"seeded_count"}
    assert "run.json has no seed.count" in report.summary_message()


def test_an_operation_of_the_mix_that_never_ran_fails_operations_executed() -> None:
    # Workload a, but the results only hold READ: UPDATE never ran.
    summary = summary_frame([summary_row("READ", 1000)])
    timeseries = timeseries_frame(["READ"], list(range(10)), ops_per_second=100)

    report = validate_frames(summary, timeseries, run_info(), SPEC_A, RECORDS, Thresholds())

    bad = failed(report)
    assert "operations_executed" in bad
    assert bad["operations_executed"].observed == {"READ": 1000, "UPDATE": 0}
    assert "UPDATE has no row in summary.parquet" in report.summary_message()
    # The mix is then off too (UPDATE share 0 instead of 0.5), and says so.
    assert "operation_mix" in bad
    assert "UPDATE was 0.0000 of 1000 operations" in report.summary_message()


def test_an_operation_with_only_errors_fails_operations_executed() -> None:
    summary = summary_frame([summary_row("READ", 1000), summary_row("UPDATE", 0, errors=3)])
    summary.loc[summary["operation"] == "UPDATE", [f"latency_{p}_us" for p in PERCENTILES]] = None
    timeseries = timeseries_frame(["READ"], list(range(10)), ops_per_second=100)

    report = validate_frames(
        summary, timeseries, run_info(), SPEC_A, RECORDS, Thresholds(max_error_ratio=1.0)
    )

    assert "operations_executed" in failed(report)
    assert "UPDATE completed 0 ops" in report.summary_message()
    # No successes means no latencies: not a percentile-order failure.
    assert "latency_percentiles_ordered" not in failed(report)


def test_a_mix_off_the_spec_fails_operation_mix() -> None:
    summary = summary_frame([summary_row("READ", 7000), summary_row("UPDATE", 3000)])
    timeseries = timeseries_frame(["READ", "UPDATE"], list(range(10)))

    report = validate_frames(summary, timeseries, run_info(), SPEC_A, RECORDS, Thresholds())

    assert set(failed(report)) == {"operation_mix"}
    mix = failed(report)["operation_mix"]
    assert mix.observed == {"READ": 0.7, "UPDATE": 0.3}
    message = report.summary_message()
    assert "operation_mix failed" in message
    assert "READ was 0.7000 of 10000 operations (spec 0.5000 ± 0.0200)" in message
    assert "UPDATE was 0.3000" in message


def test_mix_tolerance_widens_with_sampling_noise() -> None:
    # 100 operations of workload b (read .95 / update .05): 9 updates instead of 5 is
    # 0.04 off, beyond the 0.02 tolerance but within 4 standard errors (0.087).
    spec_b = CORE_WORKLOADS["b"]
    summary = summary_frame([summary_row("READ", 91), summary_row("UPDATE", 9)])
    timeseries = timeseries_frame(["READ", "UPDATE"], list(range(10)), ops_per_second=5)

    report = validate_frames(summary, timeseries, run_info(), spec_b, RECORDS, Thresholds())
    assert report.success, report.summary_message()

    # The same proportions over 100 000 operations are a real deviation.
    big = summary_frame([summary_row("READ", 91_000), summary_row("UPDATE", 9_000)])
    report = validate_frames(big, timeseries, run_info(), spec_b, RECORDS, Thresholds())
    assert set(failed(report)) == {"operation_mix"}


def test_a_high_error_ratio_fails_error_ratio() -> None:
    summary = summary_frame([summary_row("READ", 450, errors=50), summary_row("UPDATE", 500)])
    timeseries = timeseries_frame(["READ", "UPDATE"], list(range(10)))

    report = validate_frames(summary, timeseries, run_info(), SPEC_A, RECORDS, Thresholds())

    assert set(failed(report)) == {"error_ratio"}
    errors = failed(report)["error_ratio"]
    assert errors.observed == {"READ": 0.1, "UPDATE": 0.0, "ALL": 0.05}
    message = report.summary_message()
    assert "READ error ratio 0.1 (50 errors in 500 attempts)" in message
    assert "ALL error ratio 0.05 (50 errors in 1000 attempts)" in message
    assert "UPDATE error ratio" not in message
    assert "at most 0.01" in message


def test_an_impossible_threshold_fails_with_a_readable_message() -> None:
    summary = summary_frame([summary_row("READ", 499, errors=1), summary_row("UPDATE", 500)])
    timeseries = timeseries_frame(["READ", "UPDATE"], list(range(10)))

    report = validate_frames(summary, timeseries, run_info(), SPEC_A, RECORDS, Thresholds(max_error_ratio=0))

    assert set(failed(report)) == {"error_ratio"}
    message = report.summary_message()
    assert message == (
        f"Validation failed for {STORE} run {RUN_ID}: 1 of 9 expectations failed. "
        "error_ratio failed: READ error ratio 0.002 (1 errors in 500 attempts); "
        "ALL error ratio 0.001 (1 errors in 1000 attempts) "
        "(expected errors / (ops + errors) at most 0, overall (ALL) and per operation)."
    )
    # Within the default threshold the same run passes.
    assert validate_frames(summary, timeseries, run_info(), SPEC_A, RECORDS, Thresholds()).success


def test_unordered_percentiles_fail_latency_percentiles_ordered() -> None:
    summary, timeseries = good_frames()
    read = summary["operation"] == "READ"
    summary.loc[read, "latency_p99_us"] = 50.0  # below p50 (100)

    report = validate_frames(summary, timeseries, run_info(), SPEC_A, RECORDS, Thresholds())

    assert set(failed(report)) == {"latency_percentiles_ordered"}
    message = report.summary_message()
    assert "READ latency_p99_us 50 < latency_p95_us 300" in message
    assert "READ latency_p999_us" not in message  # p999 (800) >= p99 (50) is in order
    assert failed(report)["latency_percentiles_ordered"].observed["READ"]["latency_p99_us"] == 50.0


def test_negative_and_null_percentiles_fail_latency_percentiles_ordered() -> None:
    summary, timeseries = good_frames()
    summary.loc[summary["operation"] == "UPDATE", "latency_p50_us"] = -1.0
    summary.loc[summary["operation"] == "ALL", "latency_max_us"] = None

    report = validate_frames(summary, timeseries, run_info(), SPEC_A, RECORDS, Thresholds())

    assert set(failed(report)) == {"latency_percentiles_ordered"}
    message = report.summary_message()
    assert "UPDATE latency_p50_us is negative (-1)" in message
    assert "ALL latency_max_us is null" in message


def test_intended_latencies_are_checked_when_present() -> None:
    summary, timeseries = good_frames()
    for factor, name in zip((2, 3, 4, 6, 9, 14), PERCENTILES, strict=True):
        summary[f"intended_latency_{name}_us"] = 100.0 * factor
    ok = validate_frames(summary, timeseries, run_info(), SPEC_A, RECORDS, Thresholds())
    intended = {o.name: o for o in ok.results}["intended_latency_percentiles_ordered"]
    assert ok.success and "skipped" not in intended.details
    assert intended.observed["ALL"]["latency_max_us"] == 1400.0

    summary.loc[summary["operation"] == "ALL", "intended_latency_p90_us"] = 150.0
    report = validate_frames(summary, timeseries, run_info(), SPEC_A, RECORDS, Thresholds())
    assert set(failed(report)) == {"intended_latency_percentiles_ordered"}
    assert "ALL intended_latency_p90_us 150 < intended_latency_p50_us 200" in report.summary_message()


def test_a_gap_in_the_time_series_fails_timeseries_contiguous() -> None:
    summary, _ = good_frames()
    timeseries = timeseries_frame(["READ", "UPDATE"], [0, 1, 2, 3, 6, 7, 8, 9])

    report = validate_frames(summary, timeseries, run_info(), SPEC_A, RECORDS, Thresholds())

    assert set(failed(report)) == {"timeseries_contiguous"}
    outcome = failed(report)["timeseries_contiguous"]
    assert outcome.observed["missing"] == [[4, 5]]
    assert "seconds 4-5 of ALL missing (2 s)" in report.summary_message()

    # A longer allowed gap accepts it; a trailing gap is caught too.
    assert validate_frames(summary, timeseries, run_info(), SPEC_A, RECORDS, Thresholds(max_gap_s=3)).success
    short = timeseries_frame(["READ", "UPDATE"], list(range(8)))
    report = validate_frames(summary, short, run_info(), SPEC_A, RECORDS, Thresholds())
    assert "seconds 8-9 of ALL missing (2 s)" in report.summary_message()


def test_timeseries_allows_only_the_last_partial_second() -> None:
    summary, _ = good_frames()
    summary["duration_s"] = 9.5
    # 9.5 s measured: seconds 0..8 required, second 9 (the partial one) optional.
    for seconds in (list(range(9)), list(range(10))):
        timeseries = timeseries_frame(["READ", "UPDATE"], seconds)
        report = validate_frames(summary, timeseries, run_info(), SPEC_A, RECORDS, Thresholds())
        assert report.success, report.summary_message()

    beyond = timeseries_frame(["READ", "UPDATE"], [*range(10), 10])
    report = validate_frames(summary, beyond, run_info(), SPEC_A, RECORDS, Thresholds())
    assert set(failed(report)) == {"timeseries_contiguous"}
    assert "second 10 of ALL lies outside the measured window 0..9" in report.summary_message()

    duplicated = pd.concat([timeseries_frame(["READ", "UPDATE"], list(range(9))), timeseries_frame([], [3])])
    report = validate_frames(summary, duplicated, run_info(), SPEC_A, RECORDS, Thresholds())
    assert "second 3 of ALL appears more than once" in report.summary_message()


def test_zero_throughput_fails_throughput_positive() -> None:
    summary, timeseries = good_frames()
    summary.loc[summary["operation"] == "ALL", "throughput_ops_s"] = 0.0
    summary.loc[summary["operation"] == "READ", "throughput_ops_s"] = None

    report = validate_frames(summary, timeseries, run_info(), SPEC_A, RECORDS, Thresholds())

    assert set(failed(report)) == {"throughput_positive"}
    message = report.summary_message()
    assert "ALL throughput 0 ops/s" in message and "READ throughput null" in message


def test_a_connect_row_without_throughput_is_not_a_throughput_failure() -> None:
    # Failed connection attempts have a CONNECT row with errors only: error_ratio judges
    # them, throughput_positive must not (it did, as noise beside the real failure).
    summary, timeseries = good_frames()
    connect = summary_frame([summary_row("CONNECT", 0, errors=3)]).iloc[[0]]
    summary = pd.concat([summary, connect], ignore_index=True)

    report = validate_frames(summary, timeseries, run_info(), SPEC_A, RECORDS, Thresholds())

    throughput = {o.name: o for o in report.results}["throughput_positive"]
    assert throughput.success, report.summary_message()
    assert "CONNECT" not in throughput.observed and "ALL" in throughput.observed


def test_results_without_required_columns_fail_results_schema_only() -> None:
    summary, timeseries = good_frames()
    summary = summary.drop(columns=["latency_p999_us"])
    summary = summary[summary["operation"] != "ALL"]

    report = validate_frames(summary, timeseries, run_info(), SPEC_A, RECORDS, Thresholds())

    assert [o.name for o in report.results] == ["results_schema"]
    assert not report.success
    message = report.summary_message()
    assert "columns missing: latency_p999_us" in message
    assert "lack ['ALL']" in message
    assert message.endswith("The other expectations were not evaluated.")


def test_validation_json_is_written_atomically_and_round_trips(tmp_path: Path) -> None:
    summary, timeseries = good_frames()
    store_dir = write_store(tmp_path, summary, timeseries, run_info(seeded=999))
    report = validate_run(store_dir, SPEC_A, RECORDS, Thresholds(max_error_ratio=0.05))

    path = report.write(store_dir)

    assert path == store_dir / VALIDATION_FILE
    assert sorted(p.name for p in store_dir.iterdir()) == [
        "run.json",
        "summary.parquet",
        "timeseries.parquet",
        "validation.json",
    ]
    data = json.loads(path.read_text())
    assert data["success"] is False
    assert data["thresholds"] == {"max_error_ratio": 0.05, "mix_tolerance": 0.02, "max_gap_s": 1.0}
    assert data["message"] == report.summary_message()
    assert ValidationReport.from_dict(data) == report
    assert path.stat().st_mode & 0o777 == 0o644
    # Rewriting replaces the file in place.
    report.write(store_dir)
    assert ValidationReport.from_dict(json.loads(path.read_text())) == report


def test_a_custom_workload_uses_its_own_mix() -> None:
    spec = parse_spec({"name": "mixed", "operations": {"read": 0.5, "scan": 0.25, "rmw": 0.25}})
    summary = summary_frame(
        [summary_row("READ", 500), summary_row("SCAN", 250), summary_row("READ_MODIFY_WRITE", 250)]
    )
    timeseries = timeseries_frame(["READ", "SCAN", "READ_MODIFY_WRITE"], list(range(10)))

    report = validate_frames(summary, timeseries, run_info(), spec, RECORDS, Thresholds())

    assert report.success, report.summary_message()
    assert {o.name: o for o in report.results}["operations_executed"].observed == {
        "READ": 500,
        "SCAN": 250,
        "READ_MODIFY_WRITE": 250,
    }


def test_missing_results_files_raise_a_project_error(tmp_path: Path) -> None:
    summary, timeseries = good_frames()
    store_dir = write_store(
        tmp_path, summary, timeseries, run_info() | {"status": "failed", "error": "seed failed"}
    )
    (store_dir / "timeseries.parquet").unlink()
    with pytest.raises(OptiStackError, match=r"timeseries\.parquet is missing.*'failed'.*seed failed"):
        validate_run(store_dir, SPEC_A, RECORDS)
    with pytest.raises(OptiStackError, match=r"run\.json is missing"):
        validate_run(tmp_path, SPEC_A, RECORDS)


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"max_error_ratio": -0.1}, "max_error_ratio must be between 0 and 1"),
        ({"mix_tolerance": 2}, "mix_tolerance must be between 0 and 1"),
        ({"max_gap_s": 0}, "max_gap_s must be above 0"),
        ({"max_errors": 1}, "unknown validation threshold max_errors"),
        ({"max_gap_s": "soon"}, "must be numbers"),
    ],
)
def test_bad_thresholds_raise_a_project_error(values: dict[str, Any], problem: str) -> None:
    with pytest.raises(OptiStackError, match=problem):
        Thresholds.from_dict(values)


def test_thresholds_from_a_mapping() -> None:
    assert Thresholds.from_dict({"max_error_ratio": "0.05"}) == Thresholds(max_error_ratio=0.05)
    assert Thresholds.from_dict(None) == Thresholds()


def test_validation_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    summary, timeseries = good_frames()
    validate_frames(summary, timeseries, run_info(), SPEC_A, RECORDS, Thresholds())
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
