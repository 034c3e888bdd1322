"""Airflow finds the plugin in plugins/: its FastAPI app mounted, its entry in the UI navigation."""

import json
import os
import subprocess
import sys
import textwrap

from tests.plugins.conftest import BIN

NAV_ENTRY = {
    "name": "Benchmark reports",
    "href": "/optistack/reports/",
    "url_route": "optistack-reports",
    "destination": "nav",
}


def test_plugin_manager_registers_the_app_and_the_nav_entry(airflow_api):
    from airflow import plugins_manager
    from fastapi import FastAPI

    plugins, errors = plugins_manager._get_plugins()
    assert errors == {}
    assert "optistack_reports" in [p.name for p in plugins]

    apps, _ = plugins_manager.get_fastapi_plugins()
    ours = [a for a in apps if a["url_prefix"] == "/optistack"]
    assert len(ours) == 1 and isinstance(ours[0]["app"], FastAPI)

    external_views, _ = plugins_manager._get_ui_plugins()
    assert NAV_ENTRY in external_views


def test_the_app_is_mounted_in_airflows_api_app(airflow_api):
    from starlette.routing import Mount

    mounts = {route.path: route.app for route in airflow_api.app.routes if isinstance(route, Mount)}
    assert "/optistack" in mounts
    paths = {route.path for route in mounts["/optistack"].routes}
    assert {"/reports/", "/reports/{name:path}", "/api/runs", "/api/runs/{run_id}"} <= paths


def test_the_ui_gets_the_nav_entry_from_the_plugins_endpoint(airflow_api):
    # The UI builds its navigation from GET /api/v2/plugins: destination "nav" with a
    # url_route shows href in a frame at /plugin/optistack-reports.
    response = airflow_api.client.get("/api/v2/plugins", headers=airflow_api.headers("viewer"))

    assert response.status_code == 200
    plugin = next(p for p in response.json()["plugins"] if p["name"] == "optistack_reports")
    assert len(plugin["external_views"]) == 1
    assert NAV_ENTRY.items() <= plugin["external_views"][0].items()
    assert plugin["fastapi_apps"] == [
        {"app": "fastapi.applications.FastAPI", "url_prefix": "/optistack", "name": "OptiStack reports"}
    ]


def test_airflow_plugins_cli_lists_the_plugin(airflow_env):
    done = subprocess.run(
        [str(BIN / "airflow"), "plugins", "--output", "json"],
        env={**os.environ, **airflow_env},
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr
    plugins = {p["name"]: p for p in json.loads(done.stdout)}
    plugin = plugins["optistack_reports"]
    assert plugin["external_views"] == [NAV_ENTRY]
    assert plugin["fastapi_apps"] == [
        {"app": "fastapi.applications.FastAPI", "url_prefix": "/optistack", "name": "OptiStack reports"}
    ]
    assert plugin["source"] == "$PLUGINS_FOLDER/optistack_reports.py"


def test_the_nav_entry_follows_the_api_base_url(airflow_env):
    # Behind a path prefix ([api] base_url), the frame must load the app under that prefix.
    code = textwrap.dedent(
        """
        from airflow import plugins_manager
        views, _ = plugins_manager._get_ui_plugins()
        print([v["href"] for v in views if v["name"] == "Benchmark reports"])
        """
    )
    env = {**os.environ, **airflow_env, "AIRFLOW__API__BASE_URL": "https://airflow.example.com/team-a"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "['/team-a/optistack/reports/']"


def test_task_processes_load_the_plugin_without_the_web_stack(airflow_env):
    # Every task imports each plugins/ file (for macros): that must not pull in FastAPI,
    # Airflow's API security module or pandas.
    code = textwrap.dedent(
        """
        import sys
        from airflow.sdk import plugins_manager
        before = set(sys.modules)
        plugins, errors = plugins_manager._get_plugins()
        assert errors == {}, errors
        print(sorted(p.name for p in plugins))
        heavy = ("fastapi", "starlette", "pandas", "pyarrow", "airflow.api_fastapi", "reports")
        print(sorted(m for m in set(sys.modules) - before if m.startswith(heavy)))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **airflow_env},
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr
    loaded, heavy = done.stdout.strip().splitlines()[-2:]
    assert "optistack_reports" in loaded
    assert heavy == "[]"
