"""Locust's distributed mode as a user runs it: `optistack run --master` and two `optistack worker`s.

Everything runs on this machine over loopback, but as separate processes that share
nothing but the master's TCP port: the workers get no store URL in their environment, so
the load configuration can only have come from the master.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from tests.conftest import free_port, optistack
from tests.conftest import start_worker as start_any_worker
from workloads.recorder import PERCENTILES, decode, new_histogram

# Only what a worker on another machine would have: no store URL, no load configuration.
WORKER_ENV = {
    k: v for k, v in os.environ.items() if not (k.startswith("OPTISTACK_") and k.endswith("_URL"))
} | {"PYTHONUNBUFFERED": "1"}


def start_worker(port: int, log: Path, *extra: str) -> subprocess.Popen:
    return start_any_worker(port, log, *extra, env=WORKER_ENV)


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_two_remote_workers_add_up_exactly(tmp_path: Path, store_server) -> None:
    redis = store_server("redis")
    results = tmp_path / "results"
    port = free_port()
    # The workers start first, as in a deployment where they wait for each run's master.
    workers = [start_worker(port, tmp_path / f"worker-{i}.log") for i in range(2)]
    try:
        proc = optistack(
            "run", "--store", "redis", "--workload", "b", "--records", "1000", "--duration", "3",
            "--warmup", "1", "--users", "4", "--master", "--expect-workers", "2",
            "--master-bind-host", "127.0.0.1", "--master-port", str(port), "--worker-wait", "60",
            "--run-id", "dist", "--results", str(results), "--namespace", f"optistack_dist_{secrets.token_hex(3)}",
            "--url", f"redis={redis.url}", "--no-report",
        )  # fmt: skip
        codes = [w.wait(timeout=60) for w in workers]  # --once: each serves this run, then exits
    finally:
        stop(workers)
    logs = [(tmp_path / f"worker-{i}.log").read_text() for i in range(2)]
    assert proc.returncode == 0, proc.stdout + proc.stderr + "\n".join(logs)
    assert codes == [0, 0], logs
    assert "load worker 2 of 2 connected" in proc.stdout
    assert "in 2 remote workers" in proc.stdout

    store = results / "runs" / "run_id=dist" / "store=redis"
    info = json.loads((store / "run.json").read_text())
    summary = pd.read_parquet(store / "summary.parquet").set_index("operation")
    per_process = info["load"]["per_process"]
    all_row = summary.loc["ALL"]
    print("summary ALL:", {k: all_row[k] for k in ("ops", "errors", "latency_p50_us", "latency_p99_us")})
    print("per process:", [{k: v for k, v in p.items() if k != "histogram"} for p in per_process])

    # Both workers ran, as key partitions 0 and 1 (Locust's worker indexes).
    assert info["status"] == "ok", info.get("error")
    assert info["settings"]["processes"] == 2 and info["settings"]["expect_workers"] == 2
    assert [p["process"] for p in per_process] == [0, 1]
    assert all(p["ops"] > 0 for p in per_process), per_process
    assert all_row["errors"] == 0
    # The run's total is the sum of the workers' operations.
    assert int(all_row["ops"]) == sum(p["ops"] for p in per_process) == info["load"]["ops"]

    # One histogram of every sample: the workers' histograms added (exact in HdrHistogram).
    merged = new_histogram()
    for p in per_process:
        histogram = decode(p["histogram"])
        assert histogram.get_total_count() == p["ops"]
        merged.add(histogram)
    assert merged.get_total_count() == all_row["ops"]
    for name, q in PERCENTILES.items():
        assert all_row[f"latency_{name}_us"] == merged.get_value_at_percentile(q), name
    assert all_row["latency_max_us"] == merged.get_max_value()
    # The summary's stored ALL histogram is that same histogram, bucket for bucket.
    stored = decode(all_row["histogram"])
    assert stored.get_total_count() == merged.get_total_count()
    assert [(v.value_iterated_to, v.count_at_value_iterated_to) for v in stored.get_recorded_iterator()] == [
        (v.value_iterated_to, v.count_at_value_iterated_to) for v in merged.get_recorded_iterator()
    ]

    # For the report: what averaging the workers' percentiles would have given instead.
    for name, q in PERCENTILES.items():
        per_worker = [decode(p["histogram"]).get_value_at_percentile(q) for p in per_process]
        print(f"{name}: merged {merged.get_value_at_percentile(q)}, workers {per_worker}, "
              f"naive average {sum(per_worker) / len(per_worker)}")  # fmt: skip


def test_a_looping_worker_serves_one_master_after_another(tmp_path: Path, store_server) -> None:
    """Without --once a worker (here two Locust processes, --processes 2) serves every
    store of a run, one master after the other, until it is stopped."""
    redis, postgres = store_server("redis"), store_server("postgres")
    port = free_port()
    results = tmp_path / "results"
    log = tmp_path / "worker.log"
    worker = subprocess.Popen(
        [sys.executable, "-m", "workloads", "worker", "--master-host", "127.0.0.1", "--master-port", str(port),
         "--processes", "2"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=WORKER_ENV,
    )  # fmt: skip
    try:
        proc = optistack(
            "run", "--store", "redis", "--store", "postgres", "--workload", "b", "--records", "500",
            "--duration", "2", "--warmup", "1", "--users", "2", "--master", "--expect-workers", "2",
            "--master-bind-host", "127.0.0.1", "--master-port", str(port), "--worker-wait", "60",
            "--run-id", "loop", "--results", str(results), "--namespace", f"optistack_dist_{secrets.token_hex(3)}",
            "--url", f"redis={redis.url}", "--url", f"postgres={postgres.url}", "--no-report",
        )  # fmt: skip
        assert worker.poll() is None, log.read_text()  # still serving, waiting for the next master
        worker.terminate()
        code = worker.wait(timeout=30)
    finally:
        stop([worker])
    assert proc.returncode == 0, proc.stdout + proc.stderr + log.read_text()
    assert code == 143, log.read_text()  # SIGTERM unwinds it like Ctrl-C
    for store in ("redis", "postgres"):
        info = json.loads((results / "runs" / "run_id=loop" / f"store={store}" / "run.json").read_text())
        assert info["status"] == "ok", info.get("error")
        assert [p["process"] for p in info["load"]["per_process"]] == [0, 1]
        assert all(p["ops"] > 0 for p in info["load"]["per_process"])
    assert log.read_text().count("ended (exit code 0)") == 2, log.read_text()
    # Its Locust processes left with it (they run in their own process group).
    time.sleep(1)
    left = [p.pid for p in psutil.process_iter(["cmdline"]) if str(port) in " ".join(p.info["cmdline"] or [])]
    assert left == [], left


def test_a_master_whose_workers_never_come_fails_in_time_and_says_what_to_start(
    tmp_path: Path, store_server
) -> None:
    redis = store_server("redis")
    port = free_port()
    results = tmp_path / "results"
    worker = start_worker(port, tmp_path / "worker.log")  # one of the two it waits for
    try:
        t0 = time.monotonic()
        proc = optistack(
            "run", "--store", "redis", "--workload", "c", "--records", "200", "--duration", "2", "--warmup", "0",
            "--users", "2", "--master", "--expect-workers", "2", "--master-bind-host", "127.0.0.1",
            "--master-port", str(port), "--worker-wait", "4", "--run-id", "lonely", "--results", str(results),
            "--namespace", f"optistack_dist_{secrets.token_hex(3)}", "--url", f"redis={redis.url}", "--no-report",
        )  # fmt: skip
        elapsed = time.monotonic() - t0
    finally:
        stop([worker])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out  # the store failed; the run itself completed
    assert elapsed < 60, elapsed
    info = json.loads((results / "runs" / "run_id=lonely" / "store=redis" / "run.json").read_text())
    assert info["status"] == "failed"
    error = info["error"]
    assert "only 1 of 2 Locust workers connected" in error, error
    assert f"optistack worker --master-host 127.0.0.1 --master-port {port}" in error, error
    assert "within 4s" in error
    assert "Traceback" not in out


def test_a_worker_too_many_is_refused(tmp_path: Path, store_server) -> None:
    """A third worker would get index 2 and insert keys that belong to worker 0."""
    redis = store_server("redis")
    port = free_port()
    results = tmp_path / "results"
    workers = [start_worker(port, tmp_path / f"worker-{i}.log") for i in range(3)]
    try:
        proc = optistack(
            "run", "--store", "redis", "--workload", "b", "--records", "200", "--duration", "3", "--warmup", "1",
            "--users", "4", "--master", "--expect-workers", "2", "--master-bind-host", "127.0.0.1",
            "--master-port", str(port), "--worker-wait", "30", "--run-id", "crowd", "--results", str(results),
            "--namespace", f"optistack_dist_{secrets.token_hex(3)}", "--url", f"redis={redis.url}", "--no-report",
        )  # fmt: skip
        codes = [w.wait(timeout=60) for w in workers]  # the master's quit reaches every worker
    finally:
        stop(workers)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert codes == [0, 0, 0]
    info = json.loads((results / "runs" / "run_id=crowd" / "store=redis" / "run.json").read_text())
    assert info["status"] == "failed"
    assert "a load worker too many connected" in info["error"] and "index 2; 2 expected" in info["error"]
    assert not (results / "runs" / "run_id=crowd" / "store=redis" / "summary.parquet").exists()


USAGE_ERRORS = [
    (["--master"], "--master needs --expect-workers"),
    (["--expect-workers", "2"], "--expect-workers needs --master"),
    (["--master-port", "6000"], "only apply with --master --expect-workers"),
    (["--master", "--expect-workers", "2", "--processes", "3"], "the remote workers are the load processes"),
    (["--master", "--expect-workers", "4", "--users", "2"], "fewer than --expect-workers 4"),
    (["--master", "--expect-workers", "0"], "expect_workers (--expect-workers)"),
    (["--master", "--expect-workers", "2", "--master-port", "70000"], "master_port (--master-port)"),
]


@pytest.mark.parametrize(("args", "message"), USAGE_ERRORS, ids=[m for _, m in USAGE_ERRORS])
def test_distributed_usage_errors_are_refused_before_anything_starts(
    tmp_path: Path, args: list[str], message: str
) -> None:
    results = tmp_path / "results"
    env = {"OPTISTACK_REDIS_URL": "redis://127.0.0.1:6379/1", "OPTISTACK_HOME": str(tmp_path / "home")}
    proc = optistack("run", "--store", "redis", *args, "--results", str(results), env=env, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (results / "runs").exists()


def test_a_malformed_master_port_variable_is_refused(tmp_path: Path) -> None:
    env = {"OPTISTACK_REDIS_URL": "redis://127.0.0.1:6379/1", "OPTISTACK_MASTER_PORT": "fifty"}
    proc = optistack(
        "run",
        "--store",
        "redis",
        "--master",
        "--expect-workers",
        "2",
        "--results",
        str(tmp_path / "r"),
        env=env,
    )
    assert proc.returncode == 2 and "OPTISTACK_MASTER_PORT='fifty'" in proc.stderr, proc.stderr
    worker = optistack("worker", "--master-host", "127.0.0.1", "--once", env=env)
    assert worker.returncode == 2 and "OPTISTACK_MASTER_PORT='fifty'" in worker.stderr, worker.stderr


def test_worker_needs_a_master_host() -> None:
    proc = optistack("worker", "--once", timeout=60)
    assert proc.returncode == 2
    assert "--master-host" in proc.stderr
