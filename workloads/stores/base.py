"""The one small protocol every store module implements.

Modelled on YCSB's `site.ycsb.DB` and go-ycsb's `pkg/ycsb/db.go`: five record
operations plus a bulk-load path, and nothing a workload or the measurement layer
needs to know about the store behind it.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import ClassVar
from urllib.parse import SplitResult, urlsplit, urlunsplit

from workloads.errors import OptiStackError

# Everything OptiStack creates carries this prefix; teardown touches nothing else.
NAMESPACE_PREFIX = "optistack_"
DEFAULT_NAMESPACE = "optistack_usertable"

Record = dict[str, str]


class ScanOrder(enum.StrEnum):
    """The order in which a store's `scan` returns records."""

    KEY = "key"  # ascending record key from the start key (SQL stores, MongoDB, Redis index)
    TOKEN = "token"  # partitioner token order from the start key's token (Cassandra)
    UNORDERED = "unordered"  # a page of existing records, order unspecified (DynamoDB hash key)


@dataclass(frozen=True)
class StoreSettings:
    """What a store module needs besides its URL."""

    namespace: str = DEFAULT_NAMESPACE
    field_count: int = 10
    connect_timeout_s: float = 5.0
    operation_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.namespace.startswith(NAMESPACE_PREFIX):
            raise OptiStackError(
                f"namespace {self.namespace!r} must start with {NAMESPACE_PREFIX!r}: "
                "OptiStack only creates and drops objects of its own"
            )

    @property
    def fields(self) -> list[str]:
        """YCSB's field names: field0 .. field<N-1>."""
        return [f"field{i}" for i in range(self.field_count)]


@dataclass(frozen=True)
class ServerInfo:
    """Product and version as reported by the server itself."""

    product: str
    version: str

    def __str__(self) -> str:
        return f"{self.product} {self.version}"


class Store(ABC):
    """One data store behind OptiStack's protocol.

    Subclasses set `name`, `scan_order` and `url_schemes`, and register themselves
    with `@register`. An instance is one client connection (a Locust user owns one).
    Operations raise driver exceptions as they come: the caller counts them by type.
    """

    name: ClassVar[str]
    scan_order: ClassVar[ScanOrder]
    url_schemes: ClassVar[tuple[str, ...]]
    example_url: ClassVar[str]

    def __init__(self, url: str, settings: StoreSettings) -> None:
        self.url = url
        self.settings = settings

    @classmethod
    def connect(cls, url: str, settings: StoreSettings | None = None) -> Store:
        """Open a connection; unreachable servers raise `OptiStackError` in bounded time."""
        check_url(cls, url)
        store = cls(url, settings or StoreSettings())
        try:
            store._open()
        except OptiStackError:
            raise
        except Exception as error:  # driver errors differ per store; the user needs one message
            raise OptiStackError(
                f"cannot connect to {cls.name} at {redact_url(url)}: {type(error).__name__}: "
                f"{redact_text(str(error), url)}. Check that the server runs and the URL is right."
            ) from None
        return store

    # -- lifecycle ---------------------------------------------------------
    @abstractmethod
    def _open(self) -> None:
        """Open the driver connection (within `settings.connect_timeout_s`)."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection; safe to call twice."""

    @abstractmethod
    def server_info(self) -> ServerInfo:
        """Ask the server for its product and version."""

    @abstractmethod
    def provision(self) -> None:
        """Create (or re-create) the namespaced table/collection/keyspace.

        Refuses to touch an existing object of the same name that OptiStack did not
        create, where the store can tell (a marker comment, option or key).
        """

    @abstractmethod
    def teardown(self) -> None:
        """Drop what `provision` and the run created, and nothing else."""

    # -- server statistics (optional) --------------------------------------
    # Which of `stats()`'s names are cumulative counters (the rest are gauges).
    stats_counters: ClassVar[frozenset[str]] = frozenset()

    def stats(self) -> dict[str, float]:
        """The server's own statistics, by name, read on this connection.

        Counters (named in `stats_counters`) only grow; the rest are gauges. Stores
        that do not override this have none: the resource sampler then says so.
        """
        return {}

    # -- seeding -----------------------------------------------------------
    @abstractmethod
    def load(self, records: Iterable[tuple[str, Record]]) -> int:
        """Bulk-insert records through the store's fastest native path; return how many."""

    @abstractmethod
    def count(self) -> int:
        """Number of records in the namespace (used to verify seeding)."""

    # -- operations --------------------------------------------------------
    @abstractmethod
    def read(self, key: str, fields: Sequence[str] | None = None) -> Record | None:
        """Return the record's fields (all when `fields` is None), or None if absent."""

    @abstractmethod
    def scan(
        self, start_key: str, count: int, fields: Sequence[str] | None = None
    ) -> list[tuple[str, Record]]:
        """Return up to `count` records from `start_key` in the store's `scan_order`."""

    @abstractmethod
    def update(self, key: str, values: Record) -> None:
        """Overwrite the given fields of an existing record."""

    @abstractmethod
    def insert(self, key: str, values: Record) -> None:
        """Insert a new record."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete a record."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def chunks(iterable: Iterable, size: int) -> Iterator[list]:
    """Lists of up to `size` items: bulk loads consume their records in bounded memory."""
    iterator = iter(iterable)
    while chunk := list(islice(iterator, size)):
        yield chunk


def check_url(store_cls: type[Store], url: str) -> SplitResult:
    """Parse a store URL, refusing the wrong scheme or a missing host."""
    if not isinstance(url, str) or "://" not in url:
        raise OptiStackError(
            f"{store_cls.name} URL {redact_url(str(url))!r} is malformed: "
            f"use the form {store_cls.example_url}"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as error:
        raise OptiStackError(
            f"{store_cls.name} URL {redact_url(url)!r} is malformed ({error}): "
            f"use the form {store_cls.example_url}"
        ) from None
    if parts.scheme not in store_cls.url_schemes:
        raise OptiStackError(
            f"{store_cls.name} URL {redact_url(url)!r} has scheme {parts.scheme!r}; "
            f"use {' or '.join(s + '://' for s in store_cls.url_schemes)} as in {store_cls.example_url}"
        )
    if not parts.hostname:
        raise OptiStackError(
            f"{store_cls.name} URL {redact_url(url)!r} names no host: use the form {store_cls.example_url}"
        )
    return parts


def redact_url(url: str) -> str:
    """The URL with its password replaced by `***` (safe for logs, results and reports)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc
    userinfo, _, hostport = netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


def redact_text(text: str, url: str) -> str:
    """Remove the URL's password from free text such as a driver's error message."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        text = text.replace(password, "***")
    return text
