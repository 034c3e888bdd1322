"""OptiStack's Airflow plugin: the benchmark reports and a JSON API of runs, inside Airflow.

It mounts a FastAPI app at `/optistack` (under `[api] base_url`'s path):

- `GET /optistack/reports/`               the reports index (`<results>/reports/index.html`)
- `GET /optistack/reports/<name>.html`    one report, byte for byte as written
- `GET /optistack/api/runs`               every run, newest first (`reports.history.list_runs`)
- `GET /optistack/api/runs/<run_id>`      one run's per-store status, throughput and p50/p99
- `GET /optistack/api/runs/<run_id>/live` a running run's latest per-second figures, per store

and adds "Benchmark reports" to the UI navigation, which shows the index inside the UI.

A plugin's FastAPI app is open to anyone unless it asks for authentication itself, so every
route depends on Airflow's own `get_user` (a bearer token, or the UI's session cookie) and
then asks the auth manager whether that user may read the runs of the OptiStack DAGs.

Airflow imports every file of the plugins folder in every process that loads plugins,
task processes included (for macros), so this module imports only the plugin class at
the top. FastAPI, Airflow's API security and the pandas-backed results reader are
imported when the API server first asks for the app.
"""

# No `from __future__ import annotations`: FastAPI reads the dependency annotations of the
# routes below at runtime, and they are imported inside create_app(), not at module level.
import html
import os
import stat
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.plugins_manager import AirflowPlugin

if TYPE_CHECKING:
    from fastapi import FastAPI

URL_PREFIX = "/optistack"
UI_ROUTE = "optistack-reports"  # the UI shows the reports at <base>/plugin/optistack-reports
REPORTS_DIR = "reports"
INDEX_FILE = "index.html"

# Reading a report is reading what these DAGs produced: the same permission as reading their runs.
RESULT_DAG_IDS = ("optistack_benchmark", "optistack_nightly")

# Reports are self-contained (inline CSS, inline SVG, no script), so nothing may be fetched or
# run; only the Airflow UI on the same origin may frame them. The report's own <meta> policy
# says the same, but frame-ancestors only works as a header.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # Reports are behind a login and the index changes with every run.
    "Cache-Control": "private, no-cache",
}

# One row per operation: what `GET /api/runs/<id>` gives of each summary.parquet row.
OPERATION_COLUMNS = ("operation", "ops", "errors", "throughput_ops_s", "latency_p50_us", "latency_p99_us")


def api_root_path() -> str:
    """The path Airflow serves its API and UI under (`[api] base_url`'s path), ending in `/`."""
    from airflow.configuration import conf

    path = urlsplit(conf.get("api", "base_url", fallback="") or "").path
    return path if path.endswith("/") else f"{path}/"


def reports_dir() -> Path:
    """`<results>/reports`, read from `OPTISTACK_RESULTS` on every request."""
    from workloads.config import results_root

    return results_root() / REPORTS_DIR


def report_file(folder: Path, name: str) -> Path | None:
    """The report file `name` names inside `folder`, or None when it must not be served.

    Only a plain `*.html` file name (no separators, no leading dot) is accepted, and only
    when the file it resolves to, symlinks followed, is a regular file inside `folder`.
    `name` is the URL path already percent-decoded once by the server; it is never decoded
    again, so `%252e%252e%252f` stays a (missing) file name.
    """
    if (
        not name.endswith(".html")
        or name.startswith(".")
        or any(sep in name for sep in ("/", "\\", "\0"))
        or os.path.isabs(name)
    ):
        return None
    base = folder.resolve()
    try:
        target = (base / name).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, unreadable, or a symlink loop
        return None
    if not target.is_relative_to(base) or not target.is_file():
        return None
    return target


def read_report(path: Path) -> bytes | None:
    """The bytes of a file `report_file` accepted, or None if it changed into something else.

    The path is already resolved; O_NOFOLLOW refuses a symlink swapped in since then.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        return handle.read()


def _json_value(value: Any) -> Any:
    """A pandas/numpy cell as JSON: numpy scalars as Python numbers, NaN and NA as null."""
    import pandas as pd

    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def run_summary(run: Any) -> dict[str, Any]:
    """One run (`reports.history.RunResults`) as the small JSON `GET /api/runs/<id>` returns.

    Per store: its status and error, the overall throughput (the `ALL` row), and per
    operation the ops, errors, throughput and p50/p99 latency in µs. A store that failed
    before measuring has no operations and a null throughput.
    """
    workload = run.first("workload")
    stores = []
    for name, store in run.stores.items():
        operations = []
        if store.summary is not None:
            columns = [c for c in OPERATION_COLUMNS if c in store.summary.columns]
            for row in store.summary[columns].to_dict("records"):
                operations.append({c: _json_value(row.get(c)) for c in OPERATION_COLUMNS})
        overall = next((op for op in operations if op["operation"] == "ALL"), None)
        stores.append(
            {
                "store": name,
                "status": store.status,
                "error": store.error,
                "throughput_ops_s": overall["throughput_ops_s"] if overall else None,
                "operations": operations,
            }
        )
    return {
        "run_id": run.run_id,
        "label": run.label,
        "workload": workload.get("name") if isinstance(workload, dict) else None,
        "status": run.status,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "stores": stores,
    }


def _page(title: str, message: str) -> str:
    """A minimal page for the UI's frame when there is no report to show."""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>"
        '<body style="font-family: sans-serif; margin: 2rem">'
        f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p></body></html>"
    )


@cache
def create_app() -> "FastAPI":
    """The FastAPI app the plugin mounts at `/optistack` (built once, on first use)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.api_fastapi.core_api.security import GetUserDep
    from fastapi import Depends, FastAPI, HTTPException, Request, Response, status
    from fastapi.responses import HTMLResponse

    def can_read_results(user: GetUserDep) -> None:
        # GetUserDep (`get_user`) takes a bearer token or the UI's `_token` cookie: 401 without.
        # The DAG ids are fixed here, never taken from the request, so `?dag_id=` cannot widen access.
        from airflow.configuration import conf

        auth_manager = get_auth_manager()
        for dag_id in RESULT_DAG_IDS:
            team_name = None
            if conf.getboolean("core", "multi_team", fallback=False):
                from airflow.models.dag import DagModel

                team_name = DagModel.get_team_name(dag_id)
            if auth_manager.is_authorized_dag(
                method="GET",
                access_entity=DagAccessEntity.RUN,
                details=DagDetails(id=dag_id, team_name=team_name),
                user=user,
            ):
                return
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"Forbidden: benchmark reports need read access to the runs of {' or '.join(RESULT_DAG_IDS)}",
        )

    app = FastAPI(
        title="OptiStack reports",
        dependencies=[Depends(can_read_results)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)  # errors (401, 403, 404) get the headers too
        response.headers.update(SECURITY_HEADERS)
        return response

    def html_file(name: str) -> Response:
        folder = reports_dir()
        path = report_file(folder, name)
        content = read_report(path) if path is not None else None
        if content is None:
            if name == INDEX_FILE:
                return HTMLResponse(
                    _page(
                        "No benchmark reports yet",
                        "Reports appear here once a run has written one: trigger the "
                        "optistack_benchmark DAG, or run `optistack run` / `optistack report`.",
                    ),
                    status_code=status.HTTP_404_NOT_FOUND,
                )
            return HTMLResponse(
                _page("No such report", f"There is no report {name!r}."),
                status_code=status.HTTP_404_NOT_FOUND,
            )
        # The bytes as written, untouched: the report is UTF-8 and says so in its <meta>.
        return Response(content, media_type="text/html; charset=utf-8")

    @app.get("/reports/", name="reports_index")
    def reports_index() -> Response:
        return html_file(INDEX_FILE)

    @app.get("/reports/{name:path}", name="report")
    def report(name: str) -> Response:
        # `:path` so that every name under /reports/, slashes and dots included, is checked
        # here rather than matched (or not) by the router.
        return html_file(name)

    @app.get("/api/runs")
    def runs() -> list[dict[str, Any]]:
        from reports.history import list_runs
        from workloads.config import results_root

        return list_runs(results_root())

    @app.get("/api/runs/{run_id}")
    def run(run_id: str) -> dict[str, Any]:
        from reports.history import load_run
        from workloads.config import results_root
        from workloads.errors import OptiStackError

        try:
            results = load_run(results_root(), run_id)
        except OptiStackError:
            # Not the library's message: it names the server's results folder.
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no run {run_id!r}") from None
        return run_summary(results)

    @app.get("/api/runs/{run_id}/live")
    def live(run_id: str) -> dict[str, Any]:
        from workloads.config import results_root
        from workloads.live import read_live

        stores = read_live(results_root(), run_id)
        if stores is None:  # unknown, invalid, or every store already published
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"run {run_id!r} is not running")
        return {"run_id": run_id, "stores": stores}

    return app


class OptiStackReportsPlugin(AirflowPlugin):
    """Benchmark reports and runs API behind Airflow's auth, with a UI navigation entry."""

    name = "optistack_reports"
    external_views = [
        {
            "name": "Benchmark reports",
            # With url_route the UI shows href in a frame at <base>/plugin/optistack-reports,
            # keeping the Airflow navigation around it; the frame sends the session cookie.
            "href": f"{api_root_path()}{URL_PREFIX.strip('/')}/{REPORTS_DIR}/",
            "url_route": UI_ROUTE,
            "destination": "nav",
        }
    ]

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        # A property, so the app (and FastAPI, and Airflow's API security) is only built
        # where Airflow asks for it: the API server, or `airflow plugins`.
        return [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "OptiStack reports"}]
