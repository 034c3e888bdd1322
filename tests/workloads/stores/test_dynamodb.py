"""DynamoDB store against the session's DynamoDB-compatible endpoint (moto unless OPTISTACK_TEST_DYNAMODB_URL)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import pytest

from tests.conftest import free_port
from workloads.errors import OptiStackError
from workloads.stores import get_store
from workloads.stores.base import StoreSettings
from workloads.stores.dynamodb import DUMMY_CREDENTIALS, META_KEY, META_TABLE

FIELDS = 3


def record(n: int) -> dict[str, str]:
    return {f"field{i}": f"v{n}-{i}" for i in range(FIELDS)}


@pytest.fixture
def namespace() -> str:
    return f"optistack_t_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def url(store_server) -> str:
    target = store_server("dynamodb")
    if urlsplit(target.url).hostname == "aws":
        pytest.skip("these tests create and delete tables freely; point them at a local endpoint")
    return target.url


@pytest.fixture
def native(url: str):
    parts = urlsplit(url)
    client = boto3.client(
        "dynamodb",
        endpoint_url=f"http://{parts.hostname}:{parts.port}",
        region_name="us-east-1",
        aws_access_key_id=DUMMY_CREDENTIALS[0],
        aws_secret_access_key=DUMMY_CREDENTIALS[1],
    )
    yield client
    client.close()


def connect(url: str, namespace: str):
    return get_store("dynamodb").connect(url, StoreSettings(namespace=namespace, field_count=FIELDS))


def create_plain_table(native, name: str) -> None:
    native.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "ycsb_key", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "ycsb_key", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    native.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})


def test_table_carries_the_marker_tag(url: str, namespace: str, native) -> None:
    with connect(url, namespace) as store:
        store.provision()
        try:
            table = native.describe_table(TableName=namespace)["Table"]
            assert table["TableStatus"] == "ACTIVE"
            assert table["KeySchema"] == [{"AttributeName": "ycsb_key", "KeyType": "HASH"}]
            tags = native.list_tags_of_resource(ResourceArn=table["TableArn"])["Tags"]
            assert {"Key": "optistack", "Value": "true"} in tags
        finally:
            store.teardown()
    assert namespace not in native.list_tables()["TableNames"]


def test_marker_table_mode_for_endpoints_without_tags(url: str, namespace: str, native) -> None:
    with connect(url + "&marker=table", namespace) as store:
        store.provision()
        try:
            item = native.get_item(TableName=META_TABLE, Key={META_KEY: {"S": namespace}})["Item"]
            assert item["created_by"] == {"S": "optistack"}
            store.load((f"user{i}", record(i)) for i in range(5))
            store.provision()  # idempotent: the marker item says the table is OptiStack's
            assert store.count() == 0
        finally:
            store.teardown()
    assert namespace not in native.list_tables()["TableNames"]
    assert "Item" not in native.get_item(TableName=META_TABLE, Key={META_KEY: {"S": namespace}})


def test_users_own_table_survives_provision_and_teardown(url: str, namespace: str, native) -> None:
    own = f"myapp_{uuid.uuid4().hex[:8]}"
    create_plain_table(native, own)
    native.put_item(TableName=own, Item={"ycsb_key": {"S": "mine"}, "v": {"S": "1"}})
    try:
        with connect(url, namespace) as store:
            store.provision()
            store.load((f"user{i}", record(i)) for i in range(3))
            store.teardown()
        assert native.get_item(TableName=own, Key={"ycsb_key": {"S": "mine"}})["Item"]["v"] == {"S": "1"}
    finally:
        native.delete_table(TableName=own)


@pytest.mark.parametrize("marker", ["", "&marker=table"])
def test_provision_refuses_a_table_without_the_marker(url: str, namespace: str, native, marker: str) -> None:
    create_plain_table(native, namespace)
    native.put_item(TableName=namespace, Item={"ycsb_key": {"S": "theirs"}})
    try:
        with connect(url + marker, namespace) as store:
            with pytest.raises(OptiStackError, match="will not touch"):
                store.provision()
            store.teardown()  # no marker: left alone
        assert "Item" in native.get_item(TableName=namespace, Key={"ycsb_key": {"S": "theirs"}})
    finally:
        native.delete_table(TableName=namespace)


def test_scan_returns_count_distinct_items_and_wraps_at_the_end(url: str, namespace: str) -> None:
    n = 30
    with connect(url, namespace) as store:
        store.provision()
        try:
            store.load((f"user{i:03d}", record(i)) for i in range(n))
            for start in ("user000", "user015", "user029", "not-a-key"):
                got = store.scan(start, 10)
                keys = [k for k, _ in got]
                assert len(keys) == len(set(keys)) == 10
                assert all(values == record(int(k[4:])) for k, values in got)
            # asking for more than exists returns every item once
            assert sorted(k for k, _ in store.scan("user010", 100)) == [f"user{i:03d}" for i in range(n)]
        finally:
            store.teardown()


def test_load_uses_more_than_one_batch_and_count_is_exact(url: str, namespace: str) -> None:
    n = 260  # batch_writer sends 25 items per BatchWriteItem
    with connect(url, namespace) as store:
        store.provision()
        try:
            assert store.load((f"user{i:04d}", record(i)) for i in range(n)) == n
            assert store.count() == n
        finally:
            store.teardown()


def test_server_info_is_honest_about_the_endpoint(url: str, native) -> None:
    with get_store("dynamodb").connect(url) as store:
        info = store.server_info()
    server = native.list_tables()["ResponseMetadata"]["HTTPHeaders"].get("server")
    assert info.product == "DynamoDB-compatible endpoint"
    assert info.version.startswith("API 2012-08-10")
    if server:
        assert server in info.version


def test_unreachable_port_fails_fast_without_the_secret() -> None:
    url = f"dynamodb://AKIDEXAMPLE:s3cret-key@127.0.0.1:{free_port()}?region=us-east-1"
    started = time.monotonic()
    with pytest.raises(OptiStackError) as caught:
        get_store("dynamodb").connect(url, StoreSettings(connect_timeout_s=2, operation_timeout_s=2))
    assert time.monotonic() - started < 10
    assert "s3cret-key" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("dynamodb://127.0.0.1:8000?region=us-east-1&tables=x", "unknown option"),
        ("dynamodb://127.0.0.1:8000?marker=comment", "marker=tag"),
        ("dynamodb://onlyuser@127.0.0.1:8000", "both the access key id and the secret"),
        ("dynamo://127.0.0.1:8000", "dynamodb://"),
    ],
)
def test_bad_urls_say_what_to_change(url: str, message: str) -> None:
    with pytest.raises(OptiStackError, match=message):
        get_store("dynamodb").connect(url, StoreSettings(connect_timeout_s=1))


def test_aws_without_a_region_asks_for_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    with pytest.raises(OptiStackError, match=r"\?region="):
        get_store("dynamodb").connect("dynamodb://aws", StoreSettings(connect_timeout_s=1))
