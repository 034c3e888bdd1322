"""MongoDB store against the session's MongoDB-wire server (nx-27017 unless OPTISTACK_TEST_MONGODB_URL)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from pymongo import MongoClient

from tests.conftest import free_port
from workloads.errors import OptiStackError
from workloads.stores import get_store
from workloads.stores.base import StoreSettings
from workloads.stores.mongodb import BATCH_SIZE, META_COLLECTION

FIELDS = 3


def record(n: int) -> dict[str, str]:
    return {f"field{i}": f"v{n}-{i}" for i in range(FIELDS)}


@pytest.fixture
def namespace() -> str:
    return f"optistack_t_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def url(store_server) -> str:
    return store_server("mongodb").url


@pytest.fixture
def native(url: str) -> Iterator:
    client = MongoClient(url, serverSelectionTimeoutMS=5000)
    yield client.get_default_database(default="optistack")
    client.close()


def connect(url: str, namespace: str):
    return get_store("mongodb").connect(url, StoreSettings(namespace=namespace, field_count=FIELDS))


def test_marker_document_and_layout(url: str, namespace: str, native) -> None:
    with connect(url, namespace) as store:
        store.provision()
        try:
            assert native[META_COLLECTION].find_one({"_id": namespace})["created_by"] == "optistack"
            store.load((f"user{i:04d}", record(i)) for i in range(3))
            assert native[namespace].find_one({"_id": "user0001"}) == {"_id": "user0001", **record(1)}
        finally:
            store.teardown()
    assert native[META_COLLECTION].find_one({"_id": namespace}) is None
    assert namespace not in native.list_collection_names()


def test_load_spans_several_batches(url: str, namespace: str) -> None:
    n = 2 * BATCH_SIZE + 7
    with connect(url, namespace) as store:
        store.provision()
        try:
            assert store.load((f"user{i:06d}", record(i)) for i in range(n)) == n
            assert store.count() == n
            assert [k for k, _ in store.scan(f"user{n - 2:06d}", 5)] == [
                f"user{n - 2:06d}",
                f"user{n - 1:06d}",
            ]
        finally:
            store.teardown()


def test_users_own_collection_survives_provision_and_teardown(url: str, namespace: str, native) -> None:
    own = f"myapp_{uuid.uuid4().hex[:8]}"
    native[own].insert_many([{"_id": "a", "v": 1}, {"_id": "b", "v": 2}])
    try:
        with connect(url, namespace) as store:
            store.provision()
            store.load((f"user{i}", record(i)) for i in range(3))
            store.teardown()
        assert own in native.list_collection_names()
        assert list(native[own].find({}).sort("_id", 1)) == [{"_id": "a", "v": 1}, {"_id": "b", "v": 2}]
    finally:
        native.drop_collection(own)


def test_provision_refuses_a_collection_without_the_marker(url: str, namespace: str, native) -> None:
    native[namespace].insert_one({"_id": "theirs"})
    try:
        with connect(url, namespace) as store:
            with pytest.raises(OptiStackError, match="will not touch"):
                store.provision()
            store.teardown()  # no marker: teardown leaves it alone as well
        assert native[namespace].find_one({"_id": "theirs"}) == {"_id": "theirs"}
    finally:
        native.drop_collection(namespace)


def test_marker_collection_name_is_reserved() -> None:
    with pytest.raises(OptiStackError, match="reserved"):
        get_store("mongodb").connect(
            "mongodb://127.0.0.1:1/x", StoreSettings(namespace=META_COLLECTION, connect_timeout_s=1)
        )


def test_unreachable_port_fails_fast_without_the_password() -> None:
    url = f"mongodb://bob:s3cret-pw@127.0.0.1:{free_port()}/optistack"
    started = time.monotonic()
    with pytest.raises(OptiStackError) as caught:
        get_store("mongodb").connect(url, StoreSettings(connect_timeout_s=2))
    assert time.monotonic() - started < 6
    assert "s3cret-pw" not in str(caught.value)


def test_server_info_names_the_real_server(url: str, native) -> None:
    with get_store("mongodb").connect(url) as store:
        info = store.server_info()
    build = native.command("buildInfo")
    if build.get("process") == "nx_27017":
        assert info.product == "nx-27017 (MongoDB wire protocol)"
        assert info.version == f"{build['version']}-compatible"
    else:
        assert info.product == "MongoDB"
        assert info.version == build["version"]
