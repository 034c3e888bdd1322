"""MongoDB through pymongo.

URL: ``mongodb://[user:password@]host[:27017][/database][?options]`` or
``mongodb+srv://...``; the database defaults to ``optistack``. URL options are passed to
pymongo, except the timeouts and retries set below.

Layout: collection ``<namespace>`` with documents ``{_id: key, field0: ..., ...}`` (the
record key is the primary key, as in YCSB's MongoDB binding).

Marker: a document ``{_id: <namespace>, created_by: "optistack"}`` in the collection
``optistack_meta`` of the same database. A collection option would be neater, but
MongoDB keeps no free-form collection metadata (``create``'s ``comment`` is not stored)
and nx-27017 stores no collection options at all; a meta document works on both.
Teardown deletes the namespace's marker document and leaves ``optistack_meta`` itself
in place, since other namespaces' markers may live there.

Scan order: KEY. ``find({_id: {$gte: start}}).sort(_id).limit(n)`` walks the ``_id``
index in key order, as YCSB's binding does.

Bulk path: ``insert_many(ordered=False)`` in batches of 1000 documents.

Timeouts: ``serverSelectionTimeoutMS`` and ``connectTimeoutMS`` = ``connect_timeout_s``;
``socketTimeoutMS`` and ``waitQueueTimeoutMS`` = ``operation_timeout_s``. Retryable
reads/writes are off so a failed operation is counted, not silently repeated.

server_info: ``buildInfo``. nx-27017 answers it with a fixed ``version: "7.0.0"`` and
``process: "nx_27017"`` (real mongod sends no ``process`` field there); such a server is
reported as ``nx-27017 (MongoDB wire protocol)``, never as MongoDB. buildInfo is run on
the URL's database because nx-27017 answers it on ``admin`` with an empty document.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from typing import ClassVar

from pymongo import ASCENDING, MongoClient

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

BATCH_SIZE = 1000  # documents per insert_many: well under the 16 MiB / 100k-op batch limits
DEFAULT_DATABASE = "optistack"
META_COLLECTION = "optistack_meta"
OPCOUNTERS = ("insert", "query", "update", "delete", "getmore", "command")
# serverStatus mem.resident in bytes per unit, by the `process` that answers.
RESIDENT_UNIT_BYTES = {"mongod": 2**20, "mongos": 2**20, "nx_27017": 1}


@register
class MongoStore(Store):
    """One collection per namespace, `_id` = record key."""

    name = "mongodb"
    scan_order = ScanOrder.KEY
    url_schemes = ("mongodb", "mongodb+srv")
    example_url = "mongodb://[user:password@]host:27017/optistack"

    _client: MongoClient | None = None

    def __init__(self, url: str, settings: StoreSettings) -> None:
        super().__init__(url, settings)
        if settings.namespace == META_COLLECTION:
            raise OptiStackError(
                f"namespace {META_COLLECTION!r} is reserved for OptiStack's marker documents; "
                "choose another optistack_* namespace"
            )

    # -- lifecycle ---------------------------------------------------------
    def _open(self) -> None:
        check_url(type(self), self.url)
        connect_ms = int(self.settings.connect_timeout_s * 1000)
        operation_ms = int(self.settings.operation_timeout_s * 1000)
        try:
            self._client = MongoClient(
                self.url,
                serverSelectionTimeoutMS=connect_ms,
                connectTimeoutMS=connect_ms,
                socketTimeoutMS=operation_ms,
                waitQueueTimeoutMS=operation_ms,
                retryReads=False,
                retryWrites=False,
                appname="optistack",
            )
        except Exception as error:  # a malformed URL: pymongo's message may quote the password
            raise OptiStackError(
                f"mongodb URL {redact_url(self.url)!r} is not accepted by pymongo "
                f"({type(error).__name__}); use the form {self.example_url}"
            ) from None
        self._db = self._client.get_default_database(default=DEFAULT_DATABASE)
        self._collection = self._db[self.settings.namespace]
        self._meta = self._db[META_COLLECTION]
        try:
            self._db.command("ping")  # MongoClient connects lazily; make an unreachable server fail here
        except BaseException:
            self.close()  # stop the client's monitor threads; connect() hands back no object to close
            raise

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def server_info(self) -> ServerInfo:
        """Product and version from buildInfo, naming wire-protocol stand-ins as what they are."""
        info = self._db.command("buildInfo")
        version = str(info.get("version") or "unknown")
        process = info.get("process")
        if process and process not in ("mongod", "mongos"):
            product = "nx-27017" if process == "nx_27017" else str(process)
            # The version such a server sends is the MongoDB release it claims to speak.
            return ServerInfo(f"{product} (MongoDB wire protocol)", f"{version}-compatible")
        return ServerInfo("MongoDB", version)

    # -- server statistics -------------------------------------------------
    stats_counters: ClassVar[frozenset[str]] = frozenset(f"opcounters.{name}" for name in OPCOUNTERS)

    def stats(self) -> dict[str, float]:
        """``serverStatus``: opcounters, connections.current and mem.resident (as bytes), those it answers.

        Wire-protocol stand-ins answer part of it or nothing; missing fields are left out.
        """
        status = self._db.command("serverStatus")
        out: dict[str, float] = {}
        counters = status.get("opcounters")
        if isinstance(counters, dict):
            for name in OPCOUNTERS:
                if isinstance(counters.get(name), int | float):
                    out[f"opcounters.{name}"] = float(counters[name])
        connections = status.get("connections")
        if isinstance(connections, dict) and isinstance(connections.get("current"), int | float):
            out["connections.current"] = float(connections["current"])
        memory = status.get("mem")
        resident = memory.get("resident") if isinstance(memory, dict) else None
        if isinstance(resident, int | float):
            # MongoDB counts MiB; nx-27017 answers its process's RSS in bytes (checked
            # against psutil). Another server's unit is unknown: leave it out.
            unit = RESIDENT_UNIT_BYTES.get(str(status.get("process")))
            if unit is not None:
                out["mem.resident_bytes"] = float(resident) * unit
        return out

    # -- namespace ---------------------------------------------------------
    def _exists(self) -> bool:
        namespace = self.settings.namespace
        # The filter keeps this cheap on MongoDB; nx-27017 ignores it, hence the membership test.
        return namespace in self._db.list_collection_names(filter={"name": namespace})

    def _marked(self) -> bool:
        return self._meta.find_one({"_id": self.settings.namespace}) is not None

    def provision(self) -> None:
        """Create the collection afresh, dropping an existing one only if it carries OptiStack's marker."""
        namespace = self.settings.namespace
        marked = self._marked()
        if self._exists():
            if not marked:
                raise OptiStackError(
                    f"collection {namespace!r} already exists in database {self._db.name!r} without "
                    f"OptiStack's marker (a document in {META_COLLECTION!r}): OptiStack will not touch "
                    "a collection it did not create. Choose another namespace or drop it yourself."
                )
            self._collection.drop()
        # Marker first: an interruption leaves a marker without a collection, which is harmless.
        self._meta.replace_one(
            {"_id": namespace},
            {
                "_id": namespace,
                "created_by": "optistack",
                "field_count": self.settings.field_count,
                "created_at": datetime.datetime.now(datetime.UTC),
            },
            upsert=True,
        )
        self._db.create_collection(namespace)

    def teardown(self) -> None:
        """Drop the collection and its marker; a collection without the marker is left alone."""
        if self._marked():
            self._collection.drop()
            self._meta.delete_one({"_id": self.settings.namespace})

    # -- seeding -----------------------------------------------------------
    def load(self, records: Iterable[tuple[str, Record]]) -> int:
        """Seed with unordered insert_many batches."""
        loaded = 0
        for chunk in chunks(records, BATCH_SIZE):
            self._collection.insert_many([{"_id": key, **values} for key, values in chunk], ordered=False)
            loaded += len(chunk)
        return loaded

    def count(self) -> int:
        """Exact document count (not the metadata estimate)."""
        return self._collection.count_documents({})

    # -- operations --------------------------------------------------------
    def read(self, key: str, fields: Sequence[str] | None = None) -> Record | None:
        """find_one by _id, projected to `fields`."""
        projection = None if fields is None else {"_id": 0, **dict.fromkeys(fields, 1)}
        document = self._collection.find_one({"_id": key}, projection)
        if document is None:
            return None
        document.pop("_id", None)
        return document

    def scan(
        self, start_key: str, count: int, fields: Sequence[str] | None = None
    ) -> list[tuple[str, Record]]:
        """Up to `count` documents in _id order from `start_key`."""
        projection = None if fields is None else dict.fromkeys(fields, 1)
        cursor = (
            self._collection.find({"_id": {"$gte": start_key}}, projection)
            .sort("_id", ASCENDING)
            .limit(count)
        )
        result = []
        for document in cursor:
            key = document.pop("_id")
            result.append((key, document))
        return result

    def update(self, key: str, values: Record) -> None:
        """$set of the given fields."""
        self._collection.update_one({"_id": key}, {"$set": values})

    def insert(self, key: str, values: Record) -> None:
        """insert_one; a duplicate key raises DuplicateKeyError."""
        self._collection.insert_one({"_id": key, **values})

    def delete(self, key: str) -> None:
        """delete_one by _id."""
        self._collection.delete_one({"_id": key})
