"""Apache Cassandra through the DataStax cassandra-driver.

URL: ``cassandra://[user:password@]host1[,host2,...][:9042][/keyspace][?options]`` -
one port for every contact point; user and password go to PlainTextAuthProvider.
Options: ``replication_factor`` (default 1; used only when OptiStack creates the
keyspace), ``consistency`` (default LOCAL_QUORUM; any ConsistencyLevel name) and
``local_dc`` (the data centre to route to; by default the first contact point's).

Layout: keyspace = URL path (default ``optistack``), table ``<namespace>`` with
``y_id text PRIMARY KEY`` and one text column per field, as in YCSB's CQL binding.
Provision creates the keyspace with SimpleStrategy and the given replication factor if
it is missing, but only keyspaces whose name starts with ``optistack``; a keyspace of
any other name must exist already. Teardown drops the table only: the keyspace may
hold other namespaces.

Marker: the table comment (``MARKER_COMMENT``), read back from
``system_schema.tables``; a table of the same name with another comment is never
dropped.

Scan order: TOKEN. With the partition key as the only key, rows are ordered by the
partitioner's token, so ``scan`` is ``WHERE token(y_id) >= token(?) LIMIT ?``, the
start key first - YCSB's CQL binding scans the same way.

Bulk path: ``execute_concurrent_with_args`` over a prepared INSERT, in chunks of 2000
rows with up to 64 requests in flight. Every operation uses a prepared statement,
prepared once per connection and field list.

Timeouts: ``connect_timeout`` and ``control_connection_timeout`` =
``connect_timeout_s``; the default execution profile's ``request_timeout`` =
``operation_timeout_s``. Schema changes get at least 60 s, since they wait for schema
agreement across the cluster.

In a gevent-patched process (Locust) the driver uses its GeventConnection, otherwise
its default event loop.

Caveats: ScyllaDB answers ``system.local.release_version`` with the Cassandra version
it is compatible with and is reported as Cassandra. count() pages through all keys.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from urllib.parse import parse_qs, unquote

from cassandra import ConsistencyLevel
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.query import PreparedStatement, dict_factory

from workloads.errors import OptiStackError
from workloads.stores import register
from workloads.stores.base import (
    Record,
    ScanOrder,
    ServerInfo,
    Store,
    StoreSettings,
    check_url,
    chunks,
    redact_url,
)

DEFAULT_PORT = 9042
DEFAULT_KEYSPACE = "optistack"
KEYSPACE_PREFIX = "optistack"
KEY_COLUMN = "y_id"
MARKER_COMMENT = "optistack: created by OptiStack, dropped by its teardown"
URL_OPTIONS = ("replication_factor", "consistency", "local_dc")
CHUNK_SIZE = 2000  # rows per execute_concurrent_with_args call: bounds memory while seeding
CONCURRENCY = 64  # requests in flight while seeding
DDL_TIMEOUT_S = 60.0
# CQL identifiers OptiStack uses unquoted-safe and within Cassandra's 48-character limit.
IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,47}")


def _gevent_patched() -> bool:
    # gevent is imported only if someone else already did: a process that never loaded
    # it cannot be monkey-patched.
    if "gevent" not in sys.modules:
        return False
    from gevent import monkey

    return monkey.is_module_patched("socket")


@register
class CassandraStore(Store):
    """One table per namespace in one keyspace, partition key = record key."""

    name = "cassandra"
    scan_order = ScanOrder.TOKEN
    url_schemes = ("cassandra",)
    example_url = "cassandra://[user:password@]host1,host2:9042/optistack?replication_factor=1&consistency=LOCAL_QUORUM&local_dc=dc1"

    _cluster: Cluster | None = None

    def __init__(self, url: str, settings: StoreSettings) -> None:
        super().__init__(url, settings)
        if not IDENTIFIER.fullmatch(settings.namespace):
            raise OptiStackError(
                f"namespace {settings.namespace!r} is not a valid Cassandra table name: "
                "use letters, digits and underscores, at most 48 characters"
            )
        self._statements: dict[tuple, PreparedStatement] = {}

    # -- URL ---------------------------------------------------------------
    def _parse(self) -> dict:
        parts = check_url(type(self), self.url)
        safe_url = redact_url(self.url)
        hosts = [h.strip() for h in (parts.hostname or "").split(",") if h.strip()]
        keyspace = parts.path.strip("/") or DEFAULT_KEYSPACE
        if not IDENTIFIER.fullmatch(keyspace):
            raise OptiStackError(
                f"cassandra URL {safe_url!r} names keyspace {keyspace!r}; a keyspace name is letters, "
                f"digits and underscores (at most 48), as in {self.example_url}"
            )
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - set(URL_OPTIONS))
        if unknown:
            raise OptiStackError(
                f"cassandra URL {safe_url!r} has unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(URL_OPTIONS)}, as in {self.example_url}"
            )
        raw_rf = query.get("replication_factor", ["1"])[-1]
        if not raw_rf.isdigit() or int(raw_rf) < 1:
            raise OptiStackError(
                f"cassandra URL option replication_factor={raw_rf!r} must be a whole number of at least 1"
            )
        consistency_name = query.get("consistency", ["LOCAL_QUORUM"])[-1].upper()
        if consistency_name not in ConsistencyLevel.name_to_value:
            raise OptiStackError(
                f"cassandra URL option consistency={consistency_name!r} is unknown; use one of "
                f"{', '.join(sorted(ConsistencyLevel.name_to_value))}"
            )
        return {
            "hosts": hosts,
            "port": parts.port or DEFAULT_PORT,
            "keyspace": keyspace,
            "replication_factor": int(raw_rf),
            "consistency": ConsistencyLevel.name_to_value[consistency_name],
            "local_dc": query.get("local_dc", [""])[-1] or None,
            "user": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None,
        }

    # -- lifecycle ---------------------------------------------------------
    def _open(self) -> None:
        parsed = self._parse()
        self._keyspace = parsed["keyspace"]
        self._replication_factor = parsed["replication_factor"]
        self._qualified = f'"{self._keyspace}"."{self.settings.namespace}"'
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(
                DCAwareRoundRobinPolicy(local_dc=parsed["local_dc"] or "")
            ),
            consistency_level=parsed["consistency"],
            request_timeout=self.settings.operation_timeout_s,
            row_factory=dict_factory,
        )
        options: dict = {
            "contact_points": parsed["hosts"],
            "port": parsed["port"],
            "execution_profiles": {EXEC_PROFILE_DEFAULT: profile},
            "connect_timeout": self.settings.connect_timeout_s,
            "control_connection_timeout": self.settings.connect_timeout_s,
            "application_name": "optistack",
        }
        if parsed["user"] is not None:
            options["auth_provider"] = PlainTextAuthProvider(parsed["user"], parsed["password"] or "")
        if _gevent_patched():
            from cassandra.io.geventreactor import GeventConnection

            options["connection_class"] = GeventConnection
        self._cluster = Cluster(**options)
        try:
            self._session = self._cluster.connect()  # contacts the cluster: unreachable hosts fail here
        except BaseException:
            self._cluster.shutdown()  # stop the driver's threads; nothing else will
            self._cluster = None
            raise

    def close(self) -> None:
        if self._cluster is not None:
            self._cluster.shutdown()
            self._cluster = None
            self._statements.clear()

    def server_info(self) -> ServerInfo:
        """Cassandra's release_version from system.local."""
        row = self._session.execute("SELECT release_version FROM system.local").one()
        return ServerInfo("Cassandra", str(row["release_version"]))

    # -- namespace ---------------------------------------------------------
    def _table_comment(self) -> str | None:
        """The table's comment, or None when the table does not exist."""
        row = self._session.execute(
            "SELECT comment FROM system_schema.tables WHERE keyspace_name = %s AND table_name = %s",
            (self._keyspace, self.settings.namespace),
        ).one()
        return None if row is None else (row["comment"] or "")

    def _ensure_keyspace(self) -> None:
        exists = self._session.execute(
            "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = %s", (self._keyspace,)
        ).one()
        if exists:
            return
        if not self._keyspace.startswith(KEYSPACE_PREFIX):
            raise OptiStackError(
                f"keyspace {self._keyspace!r} does not exist and OptiStack only creates keyspaces whose "
                f"name starts with {KEYSPACE_PREFIX!r}: create it yourself or name an optistack keyspace "
                "in the URL path"
            )
        self._session.execute(
            f'CREATE KEYSPACE IF NOT EXISTS "{self._keyspace}" WITH replication = '
            f"{{'class': 'SimpleStrategy', 'replication_factor': {self._replication_factor}}}",
            timeout=max(DDL_TIMEOUT_S, self.settings.operation_timeout_s),
        )

    def _drop_table(self) -> None:
        self._statements.clear()  # prepared statements refer to the dropped table's id
        self._session.execute(
            f"DROP TABLE IF EXISTS {self._qualified}",
            timeout=max(DDL_TIMEOUT_S, self.settings.operation_timeout_s),
        )

    def provision(self) -> None:
        """Create the table (and an optistack keyspace if missing), dropping an existing table only if marked."""
        self._ensure_keyspace()
        comment = self._table_comment()
        if comment is not None:
            if comment != MARKER_COMMENT:
                raise OptiStackError(
                    f"table {self._keyspace}.{self.settings.namespace} already exists without OptiStack's "
                    f"marker comment: OptiStack will not touch a table it did not create. Choose another "
                    "namespace or drop the table yourself."
                )
            self._drop_table()
        columns = ", ".join(f'"{f}" text' for f in self.settings.fields)
        escaped_comment = MARKER_COMMENT.replace("'", "''")
        self._session.execute(
            f'CREATE TABLE {self._qualified} ("{KEY_COLUMN}" text PRIMARY KEY, {columns}) '
            f"WITH comment = '{escaped_comment}'",
            timeout=max(DDL_TIMEOUT_S, self.settings.operation_timeout_s),
        )

    def teardown(self) -> None:
        """Drop the table if it carries the marker comment; the keyspace stays."""
        if self._table_comment() == MARKER_COMMENT:
            self._drop_table()

    # -- statements --------------------------------------------------------
    def _prepared(self, kind: str, fields: tuple[str, ...]) -> PreparedStatement:
        statement = self._statements.get((kind, fields))
        if statement is None:
            quoted = [f'"{f}"' for f in fields]
            table = self._qualified
            key = f'"{KEY_COLUMN}"'
            if kind == "read":
                cql = f"SELECT {', '.join(quoted) or '*'} FROM {table} WHERE {key} = ?"
            elif kind == "scan":
                columns = ", ".join([key, *quoted]) if fields else "*"
                cql = f"SELECT {columns} FROM {table} WHERE token({key}) >= token(?) LIMIT ?"
            elif kind == "update":
                cql = f"UPDATE {table} SET {', '.join(f'{q} = ?' for q in quoted)} WHERE {key} = ?"
            elif kind == "insert":
                cql = f"INSERT INTO {table} ({', '.join([key, *quoted])}) VALUES ({', '.join('?' * (len(fields) + 1))})"
            elif kind == "delete":
                cql = f"DELETE FROM {table} WHERE {key} = ?"
            else:  # count
                cql = f"SELECT {key} FROM {table}"
            statement = self._statements[(kind, fields)] = self._session.prepare(cql)
        return statement

    @staticmethod
    def _record(row: dict) -> Record:
        # Unset columns come back as None; a YCSB record simply lacks them.
        return {name: value for name, value in row.items() if name != KEY_COLUMN and value is not None}

    # -- seeding -----------------------------------------------------------
    def load(self, records: Iterable[tuple[str, Record]]) -> int:
        """Seed with concurrent prepared INSERTs, CHUNK_SIZE rows at a time."""
        loaded = 0
        for chunk in chunks(records, CHUNK_SIZE):
            # Records normally share one field list; group them so each group has one statement.
            groups: dict[tuple[str, ...], list[tuple]] = {}
            for key, values in chunk:
                groups.setdefault(tuple(values), []).append((key, *values.values()))
            for fields, params in groups.items():
                execute_concurrent_with_args(
                    self._session,
                    self._prepared("insert", fields),
                    params,
                    concurrency=CONCURRENCY,
                    raise_on_first_error=True,
                )
            loaded += len(chunk)
        return loaded

    def count(self) -> int:
        """Rows in the table, counted by paging through the keys (each page within the timeout)."""
        return sum(1 for _ in self._session.execute(self._prepared("count", ())))

    # -- operations --------------------------------------------------------
    def read(self, key: str, fields: Sequence[str] | None = None) -> Record | None:
        """Prepared SELECT by key."""
        row = self._session.execute(self._prepared("read", tuple(fields or ())), (key,)).one()
        return None if row is None else self._record(row)

    def scan(
        self, start_key: str, count: int, fields: Sequence[str] | None = None
    ) -> list[tuple[str, Record]]:
        """Up to `count` rows in token order from the start key's token."""
        rows = self._session.execute(self._prepared("scan", tuple(fields or ())), (start_key, count))
        return [(row[KEY_COLUMN], self._record(row)) for row in rows]

    def update(self, key: str, values: Record) -> None:
        """Prepared UPDATE of the given columns."""
        self._session.execute(self._prepared("update", tuple(values)), (*values.values(), key))

    def insert(self, key: str, values: Record) -> None:
        """Prepared INSERT."""
        self._session.execute(self._prepared("insert", tuple(values)), (key, *values.values()))

    def delete(self, key: str) -> None:
        """Prepared DELETE by key."""
        self._session.execute(self._prepared("delete", ()), (key,))
