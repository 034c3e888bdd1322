"""`optistack` as a user runs it: a real run read back from Parquet, and bad input refused."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest

from tests.conftest import optistack
from workloads.results import OPERATION_ORDER

SECRET = "Sup3rSecretPw"
SUMMARY_COLUMNS = {
    "run_id",
    "store",
    "workload",
    "operation",
    "ops",
    "errors",
    "duration_s",
    "throughput_ops_s",
    "latency_p50_us",
    "latency_p90_us",
    "latency_p95_us",
    "latency_p99_us",
    "latency_p999_us",
    "latency_max_us",
    "latency_mean_us",
}
TIMESERIES_COLUMNS = {
    "run_id",
    "store",
    "operation",
    "second",
    "ops",
    "errors",
    "latency_p50_us",
    "latency_p99_us",
    "latency_max_us",
}


def with_password(url: str) -> str:
    # PostgreSQL here trusts local connections, so the password is accepted and ignored:
    # it still travels through every layer that must keep it out of the outputs.
    return url.replace("postgres@", f"postgres:{SECRET}@", 1)


def test_run_writes_the_results_contract_and_keeps_secrets_out(tmp_path: Path, store_server) -> None:
    postgres = store_server("postgres")
    redis = store_server("redis")
    results = tmp_path / "results"
    proc = optistack(
        "run",
        "--store",
        "postgres",
        "--store",
        "redis",
        "--workload",
        "b",
        "--records",
        "2000",
        "--duration",
        "3",
        "--warmup",
        "1",
        "--users",
        "4",
        "--processes",
        "2",
        "--run-id",
        "e2e-1",
        "--results",
        str(results),
        "--namespace",
        "optistack_cli_e2e",
        "--url",
        f"postgres={with_password(postgres.url)}",
        "--url",
        f"redis={redis.url}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "progress" not in out  # progress lines are passed on without their marker
    assert "postgres" in out and "READ" in out and "p99.9" in out
    assert "report:" in out

    summary = pd.concat(
        pd.read_parquet(p) for p in sorted((results / "runs").glob("run_id=*/store=*/summary.parquet"))
    )
    assert set(summary.columns) >= SUMMARY_COLUMNS
    assert set(summary["store"]) == {"postgres", "redis"}
    for store, rows in summary.groupby("store"):
        assert list(rows["operation"]) == [op for op in OPERATION_ORDER if op in {"READ", "UPDATE", "ALL"}]
        all_row = rows[rows["operation"] == "ALL"].iloc[0]
        assert all_row["ops"] == rows[rows["operation"] != "ALL"]["ops"].sum() > 0
        assert all_row["errors"] == 0
        assert all_row["duration_s"] == pytest.approx(3.0)
        assert all_row["latency_p50_us"] <= all_row["latency_p99_us"] <= all_row["latency_max_us"]
        read_share = rows[rows["operation"] == "READ"]["ops"].iloc[0] / all_row["ops"]
        assert 0.85 < read_share < 1.0, store  # workload b: 95% reads

        store_dir = results / "runs" / "run_id=e2e-1" / f"store={store}"
        series = pd.read_parquet(store_dir / "timeseries.parquet")
        assert set(series.columns) >= TIMESERIES_COLUMNS
        assert sorted(series[series["operation"] == "ALL"]["second"]) == [0, 1, 2]
        info = json.loads((store_dir / "run.json").read_text())
        assert info["status"] == "ok"
        assert info["seed"]["count"] == 2000
        assert info["server"]["version"]
        assert info["settings"]["users"] == 4
        validation = json.loads((store_dir / "validation.json").read_text())
        assert validation["success"] is True

    # the hive layout reads as one dataset with the partition columns
    dataset = ds.dataset(results / "runs", format="parquet", partitioning="hive")
    assert {"run_id", "store"} <= set(dataset.schema.names)

    # no output anywhere carries the password
    assert SECRET not in proc.stdout + proc.stderr
    for path in results.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    info = json.loads((results / "runs" / "run_id=e2e-1" / "store=postgres" / "run.json").read_text())
    assert "***" in info["url"]


def test_rerun_of_a_run_id_replaces_only_that_store(tmp_path: Path, store_server) -> None:
    redis = store_server("redis")
    results = tmp_path / "results"
    args = [
        "run",
        "--store",
        "redis",
        "--workload",
        "c",
        "--records",
        "500",
        "--duration",
        "2",
        "--warmup",
        "0",
        "--users",
        "2",
        "--processes",
        "1",
        "--results",
        str(results),
        "--url",
        f"redis={redis.url}",
        "--namespace",
        "optistack_cli_rerun",
        "--no-report",
    ]
    first = optistack(*args, "--run-id", "keep-me")
    assert first.returncode == 0, first.stdout + first.stderr
    for _ in range(2):
        again = optistack(*args, "--run-id", "rerun")
        assert again.returncode == 0, again.stdout + again.stderr
    runs = sorted(p.name for p in (results / "runs").iterdir())
    assert runs == ["run_id=keep-me", "run_id=rerun"]
    assert [p.name for p in (results / "runs" / "run_id=rerun").iterdir()] == ["store=redis"]


BAD_INPUTS = [
    (["--store", "oracle"], "unknown store 'oracle'"),
    (["--store", "redis", "--store", "redis"], "listed twice"),
    (["--store", "redis", "--records", "-5"], "--records"),
    (["--store", "redis", "--records", str(10**12)], "record_count"),
    (["--store", "redis", "--users", "0"], "--users"),
    (["--store", "redis", "--duration", "0"], "--duration"),
    (["--store", "redis", "--workload", "nope.yaml"], "unknown workload 'nope.yaml'"),
    (["--store", "redis", "--url", "redis=not a url"], "malformed"),
    (["--store", "redis", "--url", "redis=http://127.0.0.1:6379"], "scheme 'http'"),
    (["--store", "redis", "--url", "redis=redis://127.0.0.1:99999"], "malformed"),
    (["--store", "redis", "--run-id", "../escape"], "run id"),
    (["--store", "redis", "--namespace", "users"], "must start with 'optistack_'"),
    (["--store", "cassandra", "--url", "redis=redis://127.0.0.1:6379"], "no URL for cassandra"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input_is_refused_before_anything_starts(tmp_path: Path, args: list[str], message: str) -> None:
    results = tmp_path / "results"
    env = {"OPTISTACK_REDIS_URL": "redis://127.0.0.1:6379/1", "OPTISTACK_HOME": str(tmp_path / "home")}
    env.pop("OPTISTACK_CASSANDRA_URL", None)
    proc = optistack("run", *args, "--results", str(results), env=env, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (results / "runs").exists()  # nothing was provisioned or written


def test_bad_workload_file_names_what_to_fix(tmp_path: Path) -> None:
    workload = tmp_path / "mix.yaml"
    workload.write_text("operations: {read: 0.5, update: 0.4}\nrequest_distribution: pareto\n")
    proc = optistack(
        "run",
        "--store",
        "redis",
        "--workload",
        str(workload),
        "--results",
        str(tmp_path / "r"),
        env={"OPTISTACK_REDIS_URL": "redis://127.0.0.1:6379/1"},
        timeout=60,
    )
    assert proc.returncode == 2
    assert "unknown request_distribution 'pareto'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unwritable_results_folder_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = optistack(
        "run",
        "--store",
        "redis",
        "--results",
        str(blocker / "results"),
        env={"OPTISTACK_REDIS_URL": "redis://127.0.0.1:6379/1"},
        timeout=60,
    )
    assert proc.returncode == 2
    assert "is not writable" in proc.stderr and "--results" in proc.stderr


def test_unreachable_store_fails_that_store_and_says_why(tmp_path: Path, store_server) -> None:
    redis = store_server("redis")
    results = tmp_path / "results"
    proc = optistack(
        "run",
        "--store",
        "mysql",
        "--store",
        "redis",
        "--records",
        "200",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--users",
        "1",
        "--processes",
        "1",
        "--results",
        str(results),
        "--run-id",
        "partial",
        "--namespace",
        "optistack_cli_partial",
        "--connect-timeout",
        "2",
        "--no-report",
        "--url",
        f"mysql=mysql://root:{SECRET}@127.0.0.1:1/test",
        "--url",
        f"redis={redis.url}",
    )
    assert proc.returncode == 1  # a store failed
    assert "FAILED" in proc.stdout and "cannot connect to mysql" in proc.stdout
    assert SECRET not in proc.stdout + proc.stderr
    mysql = json.loads((results / "runs" / "run_id=partial" / "store=mysql" / "run.json").read_text())
    assert mysql["status"] == "failed" and "cannot connect" in mysql["error"]
    redis_info = json.loads((results / "runs" / "run_id=partial" / "store=redis" / "run.json").read_text())
    assert redis_info["status"] == "ok"


def test_stores_lists_every_store_and_whether_it_answers(store_server) -> None:
    redis = store_server("redis")
    proc = optistack(
        "stores", "--url", f"redis={redis.url}", "--url", "mysql=mysql://root@127.0.0.1:1/test", timeout=60
    )
    assert proc.returncode == 0
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert set(lines) == {"cassandra", "cockroachdb", "dynamodb", "mongodb", "mysql", "postgres", "redis"}
    assert "answers: Redis" in lines["redis"] or "answers: Valkey" in lines["redis"]
    assert "does not answer" in lines["mysql"]


def test_a_sweep_with_repeats_gives_a_curve_and_confidence_intervals(tmp_path: Path, store_server) -> None:
    redis = store_server("redis")
    results = tmp_path / "results"
    proc = optistack(
        "run",
        "--store",
        "redis",
        "--workload",
        "c",
        "--records",
        "500",
        "--duration",
        "2",
        "--warmup",
        "0",
        "--users",
        "1,2",
        "--repeats",
        "2",
        "--processes",
        "1",
        "--results",
        str(results),
        "--run-id",
        "sweep",
        "--namespace",
        "optistack_cli_sweep",
        "--url",
        f"redis={redis.url}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 repeats: throughput" in proc.stdout and "95% CI" in proc.stdout
    for step, users in (("sweep.u1", 1), ("sweep.u2", 2)):
        folder = results / "runs" / f"run_id={step}" / "store=redis"
        info = json.loads((folder / "run.json").read_text())
        assert info["sweep"] == {"id": "sweep", "parameter": "users", "value": users, "values": [1, 2]}
        assert info["settings"]["users"] == users
        summary = pd.read_parquet(folder / "summary.parquet")
        all_row = summary[summary["operation"] == "ALL"].iloc[0]
        repeats = pd.read_parquet(folder / "repeats.parquet")
        per_repeat = repeats[repeats["operation"] == "ALL"].sort_values("repeat")
        assert list(per_repeat["repeat"]) == [0, 1]
        # the merged row holds every repeat's operations; the mean is the repeats' mean
        assert all_row["ops"] == per_repeat["ops"].sum()
        assert all_row["repeats"] == 2
        assert all_row["throughput_mean_ops_s"] == pytest.approx(per_repeat["throughput_ops_s"].mean())
        assert all_row["throughput_ci95_low_ops_s"] <= all_row["throughput_mean_ops_s"]
        assert all_row["throughput_mean_ops_s"] <= all_row["throughput_ci95_high_ops_s"]
        series = pd.read_parquet(folder / "timeseries.parquet")
        assert sorted(set(series["repeat"])) == [0, 1]
    report = (results / "reports" / "sweep.u2.html").read_text()
    assert 'id="sweep"' in report
