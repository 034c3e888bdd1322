"""OptiStack's key space: which record a workload operation touches, and how it is named.

This composes the YCSB generators of `workloads.generators` the way YCSB's
`CoreWorkload` does (`keychooser`, `transactioninsertkeysequence`, `buildKeyName`,
`scanlength`), extended to several load processes that insert concurrently
without a shared counter. The design is written down in docs/generators.md.

Key index vs key-space position. Seeding writes key indexes [0, record_count).
Load process p of P inserts key indexes record_count + p, record_count + p + P,
..., so processes never collide. Each process chooses keys among positions
[0, key_space_size): position i < record_count is key index i, and position
record_count + j is this process's j-th insert. Positions grow only when inserts
are acknowledged without gaps (YCSB's AcknowledgedCounterGenerator), so a read
never targets a key whose insert has not finished.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator

from workloads.errors import OptiStackError
from workloads.generators import (
    AcknowledgedCounterGenerator,
    HotspotIntegerGenerator,
    ScrambledZipfianGenerator,
    SequentialGenerator,
    SkewedLatestGenerator,
    UniformGenerator,
    ValueGenerator,
    ZipfianGenerator,
    derive_rng,
    fnvhash64,
)
from workloads.spec import WorkloadSpec

__all__ = [
    "DEFAULT_INSERT_ORDER",
    "INSERT_ORDERS",
    "KEY_PREFIX",
    "ORDERED_KEY_WIDTH",
    "KeyChooser",
    "ScanLengthChooser",
    "key_name",
    "records",
]

KEY_PREFIX = "user"  # CoreWorkload's key prefix
# Ordered keys are zero-padded so that string order equals numeric order up to 10^12 keys.
ORDERED_KEY_WIDTH = 12
INSERT_ORDERS = ("hashed", "ordered")
DEFAULT_INSERT_ORDER = "hashed"  # CoreWorkload's insertorder default

# YCSB's zipfian key chooser covers the expected new keys with a fudge factor of 2.
_EXPECTED_INSERT_FUDGE = 2.0


def key_name(index: int, insert_order: str = DEFAULT_INSERT_ORDER) -> str:
    """The record key of key index `index` (YCSB `CoreWorkload.buildKeyName`).

    hashed (YCSB's default): "user" + fnvhash64(index), so consecutive indexes are
    scattered over the key order, and a scan from a key walks hashed order.
    ordered: "user" + the index zero-padded to 12 digits, so key order is index order.
    """
    if insert_order == "hashed":
        return KEY_PREFIX + str(fnvhash64(index))
    if insert_order == "ordered":
        return f"{KEY_PREFIX}{index:0{ORDERED_KEY_WIDTH}d}"
    raise OptiStackError(f"unknown insert order {insert_order!r}; use one of {', '.join(INSERT_ORDERS)}")


class KeyChooser:
    """Key indexes for one load process: reads/updates/scans over its key space, and its inserts.

    Built from the spec's `request_distribution` (YCSB `CoreWorkload.init`):
    uniform -> `UniformGenerator`, zipfian -> `ScrambledZipfianGenerator`,
    latest -> `SkewedLatestGenerator`, hotspot -> `HotspotIntegerGenerator`,
    sequential -> `SequentialGenerator`, all over key-space positions.

    Call `next_insert_index()` to get a key to insert and `acknowledge_insert(index)`
    when the store answered (succeeded or not); only then can reads choose it.
    One instance per load process, shared by its users: it is not thread-safe, but
    gevent greenlets never switch inside these methods.
    """

    def __init__(
        self,
        spec: WorkloadSpec,
        seed: int | str,
        *,
        record_count: int | None = None,
        process_index: int = 0,
        process_count: int = 1,
        expected_operations: int | None = None,
    ) -> None:
        self.record_count = spec.record_count if record_count is None else record_count
        if self.record_count < 1:
            raise OptiStackError(f"record_count must be at least 1, got {self.record_count}")
        if process_count < 1 or not 0 <= process_index < process_count:
            raise OptiStackError(
                f"process_index must be in [0, process_count), got {process_index} of {process_count}"
            )
        self.process_index = process_index
        self.process_count = process_count
        self.distribution = spec.request_distribution
        self._spec = spec
        self._rng = derive_rng(seed, "keys", process_index)
        # Positions record_count, record_count + 1, ... are this process's inserts in order.
        self._inserts = AcknowledgedCounterGenerator(self.record_count)
        self._failed: set[int] = set()
        self._size = self.record_count
        self._draw: Callable[[], int]
        self._capacity = self.record_count

        rng = self._rng
        distribution = self.distribution
        if distribution == "zipfian":
            insert_share = spec.operations.get("insert", 0.0)
            if insert_share == 0.0:
                extra = 0
            elif expected_operations is not None:
                extra = math.ceil(expected_operations * insert_share * _EXPECTED_INSERT_FUDGE / process_count)
            else:
                extra = max(1, self.record_count // 10)
            self._set_zipfian_capacity(self.record_count + extra)
        elif distribution == "latest":
            self._latest = SkewedLatestGenerator(self._inserts, spec.zipfian_constant, rng=rng)
            self._draw = self._latest.next
        elif distribution == "sequential":
            self._sequential = SequentialGenerator(0, self._size - 1)
            self._draw = self._sequential.next
        elif distribution in ("uniform", "hotspot"):
            self._rebuild_stateless()
        else:  # the spec validates the name; this guards a spec built around validation
            raise OptiStackError(f"unknown request_distribution {distribution!r}")

    # -- choosing ------------------------------------------------------------
    def next_key_index(self) -> int:
        """A key index for read, update, scan start or read-modify-write.

        Chosen by the request distribution over this process's readable key space:
        the seeded records plus its own acknowledged, successful inserts.
        """
        draw, size, failed = self._draw, self._size, self._failed
        position = draw()
        # Only the scrambled zipfian draws past the key space (YCSB's nextKeynum loop),
        # and failed inserts are skipped.
        while position >= size or (failed and position in failed):
            position = draw()
        record_count = self.record_count
        if position < record_count:
            return position
        return record_count + self.process_index + (position - record_count) * self.process_count

    def next_insert_index(self) -> int:
        """The key index this process inserts next (YCSB's `transactioninsertkeysequence.nextValue`)."""
        return self._index_of(self._inserts.next())

    def acknowledge_insert(self, index: int, succeeded: bool = True) -> None:
        """Report that the insert of `index` finished; contiguous finished inserts become readable.

        Acknowledge failed inserts too (`succeeded=False`), as YCSB does in a
        `finally`, or the key space stops growing behind them. Unlike YCSB, a failed
        key is then never chosen, because reading it would only count errors.
        """
        position = self._position_of(index)
        if not succeeded:
            self._failed.add(position)
        self._inserts.acknowledge(position)
        size = self._inserts.last_value + 1
        if size != self._size:
            self._grow(size)

    @property
    def key_space_size(self) -> int:
        """How many positions reads choose from: record_count + acknowledged own inserts."""
        return self._size

    def is_readable(self, index: int) -> bool:
        """Whether `next_key_index` may return key index `index` now."""
        record_count = self.record_count
        if 0 <= index < record_count:
            return True
        offset = index - record_count - self.process_index
        if index < record_count or offset % self.process_count:
            return False
        position = record_count + offset // self.process_count
        return position < self._size and position not in self._failed

    # -- internals -----------------------------------------------------------
    def _index_of(self, position: int) -> int:
        record_count = self.record_count
        return record_count + self.process_index + (position - record_count) * self.process_count

    def _position_of(self, index: int) -> int:
        offset = index - self.record_count - self.process_index
        position = self.record_count + offset // self.process_count
        if offset < 0 or offset % self.process_count or position > self._inserts.last_handed_out:
            raise OptiStackError(
                f"key index {index} was not handed out by next_insert_index of load process "
                f"{self.process_index} of {self.process_count}"
            )
        return position

    def _set_zipfian_capacity(self, capacity: int) -> None:
        # YCSB sizes the scrambled zipfian for the records plus the expected inserts,
        # so that popularity does not reshuffle with every insert; draws beyond the
        # current key space are rejected and redrawn.
        self._capacity = capacity
        spec = self._spec
        self._zipfian = ScrambledZipfianGenerator(0, capacity - 1, spec.zipfian_constant, rng=self._rng)
        self._draw = self._zipfian.next

    def _rebuild_stateless(self) -> None:
        spec, rng, last = self._spec, self._rng, self._size - 1
        if self.distribution == "uniform":
            self._draw = UniformGenerator(0, last, rng=rng).next
        else:
            self._draw = HotspotIntegerGenerator(
                0, last, spec.hotspot_data_fraction, spec.hotspot_opn_fraction, rng=rng
            ).next

    def _grow(self, size: int) -> None:
        self._size = size
        distribution = self.distribution
        if distribution == "zipfian":
            if size > self._capacity:
                # More inserts than foreseen: double the headroom. The hot keys move once
                # per doubling, where YCSB would silently never read the extra keys.
                extra = self._capacity - self.record_count
                self._set_zipfian_capacity(self.record_count + max(1, 2 * extra, size - self.record_count))
        elif distribution == "sequential":
            self._sequential.extend_to(size - 1)
        elif distribution in ("uniform", "hotspot"):
            self._rebuild_stateless()
        # latest reads the acknowledged counter itself


class ScanLengthChooser:
    """Scan lengths in [1, max_scan_length] (YCSB `CoreWorkload.scanlength`).

    uniform -> `UniformGenerator(1, max)`; zipfian -> `ZipfianGenerator(1, max)` with
    YCSB's constant 0.99 (YCSB does not apply a workload's zipfian constant here),
    so short scans are the most common.
    """

    __slots__ = ("_draw", "distribution", "max_scan_length")

    def __init__(self, max_scan_length: int, distribution: str = "uniform", *, rng: random.Random) -> None:
        if max_scan_length < 1:
            raise OptiStackError(f"max_scan_length must be at least 1, got {max_scan_length}")
        self.max_scan_length = max_scan_length
        self.distribution = distribution
        if distribution == "uniform":
            self._draw = UniformGenerator(1, max_scan_length, rng=rng).next
        elif distribution == "zipfian":
            self._draw = ZipfianGenerator(1, max_scan_length, rng=rng).next
        else:
            raise OptiStackError(
                f"scan_length_distribution {distribution!r} is not supported; use uniform or zipfian"
            )

    @classmethod
    def from_spec(cls, spec: WorkloadSpec, rng: random.Random) -> ScanLengthChooser:
        """The scan-length chooser a spec asks for."""
        return cls(spec.max_scan_length, spec.scan_length_distribution, rng=rng)

    def next(self) -> int:
        """Next scan length."""
        return self._draw()


def records(
    spec: WorkloadSpec,
    seed: int | str,
    start: int = 0,
    stop: int | None = None,
    *,
    insert_order: str = DEFAULT_INSERT_ORDER,
) -> Iterator[tuple[str, dict[str, str]]]:
    """The seed records with key indexes [start, stop) as (key, values), deterministically.

    Record i is the same whichever slice it is generated in, so several processes
    can each seed a slice and produce exactly what one loader would.
    """
    stop = spec.record_count if stop is None else stop
    if not 0 <= start <= stop:
        raise OptiStackError(f"records needs 0 <= start <= stop, got start={start}, stop={stop}")
    key_name(0, insert_order)  # reject an unknown order now, not at the first record
    values = ValueGenerator(spec.field_count, spec.field_length, derive_rng(seed, "records"))
    keys = (key_name(index, insert_order) for index in range(start, stop))
    return zip(keys, values.values_for_range(start, stop), strict=True)
