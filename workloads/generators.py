"""YCSB's number generators, one tiny class per job.

Each class follows a file of YCSB's `core/src/main/java/site/ycsb/generator/`
(cited on the class) and draws from a seeded `random.Random` handed to it, so a
run is reproducible from its seed. They sit in the load generator's hot path, so
`next()` is plain Python arithmetic on precomputed constants: a few hundred
nanoseconds to a couple of microseconds, no numpy per call.

Where OptiStack departs from YCSB it says so on the spot and in docs/generators.md.
"""

from __future__ import annotations

import base64
import bisect
import functools
import math
import random
from collections.abc import Iterator, Mapping

import numpy as np

from workloads.errors import OptiStackError

__all__ = [
    "FNV_OFFSET_BASIS_64",
    "FNV_PRIME_64",
    "ZIPFIAN_CONSTANT",
    "AcknowledgedCounterGenerator",
    "CounterGenerator",
    "HotspotIntegerGenerator",
    "OperationChooser",
    "ScrambledZipfianGenerator",
    "SequentialGenerator",
    "SkewedLatestGenerator",
    "UniformGenerator",
    "ValueGenerator",
    "ZipfianGenerator",
    "derive_rng",
    "fnvhash64",
    "zeta",
    "zeta_increment",
]


def derive_rng(seed: int | str, *labels: int | str) -> random.Random:
    """A `random.Random` for one purpose of one run: the same (seed, labels) give the same stream.

    Each consumer (key chooser, operation chooser, values; per load process) gets
    its own stream, so adding a draw in one place does not shift the others.
    A string seed is hashed with SHA-512 by `random.Random`, so the stream is the
    same in every process and Python run (it does not depend on PYTHONHASHSEED).
    """
    return random.Random(":".join(str(part) for part in ("optistack", seed, *labels)))


# --------------------------------------------------------------------------- hashing

# site.ycsb.Utils: FNV_OFFSET_BASIS_64, FNV_PRIME_64.
FNV_OFFSET_BASIS_64 = 0xCBF29CE484222325
FNV_PRIME_64 = 1099511628211
_MASK64 = (1 << 64) - 1
_SIGN64 = 1 << 63


def fnvhash64(value: int) -> int:
    """YCSB's `Utils.fnvhash64`: FNV-1a over the 8 low bytes of `value`, then `Math.abs`.

    Java works on signed 64-bit longs: the product wraps at 64 bits, the result
    is read as signed and `Math.abs` is applied, which leaves `Long.MIN_VALUE`
    negative (reproduced here). A negative input is taken in two's complement, as
    Java's `val & 0xff; val >> 8` sees it.
    """
    # Unrolled over the little-endian bytes and masked once at the end, which is exact
    # because xor and multiply modulo 2^64 depend only on the low 64 bits. This runs once
    # per scrambled-zipfian draw and per hashed key name; it is ~2x faster than the loop.
    b0, b1, b2, b3, b4, b5, b6, b7 = (value & _MASK64).to_bytes(8, "little")
    p = FNV_PRIME_64
    h = (FNV_OFFSET_BASIS_64 ^ b0) * p
    h = (h ^ b1) * p
    h = (h ^ b2) * p
    h = (h ^ b3) * p
    h = (h ^ b4) * p
    h = (h ^ b5) * p
    h = (h ^ b6) * p
    h = ((h ^ b7) * p) & _MASK64
    if h < _SIGN64:
        return h
    if h == _SIGN64:
        return -_SIGN64  # Math.abs(Long.MIN_VALUE) overflows and stays negative
    return (1 << 64) - h


# --------------------------------------------------------------------------- zeta

ZIPFIAN_CONSTANT = 0.99  # ZipfianGenerator.ZIPFIAN_CONSTANT

# Below this many terms a zeta sum is added up term by term (under a millisecond);
# above it the Euler-Maclaurin formula gives the same value to ~1e-15 in microseconds.
_EXACT_TERMS = 10_000
_EM_HEAD = 64  # terms summed exactly before the Euler-Maclaurin tail starts


def _check_theta(theta: float) -> None:
    if not (theta > 0.0 and theta != 1.0 and math.isfinite(theta)):
        raise OptiStackError(f"zipfian constant must be a positive number other than 1, not {theta!r}")


def _direct_sum(start: int, stop: int, theta: float) -> float:
    """Sum of 1/i^theta for i in (start, stop], term by term."""
    return math.fsum(i**-theta for i in range(start + 1, stop + 1))


def _euler_maclaurin(n: int, theta: float) -> float:
    """zeta(n, theta) = sum_{i=1..n} i^-theta by Euler-Maclaurin with an exact head.

    With 64 exact terms and three Bernoulli corrections the truncation error is
    below 1e-18, so the result equals YCSB's term-by-term loop to floating-point
    noise, while YCSB's loop needs minutes for 10^10 terms.
    """
    m = _EM_HEAD
    s = theta
    head = _direct_sum(0, m - 1, s)
    # integral of x^-s from m to n, written with expm1 to stay exact when s is near 1
    integral = m ** (1.0 - s) * math.expm1((1.0 - s) * math.log(n / m)) / (1.0 - s)
    ends = (m**-s + n**-s) / 2.0

    def d1(x: float) -> float:
        return -s * x ** (-s - 1.0)

    def d3(x: float) -> float:
        return -s * (s + 1.0) * (s + 2.0) * x ** (-s - 3.0)

    def d5(x: float) -> float:
        return -s * (s + 1.0) * (s + 2.0) * (s + 3.0) * (s + 4.0) * x ** (-s - 5.0)

    corrections = (d1(n) - d1(m)) / 12.0 - (d3(n) - d3(m)) / 720.0 + (d5(n) - d5(m)) / 30240.0
    return head + integral + ends + corrections


@functools.lru_cache(maxsize=256)
def zeta(n: int, theta: float) -> float:
    """YCSB's `ZipfianGenerator.zetastatic(n, theta)`: the sum of 1/i^theta for i = 1..n.

    Cached per (n, theta): every generator over the same key space shares one value,
    as YCSB computes it once per generator.
    """
    _check_theta(theta)
    if n <= 0:
        return 0.0
    if n <= _EXACT_TERMS:
        return _direct_sum(0, n, theta)
    return _euler_maclaurin(n, theta)


def zeta_increment(start: int, n: int, theta: float, initial_sum: float) -> float:
    """YCSB's `zetastatic(st, n, theta, initialsum)`: extend a zeta sum from `start` to `n` terms."""
    if n <= start:
        return initial_sum
    if n - start <= _EXACT_TERMS:
        return initial_sum + _direct_sum(start, n, theta)
    return initial_sum + (zeta(n, theta) - zeta(start, theta))


# --------------------------------------------------------------------------- generators


def _check_bounds(kind: str, lower: int, upper: int) -> None:
    if upper < lower:
        raise OptiStackError(f"{kind} needs lower bound <= upper bound, got {lower} > {upper}")


class UniformGenerator:
    """Integers uniformly in [lb, ub] (YCSB `UniformLongGenerator`).

    YCSB draws `lb + abs(nextLong()) % interval`; `getrandbits(63) % interval` is
    the same recipe on a seeded Mersenne Twister.
    """

    __slots__ = ("_bits", "interval", "lb", "ub")

    def __init__(self, lb: int, ub: int, *, rng: random.Random) -> None:
        _check_bounds("UniformGenerator", lb, ub)
        self.lb, self.ub = lb, ub
        self.interval = ub - lb + 1
        self._bits = rng.getrandbits

    def next(self) -> int:
        """Next integer, uniform over [lb, ub]."""
        return self.lb + self._bits(63) % self.interval


class ZipfianGenerator:
    """Zipf-distributed integers in [min, max]; `min` is the most popular (YCSB `ZipfianGenerator`).

    The algorithm is from Gray et al., "Quickly Generating Billion-Record Synthetic
    Databases", SIGMOD 1994, in YCSB's zeta/eta/alpha formulation: item 0 with
    probability 1/zeta(n), item 1 with 1/(2^theta zeta(n)), the rest by inverting a
    continuous approximation of the zipf CDF.

    `next_long(item_count)` draws over `item_count` items and, like YCSB, extends
    zeta incrementally when the count grows (inserts extend the key space).
    Deviations from YCSB, both fixes:
    - eta is recomputed for the new item count (YCSB reuses the constructor's count);
    - a shrinking count recomputes zeta (YCSB keeps the stale value unless told not to);
    - the result is clamped to the last item: at u -> 1 the float formula can reach n.
    """

    __slots__ = (
        "_alpha",
        "_eta",
        "_half_pow_theta",
        "_random",
        "_zeta2",
        "base",
        "count_for_zeta",
        "items",
        "theta",
        "zetan",
    )

    def __init__(
        self,
        min_value: int,
        max_value: int,
        constant: float = ZIPFIAN_CONSTANT,
        *,
        rng: random.Random,
        zetan: float | None = None,
    ) -> None:
        _check_bounds("ZipfianGenerator", min_value, max_value)
        _check_theta(constant)
        self.base = min_value
        self.items = max_value - min_value + 1
        self.theta = constant
        self._random = rng.random
        self._zeta2 = zeta(2, constant)
        self._half_pow_theta = 1.0 + 0.5**constant  # == zeta(2), the cut for item 1
        self._alpha = 1.0 / (1.0 - constant)
        self.zetan = zeta(self.items, constant) if zetan is None else zetan
        self.count_for_zeta = self.items
        self._eta = self._eta_for(self.items)

    def _eta_for(self, item_count: int) -> float:
        if item_count <= 2:
            return 0.0  # never used: u * zetan < zeta(2) covers every draw
        return (1.0 - (2.0 / item_count) ** (1.0 - self.theta)) / (1.0 - self._zeta2 / self.zetan)

    def _resize(self, item_count: int) -> None:
        if item_count > self.count_for_zeta:
            self.zetan = zeta_increment(self.count_for_zeta, item_count, self.theta, self.zetan)
        else:
            self.zetan = zeta(item_count, self.theta)
        self.count_for_zeta = item_count
        self._eta = self._eta_for(item_count)

    def next_long(self, item_count: int) -> int:
        """Next item among `item_count` items starting at `min` (YCSB `nextLong(itemcount)`)."""
        if item_count != self.count_for_zeta:
            if item_count < 1:
                raise OptiStackError(f"ZipfianGenerator needs at least one item, got {item_count}")
            self._resize(item_count)
        u = self._random()
        uz = u * self.zetan
        if uz < 1.0:
            return self.base
        if uz < self._half_pow_theta:
            return self.base + 1
        ret = int(item_count * (self._eta * u - self._eta + 1.0) ** self._alpha)
        return self.base + (ret if ret < item_count else item_count - 1)

    def next(self) -> int:
        """Next item in [min, max]: min most popular, then min+1, and so on."""
        # Inlined copy of next_long(self.items): this is the hot path.
        n = self.items
        if n != self.count_for_zeta:
            self._resize(n)
        u = self._random()
        uz = u * self.zetan
        if uz < 1.0:
            return self.base
        if uz < self._half_pow_theta:
            return self.base + 1
        ret = int(n * (self._eta * u - self._eta + 1.0) ** self._alpha)
        return self.base + (ret if ret < n else n - 1)


class ScrambledZipfianGenerator:
    """Zipfian popularity with the popular items scattered over [min, max] (YCSB `ScrambledZipfianGenerator`).

    Draws a zipfian rank over a huge fixed item count, then maps it to
    `min + fnvhash64(rank) % itemcount`. For the default constant 0.99 zeta is
    YCSB's precomputed ZETAN; other constants compute zeta over ITEM_COUNT
    (Euler-Maclaurin, microseconds; YCSB's loop would take minutes).

    Because ranks come from 10^10 items, the head is flatter than a
    `ZipfianGenerator` over the same [min, max] (rank 0 gets 1/26.47 of draws, not
    1/zeta(itemcount)); collisions of the hash fold the long tail onto all items.
    That is YCSB's behaviour, kept on purpose: it is what "zipfian" means in
    YCSB's published results.

    YCSB now declares ITEM_COUNT = 10^16 but keeps ZETAN = zeta(10^10, 0.99), a
    mismatch; OptiStack uses 10^10, the item count that ZETAN was computed for.
    """

    ZETAN = 26.46902820178302
    USED_ZIPFIAN_CONSTANT = 0.99
    ITEM_COUNT = 10_000_000_000

    __slots__ = ("_gen", "itemcount", "max", "min")

    def __init__(
        self, min_value: int, max_value: int, constant: float = ZIPFIAN_CONSTANT, *, rng: random.Random
    ) -> None:
        _check_bounds("ScrambledZipfianGenerator", min_value, max_value)
        self.min, self.max = min_value, max_value
        self.itemcount = max_value - min_value + 1
        zetan = self.ZETAN if constant == self.USED_ZIPFIAN_CONSTANT else None
        self._gen = ZipfianGenerator(0, self.ITEM_COUNT - 1, constant, rng=rng, zetan=zetan)

    @property
    def zetan(self) -> float:
        """zeta(ITEM_COUNT, constant): YCSB's ZETAN for 0.99, computed for any other constant."""
        return self._gen.zetan

    def next(self) -> int:
        """Next item in [min, max]; popular items are spread over the range by the hash."""
        return self.min + fnvhash64(self._gen.next()) % self.itemcount


class CounterGenerator:
    """Consecutive integers from `count_start` (YCSB `CounterGenerator`)."""

    __slots__ = ("_next",)

    def __init__(self, count_start: int) -> None:
        self._next = count_start

    def next(self) -> int:
        """Return the counter and advance it."""
        value = self._next
        self._next = value + 1
        return value

    @property
    def last_value(self) -> int:
        """The last value handed out (count_start - 1 before the first `next`)."""
        return self._next - 1

    @property
    def last_handed_out(self) -> int:
        """The last value `next` returned, whatever `last_value` means in a subclass."""
        return self._next - 1


class AcknowledgedCounterGenerator(CounterGenerator):
    """A counter whose `last_value` only covers values acknowledged without gaps (YCSB `AcknowledgedCounterGenerator`).

    YCSB uses it as the upper bound of the readable key space: an insert takes
    `next()`, and its key becomes readable once it and every earlier insert have
    been `acknowledge`d, so a read never targets a key whose insert is in flight.
    YCSB keeps pending acknowledgements in a ring of 2^20 slots; a set does the
    same job here, with the same limit on how many may be pending.
    """

    WINDOW_SIZE = 1 << 20

    __slots__ = ("_limit", "_pending")

    def __init__(self, count_start: int) -> None:
        super().__init__(count_start)
        self._limit = count_start - 1
        self._pending: set[int] = set()

    def acknowledge(self, value: int) -> None:
        """Mark `value` finished; advance `last_value` over every contiguous finished value."""
        if value <= self._limit or value in self._pending:
            return  # acknowledging twice changes nothing
        if value >= self._next:
            raise OptiStackError(f"cannot acknowledge {value}: the counter has not handed it out yet")
        if value != self._limit + 1:
            if len(self._pending) >= self.WINDOW_SIZE:
                raise OptiStackError(
                    f"more than {self.WINDOW_SIZE} inserts are unacknowledged: "
                    "acknowledge every insert when it finishes, failed ones too"
                )
            self._pending.add(value)
            return
        limit = value
        pending = self._pending
        while limit + 1 in pending:
            limit += 1
            pending.remove(limit)
        self._limit = limit

    @property
    def last_value(self) -> int:
        """The highest value v such that every value up to v has been acknowledged."""
        return self._limit


class SkewedLatestGenerator:
    """Zipfian over the items a counter has produced, newest most popular (YCSB `SkewedLatestGenerator`).

    `next = last - zipfian(last + 1)` where `last` is the counter's `last_value`,
    so the newest item has the zipfian head's probability and popularity decays
    with age. YCSB draws `zipfian(last)`, which never returns item 0 (an
    off-by-one); OptiStack draws over all last + 1 items.
    """

    __slots__ = ("_basis", "_zipfian")

    def __init__(
        self,
        basis: CounterGenerator,
        constant: float = ZIPFIAN_CONSTANT,
        *,
        rng: random.Random,
    ) -> None:
        if basis.last_value < 0:
            raise OptiStackError("SkewedLatestGenerator needs a counter that has produced at least one item")
        self._basis = basis
        self._zipfian = ZipfianGenerator(0, basis.last_value, constant, rng=rng)

    def next(self) -> int:
        """Next item in [0, last_value], skewed towards last_value."""
        last = self._basis.last_value
        return last - self._zipfian.next_long(last + 1)


class HotspotIntegerGenerator:
    """hot_opn_fraction of draws fall uniformly in the first hot_data_fraction of [lb, ub] (YCSB `HotspotIntegerGenerator`).

    The rest fall uniformly in the cold remainder. Like YCSB the hot set is
    `int(interval * hot_data_fraction)` items at the low end; unlike YCSB (which
    divides by zero) a hot or cold set that rounds to empty is kept at one item or
    absorbed by the other set.
    """

    __slots__ = ("_bits", "_random", "cold_interval", "hot_interval", "hot_opn_fraction", "lb", "ub")

    def __init__(
        self,
        lb: int,
        ub: int,
        hot_data_fraction: float,
        hot_opn_fraction: float,
        *,
        rng: random.Random,
    ) -> None:
        _check_bounds("HotspotIntegerGenerator", lb, ub)
        for name, fraction in (
            ("hot_data_fraction", hot_data_fraction),
            ("hot_opn_fraction", hot_opn_fraction),
        ):
            if not 0.0 <= fraction <= 1.0:
                raise OptiStackError(f"{name} must be between 0 and 1, not {fraction}")
        self.lb, self.ub = lb, ub
        interval = ub - lb + 1
        self.hot_interval = max(1, int(interval * hot_data_fraction))
        self.cold_interval = interval - self.hot_interval
        # With no cold items every draw is hot, whatever the operation fraction says.
        self.hot_opn_fraction = hot_opn_fraction if self.cold_interval > 0 else 1.0
        self._random = rng.random
        self._bits = rng.getrandbits

    def next(self) -> int:
        """Next integer: hot set with probability hot_opn_fraction, else cold set."""
        if self._random() < self.hot_opn_fraction:
            return self.lb + self._bits(63) % self.hot_interval
        return self.lb + self.hot_interval + self._bits(63) % self.cold_interval


class SequentialGenerator:
    """count_start, count_start + 1, ..., count_end, then around again (YCSB `SequentialGenerator`)."""

    __slots__ = ("_counter", "count_start", "interval")

    def __init__(self, count_start: int, count_end: int) -> None:
        _check_bounds("SequentialGenerator", count_start, count_end)
        self.count_start = count_start
        self.interval = count_end - count_start + 1
        self._counter = 0

    def extend_to(self, count_end: int) -> None:
        """Change the range to end at `count_end`, continuing from the current position in the cycle."""
        _check_bounds("SequentialGenerator", self.count_start, count_end)
        self._counter %= self.interval  # else counter % new_interval would jump elsewhere
        self.interval = count_end - self.count_start + 1

    def next(self) -> int:
        """Next integer of the sequence, wrapping after count_end."""
        value = self.count_start + self._counter % self.interval
        self._counter += 1
        return value


# --------------------------------------------------------------------------- operations


class OperationChooser:
    """Picks operation names by weight (YCSB `DiscreteGenerator`).

    YCSB walks the list subtracting normalised weights from one uniform draw; a
    precomputed cumulative table and a bisect is the same mapping of draw to
    name, in O(log k) instead of O(k).
    """

    __slots__ = ("_cumulative", "_names", "_random", "weights")

    def __init__(self, operations: Mapping[str, float], rng: random.Random) -> None:
        weights = {str(name): float(w) for name, w in operations.items()}
        if not weights or any(not math.isfinite(w) or w < 0 for w in weights.values()):
            raise OptiStackError(f"operation weights must be non-negative numbers, got {dict(operations)}")
        total = sum(weights.values())
        if total <= 0:
            raise OptiStackError(f"operation weights must not all be zero, got {dict(operations)}")
        self.weights = {name: w / total for name, w in weights.items()}
        self._names = [name for name, w in self.weights.items() if w > 0]
        running = 0.0
        self._cumulative = []
        for name in self._names:
            running += self.weights[name]
            self._cumulative.append(running)
        # Rounding can leave the last bound a hair under 1.0; a draw there must not fall off the end.
        self._cumulative[-1] = 1.0
        self._random = rng.random

    def next(self) -> str:
        """Next operation name, each with its normalised weight as probability."""
        return self._names[bisect.bisect_right(self._cumulative, self._random())]


# --------------------------------------------------------------------------- values

_SPLITMIX_GAMMA = 0x9E3779B97F4A7C15
_LCG_MULTIPLIER = 6364136223846793005  # Knuth's MMIX constants
_LCG_INCREMENT = 1442695040888963407


def _splitmix64(x: int) -> int:
    x = (x + _SPLITMIX_GAMMA) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class ValueGenerator:
    """Field values: `field0`..`field{N-1}`, each `field_length` random printable ASCII characters.

    YCSB's `RandomByteIterator` makes fresh random bytes for every value. In Python
    that is slow where it matters: per 100-character value `random.choices` costs
    ~30 us (as much as a Redis round trip), seeded `randbytes` + base64 ~2.5 us, and
    `os.urandom` cannot be replayed from a seed. Instead one buffer of >= 1 MiB is
    drawn once from the seeded rng and every value is a slice at a random offset
    (~0.3 us, 2-3x less than the cheapest alternative, per field of every insert). The alphabet is the 64 characters of URL-safe
    base64 (A-Z a-z 0-9 - _): uniform, 6 bits of entropy per character (YCSB's has
    5), and nothing any store's text protocol must escape.

    The price: there are only ~10^6 distinct values of a given length, and two
    values overlap when their offsets are close. No store here deduplicates values,
    and in a 64 KiB compression block of 100-byte values the overlaps save ~3%, so
    the results are not affected. Joining two slices per value would make values
    practically unique but cost ~2.5x per value, on every insert and seeded record.
    """

    MIN_BUFFER_SIZE = 1 << 20

    __slots__ = (
        "_bits",
        "_buffer",
        "_random",
        "_seed_mix",
        "_span",
        "field_count",
        "field_length",
        "field_names",
        "read_all_fields",
        "write_all_fields",
    )

    def __init__(
        self,
        field_count: int,
        field_length: int,
        rng: random.Random,
        *,
        read_all_fields: bool = True,
        write_all_fields: bool = False,
    ) -> None:
        if field_count < 1 or field_length < 1:
            raise OptiStackError(
                f"field_count and field_length must be at least 1, got {field_count} and {field_length}"
            )
        self.field_count = field_count
        self.field_length = field_length
        self.read_all_fields = read_all_fields
        self.write_all_fields = write_all_fields
        self.field_names = [f"field{i}" for i in range(field_count)]  # CoreWorkload's fieldnameprefix
        size = max(self.MIN_BUFFER_SIZE, 4 * field_length)
        raw = rng.randbytes(size * 3 // 4 + 3)
        self._buffer = base64.urlsafe_b64encode(raw)[:size].decode("ascii")
        self._span = size - field_length + 1
        self._seed_mix = rng.getrandbits(64)
        self._random = rng.random
        self._bits = rng.getrandbits

    def _value(self) -> str:
        offset = int(self._random() * self._span)
        return self._buffer[offset : offset + self.field_length]

    def values(self) -> dict[str, str]:
        """All fields with fresh random values (YCSB `buildValues`): inserts."""
        buffer, length, span, draw = self._buffer, self.field_length, self._span, self._random
        out = {}
        for name in self.field_names:
            offset = int(draw() * span)
            out[name] = buffer[offset : offset + length]
        return out

    def one_field(self) -> dict[str, str]:
        """One uniformly chosen field with a fresh value (YCSB `buildSingleValue`)."""
        return {self.field_names[self._bits(63) % self.field_count]: self._value()}

    def update_values(self) -> dict[str, str]:
        """What an update or read-modify-write writes: all fields if write_all_fields, else one."""
        return self.values() if self.write_all_fields else self.one_field()

    def fields_to_read(self) -> list[str] | None:
        """Fields a read or scan asks for: None (all) if read_all_fields, else one random field."""
        if self.read_all_fields:
            return None
        return [self.field_names[self._bits(63) % self.field_count]]

    def values_for(self, index: int) -> dict[str, str]:
        """The values of record `index`, a pure function of (rng seed, index).

        Seeding uses this so any slice of the key space can be loaded by any
        process and still produce the same data as one loader would.
        """
        # A splitmix64 of the index seeds a tiny LCG that yields one offset per field:
        # cheaper than a Random per record, and independent of the draw order. The
        # LCG's high bits are the good ones, hence the shift.
        state = _splitmix64(index ^ self._seed_mix)
        buffer, length, span = self._buffer, self.field_length, self._span
        out = {}
        for name in self.field_names:
            state = (state * _LCG_MULTIPLIER + _LCG_INCREMENT) & _MASK64
            offset = (state >> 16) % span
            out[name] = buffer[offset : offset + length]
        return out

    def values_for_range(self, start: int, stop: int, batch_size: int = 4096) -> Iterator[dict[str, str]]:
        """`values_for(i)` for i in [start, stop), the offsets computed in numpy batches.

        Seeding runs this once per record: vectorising the 64-bit offset arithmetic
        removes ~40% of the per-record cost, leaving the slicing and the dict.
        """
        names, buffer, length = self.field_names, self._buffer, self.field_length
        span = np.uint64(self._span)
        shift = np.uint64(16)
        multiplier, increment = np.uint64(_LCG_MULTIPLIER), np.uint64(_LCG_INCREMENT)
        for first in range(start, stop, batch_size):
            indexes = np.arange(first, min(first + batch_size, stop), dtype=np.uint64)
            # uint64 arrays wrap modulo 2^64 like the masked Python ints of values_for.
            state = _splitmix64_array(indexes ^ np.uint64(self._seed_mix))
            offsets = np.empty((len(indexes), len(names)), dtype=np.uint64)
            for column in range(len(names)):
                state = state * multiplier + increment
                offsets[:, column] = (state >> shift) % span
            for row in offsets.tolist():
                yield {
                    name: buffer[offset : offset + length] for name, offset in zip(names, row, strict=True)
                }


def _splitmix64_array(x: np.ndarray) -> np.ndarray:
    """`_splitmix64` over a uint64 array."""
    x = x + np.uint64(_SPLITMIX_GAMMA)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))
