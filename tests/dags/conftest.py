"""Airflow for the DAG tests: a throwaway AIRFLOW_HOME with a SQLite database.

Airflow reads its configuration when `airflow` is first imported, so the environment
is set here, at collection, before any test module imports it; the database is
migrated once per session (`airflow db migrate`). `dag.test()` then needs nothing
else: it syncs the DAGs folder to the database and runs every task in this process,
with an in-process execution API.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"

if "airflow" in sys.modules:  # pragma: no cover - a guard, not a test
    raise RuntimeError(
        "airflow was imported before tests/dags/conftest.py could point AIRFLOW_HOME at a test "
        "directory; import airflow lazily in other test packages' conftest files"
    )

_HOME = Path(tempfile.mkdtemp(prefix="optistack-airflow-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(_HOME / "logs"),
    }
)
# What the DAG processor does for a bundle: DAG files import optistack_common beside them.
if str(DAGS) not in sys.path:
    sys.path.append(str(DAGS))


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[Path]:
    """A migrated SQLite metadata database, once per session; removed afterwards."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
        timeout=300,
    )
    yield _HOME
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def dagbag(airflow_db: Path) -> Any:
    """Every DAG file parsed the way the DAG processor parses a bundle."""
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=DAGS, bundle_path=DAGS)


@pytest.fixture(autouse=True)
def _no_stray_store_urls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only the URLs a test sets: none from the developer's shell or `optistack local up`."""
    for name in list(os.environ):
        if (name.startswith("OPTISTACK_") and name.endswith("_URL")) or name.startswith(
            "AIRFLOW_CONN_OPTISTACK_"
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OPTISTACK_HOME", str(tmp_path / "no-local-servers"))


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(f"{record.name}: {record.getMessage()}")
        except Exception:  # a record that cannot format is not what a test looks for
            self.lines.append(f"{record.name}: {record.msg!r}")


@dataclass
class DagRunResult:
    """A finished `dag.test()` run, read back from the metadata database."""

    run_id: str
    state: str
    states: dict[str, list[str]] = field(default_factory=dict)  # task id -> states of its instances
    labels: dict[str, list[str]] = field(default_factory=dict)  # task id -> rendered map index
    xcoms: dict[str, list[Any]] = field(default_factory=dict)  # task id -> return values
    log: str = ""
    asset_events: list[tuple[str, dict]] = field(default_factory=list)  # (uri, extra)


def _param_values(dag: Any) -> list[tuple[Any, Any]]:
    """Every Param object of the DAG and its tasks, with a copy of its current value."""
    params = {}
    for params_dict in [dag.params, *(task.params for task in dag.tasks)]:
        for name in params_dict:
            param = params_dict.get_param(name)
            params[id(param)] = (param, copy.deepcopy(param.value))
    return list(params.values())


def run_dag(
    dag: Any, conf: dict | None = None, logical_date: dt.datetime | None = None, **test_kwargs: Any
) -> DagRunResult:
    """`dag.test()` with the log lines of every logger collected, then its outcome from the DB."""
    from airflow.models import TaskInstance
    from airflow.models.asset import AssetEvent
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    collector = _Collector()
    root = logging.getLogger()
    root.addHandler(collector)
    # dag.test() runs the tasks in this process, and merging a run's conf into the params sets
    # the value of the DAG's own Param objects; the dagbag is shared by the session, so without
    # this one test's conf (a sweep, `processes: 1`) would be the next test's default.
    defaults = _param_values(dag)
    try:
        if logical_date:
            test_kwargs["logical_date"] = logical_date
        dagrun = dag.test(run_conf=conf, **test_kwargs)
    finally:
        root.removeHandler(collector)
        for param, value in defaults:
            param.value = value
    result = DagRunResult(run_id=dagrun.run_id, state=str(dagrun.state), log="\n".join(collector.lines))
    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == dagrun.run_id
            )
        ).all()
        for ti in sorted(tis, key=lambda t: (t.task_id, t.map_index)):
            result.states.setdefault(ti.task_id, []).append(str(ti.state))
            result.labels.setdefault(ti.task_id, []).append(ti.rendered_map_index)
        rows = session.execute(
            select(XComModel.task_id, XComModel.value).where(
                XComModel.dag_id == dag.dag_id, XComModel.run_id == dagrun.run_id
            )
        ).all()
        for task_id, value in rows:
            result.xcoms.setdefault(task_id, []).append(value)
        events = session.scalars(
            select(AssetEvent).where(
                AssetEvent.source_dag_id == dag.dag_id, AssetEvent.source_run_id == dagrun.run_id
            )
        ).all()
        result.asset_events = [(event.asset.uri, dict(event.extra or {})) for event in events]
    return result
