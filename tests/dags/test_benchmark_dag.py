"""`optistack_benchmark` end to end with `dag.test()`, against real PostgreSQL and Redis.

One run benchmarks PostgreSQL (from an Airflow Connection whose URL carries a password
the trust-auth server ignores), Redis (from OPTISTACK_REDIS_URL, database 3) and MySQL
pointed at a closed port: the two real stores succeed, MySQL fails, and the report
still comes out, naming MySQL failed and why.
"""

from __future__ import annotations

import json
import secrets
import socket
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from tests.dags.conftest import DagRunResult, run_dag

pytestmark = pytest.mark.slow

POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
PASSWORD = "not-" + secrets.token_hex(6)  # in the Connection's URL; trust auth ignores it
STAGES = ["store.provision", "store.seed", "store.run", "store.validate", "store.publish"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


def table_exists(namespace: str) -> bool:
    with psycopg.connect(POSTGRES, connect_timeout=5) as conn:
        return conn.execute("SELECT to_regclass(%s)", (namespace,)).fetchone()[0] is not None


class Run:
    def __init__(self, result: DagRunResult, results: Path, namespace: str) -> None:
        from optistack_common import engine_run_id

        self.result = result
        self.results = results
        self.namespace = namespace
        self.run_id = engine_run_id(result.run_id)
        self.run_dir = results / "runs" / f"run_id={self.run_id}"

    def store(self, store: str) -> Path:
        return self.run_dir / f"store={store}"

    def run_json(self, store: str) -> dict:
        return json.loads((self.store(store) / "run.json").read_text())


@pytest.fixture(scope="module")
def run(dagbag, tmp_path_factory: pytest.TempPathFactory) -> Run:
    results = tmp_path_factory.mktemp("results")
    namespace = f"optistack_dagtest_{secrets.token_hex(3)}"
    conf = {
        "stores": ["postgres", "redis", "mysql"],
        "workload": "b",
        "record_count": 1000,
        "duration_s": 3,
        "warmup_s": 1,
        "users": 2,
        "processes": 1,
        "namespace": namespace,
    }
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OPTISTACK_RESULTS", str(results))
        env.setenv("AIRFLOW_CONN_OPTISTACK_POSTGRES", POSTGRES.replace("postgres@", f"postgres:{PASSWORD}@"))
        env.setenv("OPTISTACK_REDIS_URL", "redis://127.0.0.1:6379/3")
        env.setenv("OPTISTACK_MYSQL_URL", f"mysql://root@127.0.0.1:{closed_port()}/test")
        result = run_dag(dagbag.get_dag("optistack_benchmark"), conf)
    return Run(result, results, namespace)


def test_real_stores_run_every_stage_and_the_failed_one_is_still_published(run: Run) -> None:
    states = run.result.states
    assert states["plan"] == ["success"]
    assert run.result.labels["store.provision"] == ["postgres", "redis", "mysql"]  # map index names
    for stage in STAGES:
        postgres, redis, mysql = states[stage]
        assert (postgres, redis) == ("success", "success"), stage
        expected = {"store.provision": "failed", "store.publish": "success"}.get(stage, "upstream_failed")
        assert mysql == expected, stage
    # The report is written, then fails the task, which marks the whole run failed.
    assert states["report"] == ["failed"]
    assert run.result.state == "failed"


def test_summaries_of_both_real_stores_are_read_back(run: Run) -> None:
    for store in ("postgres", "redis"):
        summary = pd.read_parquet(run.store(store) / "summary.parquet")
        assert set(summary["operation"]) == {"READ", "UPDATE", "ALL"}
        all_row = summary[summary["operation"] == "ALL"].iloc[0]
        assert all_row["ops"] > 0 and all_row["errors"] == 0
        assert all_row["run_id"] == run.run_id and all_row["workload"] == "b"
        assert 0 < all_row["latency_p50_us"] <= all_row["latency_p99_us"]
        info = run.run_json(store)
        assert info["status"] == "ok" and info["error"] is None
        assert info["seed"]["count"] == 1000
        assert (run.store(store) / "validation.json").exists()
    # the run id is the Airflow run id, file-safe: a rerun of the DAG run replaces these folders
    assert run.result.run_id.startswith("manual__") and run.run_id.startswith("manual__")


def test_the_failed_store_says_why(run: Run) -> None:
    info = run.run_json("mysql")
    assert info["status"] == "failed"
    assert info["error"].startswith("provision: cannot connect to mysql")
    assert "Connection refused" in info["error"]


def test_the_report_shows_both_stores_and_the_failure(run: Run) -> None:
    report = run.results / "reports" / f"{run.run_id}.html"
    html = report.read_text()
    for store in ("postgres", "redis", "mysql"):
        assert store in html
    assert "failed" in html and "cannot connect to mysql" in html
    assert run.run_id in (run.results / "reports" / "index.html").read_text()
    assert f"report of run {run.run_id}: {report}" in run.result.log
    assert "not every store succeeded" in run.result.log and "mysql: failed: provision" in run.result.log


def test_task_logs_carry_the_engine_progress_lines(run: Run) -> None:
    log = run.result.log
    for line in ("[postgres] seeded 1,000 records", "[redis] load: 2 users in 1 processes", "measuring:"):
        assert line in log, line
    assert "[redis] validation passed" in log


def test_no_password_in_xcom_logs_results_or_report(run: Run) -> None:
    assert PASSWORD not in json.dumps(run.result.xcoms, default=str)
    assert PASSWORD not in run.result.log
    for path in run.results.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".html"):
            assert PASSWORD not in path.read_text(), path
    (plan,) = {json.dumps(item["plan"]) for item in run.result.xcoms["plan"][0]}
    assert "postgres:***@127.0.0.1" in plan


def test_publish_announces_each_store_on_the_results_asset(run: Run) -> None:
    events = sorted(
        (extra["store"], extra["status"])
        for uri, extra in run.result.asset_events
        if uri == "optistack://results/runs"
    )
    assert events == [("mysql", "failed"), ("postgres", "ok"), ("redis", "ok")]


def test_the_store_is_torn_down(run: Run) -> None:
    assert not table_exists(run.namespace)


BAD_CONFS = [
    ({"stores": ["postgres", "oracle"]}, "unknown store 'oracle'"),
    ({"record_count": 0}, "record_count (--records): Input should be greater than or equal to 1"),
    ({"stores": ["postgres", "redis", "postgres"]}, "store postgres is listed twice"),
    ({"users": -3}, "users (--users): Input should be greater than or equal to 1"),
]


@pytest.mark.parametrize(("conf", "message"), BAD_CONFS, ids=["unknown-store", "no-records", "dup", "users"])
def test_bad_confs_are_refused_before_anything_is_provisioned(
    dagbag, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, conf: dict, message: str
) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    from workloads.errors import OptiStackError

    monkeypatch.setenv("OPTISTACK_RESULTS", str(tmp_path))
    monkeypatch.setenv("AIRFLOW_CONN_OPTISTACK_POSTGRES", POSTGRES)
    monkeypatch.setenv("OPTISTACK_REDIS_URL", "redis://127.0.0.1:6379/3")
    dag = dagbag.get_dag("optistack_benchmark")
    namespace = f"optistack_dagtest_{secrets.token_hex(3)}"
    # Airflow itself refuses the conf when the run is triggered (form, REST API, CLI) ...
    with pytest.raises(ParamValidationError):
        dag.test(run_conf={**conf, "namespace": namespace})
    # ... and should a conf ever reach the run unchecked, the plan task refuses it.
    params = {name: dag.params[name] for name in dag.params} | conf | {"namespace": namespace}
    with pytest.raises(OptiStackError) as refused:
        dag.get_task("plan").python_callable(params=params, run_id="manual__bad-conf")
    assert message in str(refused.value)
    assert not (tmp_path / "runs").exists()
    assert not table_exists(namespace)


def test_a_conf_the_form_cannot_catch_fails_the_plan_task_and_nothing_runs(
    dagbag, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPTISTACK_RESULTS", str(tmp_path))
    monkeypatch.setenv("AIRFLOW_CONN_OPTISTACK_POSTGRES", POSTGRES)
    namespace = f"optistack_dagtest_{secrets.token_hex(3)}"
    conf = {"stores": ["postgres"], "record_cont": 5, "namespace": namespace}  # a misspelt key
    result = run_dag(dagbag.get_dag("optistack_benchmark"), conf)
    assert result.states["plan"] == ["failed"]
    assert "unknown setting(s) record_cont" in result.log
    for stage in STAGES:
        assert result.states[stage] == ["upstream_failed"], stage
    assert result.states["report"] == ["failed"]
    assert "nothing to report: the plan task refused this run" in result.log
    assert result.state == "failed"
    assert not (tmp_path / "runs").exists()
    assert not table_exists(namespace)


def test_a_connection_stored_in_airflow_is_found_by_the_tasks(dagbag, tmp_path: Path, monkeypatch) -> None:
    """What the UI or `airflow connections add` makes: a Connection in the metadata database."""
    from airflow.models import Connection
    from airflow.utils.session import create_session

    monkeypatch.setenv("OPTISTACK_RESULTS", str(tmp_path))
    conn = Connection.from_json(
        '{"conn_type": "generic", "host": "db.example", "port": 5432, "login": "bench",'
        f' "password": "{PASSWORD}", "schema": "bench"}}',
        conn_id="optistack_postgres",
    )
    with create_session() as session:
        session.add(conn)
    try:  # only the plan runs: it validates the URL without connecting
        result = run_dag(
            dagbag.get_dag("optistack_benchmark"),
            {"stores": ["postgres"]},
            mark_success_pattern=r"store\..*|report",
        )
    finally:
        with create_session() as session:
            session.query(Connection).filter(Connection.conn_id == "optistack_postgres").delete()
    assert result.states["plan"] == ["success"]
    (items,) = result.xcoms["plan"]
    assert items[0]["plan"]["urls"] == {"postgres": "postgresql://bench:***@db.example:5432/bench"}
    assert PASSWORD not in json.dumps(result.xcoms) + result.log
