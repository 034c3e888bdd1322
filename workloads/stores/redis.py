"""Redis (and Valkey) through redis-py.

URL: ``redis://[[user]:password@]host[:6379][/db]``, or ``rediss://`` for TLS. The
database number is the URL path (default 0).

Layout, as YCSB's Redis binding keeps it: each record is a hash at
``<namespace>:<key>``; a sorted set ``<namespace>:__index`` holds every key with score 0,
so ZRANGEBYLEX walks the keys in byte order. A marker key ``<namespace>:__optistack__``
says OptiStack created the namespace; provision and teardown refuse to touch a namespace
without it.

Scan order: KEY. ``scan`` reads up to N keys from the index with ZRANGEBYLEX starting
at ``[start_key`` and fetches their hashes in one pipeline. YCSB's binding orders its
index by a hash of the key instead, which makes its scans a random walk; a
lexicographic index gives the key order the SQL stores and MongoDB give.

Bulk path: non-transactional pipelines of ~1000 records (one HSET per record, one ZADD
per batch for the index).

Timeouts: ``socket_connect_timeout`` = ``connect_timeout_s``; ``socket_timeout`` =
``operation_timeout_s`` for every command. redis-py's automatic retry is switched off so
a slow or failed operation is measured and counted as such, never silently repeated.

Hot path: the measured operations go straight to one redis-py ``Connection`` the store
holds for its lifetime (``send_command`` / ``pack_commands`` + ``read_response``), not
through the client's pool. Each user has its own store, so the pool's lock, its
per-command health check (a ``select`` that gevent emulates in Python) and its
bookkeeping bought nothing and cost about 25 µs of client CPU per operation under gevent
(docs/performance.md). A connection that fails mid-command is dropped, so a late reply is
never read as the next command's; the next command reconnects.

Caveats: insert (HSET + ZADD) and delete (DEL + ZREM) are one round trip but not
atomic; a scan racing a delete can meet an index entry whose hash is already gone, and
skips it. Redis Cluster is not supported (the index is one key). Teardown deletes with
SCAN + UNLINK, never FLUSHDB, so other data in the same database is safe.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from itertools import chain
from typing import Any, ClassVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

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

BATCH_SIZE = 1000  # records per pipeline: big enough to amortise round trips, small enough to bound memory
INDEX_SUFFIX = "__index"
MARKER_SUFFIX = "__optistack__"

# INFO fields `stats()` reads: gauges, then cumulative counters (used_cpu_* in seconds).
REDIS_INFO_GAUGES = ("used_memory", "used_memory_rss", "connected_clients", "instantaneous_ops_per_sec")
REDIS_INFO_COUNTERS = (
    "total_commands_processed",
    "keyspace_hits",
    "keyspace_misses",
    "used_cpu_sys",
    "used_cpu_user",
)


@register
class RedisStore(Store):
    """Records as hashes plus a lexicographic key index (YCSB's Redis layout)."""

    name = "redis"
    scan_order = ScanOrder.KEY
    url_schemes = ("redis", "rediss")
    example_url = "redis://[:password@]host:6379/0 (or rediss:// for TLS)"

    _client: redis.Redis | None = None
    _conn: Any = None  # the client's connection the operations use directly (see the module docstring)

    def __init__(self, url: str, settings: StoreSettings) -> None:
        super().__init__(url, settings)
        ns = settings.namespace
        self._prefix = f"{ns}:"
        self._index = f"{ns}:{INDEX_SUFFIX}"
        self._marker = f"{ns}:{MARKER_SUFFIX}"
        # SCAN MATCH is a glob: escape the namespace so only its own keys match.
        self._match = re.sub(r"([*?\[\]\\])", r"\\\1", ns) + ":*"

    # -- lifecycle ---------------------------------------------------------
    def _open(self) -> None:
        parts = check_url(type(self), self.url)
        db_path = parts.path.lstrip("/")
        if db_path and not db_path.isdigit():
            raise OptiStackError(
                f"redis URL {redact_url(self.url)!r} has database {db_path!r}; the path must be "
                f"a database number, as in {self.example_url}"
            )
        connect_timeout = self.settings.connect_timeout_s
        # from_url is lazy: PING once so an unreachable server fails here. A port that
        # completes the TCP handshake but never answers (a hung server, a proxy with
        # nothing behind it) must fail within the connect timeout too, not the operation
        # timeout (60 s for the runner's seeding connection): the handshake (AUTH,
        # SELECT) and that PING get only the connect timeout.
        with redis.Redis.from_url(
            self.url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=connect_timeout,
            retry=Retry(NoBackoff(), 0),
        ) as probe:
            probe.ping()
        self._client = redis.Redis.from_url(
            self.url,
            decode_responses=True,
            socket_connect_timeout=connect_timeout,
            socket_timeout=self.settings.operation_timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            self._client.ping()  # open the client's own connection now, not in its first operation
            self._conn = self._client.connection_pool.get_connection()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._client is not None:
            self._client.close()  # disconnects the pool's connections, the one held here too
            self._client = None
            self._conn = None

    def _call(self, *args: Any) -> Any:
        """One command on the held connection; its reply (decoded)."""
        conn = self._conn
        try:
            conn.send_command(*args)
            return conn.read_response()
        except redis.ResponseError:
            raise  # the error reply was read whole: the connection is still in step
        except BaseException:
            conn.disconnect()  # a reply may still be on its way: never read it as the next one's
            raise

    def _pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Several commands in one round trip on the held connection; their replies."""
        conn = self._conn
        try:
            conn.send_packed_command(conn.pack_commands(commands))
            return [conn.read_response() for _ in commands]
        except BaseException:
            conn.disconnect()  # replies after a failed one are still unread
            raise

    def server_info(self) -> ServerInfo:
        """Product and version from INFO server; Valkey also answers redis_version, so check it first."""
        info = self._client.info("server")
        if info.get("server_name") == "valkey" or "valkey_version" in info:
            return ServerInfo("Valkey", str(info.get("valkey_version", info.get("redis_version", "unknown"))))
        return ServerInfo("Redis", str(info.get("redis_version", "unknown")))

    # -- server statistics -------------------------------------------------
    stats_counters: ClassVar[frozenset[str]] = frozenset(REDIS_INFO_COUNTERS)

    def stats(self) -> dict[str, float]:
        """Fields of ``INFO`` (whole server, every database and client), those it answers."""
        info = self._client.info()
        return {
            name: float(info[name])
            for name in (*REDIS_INFO_GAUGES, *REDIS_INFO_COUNTERS)
            if isinstance(info.get(name), int | float)
        }

    # -- namespace ---------------------------------------------------------
    def _any_namespace_key(self) -> bool:
        return next(self._client.scan_iter(match=self._match, count=1000), None) is not None

    def _unlink_namespace(self) -> None:
        # The marker goes last: an interrupted teardown can be repeated.
        for keys in chunks(
            (k for k in self._client.scan_iter(match=self._match, count=1000) if k != self._marker),
            BATCH_SIZE,
        ):
            self._client.unlink(*keys)
        self._client.unlink(self._marker)

    def provision(self) -> None:
        """Empty the namespace (if it is OptiStack's) and set the marker key."""
        if not self._client.exists(self._marker):
            if self._any_namespace_key():
                raise OptiStackError(
                    f"redis database already has keys under {self._prefix!r} without OptiStack's "
                    f"marker key {self._marker!r}: OptiStack will not touch data it did not create. "
                    "Choose another namespace or remove those keys yourself."
                )
        else:
            self._unlink_namespace()
        self._client.set(
            self._marker,
            json.dumps({"created_by": "optistack", "field_count": self.settings.field_count}),
        )

    def teardown(self) -> None:
        """Unlink the namespace's keys and its marker; a namespace without the marker is left alone."""
        if self._client.exists(self._marker):
            self._unlink_namespace()

    # -- seeding -----------------------------------------------------------
    def load(self, records: Iterable[tuple[str, Record]]) -> int:
        """Seed through non-transactional pipelines of BATCH_SIZE records."""
        loaded = 0
        prefix = self._prefix
        for chunk in chunks(records, BATCH_SIZE):
            pipe = self._client.pipeline(transaction=False)
            for key, values in chunk:
                pipe.hset(prefix + key, mapping=values)
            pipe.zadd(self._index, dict.fromkeys((key for key, _ in chunk), 0))
            pipe.execute()
            loaded += len(chunk)
        return loaded

    def count(self) -> int:
        """Records in the key index."""
        return self._client.zcard(self._index)

    # -- operations --------------------------------------------------------
    def read(self, key: str, fields: Sequence[str] | None = None) -> Record | None:
        """HGETALL (all fields) or HMGET; None when the hash does not exist."""
        if fields is None:
            return _as_record(self._call("HGETALL", self._prefix + key)) or None
        values = self._call("HMGET", self._prefix + key, *fields)
        record = {f: v for f, v in zip(fields, values, strict=True) if v is not None}
        # A missing hash answers all-nil; YCSB records always carry every field.
        return record or None

    def scan(
        self, start_key: str, count: int, fields: Sequence[str] | None = None
    ) -> list[tuple[str, Record]]:
        """Up to `count` records in key order from `start_key`: ZRANGEBYLEX, then one pipeline of reads."""
        keys = self._call("ZRANGEBYLEX", self._index, "[" + start_key, "+", "LIMIT", 0, count)
        if not keys:
            return []
        prefix = self._prefix
        if fields is None:
            replies = self._pipeline([("HGETALL", prefix + key) for key in keys])
        else:
            replies = self._pipeline([("HMGET", prefix + key, *fields) for key in keys])
        result = []
        for key, values in zip(keys, replies, strict=True):
            record = (
                _as_record(values)
                if fields is None
                else {f: v for f, v in zip(fields, values, strict=True) if v is not None}
            )
            if record:  # empty: deleted between the index read and the hash read
                result.append((key, record))
        return result

    def update(self, key: str, values: Record) -> None:
        """HSET of the given fields."""
        self._call("HSET", self._prefix + key, *chain.from_iterable(values.items()))

    def insert(self, key: str, values: Record) -> None:
        """HSET + ZADD in one round trip."""
        self._pipeline(
            [
                ("HSET", self._prefix + key, *chain.from_iterable(values.items())),
                ("ZADD", self._index, 0, key),
            ]
        )

    def delete(self, key: str) -> None:
        """DEL + ZREM in one round trip."""
        self._pipeline([("DEL", self._prefix + key), ("ZREM", self._index, key)])


def _as_record(reply: Any) -> Record:
    """An HGETALL reply as a dict: RESP3 answers a map, RESP2 a flat [field, value, ...] list."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))
