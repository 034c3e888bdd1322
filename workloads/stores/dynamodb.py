"""Amazon DynamoDB (and DynamoDB-compatible endpoints) through boto3.

URL forms:

- ``dynamodb://host:port?region=us-east-1`` - a local/compatible endpoint over http
  (DynamoDB Local, moto, LocalStack, ...). Without credentials in the URL, dummy ones
  are sent (such endpoints need some, and DynamoDB Local accepts only letters/digits).
- ``dynamodb+https://host[:port]?region=...`` - a compatible endpoint over https.
- ``dynamodb://aws?region=eu-west-1`` - AWS itself, with boto3's default credential chain.
- ``user:password@`` in any form is the access key id and secret access key.
- ``&marker=table`` - keep OptiStack's marker in a table instead of a tag (see below).

Layout: table ``<namespace>`` with the string hash key ``ycsb_key`` (YCSB's binding's
name) and one string attribute per field, billed PAY_PER_REQUEST.

Marker: the tag ``optistack=true``, given at CreateTable and read back with
ListTagsOfResource (moto, LocalStack and AWS support it). AWS applies tags eventually,
so on AWS a table created in the last five minutes without a visible tag is re-checked
for up to 10 s before provision refuses it. DynamoDB Local answers every tagging call with
UnknownOperationException; for such endpoints ``marker=table`` keeps an item
``{namespace: <namespace>}`` in a table ``optistack_meta`` (created on first use and
left in place by teardown, since other namespaces' markers live there).

Scan order: UNORDERED. A table with only a hash key has no key order; as YCSB's binding
does, ``scan`` is a Scan with ``ExclusiveStartKey={"ycsb_key": start_key}`` and
``Limit=count``, which returns the items that follow the start key's position in the
table's internal (hash) order; the start key itself is excluded. When the table's end
comes first, the scan wraps around to its beginning until it has ``count`` items or
meets one it already returned.

Bulk path: ``batch_writer()`` (BatchWriteItem in 25-item requests, re-sending
unprocessed items).

Reads, scans and count are strongly consistent (ConsistentRead), so a read after an
update sees it as on every other store; count is an exact paginated
``Scan(Select=COUNT)``, not the table's ItemCount (refreshed about every six hours).

Timeouts: botocore ``connect_timeout`` = ``connect_timeout_s``, ``read_timeout`` =
``operation_timeout_s``, and at most 2 attempts per request (standard retry mode), so a
request ends within about twice the operation timeout. Table creation and deletion wait
for the table state with bounded waiters.

server_info: DynamoDB has no version API. The product is "Amazon DynamoDB" for AWS and
"DynamoDB-compatible endpoint" otherwise; the version is the API version spoken
(2012-08-10) plus the endpoint's own ``Server`` header when it sends one (moto says
``Werkzeug/... Python/..., amazon.com``). Nothing more is claimed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from urllib.parse import parse_qs, unquote

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from workloads.errors import OptiStackError
from workloads.stores import register
from workloads.stores.base import Record, ScanOrder, ServerInfo, Store, StoreSettings, check_url, redact_url

KEY_ATTRIBUTE = "ycsb_key"
MARKER_TAG = {"Key": "optistack", "Value": "true"}
META_TABLE = "optistack_meta"
META_KEY = "namespace"
AWS_HOST = "aws"
# Credentials for endpoints that ignore them; DynamoDB Local wants letters/digits only.
DUMMY_CREDENTIALS = ("optistack", "optistack")
URL_OPTIONS = ("region", "marker")
# AWS applies tags eventually: how long a fresh table may lack its tag before it counts as foreign.
TAG_PROPAGATION_S = 10.0
FRESH_TABLE_S = 300.0

# One boto3 session per process: building a client on a fresh session costs ~0.1 s of
# model loading, which a Locust process with many users would pay per user. Sessions
# are not thread-safe, hence the lock around client creation.
_SESSION: boto3.session.Session | None = None
_SESSION_LOCK = threading.Lock()


def _client_factory(service: str, kind: str, **kwargs):
    global _SESSION
    with _SESSION_LOCK:
        if _SESSION is None:
            _SESSION = boto3.session.Session()
        if kind == "resource":
            return _SESSION.resource(service, **kwargs)
        return _SESSION.client(service, **kwargs)


def _error_code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


@register
class DynamoStore(Store):
    """One table per namespace with hash key `ycsb_key`."""

    name = "dynamodb"
    scan_order = ScanOrder.UNORDERED
    url_schemes = ("dynamodb", "dynamodb+https")
    example_url = "dynamodb://host:8000?region=us-east-1 (or dynamodb://aws?region=eu-west-1 for AWS)"

    _client = None

    def __init__(self, url: str, settings: StoreSettings) -> None:
        super().__init__(url, settings)
        if settings.namespace == META_TABLE:
            raise OptiStackError(
                f"namespace {META_TABLE!r} is reserved for OptiStack's marker table; "
                "choose another optistack_* namespace"
            )
        self._table = settings.namespace
        self._projections: dict[tuple[str, ...], tuple[str, dict[str, str]]] = {}
        self._updates: dict[tuple[str, ...], tuple[str, dict[str, str]]] = {}

    # -- URL ---------------------------------------------------------------
    def _parse(self) -> dict:
        parts = check_url(type(self), self.url)
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - set(URL_OPTIONS))
        if unknown:
            raise OptiStackError(
                f"dynamodb URL {redact_url(self.url)!r} has unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(URL_OPTIONS)} as in {self.example_url}"
            )
        region = query.get("region", [""])[-1] or None
        marker = query.get("marker", ["tag"])[-1]
        if marker not in ("tag", "table"):
            raise OptiStackError(
                f"dynamodb URL option marker={marker!r} is unknown: use marker=tag (default) or marker=table"
            )
        if (parts.username is None) != (parts.password is None):
            raise OptiStackError(
                f"dynamodb URL {redact_url(self.url)!r} needs both the access key id and the secret, "
                "as access_key_id:secret@host, or neither"
            )
        hostport = parts.netloc.rpartition("@")[2]
        is_aws = parts.hostname == AWS_HOST and parts.port is None
        kwargs: dict = {}
        if parts.username is not None:
            kwargs["aws_access_key_id"] = unquote(parts.username)
            kwargs["aws_secret_access_key"] = unquote(parts.password)
        elif parts.scheme == "dynamodb" and not is_aws:
            kwargs["aws_access_key_id"], kwargs["aws_secret_access_key"] = DUMMY_CREDENTIALS
        if not is_aws:
            kwargs["endpoint_url"] = f"{'https' if parts.scheme == 'dynamodb+https' else 'http'}://{hostport}"
            region = region or "us-east-1"  # compatible endpoints ignore it, botocore insists on one
        elif region is None and boto3.session.Session().region_name is None:
            raise OptiStackError(
                f"dynamodb URL {redact_url(self.url)!r} names no region and none is configured: "
                "add ?region=<aws-region>, e.g. dynamodb://aws?region=eu-west-1"
            )
        if region:
            kwargs["region_name"] = region
        return {"kwargs": kwargs, "marker": marker, "aws": is_aws, "endpoint": hostport}

    # -- lifecycle ---------------------------------------------------------
    def _open(self) -> None:
        parsed = self._parse()
        self._is_aws = parsed["aws"]
        self._endpoint = parsed["endpoint"]
        self._marker_mode = parsed["marker"]
        self._client_kwargs = {
            **parsed["kwargs"],
            "config": Config(
                connect_timeout=self.settings.connect_timeout_s,
                read_timeout=self.settings.operation_timeout_s,
                retries={"mode": "standard", "total_max_attempts": 2},
            ),
        }
        self._client = _client_factory("dynamodb", "client", **self._client_kwargs)
        try:
            self._describe(self._table)  # clients are lazy; make an unreachable endpoint fail here
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def server_info(self) -> ServerInfo:
        """DynamoDB has no version call: the API version plus what the endpoint says about itself."""
        api = self._client.meta.service_model.api_version
        if self._is_aws:
            return ServerInfo("Amazon DynamoDB", f"API {api} ({self._client.meta.region_name})")
        try:
            response = self._client.describe_table(TableName=self._table)
        except ClientError as error:  # a missing table still answers with headers
            response = error.response
        server = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("server")
        return ServerInfo(
            "DynamoDB-compatible endpoint",
            f"API {api}; Server: {server}" if server else f"API {api}; endpoint {self._endpoint}",
        )

    # -- namespace ---------------------------------------------------------
    def _describe(self, table: str) -> dict | None:
        try:
            return self._client.describe_table(TableName=table)["Table"]
        except self._client.exceptions.ResourceNotFoundException:
            return None

    def _wait(self, table: str, waiter: str) -> None:
        # Local endpoints switch state at once; AWS takes seconds to a few minutes.
        delay = 2 if self._is_aws else 0.2
        self._client.get_waiter(waiter).wait(
            TableName=table, WaiterConfig={"Delay": delay, "MaxAttempts": int(300 / delay)}
        )

    def _tags(self, arn: str) -> list[dict]:
        tags: list[dict] = []
        kwargs = {"ResourceArn": arn}
        while True:
            try:
                page = self._client.list_tags_of_resource(**kwargs)
            except ClientError as error:
                if _error_code(error) == "UnknownOperationException":
                    raise OptiStackError(
                        f"the DynamoDB endpoint {self._endpoint} does not support tags (DynamoDB Local "
                        "does not), so OptiStack cannot mark its table there: add &marker=table to "
                        "the URL to keep the marker in the optistack_meta table instead"
                    ) from None
                raise
            tags.extend(page.get("Tags", []))
            if not page.get("NextToken"):
                return tags
            kwargs["NextToken"] = page["NextToken"]

    def _check_tagging(self) -> None:
        """Fail before creating a table whose tag the endpoint would drop (DynamoDB Local)."""
        arn = f"arn:aws:dynamodb:{self._client.meta.region_name}:000000000000:table/{self._table}"
        # Any answer but UnknownOperationException (which _tags turns into advice) means tags work.
        with contextlib.suppress(ClientError):
            self._tags(arn)

    def _ensure_meta_table(self) -> None:
        if self._describe(META_TABLE) is None:
            # ResourceInUse: another OptiStack process created it first, which is as good.
            with contextlib.suppress(self._client.exceptions.ResourceInUseException):
                self._client.create_table(
                    TableName=META_TABLE,
                    KeySchema=[{"AttributeName": META_KEY, "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": META_KEY, "AttributeType": "S"}],
                    BillingMode="PAY_PER_REQUEST",
                )
        self._wait(META_TABLE, "table_exists")

    def _marked(self, description: dict) -> bool:
        if self._marker_mode == "table":
            if self._describe(META_TABLE) is None:
                return False
            item = self._client.get_item(
                TableName=META_TABLE, Key={META_KEY: {"S": self._table}}, ConsistentRead=True
            )
            return "Item" in item
        deadline = time.monotonic() + TAG_PROPAGATION_S
        created = description.get("CreationDateTime")
        # Only AWS applies tags late; local endpoints answer with what they have at once.
        fresh = (
            self._is_aws
            and isinstance(created, datetime)
            and (datetime.now(UTC) - created).total_seconds() < FRESH_TABLE_S
        )
        while True:
            if MARKER_TAG in self._tags(description["TableArn"]):
                return True
            if not fresh or time.monotonic() > deadline:
                return False
            time.sleep(1.0)

    def _drop(self) -> None:
        try:
            self._client.delete_table(TableName=self._table)
        except self._client.exceptions.ResourceNotFoundException:
            pass
        except self._client.exceptions.ResourceInUseException:
            pass  # already being deleted; the waiter below covers it
        self._wait(self._table, "table_not_exists")

    def provision(self) -> None:
        """Create the table afresh (waiting for ACTIVE), dropping an existing one only if it is marked."""
        description = self._describe(self._table)
        if description is not None:
            if not self._marked(description):
                raise OptiStackError(
                    f"DynamoDB table {self._table!r} already exists without OptiStack's marker "
                    f"({'an item in optistack_meta' if self._marker_mode == 'table' else 'tag optistack=true'}): "
                    "OptiStack will not touch a table it did not create. Choose another namespace or "
                    "delete the table yourself."
                )
            self._drop()
        create: dict = {
            "TableName": self._table,
            "KeySchema": [{"AttributeName": KEY_ATTRIBUTE, "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": KEY_ATTRIBUTE, "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        }
        if self._marker_mode == "table":
            self._ensure_meta_table()
            self._client.put_item(
                TableName=META_TABLE,
                Item={
                    META_KEY: {"S": self._table},
                    "created_by": {"S": "optistack"},
                    "created_at": {"S": datetime.now(UTC).isoformat()},
                },
            )
        else:
            if not self._is_aws:
                self._check_tagging()
            create["Tags"] = [MARKER_TAG]
        self._client.create_table(**create)
        self._wait(self._table, "table_exists")

    def teardown(self) -> None:
        """Delete the table (and its marker item); a table without the marker is left alone."""
        description = self._describe(self._table)
        if description is not None and self._marked(description):
            self._drop()
        if self._marker_mode == "table" and self._describe(META_TABLE) is not None:
            self._client.delete_item(TableName=META_TABLE, Key={META_KEY: {"S": self._table}})

    # -- seeding -----------------------------------------------------------
    def load(self, records: Iterable[tuple[str, Record]]) -> int:
        """Seed through boto3's batch_writer (25-item BatchWriteItem requests, unprocessed items re-sent)."""
        resource = _client_factory("dynamodb", "resource", **self._client_kwargs)
        loaded = 0
        try:
            # batch_writer buffers 25 items at a time, so the iterator is consumed lazily.
            with resource.Table(self._table).batch_writer() as batch:
                for key, values in records:
                    batch.put_item(Item={KEY_ATTRIBUTE: key, **values})
                    loaded += 1
        finally:
            resource.meta.client.close()
        return loaded

    def count(self) -> int:
        """Exact item count by a paginated, consistent Scan(Select=COUNT)."""
        total = 0
        kwargs: dict = {"TableName": self._table, "Select": "COUNT", "ConsistentRead": True}
        while True:
            page = self._client.scan(**kwargs)
            total += page["Count"]
            if "LastEvaluatedKey" not in page:
                return total
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # -- operations --------------------------------------------------------
    def _projection(self, fields: Sequence[str], with_key: bool) -> tuple[str, dict[str, str]]:
        cache_key = (*fields, "\0key" if with_key else "")
        cached = self._projections.get(cache_key)
        if cached is None:
            # Placeholders, because attribute names could collide with DynamoDB's reserved words.
            names = {f"#f{i}": f for i, f in enumerate(fields)}
            if with_key:
                names["#k"] = KEY_ATTRIBUTE
            cached = self._projections[cache_key] = (", ".join(names), names)
        return cached

    @staticmethod
    def _record(item: dict) -> Record:
        return {name: value["S"] for name, value in item.items() if name != KEY_ATTRIBUTE}

    def read(self, key: str, fields: Sequence[str] | None = None) -> Record | None:
        """Consistent GetItem, projected to `fields`."""
        kwargs: dict = {"TableName": self._table, "Key": {KEY_ATTRIBUTE: {"S": key}}, "ConsistentRead": True}
        if fields is not None:
            kwargs["ProjectionExpression"], kwargs["ExpressionAttributeNames"] = self._projection(
                fields, False
            )
        item = self._client.get_item(**kwargs).get("Item")
        return None if item is None else self._record(item)

    def scan(
        self, start_key: str, count: int, fields: Sequence[str] | None = None
    ) -> list[tuple[str, Record]]:
        """Up to `count` items following `start_key`'s position in the table's order (unspecified)."""
        base: dict = {"TableName": self._table, "ConsistentRead": True}
        if fields is not None:
            base["ProjectionExpression"], base["ExpressionAttributeNames"] = self._projection(fields, True)
        result: list[tuple[str, Record]] = []
        seen: set[str] = set()
        start: dict | None = {KEY_ATTRIBUTE: {"S": start_key}}
        wrapped = False
        while len(result) < count:
            kwargs = {**base, "Limit": count - len(result)}
            if start is not None:
                kwargs["ExclusiveStartKey"] = start
            page = self._client.scan(**kwargs)
            for item in page["Items"]:
                key = item[KEY_ATTRIBUTE]["S"]
                if key in seen:  # wrapped round to where this scan began
                    return result
                seen.add(key)
                result.append((key, self._record(item)))
            start = page.get("LastEvaluatedKey")
            if start is None:
                if wrapped:
                    break
                wrapped = True  # reached the table's end: continue from its beginning
        return result

    def update(self, key: str, values: Record) -> None:
        """UpdateItem SET of the given fields."""
        fields = tuple(values)
        cached = self._updates.get(fields)
        if cached is None:
            names = {f"#f{i}": f for i, f in enumerate(fields)}
            expression = "SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(fields)))
            cached = self._updates[fields] = (expression, names)
        expression, names = cached
        self._client.update_item(
            TableName=self._table,
            Key={KEY_ATTRIBUTE: {"S": key}},
            UpdateExpression=expression,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={f":v{i}": {"S": values[f]} for i, f in enumerate(fields)},
        )

    def insert(self, key: str, values: Record) -> None:
        """PutItem."""
        item = {KEY_ATTRIBUTE: {"S": key}}
        item.update({name: {"S": value} for name, value in values.items()})
        self._client.put_item(TableName=self._table, Item=item)

    def delete(self, key: str) -> None:
        """DeleteItem."""
        self._client.delete_item(TableName=self._table, Key={KEY_ATTRIBUTE: {"S": key}})
