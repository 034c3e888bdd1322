"""Reading results back: all runs' summaries, one run in full, the listing of runs."""

from __future__ import annotations

import json
from datetime import datetime

import pandas as pd
import pyarrow.parquet as pq
import pytest

from reports.history import list_runs, load_run, load_runs
from reports.model import percentile_curve
from tests.reports.conftest import StoreSpec
from workloads.errors import OptiStackError


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_load_runs_reads_every_summary_row_of_every_run(tmp_path, make_run):
    make_run(tmp_path, "run-1", stores=[StoreSpec("postgres"), StoreSpec("redis")])
    make_run(
        tmp_path, "run-2", stores=[StoreSpec("postgres"), StoreSpec("mysql", status="failed", error="x")]
    )

    frame = load_runs(tmp_path)

    # READ, UPDATE and ALL per measured store; the failed store has no summary rows.
    assert len(frame) == 9
    assert sorted(frame.groupby(["run_id", "store"]).size().items()) == [
        (("run-1", "postgres"), 3),
        (("run-1", "redis"), 3),
        (("run-2", "postgres"), 3),
    ]
    assert set(frame["operation"]) == {"READ", "UPDATE", "ALL"}
    assert (frame["throughput_ops_s"] > 0).all()


def test_load_runs_tolerates_a_run_written_before_newer_columns_existed(tmp_path, make_run):
    old = StoreSpec("postgres", drop_columns=("latency_p999_us", "histogram", "intended_latency_p99_us"))
    make_run(tmp_path, "old-run", stores=[old])
    make_run(tmp_path, "new-run", stores=[StoreSpec("postgres")])
    assert (
        "latency_p999_us"
        not in pq.read_schema(tmp_path / "runs/run_id=old-run/store=postgres/summary.parquet").names
    )

    frame = load_runs(tmp_path)

    old_rows, new_rows = frame[frame["run_id"] == "old-run"], frame[frame["run_id"] == "new-run"]
    assert len(old_rows) == len(new_rows) == 3
    assert old_rows["latency_p999_us"].isna().all()
    assert old_rows["histogram"].isna().all()
    assert new_rows["latency_p999_us"].notna().all()
    assert new_rows["histogram"].notna().all()
    assert (old_rows["latency_p99_us"] > 0).all()


def test_load_runs_ignores_a_store_folder_still_being_written(tmp_path, make_run):
    make_run(tmp_path, "run-1", stores=[StoreSpec("postgres")])
    # The engine writes `.store=<store>.<random>` aside and renames it: it is not a result yet.
    hidden = tmp_path / "runs/run_id=run-1/.store=redis.1234abcd"
    hidden.mkdir()
    (hidden / "summary.parquet").write_bytes(b"half a file")

    assert set(load_runs(tmp_path)["store"]) == {"postgres"}
    assert list(load_run(tmp_path, "run-1").stores) == ["postgres"]


def test_load_runs_without_results_is_empty(tmp_path):
    assert load_runs(tmp_path).empty
    assert list_runs(tmp_path) == []


def test_load_run_reads_every_file_and_a_failed_store_with_only_run_json(tmp_path, make_run):
    make_run(tmp_path, "run-1", stores=[
        StoreSpec("redis", status="degraded", errors=5, max_error_ratio=0.0),
        StoreSpec("mysql", status="failed", error="seed: table optistack_usertable is missing"),
    ])  # fmt: skip

    run = load_run(tmp_path, "run-1")

    redis, mysql = run.stores["redis"], run.stores["mysql"]
    assert redis.status == "degraded"
    assert set(redis.summary["operation"]) == {"READ", "UPDATE", "ALL"}
    assert (redis.timeseries["second"].max(), len(redis.timeseries)) == (29, 90)
    assert int(redis.errors["count"].sum()) == 5
    assert redis.validation["success"] is False
    assert len(redis.slowest) == 10
    assert redis.run["server"] == {"product": "Redis", "version": "7.2.5"}
    assert mysql.status == "failed"
    assert mysql.error == "seed: table optistack_usertable is missing"
    assert (mysql.summary, mysql.timeseries, mysql.errors, mysql.validation) == (None, None, None, None)
    assert run.status == "failed"


def test_load_run_of_an_unknown_run_says_which_runs_exist(tmp_path, make_run):
    make_run(tmp_path, "run-1")
    with pytest.raises(OptiStackError, match=r"no run 'nope'.*run-1"):
        load_run(tmp_path, "nope")


@pytest.mark.parametrize("run_id", ["../etc", "a/b", ".hidden", ""])
def test_a_run_id_cannot_escape_the_results_root(tmp_path, run_id):
    with pytest.raises(OptiStackError, match="not valid"):
        load_run(tmp_path, run_id)


def test_list_runs_is_newest_first_and_json_serialisable(tmp_path, make_run):
    # Run ids that sort the other way round alphabetically: the order must come from started_at.
    make_run(tmp_path, "c-oldest", started_at=at("2026-12-01T20:00:00+00:00"))
    make_run(tmp_path, "a-newest", started_at=at("2026-12-03T20:00:00+00:00"), label="after the upgrade")
    make_run(tmp_path, "b-middle", started_at=at("2026-12-02T21:00:00+01:00"))

    runs = list_runs(tmp_path)

    assert [r["run_id"] for r in runs] == ["a-newest", "b-middle", "c-oldest"]
    assert json.loads(json.dumps(runs)) == runs
    newest = runs[0]
    assert newest["stores"] == ["mysql", "postgres"]
    assert newest["statuses"] == {"mysql": "failed", "postgres": "ok"}
    assert newest["status"] == "failed"
    assert newest["workload"] == "a"
    assert newest["label"] == "after the upgrade"
    assert newest["started_at"] == "2026-12-03T20:00:00+00:00"
    assert newest["report"] is None


def test_the_stored_histogram_gives_a_full_curve_that_agrees_with_the_columns(tmp_path, make_run):
    make_run(tmp_path, "run-1", stores=[StoreSpec("postgres")])
    row = load_run(tmp_path, "run-1").stores["postgres"].summary.set_index("operation").loc["ALL"].to_dict()

    curve = percentile_curve(row)

    assert curve.from_histogram
    assert len(curve.percentiles) > 50
    assert curve.values_us == sorted(curve.values_us)
    assert curve.max_us == row["latency_max_us"]
    at_p99 = curve.values_us[min(range(len(curve.percentiles)), key=lambda i: abs(curve.percentiles[i] - 99))]
    assert at_p99 == pytest.approx(row["latency_p99_us"], rel=0.05)


def test_without_a_histogram_the_curve_is_the_stored_percentiles():
    row = {"latency_p50_us": 100.0, "latency_p90_us": 150.0, "latency_p95_us": 170.0,
           "latency_p99_us": 250.0, "latency_p999_us": pd.NA, "latency_max_us": 900.0, "histogram": None}  # fmt: skip
    curve = percentile_curve(row)
    assert not curve.from_histogram
    assert (curve.percentiles, curve.values_us, curve.max_us) == ([50, 90, 95, 99], [100, 150, 170, 250], 900)
