"""A sweep triggered through the REST API and run by Airflow's own scheduler.

`dag.test()` (the other DAG tests) runs every ready task in turn, one mapped group after
the other. The scheduler does not: with Airflow's default priority rule it ran every
`provision` first, then every `seed`, and the second sweep step's PostgreSQL seed failed
on the first one's rows. This test runs `airflow standalone` (api-server, scheduler,
dag-processor, LocalExecutor, SQLite) on a free port, triggers a two-step users sweep on
the real PostgreSQL the way a user does, and checks that both steps succeed, each in its
own namespace, and that nothing is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import free_port
from tests.dags.conftest import DAGS

pytestmark = pytest.mark.slow

POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
START_TIMEOUT_S = 240  # `airflow db migrate` of a new SQLite database, then every component
RUN_TIMEOUT_S = 240


class Airflow:
    """The REST API of a running `airflow standalone`, as user admin."""

    def __init__(self, port: int, home: Path, log: Path) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.home = home
        self.log = log
        self.token = ""

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.base}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def wait_until(self, what: str, check, timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if (result := check()) is not None:
                    return result
            time.sleep(2)
        pytest.fail(f"{what} within {timeout_s:.0f} s; airflow standalone said:\n{self.tail()}")

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def airflow(tmp_path: Path) -> Iterator[Airflow]:
    port, worker_logs, trigger_logs = free_port(), free_port(), free_port()
    home = tmp_path / "airflow_home"
    home.mkdir()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
        # its log servers too, so an Airflow already running on this machine does not clash
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(worker_logs),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(trigger_logs),
        "OPTISTACK_RESULTS": str(tmp_path / "results"),
        "OPTISTACK_POSTGRES_URL": POSTGRES,
    }
    log = tmp_path / "standalone.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "airflow", "standalone"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its components share this process group
        )
    api = Airflow(port, home, log)
    try:

        def answers() -> bool | None:
            if proc.poll() is not None:
                pytest.fail(f"airflow standalone exited with {proc.returncode}:\n{api.tail()}")
            return api.request("GET", "/api/v2/version")[0] == 200 or None

        api.wait_until("the API server did not answer", answers, START_TIMEOUT_S)
        passwords = home / "simple_auth_manager_passwords.json.generated"
        password = api.wait_until(
            "no admin password was generated",
            lambda: json.loads(passwords.read_text()).get("admin") if passwords.exists() else None,
            30,
        )
        status, body = api.request("POST", "/auth/token", {"username": "admin", "password": password})
        assert status in (200, 201), body
        api.token = body["access_token"]
        yield api
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # components that outlive standalone's own exit
        proc.wait()


def table_exists(name: str) -> bool:
    with psycopg.connect(POSTGRES, connect_timeout=5) as conn:
        return conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is not None


def test_a_sweep_triggered_through_the_api_runs_under_the_scheduler(airflow: Airflow, tmp_path: Path) -> None:
    dag = "/api/v2/dags/optistack_benchmark"
    airflow.wait_until(
        "the DAG processor did not parse optistack_benchmark",
        lambda: airflow.request("GET", dag)[0] == 200 or None,
        120,
    )
    status, body = airflow.request("PATCH", dag, {"is_paused": False})
    assert status == 200, body

    namespace = f"optistack_schedtest_{secrets.token_hex(3)}"
    conf = {
        "stores": ["postgres"],
        "workload": "c",
        "record_count": 500,
        "duration_s": 2,
        "warmup_s": 0,
        "processes": 1,
        "sweep_users": [1, 2],
        "namespace": namespace,
    }
    status, body = airflow.request("POST", f"{dag}/dagRuns", {"logical_date": None, "conf": conf})
    assert status == 200, body
    run_id = body["dag_run_id"]
    run = f"{dag}/dagRuns/{urllib.parse.quote(run_id, safe='')}"

    def finished() -> str | None:
        state = airflow.request("GET", run)[1]["state"]
        return state if state in ("success", "failed") else None

    state = airflow.wait_until(f"run {run_id} did not finish", finished, RUN_TIMEOUT_S)
    _, body = airflow.request("GET", f"{run}/taskInstances?limit=100")
    instances = {(t["task_id"], t["rendered_map_index"]): t["state"] for t in body["task_instances"]}
    assert state == "success", f"{instances}\n{airflow.tail()}"
    for label in ("users=1 postgres", "users=2 postgres"):
        for stage in ("provision", "seed", "run", "validate", "publish"):
            assert instances[(f"store.{stage}", label)] == "success"

    from optistack_common import engine_run_id

    base = engine_run_id(run_id)
    for step, users in enumerate((1, 2)):
        info = json.loads(
            (
                tmp_path / "results" / "runs" / f"run_id={base}.u{users}" / "store=postgres" / "run.json"
            ).read_text()
        )
        assert info["status"] == "ok"
        assert info["settings"]["users"] == users
        assert info["settings"]["namespace"] == f"{namespace}_{step}"
        assert info["seed"]["count"] == 500
        assert not table_exists(f"{namespace}_{step}")  # each step dropped its own table
    assert (tmp_path / "results" / "reports" / f"{base}.u2.html").is_file()
