"""MySQL/MariaDB store against the real server: ownership rules, timeouts, key order, gevent."""

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
from urllib.parse import unquote, urlsplit

import pymysql
import pytest

from workloads.errors import OptiStackError
from workloads.stores import get_store
from workloads.stores.base import Store, StoreSettings
from workloads.stores.mysql import MySQLStore

REPO = Path(__file__).resolve().parents[3]
PASSWORD = "my-Secret-9c1e"


@pytest.fixture
def url(store_server) -> str:
    return store_server("mysql").url


def native(url: str) -> pymysql.connections.Connection:
    """A plain PyMySQL connection to the same server, for what a user would do natively."""
    parts = urlsplit(url)
    return pymysql.connect(
        host=parts.hostname,
        port=parts.port or 3306,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=parts.path.lstrip("/"),
        autocommit=True,
    )


def query(conn: pymysql.connections.Connection, sql: str) -> tuple:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def fresh_namespace(tag: str) -> str:
    # Unique per test run: several developers run these tests against one server.
    return f"optistack_t_{tag}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def opened(url: str) -> Iterator[Callable[..., Store]]:
    """Open stores with given settings; every one is torn down and closed afterwards."""
    stores: list[Store] = []

    def open_store(**settings: object) -> Store:
        store = get_store("mysql").connect(url, StoreSettings(**settings))
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
    conn = native(url)
    try:
        query(conn, f"CREATE TABLE {users_table} (id INT PRIMARY KEY, note TEXT) ENGINE=InnoDB")
        query(conn, f"INSERT INTO {users_table} VALUES (1, 'keep me')")
        store = opened(namespace=fresh_namespace("own"), field_count=2)
        store.provision()
        store.load((f"user{i:04d}", {"field0": "a", "field1": "b"}) for i in range(20))
        store.teardown()
        assert query(conn, f"SELECT id, note FROM {users_table}") == ((1, "keep me"),)
    finally:
        query(conn, f"DROP TABLE IF EXISTS {users_table}")
        conn.close()


def test_provision_refuses_a_same_named_table_without_the_marker(url: str, opened) -> None:
    namespace = fresh_namespace("foreign")
    conn = native(url)
    try:
        query(
            conn, f"CREATE TABLE {namespace} (ycsb_key VARCHAR(64) PRIMARY KEY, payload TEXT) COMMENT='mine'"
        )
        query(conn, f"INSERT INTO {namespace} VALUES ('user1', 'precious')")
        store = opened(namespace=namespace, field_count=2)
        with pytest.raises(OptiStackError, match="will not touch") as refused:
            store.provision()
        assert namespace in str(refused.value)
        store.teardown()  # leaves someone else's table alone too
        assert query(conn, f"SELECT * FROM {namespace}") == (("user1", "precious"),)
    finally:
        query(conn, f"DROP TABLE IF EXISTS {namespace}")
        conn.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_port_is_an_optistack_error_without_the_password() -> None:
    url = f"mysql://root:{PASSWORD}@127.0.0.1:{closed_port()}/test"
    started = time.monotonic()
    with pytest.raises(OptiStackError, match="cannot connect") as failed:
        MySQLStore.connect(url, StoreSettings(connect_timeout_s=2))
    assert time.monotonic() - started < 5
    assert PASSWORD not in str(failed.value)
    assert "***" in str(failed.value)


def test_a_server_that_never_answers_times_out_at_the_connect_timeout() -> None:
    with socket.socket() as silent:  # accepts TCP connections, never sends the greeting
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"mysql://root:{PASSWORD}@127.0.0.1:{silent.getsockname()[1]}/test"
        started = time.monotonic()
        with pytest.raises(OptiStackError) as failed:
            MySQLStore.connect(url, StoreSettings(connect_timeout_s=1, operation_timeout_s=30))
        elapsed = time.monotonic() - started
    assert 0.8 < elapsed < 4, elapsed  # the connect timeout, not the 35 s operation bound
    assert PASSWORD not in str(failed.value)


def test_url_without_database_is_refused_before_connecting() -> None:
    with pytest.raises(OptiStackError, match="names no database"):
        MySQLStore.connect(f"mysql://root:{PASSWORD}@127.0.0.1:{closed_port()}")


def test_operations_may_outlast_the_connect_timeout(opened) -> None:
    # The handshake runs under the connect timeout; operations must get their own bound.
    store = opened(field_count=1, connect_timeout_s=1, operation_timeout_s=5)
    store._cur.execute("SELECT SLEEP(1.5)")
    assert store._cur.fetchone() == (0,)


def test_operation_timeout_ends_a_blocked_write_and_the_connection_survives(url: str, opened) -> None:
    store = opened(namespace=fresh_namespace("optimeout"), field_count=1, operation_timeout_s=1)
    store.provision()
    store.load([("user1", {"field0": "before"})])
    blocker = native(url)
    try:
        blocker.begin()  # hold the row lock in an open transaction
        query(blocker, f"UPDATE {store.settings.namespace} SET field0 = 'locked' WHERE ycsb_key = 'user1'")
        started = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError) as failed:
            store.update("user1", {"field0": "mine"})
        assert time.monotonic() - started < 4
        assert failed.value.args[0] in (1205, 1969, 3024)  # lock wait / statement time exceeded
        blocker.rollback()
    finally:
        blocker.close()
    store.update("user1", {"field0": "mine"})
    assert store.read("user1") == {"field0": "mine"}


def test_scan_is_bytewise_key_order(opened) -> None:
    store = opened(namespace=fresh_namespace("order"), field_count=1)
    store.provision()
    # The default collations are case-insensitive: userA and usera would even collide.
    keys = ["user-b", "userA", "user_a", "usera", "userZ", "user0", "user~", "userb"]
    store.load((k, {"field0": k}) for k in keys)
    assert [k for k, _ in store.scan("user", 100)] == sorted(keys)
    assert store.read("usera") == {"field0": "usera"}
    assert store.read("userA") == {"field0": "userA"}


def test_load_uses_batches_and_bounded_transactions(opened) -> None:
    store = opened(namespace=fresh_namespace("chunks"), field_count=2)
    store.provision()
    store.load_transaction_rows = 700  # 1000 records: two transactions, several INSERT batches

    def records() -> Iterator[tuple[str, dict[str, str]]]:
        for i in range(1000):
            yield f"user{i:06d}", {"field0": str(i), "field1": "x" * 50}

    assert store.load(records()) == 1000
    assert store.count() == 1000
    assert store.read("user000999") == {"field0": "999", "field1": "x" * 50}


def test_server_info_is_what_the_server_says(url: str, opened) -> None:
    conn = native(url)
    try:
        ((version,),) = query(conn, "SELECT VERSION()")
    finally:
        conn.close()
    info = opened(field_count=1).server_info()
    assert info.version == version
    assert info.product == ("MariaDB" if "MariaDB" in version else "MySQL")


GEVENT_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import workloads.stores.mysql  # imported before the patching: PyMySQL must still cooperate
    from gevent import monkey
    monkey.patch_all()
    import gevent
    from workloads.stores.mysql import MySQLStore as store_cls
    from workloads.stores.base import StoreSettings

    def sleeper():
        with store_cls.connect(sys.argv[1], StoreSettings(field_count=1)) as store:
            store._cur.execute("SELECT SLEEP(0.5)")  # the driver path every operation takes

    started = time.monotonic()
    gevent.joinall([gevent.spawn(sleeper) for _ in range(6)], raise_error=True)
    print(f"{time.monotonic() - started:.2f}")
    """
)


def test_queries_are_cooperative_under_gevent(url: str) -> None:
    """Six greenlets sleeping 0.5 s in the server take ~0.5 s, not 3 s, in a patched process."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", GEVENT_SCRIPT, url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip().splitlines()[-1]) < 2.0, done.stdout
