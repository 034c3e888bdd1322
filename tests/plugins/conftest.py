"""Airflow's own API app with the OptiStack plugin loaded from plugins/, and its real auth.

The session gets a temporary AIRFLOW_HOME with a SQLite metadata database made by
`airflow db migrate` (token checks read the revoked-token table), the default
SimpleAuthManager with two configured users, and `airflow.api_fastapi.app.create_app`,
the app `airflow api-server` serves. Tokens come from its `POST /auth/token`, exactly as
a client or the UI login gets them.

Airflow is imported only inside the fixtures, after the environment is set, and the
settings it caches (plugins folder, ORM engine, loaded plugins) are reset around the
session, so these tests neither depend on nor leak into whatever else imported Airflow.
"""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.reports.conftest import StoreSpec, write_run

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "plugins"
BIN = Path(sys.executable).parent
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
JWT_SECRET = "optistack-plugin-tests-" + "0123456789abcdef" * 4  # >= 64 bytes: no HMAC warning
PASSWORDS = {"admin": "admin-password", "viewer": "viewer-password"}

OLD_RUN = "20261203T201500Z-aa01"  # postgres + redis, labelled, no report written
NEW_RUN = "20261204T201500Z-ab12"  # postgres ok + mysql failed, with its report and the index


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a small Airflow deployment, with its metadata database migrated."""
    home = tmp_path_factory.mktemp("airflow_home")
    (home / "dags").mkdir()
    passwords = home / "simple_auth_manager_passwords.json"
    passwords.write_text(json.dumps(PASSWORDS))
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API_AUTH__JWT_SECRET": JWT_SECRET,
    }
    done = subprocess.run(
        [str(BIN / "airflow"), "db", "migrate"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"airflow db migrate failed:\n{done.stdout}\n{done.stderr}"
    return env


def _reset_airflow() -> None:
    """Make Airflow re-read its settings from the environment and forget loaded plugins."""
    from airflow import plugins_manager, settings
    from airflow.api_fastapi import app as api_app

    settings.configure_vars()
    settings.prepare_syspath_for_config_and_plugins()
    settings.reconfigure_orm()
    for value in vars(plugins_manager).values():
        if hasattr(value, "cache_clear"):  # the @cache'd plugin loaders
            value.cache_clear()
    api_app.purge_cached_app()


@dataclass
class AirflowApi:
    """The Airflow API app under test, a client for it, and the deployment's environment."""

    app: Any  # fastapi.FastAPI
    client: Any  # fastapi.testclient.TestClient
    env: dict[str, str]

    def token(self, username: str = "viewer") -> str:
        """A JWT from Airflow's own login endpoint, as a client or the UI login gets it."""
        response = self.client.post(
            "/auth/token", json={"username": username, "password": PASSWORDS[username]}
        )
        assert response.status_code == 201, response.text
        return response.json()["access_token"]

    def headers(self, username: str = "viewer") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(username)}"}


@pytest.fixture(scope="package")  # torn down, and Airflow reset, when tests/plugins is done
def airflow_api(airflow_env: dict[str, str]) -> Iterator[AirflowApi]:
    with pytest.MonkeyPatch.context() as patch:
        for key, value in airflow_env.items():
            patch.setenv(key, value)
        _reset_airflow()
        from airflow.api_fastapi.app import create_app
        from fastapi.testclient import TestClient

        app = create_app("core")
        yield AirflowApi(app=app, client=TestClient(app), env=airflow_env)
    _reset_airflow()  # back to the environment the session started with


@pytest.fixture(scope="session")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results root with two runs in the results layout; the newer one has its report."""
    from reports.render import write_report

    root = tmp_path_factory.mktemp("results")
    write_run(
        root,
        OLD_RUN,
        stores=[StoreSpec("postgres"), StoreSpec("redis")],
        started_at=datetime.fromisoformat("2026-12-03T20:15:00+00:00"),
        label="Nightly: workload a, 16 users",
    )
    write_run(root, NEW_RUN)  # postgres ok, mysql failed with only a run.json
    write_report(root, NEW_RUN)  # also writes reports/index.html
    return root


@pytest.fixture
def results(two_runs: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The two-run results root, as the plugin finds it (OPTISTACK_RESULTS)."""
    monkeypatch.setenv("OPTISTACK_RESULTS", str(two_runs))
    return two_runs


@pytest.fixture
def empty_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A results root of this test's own, with an empty reports folder."""
    root = tmp_path / "results"
    (root / "reports").mkdir(parents=True)
    monkeypatch.setenv("OPTISTACK_RESULTS", str(root))
    return root
