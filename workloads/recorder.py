"""Latency recording: one entry point on the load side, exact merging on the other.

Each load process owns one `Recorder`. The Locust user calls `measure()` once per
operation. Samples go into HdrHistograms (1 µs .. 60 s, 3 significant digits) per
operation and per second of the measured window. Every few seconds the process
`drain()`s the seconds it has finished into a compact, encoded `Shipment`; the master's
`Aggregator` merges shipments from every process exactly (histogram addition, never
averaging of percentiles) and turns each second into a time-series row once every
process has reported past it, so memory stays bounded on long runs.

Nothing here knows about Locust or stores: it is plain data in, plain data out.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 60_000_000  # 60 s: anything slower is clamped (and is an outage, not a latency)
SIGNIFICANT_DIGITS = 3
ALL = "ALL"
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}


def new_histogram() -> HdrHistogram:
    """An empty histogram with OptiStack's range and precision."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def encode(histogram: HdrHistogram) -> str:
    """Histogram -> compressed base64 text (HdrHistogram's standard V2 encoding)."""
    data = histogram.encode()
    return data.decode("ascii") if isinstance(data, bytes) else data


def decode(text: str) -> HdrHistogram:
    """Inverse of `encode`."""
    histogram = new_histogram()
    histogram.decode_and_add(text)
    return histogram


def latency_stats(histogram: HdrHistogram, prefix: str = "latency") -> dict[str, float | None]:
    """Percentiles, min, max, mean and standard deviation in µs (None when empty)."""
    keys = [
        *(f"{prefix}_{name}_us" for name in PERCENTILES),
        f"{prefix}_max_us",
        f"{prefix}_min_us",
        f"{prefix}_mean_us",
        f"{prefix}_stddev_us",
    ]
    if histogram.get_total_count() == 0:
        return dict.fromkeys(keys)
    out: dict[str, float | None] = {
        f"{prefix}_{name}_us": float(histogram.get_value_at_percentile(q)) for name, q in PERCENTILES.items()
    }
    out[f"{prefix}_max_us"] = float(histogram.get_max_value())
    out[f"{prefix}_min_us"] = float(histogram.get_min_value())
    out[f"{prefix}_mean_us"] = float(histogram.get_mean_value())
    out[f"{prefix}_stddev_us"] = float(histogram.get_stddev())
    return out


@dataclass
class _Second:
    """What one process measured in one second, per operation."""

    service: dict[str, HdrHistogram] = field(default_factory=dict)
    intended: dict[str, HdrHistogram] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class Recorder:
    """Per-process latency recorder. `measure()` is the only hot-path call.

    `window_start_ns` / `window_end_ns` are wall-clock nanoseconds (`time.time_ns()`)
    bounding the measured window: operations that start outside it (warm-up, the tail
    after the end) are not recorded.
    """

    def __init__(self, slowest_kept: int = 50) -> None:
        self.window_start_ns: int | None = None
        self.window_end_ns: int | None = None
        self._seconds: dict[int, _Second] = {}
        self._current_index = -1
        self._current: _Second | None = None
        self._error_examples: dict[tuple[str, str], tuple[int, str]] = {}
        self._error_counts: dict[tuple[str, str], int] = defaultdict(int)
        self._slowest_kept = slowest_kept
        self._slow: list[tuple[int, str, str, int, str]] = []  # (latency_us, op, key, offset_ms, error)
        self._slow_floor = 0

    def set_window(self, start_ns: int, end_ns: int) -> None:
        """Start measuring: samples starting in [start_ns, end_ns) count."""
        self.window_start_ns = start_ns
        self.window_end_ns = end_ns

    def measure(
        self,
        operation: str,
        start_ns: int,
        latency_us: int,
        intended_latency_us: int | None = None,
        error: str | None = None,
        key: str = "",
    ) -> None:
        """Record one operation that started at wall-clock `start_ns`.

        `latency_us` is service time; `intended_latency_us` the time from the
        operation's intended start (target-rate mode). A failed operation passes the
        error type in `error`: it is counted, not put in the latency histograms.
        """
        start = self.window_start_ns
        if start is None or start_ns < start or start_ns >= self.window_end_ns:
            return
        index = (start_ns - start) // 1_000_000_000
        if index != self._current_index:
            self._current_index = index
            self._current = self._seconds.get(index)
            if self._current is None:
                self._current = self._seconds[index] = _Second()
        second = self._current
        if error is not None:
            second.errors[operation] += 1
            self._error_counts[(operation, error)] += 1
        else:
            histogram = second.service.get(operation)
            if histogram is None:
                histogram = second.service[operation] = new_histogram()
            histogram.record_value(min(max(latency_us, LOWEST_US), HIGHEST_US))
            if intended_latency_us is not None:
                histogram = second.intended.get(operation)
                if histogram is None:
                    histogram = second.intended[operation] = new_histogram()
                histogram.record_value(min(max(intended_latency_us, LOWEST_US), HIGHEST_US))
        worst = intended_latency_us if intended_latency_us is not None else latency_us
        if worst > self._slow_floor or (error is not None and len(self._slow) < self._slowest_kept):
            self._keep_slow(worst, operation, key, (start_ns - start) // 1_000_000, error or "")

    def _keep_slow(self, latency_us: int, operation: str, key: str, offset_ms: int, error: str) -> None:
        self._slow.append((latency_us, operation, key, offset_ms, error))
        if len(self._slow) > 2 * self._slowest_kept:
            self._slow.sort(reverse=True)
            del self._slow[self._slowest_kept :]
            self._slow_floor = self._slow[-1][0]

    def error_example(self, operation: str, error_type: str, message: str) -> None:
        """Remember the first message of each (operation, error type) for the report."""
        self._error_examples.setdefault((operation, error_type), (0, message[:500]))

    def drain(self, now_ns: int, final: bool = False) -> dict[str, Any]:
        """Ship every finished second (all of them when `final`) and forget them.

        Returns a msgpack-friendly dict: Locust carries it to the master.
        """
        start = self.window_start_ns
        if start is None:
            return {"watermark": -1 if not final else math.inf, "seconds": {}, "final": final}
        # A second is shipped one second after it ended, so operations that started in
        # it have (almost always) finished; a later straggler is shipped on its own.
        watermark = math.inf if final else (now_ns - start) // 1_000_000_000 - 1
        shipped = {}
        for index in sorted(i for i in self._seconds if i < watermark):
            second = self._seconds.pop(index)
            shipped[str(index)] = {
                "service": {op: encode(h) for op, h in second.service.items()},
                "intended": {op: encode(h) for op, h in second.intended.items()},
                "errors": dict(second.errors),
            }
            if index == self._current_index:
                self._current_index, self._current = -1, None
        shipment: dict[str, Any] = {
            "watermark": -1 if watermark == math.inf else watermark,
            "seconds": shipped,
            "final": final,
        }
        if final:
            shipment["error_examples"] = [
                [op, et, msg] for (op, et), (_, msg) in self._error_examples.items()
            ]
            shipment["error_counts"] = [[op, et, n] for (op, et), n in self._error_counts.items()]
            self._slow.sort(reverse=True)
            shipment["slowest"] = [list(s) for s in self._slow[: self._slowest_kept]]
        return shipment


@dataclass
class Totals:
    """Everything the master keeps for one operation over the whole window."""

    service: HdrHistogram = field(default_factory=new_histogram)
    intended: HdrHistogram = field(default_factory=new_histogram)
    errors: int = 0


class Aggregator:
    """Master side: merges shipments from every load process exactly.

    A second becomes a time-series row once all `expected_processes` have reported
    past it. Samples that arrive for a second already turned into a row (an operation
    that outlived the shipping lag) still go into the totals, so the run's summary
    stays exact; only that second's row misses them.
    """

    def __init__(self, expected_processes: int = 1) -> None:
        self.expected_processes = expected_processes
        self.totals: dict[str, Totals] = defaultdict(Totals)
        self.rows: list[dict[str, Any]] = []  # finished per-second rows
        self.late_samples = 0
        self.error_examples: dict[tuple[str, str], str] = {}
        self.error_counts: dict[tuple[str, str], int] = defaultdict(int)
        self.slowest: list[list[Any]] = []
        self._pending: dict[int, _Second] = {}
        self._watermarks: dict[str, float] = {}
        self._finished_before = 0

    def add(self, process: str, shipment: dict[str, Any]) -> None:
        """Merge one process's shipment; finish the seconds every process has passed."""
        for index_text, data in shipment["seconds"].items():
            index = int(index_text)
            if index < self._finished_before:
                late = _Second()
                _merge_into(late, data)
                self.late_samples += sum(h.get_total_count() for h in late.service.values())
                self._absorb(index, late, emit_rows=False)
                continue
            _merge_into(self._pending.setdefault(index, _Second()), data)
        self._watermarks[process] = math.inf if shipment.get("final") else shipment["watermark"]
        for op, error_type, message in shipment.get("error_examples", []):
            self.error_examples.setdefault((op, error_type), message)
        for op, error_type, count in shipment.get("error_counts", []):
            self.error_counts[(op, error_type)] += count
        if shipment.get("slowest"):
            self.slowest = sorted(self.slowest + shipment["slowest"], reverse=True)[:50]
        if len(self._watermarks) >= self.expected_processes:
            self._finish(min(self._watermarks.values()))

    def finish_all(self) -> None:
        """End of run: turn every pending second into a row."""
        self._finish(math.inf)

    def _finish(self, watermark: float) -> None:
        for index in sorted(i for i in self._pending if i < watermark):
            self._absorb(index, self._pending.pop(index), emit_rows=True)
            self._finished_before = max(self._finished_before, index + 1)

    def _absorb(self, index: int, second: _Second, emit_rows: bool) -> None:
        merged, merged_errors = new_histogram(), 0
        for op in sorted(set(second.service) | set(second.errors)):
            service = second.service.get(op) or new_histogram()
            errors = second.errors.get(op, 0)
            total = self.totals[op]
            total.service.add(service)
            total.errors += errors
            if op in second.intended:
                total.intended.add(second.intended[op])
            merged.add(service)
            merged_errors += errors
            if emit_rows:
                self.rows.append(_second_row(index, op, service, errors))
        if emit_rows and (second.service or second.errors):
            self.rows.append(_second_row(index, ALL, merged, merged_errors))

    def latest_seconds(self, count: int) -> list[dict[str, Any]]:
        """The last `count` finished ALL rows (for progress lines)."""
        return [r for r in self.rows if r["operation"] == ALL][-count:]


def _merge_into(second: _Second, data: dict[str, Any]) -> None:
    for target, source in ((second.service, data["service"]), (second.intended, data["intended"])):
        for op, text in source.items():
            if op in target:
                target[op].decode_and_add(text)
            else:
                target[op] = decode(text)
    for op, count in data["errors"].items():
        second.errors[op] += count


def _second_row(index: int, op: str, histogram: HdrHistogram, errors: int) -> dict[str, Any]:
    empty = histogram.get_total_count() == 0
    return {
        "second": index,
        "operation": op,
        "ops": histogram.get_total_count(),
        "errors": errors,
        "latency_p50_us": None if empty else float(histogram.get_value_at_percentile(50)),
        "latency_p99_us": None if empty else float(histogram.get_value_at_percentile(99)),
        "latency_max_us": None if empty else float(histogram.get_max_value()),
    }


def merge_encoded(texts: Iterable[str]) -> HdrHistogram:
    """Merge encoded histograms into one (used for ALL and for cross-run merging)."""
    merged = new_histogram()
    for text in texts:
        merged.decode_and_add(text)
    return merged
