"""CockroachDB store: the PostgreSQL store plus CockroachDB's client-side retry loop.

URL: ``cockroachdb://user:password@host:26257/defaultdb?sslmode=verify-full`` (or the
``postgresql://`` URL ``cockroach`` prints). ``cockroachdb://`` is handed to the driver
as ``postgresql://``; without a port it means CockroachDB's 26257, not libpq's 5432.

Everything else is inherited from `workloads.stores.postgres` (psycopg 3, prepared
statements, the same table layout and marker comment, the same timeouts), except:

- Retries: CockroachDB runs every transaction at SERIALIZABLE and asks clients to
  retry those it aborts with SQLSTATE 40001 (serialization_failure). Every write here,
  and every transaction run through `run_transaction`, goes through that retry loop,
  with a bounded number of retries and jittered exponential backoff; after the last
  retry the driver's ``SerializationFailure`` propagates to the caller. The session asks
  for ``default_transaction_isolation=serializable`` so a PostgreSQL standing in for
  CockroachDB behaves the same way.
- Seeding: multi-row ``INSERT`` of up to 500 rows per statement, each statement its own
  transaction inside the retry loop. CockroachDB accepts ``COPY FROM STDIN``, but a COPY
  aborted with 40001 cannot be replayed from a stream, and before v22.2 a large COPY
  committed in pieces, so retrying it could duplicate rows. Multi-row INSERT of a
  buffered batch is replayable and is CockroachDB's documented bulk path for an
  existing table.
- Key order: CockroachDB compares STRING values bytewise unless they are collated, and
  collated strings cost a collation key per value, so the key column is left
  uncollated on CockroachDB (``COLLATE "C"`` is kept when the server is PostgreSQL).
- `server_info` reports what ``SELECT version()`` says: ``CockroachDB v23.1.11`` on
  CockroachDB, ``PostgreSQL 15.19`` when pointed at PostgreSQL.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from workloads.stores import register
from workloads.stores.base import Record, StoreSettings, check_url
from workloads.stores.postgres import KEY_COLUMN, PostgresStore, quote_ident

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")

DEFAULT_PORT = 26257
# Ten retries with backoff capped at 0.5 s wait at most about 2 s in total, well inside
# the default operation timeout; a conflict that outlasts that is reported, not hidden.
DEFAULT_MAX_RETRIES = 10
BACKOFF_BASE_S = 0.005
BACKOFF_CAP_S = 0.5
# Rows per multi-row INSERT when seeding (CockroachDB suggests batches of 100-1000),
# kept under the protocol's 65535 bind parameters per statement.
INSERT_BATCH_ROWS = 500
MAX_BIND_PARAMETERS = 65535


def backoff_s(retry: int) -> float:
    """Seconds to sleep before retry number `retry` (0-based): capped, jittered exponential."""
    return min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**retry) * random.uniform(0.5, 1.0)


def retry_serialization_failures(
    attempt: Callable[[], T],
    max_retries: int = DEFAULT_MAX_RETRIES,
    on_retry: Callable[[int, Exception], None] | None = None,
) -> T:
    """Call `attempt` until it returns, retrying on SQLSTATE 40001 at most `max_retries` times.

    `attempt` must be a whole transaction (or one statement in its own implicit
    transaction): after a 40001 the server has rolled it all back, so it is safe to
    replay. Any other error, and the 40001 after the last retry, propagates unchanged.
    `on_retry(retry, error)` is called before each retry's backoff sleep.
    """
    from psycopg.errors import SerializationFailure

    retry = 0
    while True:
        try:
            return attempt()
        except SerializationFailure as error:
            if retry >= max_retries:
                raise
            if on_retry is not None:
                on_retry(retry, error)
            # time.sleep, looked up at call time, is gevent's sleep in a patched process.
            time.sleep(backoff_s(retry))
            retry += 1


def run_transaction(
    conn: psycopg.Connection,
    fn: Callable[[psycopg.Connection], T],
    max_retries: int = DEFAULT_MAX_RETRIES,
    on_retry: Callable[[int, Exception], None] | None = None,
) -> T:
    """Run `fn(conn)` in one transaction, the whole transaction retried on SQLSTATE 40001.

    This is CockroachDB's client-side retry loop: a read-modify-write belongs inside
    `fn`, so each retry reads again what the previous attempt's conflict changed.
    `conn` must not be inside a transaction already (a 40001 aborts the outer
    transaction too, which a retry of the inner part cannot repair). Returns what `fn`
    returns; after `max_retries` retries the driver's ``SerializationFailure`` propagates.
    """

    def attempt() -> T:
        with conn.transaction():
            return fn(conn)

    return retry_serialization_failures(attempt, max_retries, on_retry)


@register
class CockroachDBStore(PostgresStore):
    """CockroachDB through psycopg 3: the PostgreSQL store with 40001 retries on writes."""

    name = "cockroachdb"
    url_schemes = ("cockroachdb", "postgresql", "postgres")
    example_url = "cockroachdb://user:password@127.0.0.1:26257/defaultdb?sslmode=disable"

    max_retries: ClassVar[int] = DEFAULT_MAX_RETRIES

    def __init__(self, url: str, settings: StoreSettings) -> None:
        super().__init__(url, settings)
        self.serialization_retries = 0  # how often the retry loop had to retry, for reports
        fields_per_row = len(self._all_fields) + 1
        self.load_chunk_rows = max(1, min(INSERT_BATCH_ROWS, MAX_BIND_PARAMETERS // fields_per_row))
        self._insert_batch_sql: dict[int, str] = {}
        self._is_cockroach = False

    def _driver_conninfo(self) -> tuple[str, dict[str, Any]]:
        parts = check_url(type(self), self.url)
        params: dict[str, Any] = {}
        if parts.scheme != "cockroachdb":
            return self.url, params
        if parts.port is None:
            params["port"] = DEFAULT_PORT
        return parts._replace(scheme="postgresql").geturl(), params

    def _session_options(self) -> list[str]:
        return [*super()._session_options(), "-c default_transaction_isolation=serializable"]

    def _open(self) -> None:
        super()._open()
        from psycopg.crdb import CrdbConnection

        self._is_cockroach = CrdbConnection.is_crdb(self._conn)

    def _key_type(self) -> str:
        return "VARCHAR(255)" if self._is_cockroach else super()._key_type()

    def _count_retry(self, retry: int, error: Exception) -> None:
        self.serialization_retries += 1

    def transaction(self, fn: Callable[[psycopg.Connection], T], max_retries: int | None = None) -> T:
        """Run `fn(connection)` as one transaction in the retry loop (see `run_transaction`)."""
        retries = self.max_retries if max_retries is None else max_retries
        return run_transaction(self._conn, fn, retries, self._count_retry)

    def _write(self, sql: str, params: Any) -> None:
        """One write statement in its own implicit transaction, retried on 40001."""
        cursor = self._cur
        retry_serialization_failures(
            lambda: cursor.execute(sql, params, prepare=True), self.max_retries, self._count_retry
        )

    def _load_chunk(self, chunk: list[tuple[str, Record]]) -> None:
        """Write one batch as a multi-row INSERT, replayed whole on 40001."""
        fields = self._all_fields
        sql = self._insert_batch_sql.get(len(chunk))
        if sql is None:
            columns = ", ".join([KEY_COLUMN, *map(quote_ident, fields)])
            row = "(" + ", ".join(["%s"] * (len(fields) + 1)) + ")"
            sql = self._insert_batch_sql[len(chunk)] = (
                f"INSERT INTO {self._table} ({columns}) VALUES {', '.join([row] * len(chunk))}"
            )
        params = [value for key, record in chunk for value in (key, *map(record.get, fields))]
        self._write(sql, params)
