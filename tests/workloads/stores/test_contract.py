"""The shared contract every store module passes, each against a real server."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from workloads.stores import get_store, store_names
from workloads.stores.base import ScanOrder, Store, StoreSettings

FIELDS = [f"field{i}" for i in range(4)]
N = 200


def key(n: int) -> str:
    return f"user{n:08d}"


def record(n: int) -> dict[str, str]:
    return {f: f"{f}-value-{n:05d}-" + "x" * 20 for f in FIELDS}


@pytest.fixture(params=store_names())
def store(request: pytest.FixtureRequest, store_server) -> Store:
    target = store_server(request.param)
    settings = StoreSettings(namespace="optistack_contract", field_count=len(FIELDS))
    conn = get_store(request.param).connect(target.url, settings)
    conn.provision()
    yield conn
    try:
        conn.teardown()
    finally:
        conn.close()


def loaded(store: Store, n: int = N) -> Store:
    assert store.load((key(i), record(i)) for i in range(n)) == n
    return store


def test_provision_load_and_count(store: Store) -> None:
    assert store.count() == 0
    loaded(store)
    assert store.count() == N


def test_provision_is_idempotent_and_empties(store: Store) -> None:
    loaded(store, 10)
    store.provision()
    assert store.count() == 0


def test_read_returns_exactly_the_loaded_fields(store: Store) -> None:
    loaded(store)
    assert store.read(key(17)) == record(17)
    assert store.read(key(17), ["field1", "field3"]) == {
        "field1": record(17)["field1"],
        "field3": record(17)["field3"],
    }
    assert store.read("user-missing") is None


def test_update_is_visible_to_the_next_read(store: Store) -> None:
    loaded(store)
    store.update(key(5), {"field2": "changed"})
    got = store.read(key(5))
    assert got["field2"] == "changed"
    assert got["field0"] == record(5)["field0"]


def test_insert_then_read(store: Store) -> None:
    loaded(store, 10)
    store.insert(key(999), record(999))
    assert store.read(key(999)) == record(999)
    assert store.count() == 11


def test_delete(store: Store) -> None:
    loaded(store, 10)
    store.delete(key(3))
    assert store.read(key(3)) is None
    assert store.count() == 9


def test_scan_follows_the_declared_order(store: Store) -> None:
    loaded(store)
    got = store.scan(key(50), 10)
    assert len(got) == 10
    keys = [k for k, _ in got]
    assert len(set(keys)) == 10
    for k, values in got:
        assert values == record(int(k[4:]))
    if store.scan_order is ScanOrder.KEY:
        assert keys == [key(i) for i in range(50, 60)]
    elif store.scan_order is ScanOrder.TOKEN:
        assert keys[0] == key(50)  # token order starts at the start key's token
    else:
        assert set(keys) <= {key(i) for i in range(N)}
    # a scan near the end stops at the last record instead of failing
    if store.scan_order is ScanOrder.KEY:
        assert [k for k, _ in store.scan(key(N - 3), 10)] == [key(N - 3), key(N - 2), key(N - 1)]
    # field selection applies to scans too
    first_key, first_values = store.scan(key(50), 1, ["field0"])[0]
    assert first_values == {"field0": record(int(first_key[4:]))["field0"]}


def test_server_info_comes_from_the_server(store: Store) -> None:
    info = store.server_info()
    assert info.product and info.version
    assert any(ch.isdigit() for ch in info.version)


@pytest.mark.parametrize("name", store_names())
def test_teardown_removes_only_its_own_namespace(name: str, store_server) -> None:
    """Teardown of one namespace leaves a neighbour namespace untouched and nothing of
    its own behind. (Each store's own test module checks a user's non-OptiStack object.)"""
    target = store_server(name)
    cls = get_store(name)
    mine = cls.connect(target.url, StoreSettings(namespace="optistack_teardown_a", field_count=2))
    other = cls.connect(target.url, StoreSettings(namespace="optistack_teardown_b", field_count=2))
    try:
        for conn in (mine, other):
            conn.provision()
            conn.load((key(i), {"field0": "a", "field1": "b"}) for i in range(5))
        mine.teardown()
        assert other.count() == 5
        mine.provision()
        assert mine.count() == 0
        mine.teardown()
    finally:
        other.teardown()
        mine.close()
        other.close()


def test_namespace_must_be_optistack_prefixed() -> None:
    from workloads.errors import OptiStackError

    with pytest.raises(OptiStackError, match="must start with 'optistack_'"):
        StoreSettings(namespace="users")


@pytest.mark.parametrize("name", store_names())
def test_concurrent_users_work_under_gevent_monkey_patching(name: str, store_server) -> None:
    """Locust's users are greenlets in one monkey-patched process: five of them, each with its
    own connection, interleave writes and reads and every write lands."""
    target = store_server(name)
    namespace = f"optistack_t_{uuid.uuid4().hex[:10]}"  # other runs may share the server
    script = textwrap.dedent(f"""
        from gevent import monkey
        monkey.patch_all()
        import gevent
        from workloads.stores import get_store
        from workloads.stores.base import StoreSettings
        settings = StoreSettings(namespace={namespace!r}, field_count=1)
        admin = get_store({name!r}).connect({target.url!r}, settings)
        admin.provision()
        def user(n):
            with get_store({name!r}).connect({target.url!r}, settings) as store:
                for i in range(10):
                    store.insert(f"u{{n}}-{{i:02d}}", {{"field0": f"x{{n}}"}})
                    assert store.read(f"u{{n}}-{{i:02d}}") == {{"field0": f"x{{n}}"}}
                    gevent.sleep(0)  # hand over to the other users between operations
        try:
            gevent.joinall([gevent.spawn(user, n) for n in range(5)], raise_error=True)
            print(admin.count())
        finally:
            admin.teardown()
    """)
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=Path(__file__).parents[3],
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "50"
