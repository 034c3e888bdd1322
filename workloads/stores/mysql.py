"""MySQL and MariaDB store, through PyMySQL.

URL: ``mysql://user:password@host:3306/dbname`` (user and password percent-encoded if
they contain reserved characters; the database is required; port 3306 by default).

Table: InnoDB ``<namespace>`` with ``ycsb_key VARCHAR(255) ... COLLATE utf8mb4_bin``
as primary key and one TEXT column per YCSB field, marked with the table comment
``created by optistack``.

Scan order: key order (``WHERE ycsb_key >= %s ORDER BY ycsb_key LIMIT %s``), as YCSB's
JDBC binding does. The key is collated ``utf8mb4_bin`` so InnoDB's clustered index
orders keys bytewise; the servers' default collations are case- and accent-insensitive
and would also treat ``userA`` and ``usera`` as the same key.

Bulk path: multi-row ``INSERT`` through PyMySQL's ``executemany``, which packs up to 500
rows (and at most about 1 MB, below any default ``max_allowed_packet``) into each
statement; 10,000 rows per transaction, so memory and undo stay bounded at any scale.

Timeouts: the connect timeout bounds the TCP connect and the handshake; socket read
and write timeouts of the operation timeout plus 5 s bound every operation, and on the server ``max_statement_time`` (MariaDB; ``max_execution_time``,
which covers SELECT only, on MySQL) plus ``innodb_lock_wait_timeout``. The server-side
limits fire first and leave the connection usable; the socket timeouts are the hard
stop when the server itself stops answering, and PyMySQL closes the connection then.

gevent: PyMySQL is pure Python on the standard ``socket`` module, which it looks up at
connect time, so connections opened in a monkey-patched process are cooperative.
PyMySQL has no server-side prepared statements: SQL strings are cached per field set
and parameters are escaped client-side.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import ClassVar
from urllib.parse import unquote

import pymysql

from workloads.errors import OptiStackError
from workloads.stores import register
from workloads.stores.base import Record, ScanOrder, ServerInfo, Store, StoreSettings, check_url, redact_url

log = logging.getLogger(__name__)

MARKER = "created by optistack"
KEY_COLUMN = "ycsb_key"
DEFAULT_PORT = 3306

# Seconds the client socket waits beyond the server-side statement limit.
CLIENT_GRACE_S = 5.0


def quote_ident(name: str) -> str:
    """A MySQL identifier in backticks (namespaces and field names come from users)."""
    return "`" + name.replace("`", "``") + "`"


@register
class MySQLStore(Store):
    """MySQL/MariaDB through PyMySQL: InnoDB table, multi-row INSERT for seeding."""

    name = "mysql"
    scan_order = ScanOrder.KEY
    url_schemes = ("mysql",)
    example_url = "mysql://user:password@127.0.0.1:3306/test"

    # Rows per multi-row INSERT call, and rows per seeding transaction.
    insert_batch_rows: ClassVar[int] = 500
    load_transaction_rows: ClassVar[int] = 10_000

    def __init__(self, url: str, settings: StoreSettings) -> None:
        super().__init__(url, settings)
        self._conn: pymysql.connections.Connection | None = None
        self._cur: pymysql.cursors.Cursor | None = None
        self._table = quote_ident(settings.namespace)
        self._all_fields = tuple(settings.fields)
        # SQL per field set, built once: the hot path only looks them up.
        self._read_sql: dict[tuple[str, ...], str] = {}
        self._scan_sql: dict[tuple[str, ...], str] = {}
        self._update_sql: dict[tuple[str, ...], str] = {}
        self._insert_sql: dict[tuple[str, ...], str] = {}
        self._delete_sql = f"DELETE FROM {self._table} WHERE {KEY_COLUMN} = %s"

    # -- lifecycle ---------------------------------------------------------
    def _open(self) -> None:
        parts = check_url(type(self), self.url)
        database = unquote(parts.path.lstrip("/"))
        if not database or "/" in database:
            raise OptiStackError(
                f"mysql URL {redact_url(self.url)!r} names no database: "
                f"put it in the path, as in {self.example_url}"
            )
        if parts.query:
            raise OptiStackError(
                f"mysql URL {redact_url(self.url)!r} has query options, which OptiStack does not "
                f"pass on: remove them, as in {self.example_url}"
            )
        connect_timeout_s = self.settings.connect_timeout_s
        conn = pymysql.connect(
            host=parts.hostname,
            port=parts.port or DEFAULT_PORT,
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else "",
            database=database,
            charset="utf8mb4",
            autocommit=True,
            connect_timeout=connect_timeout_s,
            # PyMySQL's connect_timeout covers only the TCP connect; the greeting and
            # authentication are socket reads, bounded here by the same connect timeout
            # (a wrong port that accepts and stays silent would otherwise hang).
            read_timeout=connect_timeout_s,
            write_timeout=connect_timeout_s,
        )
        # Then the operation bound. PyMySQL has no public setter; these attributes are
        # what its read/write paths consult (tests/workloads/stores/test_mysql.py checks).
        op_timeout_s = self.settings.operation_timeout_s
        conn._read_timeout = conn._write_timeout = op_timeout_s + CLIENT_GRACE_S
        self._conn = conn
        self._cur = conn.cursor()
        # Server-side limits, so a slow statement is cancelled and the connection survives.
        if "mariadb" in self._conn.get_server_info().lower():
            statement_limit = f"max_statement_time = {op_timeout_s:.3f}"  # seconds, all statements
        else:
            statement_limit = f"max_execution_time = {math.ceil(op_timeout_s * 1000)}"  # ms, SELECT
        lock_wait_s = max(1, math.ceil(op_timeout_s))
        self._cur.execute(f"SET SESSION {statement_limit}, innodb_lock_wait_timeout = {lock_wait_s}")

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        conn, self._conn, self._cur = self._conn, None, None
        if conn is not None and conn.open:
            conn.close()

    def server_info(self) -> ServerInfo:
        """``SELECT VERSION()`` as reported; product MariaDB when the server says so."""
        self._cur.execute("SELECT VERSION()")
        version = self._cur.fetchone()[0]
        return ServerInfo("MariaDB" if "mariadb" in version.lower() else "MySQL", version)

    # -- provisioning ------------------------------------------------------
    def _ownership(self) -> tuple[str, bool | None]:
        """(database, owned): owned is None when no table or view of our name exists in the
        connection's database, True when it carries OptiStack's marker, else False."""
        self._cur.execute(
            "SELECT DATABASE(), (SELECT CONCAT(TABLE_TYPE, ':', TABLE_COMMENT) FROM information_schema.TABLES"
            " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s)",
            (self.settings.namespace,),
        )
        database, found = self._cur.fetchone()
        if found is None:
            return database, None
        return database, found == f"BASE TABLE:{MARKER}"

    def _refuse_foreign(self, database: str) -> OptiStackError:
        return OptiStackError(
            f"mysql: a table or view named {self.settings.namespace!r} already exists in database "
            f"{database!r} without OptiStack's marker (table COMMENT {MARKER!r}), so OptiStack did "
            "not create it and will not touch it. Choose another namespace, or drop or rename that "
            "object yourself if it is disposable."
        )

    def provision(self) -> None:
        """Create the namespace table, first dropping a previous one only if OptiStack made it."""
        database, owned = self._ownership()
        if owned is False:
            raise self._refuse_foreign(database)
        if owned:
            self._cur.execute(f"DROP TABLE {self._table}")
        columns = "".join(f", {quote_ident(f)} TEXT" for f in self._all_fields)
        # The marker is part of CREATE TABLE itself, so no unmarked table of ours can exist.
        self._cur.execute(
            f"CREATE TABLE {self._table} ("
            f"{KEY_COLUMN} VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL{columns}, "
            f"PRIMARY KEY ({KEY_COLUMN})"
            f") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='{MARKER}'"
        )

    def teardown(self) -> None:
        """Drop the namespace table if OptiStack created it; leave anything else alone."""
        database, owned = self._ownership()
        if owned:
            self._cur.execute(f"DROP TABLE {self._table}")
        elif owned is False:
            log.warning("%s", self._refuse_foreign(database))

    # -- seeding -----------------------------------------------------------
    def load(self, records: Iterable[tuple[str, Record]]) -> int:
        """Seed with multi-row INSERTs in bounded transactions; return the number loaded."""
        fields = self._all_fields
        columns = ", ".join([KEY_COLUMN, *map(quote_ident, fields)])
        placeholders = ", ".join(["%s"] * (len(fields) + 1))
        # executemany rewrites this single-row INSERT into multi-row statements.
        sql = f"INSERT INTO {self._table} ({columns}) VALUES ({placeholders})"
        rows = ((key, *map(record.get, fields)) for key, record in records)
        total = 0
        while transaction_rows := list(islice(rows, self.load_transaction_rows)):
            self._conn.begin()
            try:
                for start in range(0, len(transaction_rows), self.insert_batch_rows):
                    self._cur.executemany(sql, transaction_rows[start : start + self.insert_batch_rows])
                self._conn.commit()
            except BaseException:
                self._rollback_quietly()
                raise
            total += len(transaction_rows)
        return total

    def _rollback_quietly(self) -> None:
        # The original error is what the caller needs; a dead connection cannot roll back.
        with contextlib.suppress(pymysql.Error):
            self._conn.rollback()

    def count(self) -> int:
        """Number of rows in the namespace table."""
        self._cur.execute(f"SELECT COUNT(*) FROM {self._table}")
        return self._cur.fetchone()[0]

    # -- operations --------------------------------------------------------
    def read(self, key: str, fields: Sequence[str] | None = None) -> Record | None:
        """The record's fields (all when `fields` is None), or None if the key is absent."""
        names = self._all_fields if fields is None else tuple(fields)
        sql = self._read_sql.get(names)
        if sql is None:
            sql = self._read_sql[names] = (
                f"SELECT {', '.join(map(quote_ident, names))} FROM {self._table} WHERE {KEY_COLUMN} = %s"
            )
        cur = self._cur
        cur.execute(sql, (key,))
        row = cur.fetchone()
        if row is None:
            return None
        return {name: value for name, value in zip(names, row, strict=True) if value is not None}

    def scan(
        self, start_key: str, count: int, fields: Sequence[str] | None = None
    ) -> list[tuple[str, Record]]:
        """Up to `count` records from `start_key` in ascending (bytewise) key order."""
        names = self._all_fields if fields is None else tuple(fields)
        sql = self._scan_sql.get(names)
        if sql is None:
            sql = self._scan_sql[names] = (
                f"SELECT {', '.join([KEY_COLUMN, *map(quote_ident, names)])} FROM {self._table}"
                f" WHERE {KEY_COLUMN} >= %s ORDER BY {KEY_COLUMN} LIMIT %s"
            )
        cur = self._cur
        cur.execute(sql, (start_key, count))
        return [
            (row[0], {name: value for name, value in zip(names, row[1:], strict=True) if value is not None})
            for row in cur.fetchall()
        ]

    def update(self, key: str, values: Record) -> None:
        """Overwrite the given fields of the record (a missing key changes nothing)."""
        names = tuple(values)
        sql = self._update_sql.get(names)
        if sql is None:
            assignments = ", ".join(f"{quote_ident(name)} = %s" for name in names)
            sql = self._update_sql[names] = f"UPDATE {self._table} SET {assignments} WHERE {KEY_COLUMN} = %s"
        self._cur.execute(sql, (*values.values(), key))

    def insert(self, key: str, values: Record) -> None:
        """Insert a new record; an existing key raises the driver's IntegrityError."""
        names = tuple(values)
        sql = self._insert_sql.get(names)
        if sql is None:
            columns = ", ".join([KEY_COLUMN, *map(quote_ident, names)])
            placeholders = ", ".join(["%s"] * (len(names) + 1))
            sql = self._insert_sql[names] = f"INSERT INTO {self._table} ({columns}) VALUES ({placeholders})"
        self._cur.execute(sql, (key, *values.values()))

    def delete(self, key: str) -> None:
        """Delete the record (a missing key changes nothing)."""
        self._cur.execute(self._delete_sql, (key,))
