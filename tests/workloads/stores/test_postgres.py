"""PostgreSQL store against the real server: ownership rules, timeouts, key order, gevent.

The ownership and timeout tests are reused by test_cockroachdb.py through the
`store_name` fixture, since the CockroachDB store inherits that behaviour.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from workloads.errors import OptiStackError
from workloads.stores import get_store
from workloads.stores.base import Store, StoreSettings

REPO = Path(__file__).resolve().parents[3]
PASSWORD = "pg-Secret-7f3a"


@pytest.fixture
def store_name() -> str:
    return "postgres"


@pytest.fixture
def url(store_server, store_name: str) -> str:
    return store_server(store_name).url


def native(url: str) -> psycopg.Connection:
    """A plain psycopg connection to the same server, for what a user would do natively."""
    return psycopg.connect(url.replace("cockroachdb://", "postgresql://", 1), autocommit=True)


def fresh_namespace(tag: str) -> str:
    # Unique per test run: several developers run these tests against one server.
    return f"optistack_t_{tag}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def opened(url: str, store_name: str) -> Iterator[Callable[..., Store]]:
    """Open stores with given settings; every one is torn down and closed afterwards."""
    stores: list[Store] = []

    def open_store(**settings: object) -> Store:
        store = get_store(store_name).connect(url, StoreSettings(**settings))
        stores.append(store)
        return store

    yield open_store
    for store in stores:
        try:
            store.teardown()
        finally:
            store.close()


def test_users_own_table_survives_provision_and_teardown(url: str, opened) -> None:
    users_table = f"user_orders_{uuid.uuid4().hex[:8]}"
    with native(url) as conn:
        conn.execute(f"CREATE TABLE {users_table} (id INT PRIMARY KEY, note TEXT)")
        try:
            conn.execute(f"INSERT INTO {users_table} VALUES (1, 'keep me')")
            store = opened(namespace=fresh_namespace("own"), field_count=2)
            store.provision()
            store.load((f"user{i:04d}", {"field0": "a", "field1": "b"}) for i in range(20))
            store.teardown()
            assert conn.execute(f"SELECT id, note FROM {users_table}").fetchall() == [(1, "keep me")]
        finally:
            conn.execute(f"DROP TABLE {users_table}")


def test_provision_refuses_a_same_named_table_without_the_marker(url: str, opened) -> None:
    namespace = fresh_namespace("foreign")
    with native(url) as conn:
        conn.execute(f"CREATE TABLE {namespace} (ycsb_key TEXT PRIMARY KEY, payload TEXT)")
        try:
            conn.execute(f"INSERT INTO {namespace} VALUES ('user1', 'precious')")
            store = opened(namespace=namespace, field_count=2)
            with pytest.raises(OptiStackError, match="will not touch") as refused:
                store.provision()
            assert namespace in str(refused.value)
            store.teardown()  # leaves someone else's table alone too
            assert conn.execute(f"SELECT * FROM {namespace}").fetchall() == [("user1", "precious")]
        finally:
            conn.execute(f"DROP TABLE {namespace}")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_port_is_an_optistack_error_without_the_password(store_name: str) -> None:
    cls = get_store(store_name)
    scheme = cls.url_schemes[0]
    url = f"{scheme}://postgres:{PASSWORD}@127.0.0.1:{closed_port()}/postgres"
    started = time.monotonic()
    with pytest.raises(OptiStackError, match="cannot connect") as failed:
        cls.connect(url, StoreSettings(connect_timeout_s=2))
    assert time.monotonic() - started < 5
    assert PASSWORD not in str(failed.value)
    assert "***" in str(failed.value)


def test_a_server_that_never_answers_times_out_at_the_connect_timeout(store_name: str) -> None:
    cls = get_store(store_name)
    with socket.socket() as silent:  # accepts TCP connections, never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        url = f"{cls.url_schemes[0]}://postgres:{PASSWORD}@127.0.0.1:{port}/postgres"
        started = time.monotonic()
        with pytest.raises(OptiStackError) as failed:
            cls.connect(url, StoreSettings(connect_timeout_s=2))
        elapsed = time.monotonic() - started
    assert 1.5 < elapsed < 6, elapsed
    assert PASSWORD not in str(failed.value)


def test_operation_timeout_cancels_a_blocked_write_and_the_connection_survives(url: str, opened) -> None:
    store = opened(namespace=fresh_namespace("optimeout"), field_count=1, operation_timeout_s=1)
    store.provision()
    store.load([("user1", {"field0": "before"})])
    with native(url) as blocker:
        blocker.autocommit = False  # hold the row lock in an open transaction
        blocker.execute(f"UPDATE {store.settings.namespace} SET field0 = 'locked' WHERE ycsb_key = 'user1'")
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            store.update("user1", {"field0": "mine"})
        assert time.monotonic() - started < 4
        blocker.rollback()
    store.update("user1", {"field0": "mine"})
    assert store.read("user1") == {"field0": "mine"}


def test_scan_is_bytewise_key_order_whatever_the_database_collation(opened) -> None:
    store = opened(namespace=fresh_namespace("order"), field_count=1)
    store.provision()
    # A linguistic collation (en_US) would interleave these; bytewise order does not.
    keys = ["user-b", "userA", "user_a", "usera", "userZ", "user0", "user~", "userb"]
    store.load((k, {"field0": k}) for k in keys)
    assert [k for k, _ in store.scan("user", 100)] == sorted(keys)
    assert [k for k, _ in store.scan("userZ", 3)] == sorted(keys)[sorted(keys).index("userZ") :][:3]


def test_server_info_is_what_the_server_says(url: str, opened) -> None:
    store = opened(field_count=1)
    with native(url) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
    assert store.server_info().product == "PostgreSQL"
    assert version.startswith(store.server_info().version)


def test_load_streams_in_chunks(opened) -> None:
    store = opened(namespace=fresh_namespace("chunks"), field_count=2)
    store.provision()
    store.load_chunk_rows = 300  # several COPY statements for 1000 records

    def records() -> Iterator[tuple[str, dict[str, str]]]:
        for i in range(1000):
            yield f"user{i:06d}", {"field0": str(i), "field1": "x" * 50}

    assert store.load(records()) == 1000
    assert store.count() == 1000
    assert store.read("user000999") == {"field0": "999", "field1": "x" * 50}


GEVENT_SCRIPT = textwrap.dedent(
    """
    import sys, time
    if sys.argv[2] == "psycopg-first":
        import psycopg  # imported before the patching, as a careless caller might
        import workloads.stores.postgres
    from gevent import monkey
    monkey.patch_all()
    import gevent
    from workloads.stores.postgres import PostgresStore as store_cls
    from workloads.stores.base import StoreSettings

    def sleeper():
        with store_cls.connect(sys.argv[1], StoreSettings(field_count=1)) as store:
            store._cur.execute("SELECT pg_sleep(0.5)")  # the driver path every operation takes

    started = time.monotonic()
    gevent.joinall([gevent.spawn(sleeper) for _ in range(6)], raise_error=True)
    print(f"{time.monotonic() - started:.2f}")
    """
)


@pytest.mark.parametrize("import_order", ["patch-first", "psycopg-first"])
def test_queries_are_cooperative_under_gevent(url: str, import_order: str) -> None:
    """Six greenlets sleeping 0.5 s in the server take ~0.5 s, not 3 s, in a patched process."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", GEVENT_SCRIPT, url, import_order],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip().splitlines()[-1]) < 2.0, done.stdout
