"""CockroachDB store: the inherited PostgreSQL behaviour, and the 40001 retry loop for real.

Here the server is normally the local PostgreSQL standing in for CockroachDB. The
serialization failures are genuine ones: two connections read and write the same row
under SERIALIZABLE, and PostgreSQL aborts the later writer with SQLSTATE 40001, exactly
the error CockroachDB asks its clients to retry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from tests.workloads.stores import test_postgres as pg
from workloads.stores.base import Store
from workloads.stores.cockroachdb import CockroachDBStore, retry_serialization_failures

# The CockroachDB store inherits these behaviours; run the PostgreSQL store's tests for
# it too, with `store_name` below selecting the store.
url = pg.url
opened = pg.opened
native = pg.native
fresh_namespace = pg.fresh_namespace
test_users_own_table_survives_provision_and_teardown = pg.test_users_own_table_survives_provision_and_teardown
test_provision_refuses_a_same_named_table_without_the_marker = (
    pg.test_provision_refuses_a_same_named_table_without_the_marker
)
test_unreachable_port_is_an_optistack_error_without_the_password = (
    pg.test_unreachable_port_is_an_optistack_error_without_the_password
)
test_a_server_that_never_answers_times_out_at_the_connect_timeout = (
    pg.test_a_server_that_never_answers_times_out_at_the_connect_timeout
)
test_operation_timeout_cancels_a_blocked_write_and_the_connection_survives = (
    pg.test_operation_timeout_cancels_a_blocked_write_and_the_connection_survives
)
test_scan_is_bytewise_key_order_whatever_the_database_collation = (
    pg.test_scan_is_bytewise_key_order_whatever_the_database_collation
)


@pytest.fixture
def store_name() -> str:
    return "cockroachdb"


@pytest.fixture
def counter(opened) -> CockroachDBStore:
    """A one-row table whose field0 holds a counter, for read-modify-write transactions."""
    store = opened(namespace=fresh_namespace("crdb_retry"), field_count=1)
    store.provision()
    store.load([("counter", {"field0": "0"})])
    return store


def read_counter(conn: psycopg.Connection, table: str) -> int:
    return int(conn.execute(f"SELECT field0 FROM {table} WHERE ycsb_key = 'counter'").fetchone()[0])


def increment(conn: psycopg.Connection, table: str) -> int:
    """A read-modify-write of the counter; run inside a transaction."""
    value = read_counter(conn, table) + 1
    conn.execute(f"UPDATE {table} SET field0 = %s WHERE ycsb_key = 'counter'", (str(value),))
    return value


def conflicting(url: str, table: str, conflicts: int) -> tuple[Callable[[psycopg.Connection], int], list]:
    """A transaction body that, on its first `conflicts` attempts, lets another serializable
    transaction increment the counter between this one's read and its write."""
    other = native(url)
    attempts: list[int] = []

    def body(conn: psycopg.Connection) -> int:
        attempts.append(len(attempts) + 1)
        assert conn.execute("SHOW transaction_isolation").fetchone()[0] == "serializable"
        value = read_counter(conn, table) + 1  # this transaction's snapshot is now fixed
        if len(attempts) <= conflicts:
            with other.transaction():
                other.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
                increment(other, table)
        conn.execute(f"UPDATE {table} SET field0 = %s WHERE ycsb_key = 'counter'", (str(value),))
        return value

    body.close = other.close  # type: ignore[attr-defined]
    return body, attempts


def test_run_transaction_retries_a_real_serialization_failure_and_succeeds(url: str, counter) -> None:
    table = counter.settings.namespace
    body, attempts = conflicting(url, table, conflicts=1)
    try:
        result = counter.transaction(body, max_retries=3)
    finally:
        body.close()
    # Attempt 1 lost to the other transaction's increment; attempt 2 re-read and built on it.
    assert attempts == [1, 2]
    assert counter.serialization_retries == 1
    assert result == 2
    assert counter.read("counter") == {"field0": "2"}


def test_run_transaction_gives_up_after_max_retries_and_propagates_40001(url: str, counter) -> None:
    table = counter.settings.namespace
    body, attempts = conflicting(url, table, conflicts=100)
    try:
        with pytest.raises(psycopg.errors.SerializationFailure) as failed:
            counter.transaction(body, max_retries=2)
    finally:
        body.close()
    assert failed.value.sqlstate == "40001"
    assert attempts == [1, 2, 3]  # the first try and two retries
    assert counter.serialization_retries == 2
    # Only the other transaction's three increments landed; none of ours did.
    assert counter.read("counter") == {"field0": "3"}


def test_other_errors_are_not_retried(counter) -> None:
    calls = []

    def broken() -> None:
        calls.append(1)
        raise psycopg.errors.UndefinedTable("not a serialization failure")

    with pytest.raises(psycopg.errors.UndefinedTable):
        retry_serialization_failures(broken, max_retries=5)
    assert calls == [1]


def blocked_by(conn: psycopg.Connection, blocker_pid: int, timeout_s: float = 5.0) -> None:
    """Wait until some session waits on a lock `blocker_pid` holds, so the conflict is real."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", (blocker_pid,)
        ).fetchone()
        if row[0]:
            return
        time.sleep(0.02)
    raise AssertionError("the store's write never waited on the other transaction's lock")


def test_a_store_write_retries_a_real_40001_in_its_implicit_transaction(url: str, counter) -> None:
    if counter.server_info().product != "PostgreSQL":
        pytest.skip("the lock-wait-then-40001 sequence is PostgreSQL's; CockroachDB retries it server-side")
    table = counter.settings.namespace
    with native(url) as blocker, native(url) as watcher:
        blocker.autocommit = False
        blocker.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        blocker.execute(f"UPDATE {table} SET field0 = 'theirs' WHERE ycsb_key = 'counter'")
        outcome: list = []
        writer = threading.Thread(
            target=lambda: outcome.append(counter.update("counter", {"field0": "ours"}))
        )
        writer.start()
        blocked_by(watcher, blocker.info.backend_pid)
        # Committing the row the store's serializable UPDATE waits on aborts it with 40001.
        blocker.commit()
        writer.join(10)
    assert not writer.is_alive()
    assert outcome == [None]
    assert counter.serialization_retries == 1
    assert counter.read("counter") == {"field0": "ours"}


def test_load_batches_multi_row_inserts(opened) -> None:
    store: Store = opened(namespace=fresh_namespace("crdb_load"), field_count=3)
    store.provision()
    n = store.load_chunk_rows * 2 + 17  # two full INSERT batches and a partial one
    assert store.load((f"user{i:06d}", {f"field{j}": f"{i}-{j}" for j in range(3)}) for i in range(n)) == n
    assert store.count() == n
    assert store.read(f"user{n - 1:06d}") == {f"field{j}": f"{n - 1}-{j}" for j in range(3)}


def test_server_info_does_not_pretend(url: str, opened) -> None:
    with native(url) as conn:
        says = conn.execute("SELECT version()").fetchone()[0]
    info = opened(field_count=1).server_info()
    assert says.startswith(info.product)
    assert info.version.lstrip("v") in says


def test_cockroachdb_url_maps_to_the_driver_and_default_port() -> None:
    from workloads.stores.base import StoreSettings

    store = CockroachDBStore("cockroachdb://root:pw@db.example:26000/bank?sslmode=require", StoreSettings())
    assert store._driver_conninfo() == ("postgresql://root:pw@db.example:26000/bank?sslmode=require", {})
    bare = CockroachDBStore("cockroachdb://root@db.example/bank", StoreSettings())
    assert bare._driver_conninfo() == ("postgresql://root@db.example/bank", {"port": 26257})
