"""The plugin's routes through Airflow's API app: auth, the served bytes, path safety, the JSON API."""

import http.client
import json
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import free_port
from tests.plugins.conftest import NEW_RUN, OLD_RUN
from tests.reports.conftest import StoreSpec, write_run

ROUTES = [
    "/optistack/reports/",
    "/optistack/reports/index.html",
    f"/optistack/reports/{NEW_RUN}.html",
    "/optistack/api/runs",
    f"/optistack/api/runs/{NEW_RUN}",
]
SECRET = b"<html>secret outside the reports folder</html>"


def report_bytes(results: Path, name: str) -> bytes:
    return (results / "reports" / name).read_bytes()


# --- authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ROUTES)
def test_every_route_refuses_a_request_without_credentials(airflow_api, results, path):
    response = airflow_api.client.get(path)

    assert response.status_code == 401
    assert response.json() == {"detail": "Not authenticated"}


@pytest.mark.parametrize("path", ROUTES)
def test_every_route_answers_with_a_token_from_airflows_login(airflow_api, results, path):
    response = airflow_api.client.get(path, headers=airflow_api.headers("viewer"))

    assert response.status_code == 200


def test_the_ui_session_cookie_is_accepted(airflow_api, results):
    # The UI's frame sends no Authorization header, only Airflow's `_token` cookie.
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from fastapi.testclient import TestClient

    browser = TestClient(airflow_api.app, cookies={COOKIE_NAME_JWT_TOKEN: airflow_api.token("viewer")})

    response = browser.get("/optistack/reports/")

    assert response.status_code == 200
    assert response.content == report_bytes(results, "index.html")


def test_a_token_signed_with_another_key_is_refused(airflow_api, results):
    import jwt

    claims = jwt.decode(airflow_api.token("admin"), options={"verify_signature": False})
    forged = jwt.encode(claims, "not-the-deployments-secret-" + "x" * 64, algorithm="HS512")

    response = airflow_api.client.get(
        "/optistack/reports/index.html", headers={"Authorization": f"Bearer {forged}"}
    )

    assert response.status_code == 403
    assert response.json() == {"detail": "Invalid JWT token"}  # Airflow's own answer


def test_an_expired_token_is_refused(airflow_api, results):
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    user = SimpleAuthManagerUser(username="viewer", role="viewer")
    token = get_auth_manager().generate_jwt(user, expiration_time_in_seconds=-3600)

    response = airflow_api.client.get(
        "/optistack/reports/index.html", headers={"Authorization": f"Bearer {token}"}
    )

    assert response.status_code == 401
    assert response.json() == {"detail": "Token Expired"}


def test_a_user_without_read_access_to_dag_runs_gets_403(airflow_api, results):
    # A valid, signed token for a user the auth manager gives no permission (no role).
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="nobody", role=None))

    for path in ROUTES:
        response = airflow_api.client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 403, path
        assert "optistack_benchmark" in response.json()["detail"]
    # Airflow's own DAG endpoints judge the same user the same way.
    assert (
        airflow_api.client.get("/api/v2/dags", headers={"Authorization": f"Bearer {token}"}).status_code
        == 403
    )


# --- serving reports ----------------------------------------------------------------------------


def test_the_index_is_served_at_the_folder_url(airflow_api, results):
    response = airflow_api.client.get("/optistack/reports/", headers=airflow_api.headers())

    assert response.status_code == 200
    assert response.content == report_bytes(results, "index.html")
    # The index links the report relative to itself, which resolves under /optistack/reports/.
    assert f'href="{NEW_RUN}.html"' in response.text


def test_the_folder_url_without_slash_redirects(airflow_api, results):
    response = airflow_api.client.get(
        "/optistack/reports", headers=airflow_api.headers(), follow_redirects=False
    )

    assert response.status_code in (307, 308)
    assert response.headers["location"].endswith("/optistack/reports/")


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_a_report_is_served_byte_identical(airflow_api, results, encoding):
    # Nothing escaped, re-encoded or rewritten on the way: inline SVG, entities, µ, all as written.
    expected = report_bytes(results, f"{NEW_RUN}.html")
    assert b"<svg" in expected and "µs".encode() in expected and b"&" in expected

    response = airflow_api.client.get(
        f"/optistack/reports/{NEW_RUN}.html",
        headers={**airflow_api.headers(), "Accept-Encoding": encoding},
    )

    assert response.status_code == 200
    assert response.content == expected
    assert response.headers["content-type"] == "text/html; charset=utf-8"


def test_reports_carry_a_self_contained_content_security_policy(airflow_api, results):
    response = airflow_api.client.get(f"/optistack/reports/{NEW_RUN}.html", headers=airflow_api.headers())

    policy = {d.split()[0]: d.split()[1:] for d in response.headers["content-security-policy"].split("; ")}
    assert policy["default-src"] == ["'none'"]  # no scripts, fonts, frames or fetches from anywhere
    assert policy["style-src"] == ["'unsafe-inline'"]
    assert policy["img-src"] == ["data:"]
    assert policy["frame-ancestors"] == ["'self'"]  # the Airflow UI may frame it, nobody else
    assert response.headers["x-content-type-options"] == "nosniff"


def test_error_responses_carry_the_headers_too(airflow_api, results):
    response = airflow_api.client.get("/optistack/reports/index.html")

    assert response.status_code == 401
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'self'" in response.headers["content-security-policy"]


def test_a_missing_report_is_404(airflow_api, results):
    response = airflow_api.client.get("/optistack/reports/no-such-run.html", headers=airflow_api.headers())

    assert response.status_code == 404
    assert "No such report" in response.text


def test_no_index_yet_is_a_404_page_that_says_how_to_make_one(airflow_api, empty_results):
    response = airflow_api.client.get("/optistack/reports/", headers=airflow_api.headers())

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "optistack report" in response.text


# --- path safety --------------------------------------------------------------------------------


@pytest.fixture
def guarded(tmp_path, monkeypatch):
    """A results root whose reports folder sits next to a secret .html file and other bait."""
    root = tmp_path / "results"
    reports = root / "reports"
    reports.mkdir(parents=True)
    (reports / "index.html").write_text("<html>index</html>")
    (reports / "run-1.html").write_text("<html>run 1</html>")
    (reports / "notes.txt").write_text("not a report")
    (reports / ".hidden.html").write_text("<html>being written</html>")
    (reports / "folder.html").mkdir()
    (root / "secret.html").write_bytes(SECRET)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "other.html").write_bytes(SECRET)
    monkeypatch.setenv("OPTISTACK_RESULTS", str(root))
    return root


# `{abs}` is the absolute path of the secret file, which exists.
REFUSED_NAMES = [
    "%2e%2e%2fsecret.html",
    "%2E%2E%2Fsecret.html",
    "%2e%2e/secret.html",
    "..%2fsecret.html",
    "..%5csecret.html",  # a backslash
    "%2e%2e%2f%2e%2e%2foutside%2fother.html",
    "%252e%252e%252fsecret.html",  # double-encoded (TestClient even decodes it twice)
    "{abs_encoded}",  # an absolute path as the name
    "{abs_nested}",  # ...as a nested path below the folder
    "/{abs_nested}",  # ...and after the folder's slash: //tmp/...
    "run-1.html%00.txt",
    "notes.txt",  # only .html is served
    ".hidden.html",  # a report being written aside
    "folder.html",  # not a file
    "run-1.htm",
]


@pytest.mark.parametrize("name", REFUSED_NAMES)
def test_names_that_leave_the_reports_folder_or_are_not_reports_are_refused(airflow_api, guarded, name):
    absolute = str(guarded / "secret.html")
    path = name.format(abs_encoded=absolute.replace("/", "%2f"), abs_nested=absolute.lstrip("/"))

    response = airflow_api.client.get(f"/optistack/reports/{path}", headers=airflow_api.headers())

    assert response.status_code == 404, path
    assert SECRET not in response.content
    assert b"not a report" not in response.content and b"being written" not in response.content


def test_a_symlink_pointing_outside_the_reports_folder_is_refused(airflow_api, guarded, tmp_path):
    reports = guarded / "reports"
    (reports / "evil.html").symlink_to(guarded / "secret.html")
    (reports / "evil2.html").symlink_to(Path("..") / ".." / "outside" / "other.html")  # relative
    (reports / "evil3.html").symlink_to("/etc/passwd")
    headers = airflow_api.headers()

    for name in ("evil.html", "evil2.html", "evil3.html"):
        response = airflow_api.client.get(f"/optistack/reports/{name}", headers=headers)
        assert response.status_code == 404, name
        assert SECRET not in response.content and b"root:" not in response.content


def test_a_symlink_to_a_report_inside_the_folder_is_served(airflow_api, guarded):
    (guarded / "reports" / "latest.html").symlink_to("run-1.html")

    response = airflow_api.client.get("/optistack/reports/latest.html", headers=airflow_api.headers())

    assert response.status_code == 200
    assert response.content == b"<html>run 1</html>"


def test_a_reports_folder_that_is_itself_a_symlink_still_works(airflow_api, tmp_path, monkeypatch):
    # e.g. results on another disk, linked into place: the check compares resolved paths.
    real = tmp_path / "disk" / "reports"
    real.mkdir(parents=True)
    (real / "index.html").write_text("<html>linked</html>")
    root = tmp_path / "results"
    root.mkdir()
    (root / "reports").symlink_to(real)
    monkeypatch.setenv("OPTISTACK_RESULTS", str(root))

    response = airflow_api.client.get("/optistack/reports/", headers=airflow_api.headers())

    assert response.status_code == 200
    assert response.content == b"<html>linked</html>"


@pytest.fixture
def live_server(airflow_api):
    """Airflow's app on a real uvicorn server, as `airflow api-server` runs it.

    A browser or httpx removes `../` from a URL before sending it; curl --path-as-is or a
    hand-written request does not, so the server must refuse it itself.
    """
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(airflow_api.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        assert thread.is_alive(), "uvicorn stopped"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(30)


def raw_get(port: int, path: str, token: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)  # sent exactly as written
        connection.putheader("Authorization", f"Bearer {token}")
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_raw_traversal_requests_to_a_real_server_are_refused(airflow_api, guarded, live_server):
    token = airflow_api.token()
    assert raw_get(live_server, "/optistack/reports/run-1.html", token) == (200, b"<html>run 1</html>")

    for path in [
        "/optistack/reports/../secret.html",
        "/optistack/reports/./../secret.html",
        "/optistack/reports/..%2fsecret.html",
        "/optistack/reports/%2e%2e%2fsecret.html",
        "/optistack/reports/%2e%2e/%2e%2e/outside/other.html",
        "/optistack/reports/%252e%252e%252fsecret.html",
        "/optistack/reports/..\\secret.html",
        f"/optistack/reports/{guarded / 'secret.html'}",
        "/optistack/reports/../../outside/other.html",
    ]:
        status, body = raw_get(live_server, path, token)
        assert status in (400, 404), path  # uvicorn itself may reject a malformed target with 400
        assert SECRET not in body, path


# --- the JSON API -------------------------------------------------------------------------------


def test_the_runs_listing_is_list_runs_newest_first(airflow_api, results):
    from reports.history import list_runs

    response = airflow_api.client.get("/optistack/api/runs", headers=airflow_api.headers())

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    runs = response.json()
    assert runs == json.loads(json.dumps(list_runs(results)))
    assert [r["run_id"] for r in runs] == [NEW_RUN, OLD_RUN]
    new, old = runs
    assert new["stores"] == ["mysql", "postgres"]
    assert new["statuses"] == {"mysql": "failed", "postgres": "ok"}
    assert new["status"] == "failed"
    assert new["report"] == f"reports/{NEW_RUN}.html"
    assert old["label"] == "Nightly: workload a, 16 users"
    assert old["status"] == "ok"
    assert old["report"] is None  # no report written for it


def test_the_runs_listing_is_empty_without_results(airflow_api, empty_results):
    response = airflow_api.client.get("/optistack/api/runs", headers=airflow_api.headers())

    assert response.status_code == 200
    assert response.json() == []


def test_a_runs_summary_gives_status_throughput_and_percentiles_per_store(airflow_api, results):
    response = airflow_api.client.get(f"/optistack/api/runs/{NEW_RUN}", headers=airflow_api.headers())

    assert response.status_code == 200
    run = response.json()
    assert run["run_id"] == NEW_RUN
    assert run["status"] == "failed"
    assert run["workload"] == "a"
    assert run["started_at"] == "2026-12-04T20:15:00+00:00"
    stores = {s["store"]: s for s in run["stores"]}
    assert set(stores) == {"postgres", "mysql"}

    mysql = stores["mysql"]
    assert mysql["status"] == "failed"
    assert mysql["error"].startswith("connect: ")  # run.json's error, as written
    assert mysql["operations"] == [] and mysql["throughput_ops_s"] is None

    postgres = stores["postgres"]
    assert postgres["status"] == "ok" and postgres["error"] is None
    summary = pq.read_table(
        results / "runs" / f"run_id={NEW_RUN}" / "store=postgres" / "summary.parquet"
    ).to_pylist()
    expected = [
        {
            k: row[k]
            for k in ("operation", "ops", "errors", "throughput_ops_s", "latency_p50_us", "latency_p99_us")
        }
        for row in summary
    ]
    assert postgres["operations"] == expected
    assert {op["operation"] for op in expected} == {"READ", "UPDATE", "ALL"}
    overall = next(r for r in summary if r["operation"] == "ALL")
    assert postgres["throughput_ops_s"] == overall["throughput_ops_s"] > 0


@pytest.mark.parametrize("run_id", ["no-such-run", "%2e%2e", ".hidden", "run_id=x", "a%2fb"])
def test_an_unknown_or_invalid_run_id_is_404(airflow_api, results, run_id):
    response = airflow_api.client.get(f"/optistack/api/runs/{run_id}", headers=airflow_api.headers())

    assert response.status_code == 404
    assert str(results) not in response.text  # the server's folders are not named


def test_values_a_run_did_not_record_are_null_not_nan(airflow_api, tmp_path, monkeypatch):
    # An older version without the p99 column, and a null cell: both null (NaN is not JSON).
    root = tmp_path / "results"
    write_run(
        root,
        "old-version",
        stores=[StoreSpec("postgres", drop_columns=("latency_p99_us",), validation=False)],
    )
    write_run(root, "null-cell", stores=[StoreSpec("redis")])
    summary = root / "runs" / "run_id=null-cell" / "store=redis" / "summary.parquet"
    table = pq.read_table(summary)
    column = table.schema.get_field_index("latency_p50_us")
    table = table.set_column(column, "latency_p50_us", pa.nulls(table.num_rows, pa.float64()))
    pq.write_table(table, summary)
    monkeypatch.setenv("OPTISTACK_RESULTS", str(root))
    headers = airflow_api.headers()

    old = airflow_api.client.get("/optistack/api/runs/old-version", headers=headers)
    null = airflow_api.client.get("/optistack/api/runs/null-cell", headers=headers)

    assert old.status_code == null.status_code == 200
    assert "NaN" not in old.text and "NaN" not in null.text
    assert all(op["latency_p99_us"] is None for op in old.json()["stores"][0]["operations"])
    assert all(op["latency_p50_us"] is None for op in null.json()["stores"][0]["operations"])
    assert all(op["latency_p99_us"] > 0 for op in null.json()["stores"][0]["operations"])
