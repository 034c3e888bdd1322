"""`optistack_benchmark` with a users sweep from the trigger form, against the real Redis."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from tests.dags.conftest import run_dag

pytestmark = pytest.mark.slow


def test_a_users_sweep_runs_each_step_and_the_report_draws_the_curve(dagbag, tmp_path: Path) -> None:
    from optistack_common import engine_run_id

    results = tmp_path / "results"
    dag = dagbag.get_dag("optistack_benchmark")
    conf = {
        "stores": ["redis"],
        "workload": "c",
        "record_count": 500,
        "duration_s": 2,
        "warmup_s": 0,
        "users": 16,  # each step's users come from the sweep
        "processes": 1,
        "sweep_users": [1, 3],
        "namespace": f"optistack_sweepdag_{secrets.token_hex(3)}",
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPTISTACK_RESULTS", str(results))
        mp.setenv("OPTISTACK_REDIS_URL", "redis://127.0.0.1:6379/3")
        result = run_dag(dag, conf)

    assert result.state == "success", result.log[-3000:]
    assert result.labels["store.run"] == ["users=1 redis", "users=3 redis"]
    base = engine_run_id(result.run_id)
    for step, users in enumerate((1, 3)):
        info = json.loads(
            (results / "runs" / f"run_id={base}.u{users}" / "store=redis" / "run.json").read_text()
        )
        assert info["status"] == "ok"
        assert info["settings"]["users"] == users
        # each step seeds and drops its own namespace: Airflow may interleave their stages
        assert info["settings"]["namespace"] == f"{conf['namespace']}_{step}"
        assert info["seed"]["count"] == 500
        assert info["sweep"] == {"id": base, "parameter": "users", "value": users, "values": [1, 3]}
    (reports,) = result.xcoms["report"]
    assert reports == [str(results / "reports" / f"{base}.u{users}.html") for users in (1, 3)]
    assert 'id="sweep"' in Path(reports[-1]).read_text()
    # run_dag puts the DAG's params back: the next dag.test() in this session does not sweep.
    assert dag.params["sweep_users"] == []
