"""Redis store against the real Redis server (db 1) and, for the Valkey check, a Valkey server."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis as redis_py

from tests.conftest import free_port
from workloads.errors import OptiStackError
from workloads.local import LocalServer
from workloads.stores import get_store
from workloads.stores.base import StoreSettings
from workloads.stores.redis import BATCH_SIZE

FIELDS = 3


def record(n: int) -> dict[str, str]:
    return {f"field{i}": f"v{n}-{i}" for i in range(FIELDS)}


@pytest.fixture
def namespace() -> str:
    # Unique per test: other developers' runs share this Redis database.
    return f"optistack_t_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def url(store_server) -> str:
    return store_server("redis").url


@pytest.fixture
def native(url: str) -> Iterator[redis_py.Redis]:
    client = redis_py.Redis.from_url(url, decode_responses=True)
    yield client
    client.close()


def connect(url: str, namespace: str):
    return get_store("redis").connect(url, StoreSettings(namespace=namespace, field_count=FIELDS))


def test_layout_is_hash_per_record_plus_lex_index_and_marker(url: str, namespace: str, native) -> None:
    with connect(url, namespace) as store:
        store.provision()
        try:
            store.load((f"user{i:04d}", record(i)) for i in range(5))
            assert native.hgetall(f"{namespace}:user0003") == record(3)
            assert native.zrange(f"{namespace}:__index", 0, -1, withscores=True) == [
                (f"user{i:04d}", 0.0) for i in range(5)
            ]
            assert native.exists(f"{namespace}:__optistack__") == 1
        finally:
            store.teardown()
        assert list(native.scan_iter(match=f"{namespace}:*")) == []


def test_load_spans_several_pipelines(url: str, namespace: str) -> None:
    n = 2 * BATCH_SIZE + 7
    with connect(url, namespace) as store:
        store.provision()
        try:
            assert store.load((f"user{i:06d}", record(i)) for i in range(n)) == n
            assert store.count() == n
            assert store.read(f"user{n - 1:06d}") == record(n - 1)
        finally:
            store.teardown()


def test_scan_skips_a_record_deleted_behind_the_index(url: str, namespace: str, native) -> None:
    with connect(url, namespace) as store:
        store.provision()
        try:
            store.load((f"user{i:04d}", record(i)) for i in range(5))
            native.delete(f"{namespace}:user0002")  # as a concurrent delete between ZRANGEBYLEX and HGETALL
            assert [k for k, _ in store.scan("user0001", 3)] == ["user0001", "user0003"]
        finally:
            store.teardown()


def test_users_own_keys_survive_provision_and_teardown(url: str, namespace: str, native) -> None:
    own = f"myapp:{uuid.uuid4().hex[:8]}"
    native.set(f"{own}:plain", "keep me")
    native.hset(f"{own}:hash", mapping={"a": "1"})
    try:
        with connect(url, namespace) as store:
            store.provision()
            store.load((f"user{i}", record(i)) for i in range(3))
            store.teardown()
        assert native.get(f"{own}:plain") == "keep me"
        assert native.hgetall(f"{own}:hash") == {"a": "1"}
    finally:
        native.delete(f"{own}:plain", f"{own}:hash")


def test_provision_refuses_keys_without_the_marker(url: str, namespace: str, native) -> None:
    native.set(f"{namespace}:somebody-else", "theirs")
    try:
        with connect(url, namespace) as store:
            with pytest.raises(OptiStackError, match="will not touch"):
                store.provision()
            store.teardown()  # without the marker teardown leaves the keys alone too
        assert native.get(f"{namespace}:somebody-else") == "theirs"
    finally:
        native.delete(f"{namespace}:somebody-else")


def test_unreachable_port_fails_fast_without_the_password() -> None:
    url = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/1"
    started = time.monotonic()
    with pytest.raises(OptiStackError) as caught:
        get_store("redis").connect(url, StoreSettings(connect_timeout_s=2))
    assert time.monotonic() - started < 5
    assert "s3cret-pw" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)


def test_database_path_must_be_a_number() -> None:
    with pytest.raises(OptiStackError, match="database number") as caught:
        get_store("redis").connect("redis://:pw-xyz@127.0.0.1:6379/users")
    assert "pw-xyz" not in str(caught.value)


def test_valkey_is_reported_as_valkey(valkey: LocalServer) -> None:
    with connect(valkey.url, "optistack_valkey") as store:
        info = store.server_info()
        assert info.product == "Valkey"
        assert info.version[0].isdigit()
        store.provision()
        store.load((f"user{i}", record(i)) for i in range(3))
        assert [k for k, _ in store.scan("user1", 5)] == ["user1", "user2"]
        store.teardown()
        assert store.count() == 0


def test_redis_is_reported_as_redis(url: str, native) -> None:
    with connect(url, "optistack_info") as store:
        info = store.server_info()
    assert info.product == "Redis"
    assert info.version == native.info("server")["redis_version"]
