"""`GET /optistack/api/runs/<run_id>/live`: a staged run's live.json, behind the same auth and
path checks as the other routes. live.json is written by the runner's own `LiveFeed`."""

import json
import os
import time
from pathlib import Path

import pytest

from tests.plugins.conftest import NEW_RUN
from workloads.live import LiveFeed
from workloads.results import LIVE_FILE, publish, staging_dir, store_dir

RUN = "20261204T230000Z-live"
SECOND = {
    "second": 3,
    "phase": "measuring",
    "elapsed_s": 9.5,
    "operations": {
        "READ": {
            "ops": 900,
            "errors": 1,
            "latency_p50_us": 180.0,
            "latency_p99_us": 700.0,
            "latency_max_us": 2e3,
        },
        "ALL": {
            "ops": 900,
            "errors": 1,
            "latency_p50_us": 180.0,
            "latency_p99_us": 700.0,
            "latency_max_us": 2e3,
        },
    },
}


@pytest.fixture
def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A results root with RUN staged for redis mid-load (two seconds fed) and a published run."""
    root = tmp_path / "results"
    feed = LiveFeed(root, RUN, "redis", "a")
    feed({**SECOND, "second": 2})
    feed(SECOND)
    (staging_dir(root, RUN, "postgres")).mkdir(parents=True)  # staged, but not loading yet
    (store_dir(root, "done-run", "redis")).mkdir(parents=True)  # published: not running
    monkeypatch.setenv("OPTISTACK_RESULTS", str(root))
    return root


def test_a_running_runs_live_figures_are_served_per_store(airflow_api, running):
    response = airflow_api.client.get(f"/optistack/api/runs/{RUN}/live", headers=airflow_api.headers())

    assert response.status_code == 200
    body = response.json()
    assert body["run_id"] == RUN and list(body["stores"]) == ["redis"]
    live = body["stores"]["redis"]
    assert 0 <= live.pop("age_s") < 60  # just written
    assert live == json.loads((staging_dir(running, RUN, "redis") / LIVE_FILE).read_text())
    assert (live["run_id"], live["store"], live["stage"], live["phase"]) == (
        RUN,
        "redis",
        "load",
        "measuring",
    )
    assert live["latest"] == {"second": 3, "operations": SECOND["operations"]}
    assert live["totals"] == {"READ": {"ops": 1800, "errors": 2}, "ALL": {"ops": 1800, "errors": 2}}
    assert live["seconds_measured"] == 2


def test_a_run_that_stopped_writing_shows_its_age(airflow_api, running):
    # A killed runner leaves live.json behind: its age, not its figures, says so.
    path = staging_dir(running, RUN, "redis") / LIVE_FILE
    an_hour_ago = time.time() - 3600
    os.utime(path, (an_hour_ago, an_hour_ago))

    response = airflow_api.client.get(f"/optistack/api/runs/{RUN}/live", headers=airflow_api.headers())

    assert response.status_code == 200
    assert 3600 <= response.json()["stores"]["redis"]["age_s"] < 3700


def test_the_live_route_needs_credentials(airflow_api, running):
    assert airflow_api.client.get(f"/optistack/api/runs/{RUN}/live").status_code == 401


@pytest.mark.parametrize("run_id", ["no-such-run", "done-run", NEW_RUN])
def test_an_unknown_or_finished_run_is_404(airflow_api, running, run_id):
    response = airflow_api.client.get(f"/optistack/api/runs/{run_id}/live", headers=airflow_api.headers())

    assert response.status_code == 404
    assert response.json() == {"detail": f"run {run_id!r} is not running"}


def test_publishing_removes_live_json_and_the_route_answers_404(airflow_api, running):
    published = publish(running, RUN, "redis")

    response = airflow_api.client.get(f"/optistack/api/runs/{RUN}/live", headers=airflow_api.headers())

    assert response.status_code == 404
    assert not (published / LIVE_FILE).exists()


@pytest.mark.parametrize("run_id", ["..", "%2e%2e", "..%2f..%2foutside", ".hidden", "%2Ftmp"])
def test_run_ids_that_leave_the_runs_folder_are_refused(airflow_api, running, tmp_path, run_id):
    # A live.json one level up, where `..` would lead, and a hidden run folder.
    outside = tmp_path / "results" / "runs" / ".store=redis.staging"
    outside.mkdir(parents=True)
    (outside / LIVE_FILE).write_text('{"secret": "outside"}')
    LiveFeed(running, ".hidden", "redis", "a")(SECOND)

    response = airflow_api.client.get(f"/optistack/api/runs/{run_id}/live", headers=airflow_api.headers())

    assert response.status_code == 404, run_id
    assert b"outside" not in response.content and b"measuring" not in response.content


def test_symlinked_staging_folders_and_files_are_not_followed(airflow_api, running, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / LIVE_FILE).write_text('{"secret": "elsewhere"}')
    run = running / "runs" / "run_id=linked"
    run.mkdir(parents=True)
    (run / ".store=redis.staging").symlink_to(elsewhere)  # a staging folder that is a link
    (run / ".store=mysql.staging").mkdir()
    (run / ".store=mysql.staging" / LIVE_FILE).symlink_to(elsewhere / LIVE_FILE)  # a file that is a link

    response = airflow_api.client.get("/optistack/api/runs/linked/live", headers=airflow_api.headers())

    assert response.status_code == 404
    assert b"elsewhere" not in response.content
