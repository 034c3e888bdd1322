"""`optistack_benchmark` with `expect_workers`: a store's load phase on two remote workers."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import free_port, start_worker
from tests.dags.conftest import run_dag

pytestmark = pytest.mark.slow


def test_the_load_task_is_the_master_of_remote_workers(dagbag, tmp_path: Path) -> None:
    from optistack_common import engine_run_id

    results = tmp_path / "results"
    port = free_port()
    # What the docker-compose worker service runs, with --once and this test's port; no store URL.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPTISTACK_", "AIRFLOW_CONN_"))}
    workers = [start_worker(port, tmp_path / f"worker-{i}.log", env=env) for i in range(2)]
    conf = {
        "stores": ["redis"],
        "workload": "b",
        "record_count": 1000,
        "duration_s": 3,
        "warmup_s": 1,
        "users": 2,
        "expect_workers": 2,
        "namespace": f"optistack_distdag_{secrets.token_hex(3)}",
    }
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("OPTISTACK_RESULTS", str(results))
            mp.setenv("OPTISTACK_REDIS_URL", "redis://127.0.0.1:6379/3")
            mp.setenv("OPTISTACK_MASTER_PORT", str(port))
            result = run_dag(dagbag.get_dag("optistack_benchmark"), conf)
        codes = [w.wait(timeout=60) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    assert result.states["store.run"] == ["success"], result.log[-3000:]
    assert codes == [0, 0]
    assert "[redis] load: 2 users in 2 remote workers (master on 0.0.0.0:" in result.log
    store = results / "runs" / f"run_id={engine_run_id(result.run_id)}" / "store=redis"
    info = json.loads((store / "run.json").read_text())
    per_process = info["load"]["per_process"]
    assert info["settings"]["expect_workers"] == 2 and [p["process"] for p in per_process] == [0, 1]
    assert all(p["ops"] > 0 for p in per_process)
    summary = pd.read_parquet(store / "summary.parquet").set_index("operation")
    assert summary.loc["ALL", "ops"] == sum(p["ops"] for p in per_process)
