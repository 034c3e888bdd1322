"""Cassandra store.

There is no Cassandra server on the development machine: the tests that need one run
when OPTISTACK_TEST_CASSANDRA_URL names a real cluster and are skipped (with the reason)
otherwise. URL handling and connection failures need no server and always run.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import free_port
from workloads.errors import OptiStackError
from workloads.stores import get_store
from workloads.stores.base import StoreSettings
from workloads.stores.cassandra import MARKER_COMMENT

FIELDS = 3
ROOT = Path(__file__).parents[3]


def record(n: int) -> dict[str, str]:
    return {f"field{i}": f"v{n}-{i}" for i in range(FIELDS)}


def connect(url: str, namespace: str = "optistack_usertable", **settings):
    return get_store("cassandra").connect(
        url, StoreSettings(namespace=namespace, field_count=FIELDS, **settings)
    )


# -- no server needed ------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("cql://bob:s3cret-pw@127.0.0.1:9042/optistack", "has scheme 'cql'"),
        ("cassandra://bob:s3cret-pw@127.0.0.1:99999/optistack", "malformed"),
        ("cassandra://bob:s3cret-pw@127.0.0.1:ninety/optistack", "malformed"),
        ("cassandra://bob:s3cret-pw@127.0.0.1:9042/my-keyspace", "keyspace 'my-keyspace'"),
        ("cassandra://bob:s3cret-pw@127.0.0.1:9042/optistack?consistency=MOST", "consistency='MOST'"),
        ("cassandra://bob:s3cret-pw@127.0.0.1:9042/optistack?replication_factor=0", "at least 1"),
        ("cassandra://bob:s3cret-pw@127.0.0.1:9042/optistack?dc=x", "unknown option"),
    ],
)
def test_bad_urls_name_the_url_form_and_hide_the_password(url: str, message: str) -> None:
    with pytest.raises(OptiStackError, match=message) as caught:
        connect(url, connect_timeout_s=1)
    text = str(caught.value)
    assert "s3cret-pw" not in text
    if "malformed" in message or "scheme" in message:
        assert "cassandra://" in text and "host1,host2:9042" in text  # the URL form to use


def test_namespace_must_be_a_cql_table_name() -> None:
    with pytest.raises(OptiStackError, match="not a valid Cassandra table name"):
        connect("cassandra://127.0.0.1/optistack", namespace="optistack_" + "x" * 50)


def test_closed_port_fails_fast_without_the_password_and_leaves_no_threads() -> None:
    before = threading.active_count()
    url = f"cassandra://bob:s3cret-pw@127.0.0.1,localhost:{free_port()}/optistack"
    started = time.monotonic()
    with pytest.raises(OptiStackError, match="cannot connect to cassandra") as caught:
        connect(url, connect_timeout_s=2)
    assert time.monotonic() - started < 2 + 1
    assert "s3cret-pw" not in str(caught.value)
    assert "bob:***@" in str(caught.value)
    deadline = time.monotonic() + 5  # the driver's threads wind down after shutdown
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert threading.active_count() <= before


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that accepts TCP connections but never answers: the CQL handshake must time out."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


def test_a_server_that_never_answers_fails_within_the_connect_timeout(silent_listener: int) -> None:
    started = time.monotonic()
    with pytest.raises(OptiStackError, match="cannot connect to cassandra"):
        connect(f"cassandra://127.0.0.1:{silent_listener}/optistack", connect_timeout_s=1.5)
    assert time.monotonic() - started < 1.5 + 3


def test_importing_the_stores_loads_neither_gevent_nor_locust() -> None:
    script = "import sys, workloads.stores as s; s.store_names(); print('gevent' in sys.modules, 'locust' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


SELECT_REACTOR = textwrap.dedent("""
    import sys
    {patch}
    from workloads.errors import OptiStackError
    from workloads.stores import get_store
    from workloads.stores.base import StoreSettings
    try:
        get_store("cassandra").connect("cassandra://127.0.0.1:{port}/optistack", StoreSettings(connect_timeout_s=1))
    except OptiStackError as error:
        print("OptiStackError", "Timed out" in str(error))
    # the gevent reactor module is imported only when it is chosen
    print("cassandra.io.geventreactor" in sys.modules)
""")


@pytest.mark.parametrize(
    ("patch", "gevent_reactor"),
    [("from gevent import monkey; monkey.patch_all()", "True"), ("", "False")],
    ids=["gevent-patched", "plain"],
)
def test_connection_class_follows_gevent_patching(
    silent_listener: int, patch: str, gevent_reactor: str
) -> None:
    script = SELECT_REACTOR.format(patch=patch, port=silent_listener)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["OptiStackError", "True", gevent_reactor]


# -- against a real Cassandra (OPTISTACK_TEST_CASSANDRA_URL) ---------------


@pytest.fixture
def url(store_server) -> str:
    return store_server("cassandra").url


@pytest.fixture
def namespace() -> str:
    return f"optistack_t_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def native(url: str):
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import Cluster

    parts = urlsplit(url)
    auth = PlainTextAuthProvider(parts.username, parts.password) if parts.username else None
    cluster = Cluster(parts.hostname.split(","), port=parts.port or 9042, auth_provider=auth)
    session = cluster.connect()
    yield session, parts.path.strip("/") or "optistack"
    cluster.shutdown()


def test_table_carries_the_marker_comment_and_scans_in_token_order(url: str, namespace: str, native) -> None:
    session, keyspace = native
    with connect(url, namespace) as store:
        store.provision()
        try:
            row = session.execute(
                "SELECT comment FROM system_schema.tables WHERE keyspace_name=%s AND table_name=%s",
                (keyspace, namespace),
            ).one()
            assert row.comment == MARKER_COMMENT
            store.load((f"user{i:04d}", record(i)) for i in range(50))
            assert store.count() == 50
            in_token_order = [
                r.y_id
                for r in session.execute(
                    f'SELECT y_id FROM "{keyspace}"."{namespace}" WHERE token(y_id) >= token(%s) LIMIT 10',
                    ("user0020",),
                )
            ]
            assert [k for k, _ in store.scan("user0020", 10)] == in_token_order
            assert in_token_order[0] == "user0020"
        finally:
            store.teardown()


def test_users_own_table_survives_provision_and_teardown(url: str, namespace: str, native) -> None:
    session, keyspace = native
    with connect(url, namespace) as store:
        store.provision()  # makes sure the keyspace exists
        own = f"myapp_{uuid.uuid4().hex[:8]}"
        session.execute(f'CREATE TABLE "{keyspace}"."{own}" (id text PRIMARY KEY, v text)')
        try:
            session.execute(f'INSERT INTO "{keyspace}"."{own}" (id, v) VALUES (%s, %s)', ("mine", "1"))
            store.load((f"user{i}", record(i)) for i in range(3))
            store.teardown()
            store.provision()
            store.teardown()
            assert (
                session.execute(f'SELECT v FROM "{keyspace}"."{own}" WHERE id = %s', ("mine",)).one().v == "1"
            )
        finally:
            session.execute(f'DROP TABLE IF EXISTS "{keyspace}"."{own}"')


def test_provision_refuses_a_table_without_the_marker(url: str, namespace: str, native) -> None:
    session, keyspace = native
    with connect(url, namespace) as store:
        store.provision()
        store.teardown()
        session.execute(f'CREATE TABLE "{keyspace}"."{namespace}" (y_id text PRIMARY KEY, field0 text)')
        try:
            session.execute(f'INSERT INTO "{keyspace}"."{namespace}" (y_id) VALUES (%s)', ("theirs",))
            with pytest.raises(OptiStackError, match="will not touch"):
                store.provision()
            store.teardown()  # no marker: left alone
            rows = session.execute(f'SELECT y_id FROM "{keyspace}"."{namespace}"')
            assert [r.y_id for r in rows] == ["theirs"]
        finally:
            session.execute(f'DROP TABLE IF EXISTS "{keyspace}"."{namespace}"')


def test_a_missing_foreign_keyspace_is_not_created(url: str, namespace: str) -> None:
    parts = urlsplit(url)
    foreign = parts._replace(path=f"/nobody_{uuid.uuid4().hex[:8]}").geturl()
    with connect(foreign, namespace) as store, pytest.raises(OptiStackError, match="only creates keyspaces"):
        store.provision()
