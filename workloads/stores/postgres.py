"""PostgreSQL store, through psycopg 3.

URL: ``postgresql://user:password@host:5432/dbname`` (``postgres://`` works too). libpq
query parameters such as ``?sslmode=require`` pass through to the driver; ``options``
given in the URL are appended after OptiStack's own, so they win.

Table: ``<namespace>`` with ``ycsb_key VARCHAR(255) COLLATE "C" PRIMARY KEY`` and one
TEXT column per YCSB field, marked with the table comment ``created by optistack``.

Scan order: key order (``WHERE ycsb_key >= $1 ORDER BY ycsb_key LIMIT $2``), as YCSB's
JDBC binding does. The key column is collated ``"C"`` so that the primary-key index
orders keys bytewise, whatever the database's default collation: a linguistic
collation such as en_US ignores punctuation at the first level and would put
``user-b`` between ``usera`` and ``userc``.

Bulk path: ``COPY ... FROM STDIN`` (psycopg's ``cursor.copy`` / ``write_row``), one COPY
statement per chunk of 10,000 records, so memory stays bounded for any record count
and ``statement_timeout`` bounds each chunk rather than the whole load.

Hot path: one connection in autocommit mode and one reused cursor; SQL strings are
built once per field set and run as server-side prepared statements from their first
use (``prepare=True``); nothing else is prepared automatically, DDL included.

Timeouts: ``connect_timeout`` (libpq rounds it to whole seconds, at least 2, per
address tried), ``statement_timeout`` on the server for every statement, and
``tcp_user_timeout`` plus TCP keepalives so a vanished server cannot block a client
forever either.

gevent: psycopg chooses its wait function when ``psycopg.waiting`` is first imported.
Under gevent monkey-patching it must not be the C ``wait_c``, which blocks the whole
process. This module therefore imports psycopg only when the first connection opens
(after Locust has patched the process) and, if something imported psycopg before the
patching, switches psycopg to its pure-Python, patchable waits (see
`_make_psycopg_cooperative`).
"""

from __future__ import annotations

import logging
import math
import re
import selectors
import sys
from collections.abc import Iterable, Sequence
from itertools import islice
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

from workloads.errors import OptiStackError
from workloads.stores import register
from workloads.stores.base import Record, ScanOrder, ServerInfo, Store, StoreSettings, check_url

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

MARKER = "created by optistack"
KEY_COLUMN = "ycsb_key"

# Seconds a client waits beyond the server-side statement_timeout before it gives up on
# the socket: the server should cancel first, leaving the connection usable.
CLIENT_GRACE_S = 5.0
PREPARE_NEVER_AUTOMATICALLY = 2**31

# pg_stat_database columns `stats()` reads; all but numbackends are cumulative counters.
PG_STAT_COUNTERS = (
    "xact_commit",
    "xact_rollback",
    "blks_read",
    "blks_hit",
    "tup_returned",
    "tup_fetched",
    "tup_inserted",
    "tup_updated",
    "tup_deleted",
)
PG_STAT_COLUMNS = ("numbackends", *PG_STAT_COUNTERS)


def quote_ident(name: str) -> str:
    """A PostgreSQL identifier, double-quoted (namespaces and field names come from users)."""
    return '"' + name.replace('"', '""') + '"'


_VERSION_RE = re.compile(r"^(?P<product>PostgreSQL|CockroachDB)(?: [A-Z]+)?\s+(?P<version>v?\d[^\s,]*)")


def parse_server_version(text: str) -> ServerInfo:
    """Product and version from ``SELECT version()``, as the server words them.

    PostgreSQL says ``PostgreSQL 15.19 (Debian ...) on x86_64 ...``; CockroachDB says
    ``CockroachDB CCL v23.1.11 (x86_64 ...)``. Anything else keeps its first word as the
    product and its second as the version, rather than being dressed up as either.
    """
    match = _VERSION_RE.match(text)
    if match:
        return ServerInfo(match["product"], match["version"])
    words = text.split()
    return ServerInfo(words[0] if words else "unknown", words[1] if len(words) > 1 else text)


def _make_psycopg_cooperative(waiting: ModuleType) -> None:
    """Make psycopg's waits yield to other greenlets in a gevent-patched process.

    psycopg (>= 3.1.14) avoids its C wait function when gevent has patched ``select``
    *before* psycopg is imported, and its connect wait binds ``selectors.DefaultSelector``
    at import. If psycopg was imported before the patching, every query would block
    the whole Locust worker and serialise all simulated users. ``waiting.wait`` is the
    module-level seam psycopg's maintainers point to for this (psycopg#527); we rebind
    it, and the connect selector, to the pure-Python versions gevent has patched.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("select"):
        return
    if waiting.wait is getattr(waiting, "wait_c", None):
        waiting.wait = waiting.wait_poll if hasattr(waiting, "wait_poll") else waiting.wait_selector
    if getattr(waiting, "DefaultSelector", selectors.DefaultSelector) is not selectors.DefaultSelector:
        waiting.DefaultSelector = selectors.DefaultSelector


def _import_psycopg() -> ModuleType:
    # Imported on first connect, not at module import: the store registry imports
    # every store module, possibly before Locust monkey-patches the process.
    import psycopg
    import psycopg.waiting

    _make_psycopg_cooperative(psycopg.waiting)
    return psycopg


@register
class PostgresStore(Store):
    """PostgreSQL through psycopg 3: prepared statements for operations, COPY for seeding."""

    name = "postgres"
    scan_order = ScanOrder.KEY
    url_schemes = ("postgresql", "postgres")
    example_url = "postgresql://user:password@127.0.0.1:5432/postgres"

    # Records per COPY statement when seeding.
    load_chunk_rows: ClassVar[int] = 10_000

    def __init__(self, url: str, settings: StoreSettings) -> None:
        super().__init__(url, settings)
        self._conn: psycopg.Connection | None = None
        self._cur: psycopg.Cursor | None = None
        self._table = quote_ident(settings.namespace)
        self._all_fields = tuple(settings.fields)
        # SQL per field set, built once: the hot path only looks them up.
        self._read_sql: dict[tuple[str, ...], str] = {}
        self._scan_sql: dict[tuple[str, ...], str] = {}
        self._update_sql: dict[tuple[str, ...], str] = {}
        self._insert_sql: dict[tuple[str, ...], str] = {}
        self._delete_sql = f"DELETE FROM {self._table} WHERE {KEY_COLUMN} = %s"

    # -- lifecycle ---------------------------------------------------------
    def _driver_conninfo(self) -> tuple[str, dict[str, Any]]:
        """The libpq URL and extra parameters to connect with (subclasses adapt them)."""
        check_url(type(self), self.url)
        return self.url, {}

    def _session_options(self) -> list[str]:
        """Server settings for every session, as ``-c name=value`` in libpq's ``options``."""
        statement_timeout_ms = math.ceil(self.settings.operation_timeout_s * 1000)
        return [f"-c statement_timeout={statement_timeout_ms}"]

    def _open(self) -> None:
        psycopg = _import_psycopg()
        from psycopg.conninfo import conninfo_to_dict

        conninfo, params = self._driver_conninfo()
        in_url = conninfo_to_dict(conninfo)
        options = " ".join([*self._session_options(), str(in_url.get("options") or "")]).strip()
        op_timeout_s = self.settings.operation_timeout_s
        params.update(
            autocommit=True,
            # Only the hot-path statements are prepared (explicitly, from their first use);
            # None would disable even those, so "never automatically" is a huge threshold.
            prepare_threshold=PREPARE_NEVER_AUTOMATICALLY,
            options=options,
            connect_timeout=max(2, math.ceil(self.settings.connect_timeout_s)),
            tcp_user_timeout=math.ceil((op_timeout_s + CLIENT_GRACE_S) * 1000),
            keepalives=1,
            keepalives_idle=max(1, math.ceil(op_timeout_s)),
            keepalives_interval=1,
            keepalives_count=3,
        )
        if "application_name" not in in_url:
            params["application_name"] = "optistack"
        self._conn = psycopg.connect(conninfo, **params)
        self._cur = self._conn.cursor()

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            self._cur = None

    def server_info(self) -> ServerInfo:
        """Product and version from the server's ``SELECT version()``."""
        row = self._cur.execute("SELECT version()").fetchone()
        return parse_server_version(row[0])

    # -- server statistics -------------------------------------------------
    stats_counters: ClassVar[frozenset[str]] = frozenset(PG_STAT_COUNTERS)

    def stats(self) -> dict[str, float]:
        """``pg_stat_database`` of the connected database (database-wide: every client counts).

        PostgreSQL publishes a backend's counts when its transaction ends, at most once
        a second, so the figures trail the load by up to a second.
        """
        columns = ", ".join(PG_STAT_COLUMNS)
        row = self._cur.execute(
            f"SELECT {columns} FROM pg_catalog.pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        if row is None:
            return {}
        return {
            name: float(value) for name, value in zip(PG_STAT_COLUMNS, row, strict=True) if value is not None
        }

    # -- provisioning ------------------------------------------------------
    def _key_type(self) -> str:
        """The key column's SQL type, with a bytewise collation so scans follow key order."""
        return 'VARCHAR(255) COLLATE "C"'

    def _ownership(self) -> tuple[str | None, bool | None]:
        """(schema, owned): owned is None when no relation of our name exists in the schema
        unqualified names resolve to, True when it carries OptiStack's marker, else False."""
        row = self._cur.execute(
            "SELECT current_schema(),"
            " (SELECT obj_description(c.oid, 'pg_class') FROM pg_catalog.pg_class c"
            "  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            "  WHERE c.relname = %s AND n.nspname = current_schema()),"
            " EXISTS (SELECT 1 FROM pg_catalog.pg_class c"
            "  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            "  WHERE c.relname = %s AND n.nspname = current_schema())",
            (self.settings.namespace, self.settings.namespace),
        ).fetchone()
        schema, comment, exists = row
        if not exists:
            return schema, None
        return schema, comment == MARKER

    def _refuse_foreign(self, schema: str | None) -> OptiStackError:
        return OptiStackError(
            f"{self.name}: a table or other relation named {self.settings.namespace!r} already exists "
            f"in schema {schema!r} of database {self._conn.info.dbname!r} without OptiStack's marker "
            f"(table comment {MARKER!r}), so OptiStack did not create it and will not touch it. "
            "Choose another namespace, or drop or rename that object yourself if it is disposable."
        )

    def provision(self) -> None:
        """Create the namespace table, first dropping a previous one only if OptiStack made it."""
        schema, owned = self._ownership()
        if owned is False:
            raise self._refuse_foreign(schema)
        if owned:
            self._cur.execute(f"DROP TABLE {self._table}")
        columns = ", ".join(f"{quote_ident(f)} TEXT" for f in self._all_fields)
        # Table and marker together, so no unmarked table of ours can be left behind.
        with self._conn.transaction():
            self._cur.execute(
                f"CREATE TABLE {self._table} ({KEY_COLUMN} {self._key_type()} PRIMARY KEY, {columns})"
            )
            self._cur.execute(f"COMMENT ON TABLE {self._table} IS '{MARKER}'")

    def teardown(self) -> None:
        """Drop the namespace table if OptiStack created it; leave anything else alone."""
        schema, owned = self._ownership()
        if owned:
            self._cur.execute(f"DROP TABLE {self._table}")
        elif owned is False:
            log.warning("%s", self._refuse_foreign(schema))

    # -- seeding -----------------------------------------------------------
    def load(self, records: Iterable[tuple[str, Record]]) -> int:
        """Seed through the bulk path chunk by chunk; return the number of records loaded."""
        total = 0
        iterator = iter(records)
        while chunk := list(islice(iterator, self.load_chunk_rows)):
            self._load_chunk(chunk)
            total += len(chunk)
        return total

    def _load_chunk(self, chunk: list[tuple[str, Record]]) -> None:
        """Write one chunk with COPY FROM STDIN (its own implicit transaction)."""
        fields = self._all_fields
        columns = ", ".join([KEY_COLUMN, *map(quote_ident, fields)])
        with self._cur.copy(f"COPY {self._table} ({columns}) FROM STDIN") as copy:
            for key, record in chunk:
                copy.write_row((key, *map(record.get, fields)))

    def count(self) -> int:
        """Number of rows in the namespace table."""
        return self._cur.execute(f"SELECT count(*) FROM {self._table}").fetchone()[0]

    # -- operations --------------------------------------------------------
    def read(self, key: str, fields: Sequence[str] | None = None) -> Record | None:
        """The record's fields (all when `fields` is None), or None if the key is absent."""
        names = self._all_fields if fields is None else tuple(fields)
        sql = self._read_sql.get(names)
        if sql is None:
            sql = self._read_sql[names] = (
                f"SELECT {', '.join(map(quote_ident, names))} FROM {self._table} WHERE {KEY_COLUMN} = %s"
            )
        row = self._cur.execute(sql, (key,), prepare=True).fetchone()
        if row is None:
            return None
        return {name: value for name, value in zip(names, row, strict=True) if value is not None}

    def scan(
        self, start_key: str, count: int, fields: Sequence[str] | None = None
    ) -> list[tuple[str, Record]]:
        """Up to `count` records from `start_key` in ascending key order."""
        names = self._all_fields if fields is None else tuple(fields)
        sql = self._scan_sql.get(names)
        if sql is None:
            sql = self._scan_sql[names] = (
                f"SELECT {', '.join([KEY_COLUMN, *map(quote_ident, names)])} FROM {self._table}"
                f" WHERE {KEY_COLUMN} >= %s ORDER BY {KEY_COLUMN} LIMIT %s"
            )
        rows = self._cur.execute(sql, (start_key, count), prepare=True).fetchall()
        return [
            (row[0], {name: value for name, value in zip(names, row[1:], strict=True) if value is not None})
            for row in rows
        ]

    def update(self, key: str, values: Record) -> None:
        """Overwrite the given fields of the record (a missing key changes nothing)."""
        names = tuple(values)
        sql = self._update_sql.get(names)
        if sql is None:
            assignments = ", ".join(f"{quote_ident(name)} = %s" for name in names)
            sql = self._update_sql[names] = f"UPDATE {self._table} SET {assignments} WHERE {KEY_COLUMN} = %s"
        self._write(sql, (*values.values(), key))

    def insert(self, key: str, values: Record) -> None:
        """Insert a new record; an existing key raises the driver's UniqueViolation."""
        names = tuple(values)
        sql = self._insert_sql.get(names)
        if sql is None:
            columns = ", ".join([KEY_COLUMN, *map(quote_ident, names)])
            placeholders = ", ".join(["%s"] * (len(names) + 1))
            sql = self._insert_sql[names] = f"INSERT INTO {self._table} ({columns}) VALUES ({placeholders})"
        self._write(sql, (key, *values.values()))

    def delete(self, key: str) -> None:
        """Delete the record (a missing key changes nothing)."""
        self._write(self._delete_sql, (key,))

    def _write(self, sql: str, params: Sequence[Any]) -> None:
        """Run one write statement (its own implicit transaction)."""
        self._cur.execute(sql, params, prepare=True)
