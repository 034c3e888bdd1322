"""What a report shows, computed from a run's results: plain values the templates print.

Everything here is data in, data out (no HTML, no matplotlib), so the numbers a
report prints can be tested without rendering. Strings from stores and users stay
plain strings here: the templates escape them.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from reports.history import RunResults, StoreResults

log = logging.getLogger(__name__)

# Results spell operations upper-case, as YCSB prints them; ALL is the exact merge.
OPERATION_ORDER = ("ALL", "READ", "UPDATE", "INSERT", "SCAN", "READ_MODIFY_WRITE", "DELETE")

# (column suffix, label) of the latency columns the summary table shows.
PERCENTILES = (
    ("p50", "p50"),
    ("p90", "p90"),
    ("p95", "p95"),
    ("p99", "p99"),
    ("p999", "p99.9"),
    ("max", "max"),
)

# Where the stored percentile columns sit on a percentile curve (percent).
STORED_PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p95", 95.0), ("p99", 99.0), ("p999", 99.9))

# Colour per store, the same in every chart and beside the names in the tables
# (matplotlib's tab10, readable on white and distinct for colour-blind readers in order).
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip

_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)(?P<secret>[^\s@/]+)@")


def redact(text: Any) -> str:
    """Mask the password of any URL in a text (the engine masks them; this is a second guard)."""
    return _URL_PASSWORD.sub(lambda m: m.group("head") + "***@", str(text))


def is_missing(value: Any) -> bool:
    """None, NaN and pandas' NA all count as missing."""
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def fmt_number(value: Any, decimals: int | None = None) -> str:
    """Thousands separators; one decimal below 100 unless told otherwise; an em dash when missing."""
    if is_missing(value):
        return "—"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if decimals is None:
        decimals = 0 if abs(number) >= 100 or number == int(number) else 1
    return f"{number:,.{decimals}f}"


def fmt_time(value: Any) -> str:
    """An ISO 8601 timestamp as `2026-12-04 20:15:00 UTC`; other text unchanged."""
    if is_missing(value) or value == "":
        return "—"
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_seconds(value: Any) -> str:
    if is_missing(value):
        return "—"
    return f"{fmt_number(value)} s"


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass
class Row:
    """One line of a key/value table: one value for every store, or a value per store."""

    name: str
    value: str | None = None
    per_store: list[tuple[str, str]] = field(default_factory=list)


def _uniform_rows(stores: dict[str, StoreResults], rows: list[tuple[str, Any]]) -> list[Row]:
    """`rows` is (name, fn(store) -> text or None); stores that lack a value are not a difference."""
    out = []
    for name, fn in rows:
        values = {}
        for store, results in stores.items():
            text = fn(results)
            if text not in (None, "", "—"):
                values[store] = text
        if not values:
            continue
        distinct = set(values.values())
        if len(distinct) == 1:
            out.append(Row(name, value=distinct.pop()))
        else:
            out.append(Row(name, per_store=list(values.items())))
    return out


def _workload(store: StoreResults) -> dict[str, Any]:
    return _as_dict(store.run.get("workload"))


def _settings(store: StoreResults) -> dict[str, Any]:
    return _as_dict(store.run.get("settings"))


def describe_mix(operations: Any) -> str | None:
    """`{read: .5, update: .5}` -> `read 50% · update 50%`."""
    if not isinstance(operations, dict) or not operations:
        return None
    parts = []
    for name, share in sorted(operations.items(), key=lambda item: -float(item[1] or 0)):
        parts.append(f"{str(name).replace('_', '-')} {float(share) * 100:g}%")
    return " · ".join(parts)


def describe_distribution(workload: dict[str, Any]) -> str | None:
    name = workload.get("request_distribution")
    if not name:
        return None
    if name == "zipfian" and workload.get("zipfian_constant") is not None:
        return f"zipfian (constant {workload['zipfian_constant']:g})"
    if name == "hotspot" and workload.get("hotspot_data_fraction") is not None:
        data = float(workload["hotspot_data_fraction"]) * 100
        ops = float(workload.get("hotspot_opn_fraction") or 0) * 100
        return f"hotspot ({ops:g}% of operations on {data:g}% of the keys)"
    return str(name)


def _workload_name(store: StoreResults) -> str | None:
    workload = _workload(store)
    if not workload.get("name"):
        return None
    description = workload.get("description")
    return f"{workload['name']} — {description}" if description else str(workload["name"])


def _records(store: StoreResults) -> str | None:
    workload = _workload(store)
    if workload.get("record_count") is None:
        return None
    text = fmt_number(workload["record_count"])
    if workload.get("field_count") and workload.get("field_length"):
        text += f" ({workload['field_count']} fields × {fmt_number(workload['field_length'])} B)"  # noqa: RUF001
    return text


def _scan_length(store: StoreResults) -> str | None:
    workload = _workload(store)
    if "scan" not in _as_dict(workload.get("operations")) or workload.get("max_scan_length") is None:
        return None
    return f"up to {fmt_number(workload['max_scan_length'])} records ({workload.get('scan_length_distribution', 'uniform')})"


def _target_rate(store: StoreResults) -> str | None:
    settings = _settings(store)
    if "target_rate" not in settings:
        return None
    rate = settings["target_rate"]
    if is_missing(rate):
        return "none — closed loop (each user runs as fast as the store answers)"
    return f"{fmt_number(rate)} ops/s (open loop, latency also measured from each intended start)"


def _setting(key: str, unit: str = "") -> Any:
    def get(store: StoreResults) -> str | None:
        value = _settings(store).get(key)
        return None if is_missing(value) else f"{fmt_number(value)}{unit}"

    return get


def parameter_rows(run: RunResults) -> list[Row]:
    """The run's parameters: workload, mix, distribution, records, users, durations, rate."""
    return _uniform_rows(
        run.stores,
        [
            ("Workload", _workload_name),
            ("Operation mix", lambda s: describe_mix(_workload(s).get("operations"))),
            ("Request distribution", lambda s: describe_distribution(_workload(s))),
            ("Records", _records),
            ("Scan length", _scan_length),
            ("Users", _setting("users")),
            ("Load processes", _setting("processes")),
            ("Duration (measured)", _setting("duration_s", " s")),
            ("Warm-up (excluded)", _setting("warmup_s", " s")),
            ("Target rate", _target_rate),
            ("Operation timeout", _setting("operation_timeout_s", " s")),
            ("Random seed", _setting("seed")),
        ],
    )


def _server(store: StoreResults) -> str:
    server = _as_dict(store.run.get("server"))
    text = " ".join(str(server[k]) for k in ("product", "version") if server.get(k) not in (None, ""))
    return text or "—"


def _host(store: StoreResults) -> str:
    host = _as_dict(store.run.get("host"))
    parts = []
    if host.get("hostname"):
        parts.append(str(host["hostname"]))
    if host.get("cpu_count"):
        parts.append(f"{host['cpu_count']} CPUs")
    if host.get("memory_gib"):
        parts.append(f"{fmt_number(host['memory_gib'], 1)} GiB")
    if host.get("platform"):
        parts.append(str(host["platform"]))
    return " · ".join(parts) or "—"


def _client_cpu(store: StoreResults) -> str | None:
    load = _as_dict(store.run.get("load"))
    cpu = load.get("client_cpu")
    if not isinstance(cpu, list):
        return None
    peaks = []
    for item in cpu:
        item = _as_dict(item)
        value = item.get("cpu_percent_max", item.get("cpu_percent"))
        if not is_missing(value):
            peaks.append(f"{float(value):.0f}%")
    return f"load processes' CPU peak: {', '.join(peaks)}" if peaks else None


def _client(store: StoreResults) -> str:
    versions = _as_dict(store.run.get("versions"))
    parts = [f"{name} {version}" for name, version in _as_dict(versions.get("driver")).items()]
    for key in ("locust", "python", "optistack"):
        if versions.get(key):
            parts.append(f"{key} {versions[key]}")
    return " · ".join(parts) or "—"


def _seeding(store: StoreResults) -> str:
    seed = _as_dict(store.run.get("seed"))
    if seed.get("count") is None and seed.get("records") is None:
        return "—"
    count = seed.get("count", seed.get("records"))
    text = f"{fmt_number(count)} records"
    if seed.get("duration_s") is not None:
        text += f" in {fmt_number(seed['duration_s'], 1)} s"
    if seed.get("records_per_s") is not None:
        text += f" ({fmt_number(seed['records_per_s'])} records/s)"
    return text


@dataclass
class StoreInfo:
    """Per-store facts for the versions table and the status overview."""

    store: str
    color: str
    status: str
    error: str | None
    server: str
    client: str
    host: str
    endpoint: str
    seeding: str
    client_cpu: str | None
    client_saturation: str | None
    started_at: str
    command: str | None


def store_infos(run: RunResults, colors: dict[str, str]) -> list[StoreInfo]:
    infos = []
    for name, store in run.stores.items():
        infos.append(
            StoreInfo(
                store=name,
                color=colors[name],
                status=store.status,
                error=redact(store.error) if store.error else None,
                server=_server(store),
                client=_client(store),
                host=_host(store),
                endpoint=redact(store.run["url"]) if store.run.get("url") else "—",
                seeding=_seeding(store),
                client_cpu=_client_cpu(store),
                client_saturation=_as_dict(store.run.get("load")).get("client_saturation"),
                started_at=fmt_time(store.run.get("started_at")),
                command=redact(store.run["command"]) if store.run.get("command") else None,
            )
        )
    return infos


def store_colors(stores: Any) -> dict[str, str]:
    return {store: PALETTE[i % len(PALETTE)] for i, store in enumerate(stores)}


def operation_key(operation: Any) -> tuple[int, str]:
    name = str(operation)
    return (OPERATION_ORDER.index(name) if name in OPERATION_ORDER else len(OPERATION_ORDER), name)


def ordered_rows(frame: pd.DataFrame | None) -> list[dict[str, Any]]:
    """The rows of a summary, ALL first, then in YCSB's operation order."""
    if frame is None or frame.empty or "operation" not in frame.columns:
        return []
    rows = frame.to_dict("records")
    return sorted(rows, key=lambda row: operation_key(row.get("operation")))


@dataclass
class SummaryLine:
    operation: str
    ops: str
    errors: str
    throughput: str
    latency: list[str]
    mean: str
    intended: list[str]
    is_all: bool


@dataclass
class StoreSummary:
    store: str
    color: str
    status: str
    error: str | None
    lines: list[SummaryLine]


def _latency_cells(row: dict[str, Any], prefix: str) -> list[str]:
    return [fmt_number(row.get(f"{prefix}_{suffix}_us")) for suffix, _ in PERCENTILES]


def summary_tables(run: RunResults, colors: dict[str, str]) -> tuple[list[StoreSummary], bool]:
    """Per store, one line per operation; and whether any store ran in target-rate mode."""
    out, target_rate = [], False
    for name, store in run.stores.items():
        lines = []
        for row in ordered_rows(store.summary):
            intended = _latency_cells(row, "intended_latency")
            target_rate = target_rate or any(cell != "—" for cell in intended)
            lines.append(
                SummaryLine(
                    operation=str(row.get("operation")),
                    ops=fmt_number(row.get("ops")),
                    errors=fmt_number(row.get("errors")),
                    throughput=fmt_number(row.get("throughput_ops_s")),
                    latency=_latency_cells(row, "latency"),
                    mean=fmt_number(row.get("latency_mean_us")),
                    intended=intended,
                    is_all=str(row.get("operation")) == "ALL",
                )
            )
        out.append(
            StoreSummary(
                store=name,
                color=colors[name],
                status=store.status,
                error=redact(store.error) if store.error else None,
                lines=lines,
            )
        )
    return out, target_rate


@dataclass
class ErrorLine:
    store: str
    operation: str
    error_type: str
    count: str
    example: str


def error_lines(run: RunResults) -> list[ErrorLine]:
    lines = []
    for name, store in run.stores.items():
        if store.errors is None or store.errors.empty:
            continue
        for row in sorted(store.errors.to_dict("records"), key=lambda r: operation_key(r.get("operation"))):
            lines.append(
                ErrorLine(
                    store=name,
                    operation=str(row.get("operation", "—")),
                    error_type=str(row.get("error_type", "—")),
                    count=fmt_number(row.get("count")),
                    example=redact(row.get("example") or ""),
                )
            )
    return lines


@dataclass
class SlowOperation:
    store: str
    operation: str
    key: str
    start_s: str
    latency_us: str
    error: str | None


SLOWEST_PER_STORE = 5


def slowest_operations(run: RunResults) -> list[SlowOperation]:
    """The slowest single operations of each store (slowest.parquet), slowest first."""
    out = []
    for name, store in run.stores.items():
        frame = store.slowest
        if frame is None or frame.empty or "latency_us" not in frame.columns:
            continue
        for row in (
            frame.sort_values("latency_us", ascending=False).head(SLOWEST_PER_STORE).to_dict("records")
        ):
            offset = row.get("start_offset_ms")
            error = row.get("error")
            out.append(
                SlowOperation(
                    store=name,
                    operation=str(row.get("operation", "—")),
                    key=str(row.get("key", "—")),
                    start_s="—" if is_missing(offset) else f"{float(offset) / 1000:,.3f}",
                    latency_us=fmt_number(row.get("latency_us")),
                    error=None if is_missing(error) or not error else redact(error),
                )
            )
    return out


@dataclass
class Expectation:
    """One check of validation.json, ready to print."""

    name: str
    column: str | None
    expected: str
    observed: str
    observed_full: str | None  # the whole value when `observed` had to be shortened
    passed: bool | None
    failures: list[str] = field(default_factory=list)
    skipped: str | None = None


@dataclass
class StoreValidation:
    store: str
    color: str
    success: bool | None
    expectations: list[Expectation]
    note: str | None = None
    message: str | None = None
    thresholds: str | None = None

    @property
    def has_columns(self) -> bool:
        return any(e.column for e in self.expectations)


# Observed values can be whole mappings (one entry per operation, per percentile).
_OBSERVED_CHARS = 140


def _short(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and 0 < abs(value) < 1:
        return f"{value:.4g}"  # ratios and shares: significant digits, not a row of zeros
    if isinstance(value, int | float):
        return fmt_number(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    if isinstance(value, dict):
        return ", ".join(
            f"{k}: ({_short(v)})" if isinstance(v, dict) else f"{k}: {_short(v)}" for k, v in value.items()
        )
    return "—" if value is None else str(value)


def parse_expectations(validation: dict[str, Any]) -> list[Expectation]:
    """The checks of a validation.json, in any of three shapes.

    `workloads.validate` writes named checks: `{"name", "success", "observed",
    "expected": "in words", "details": {"failures": [...], "skipped": reason}}`
    (docs/validation.md). Also read: Great Expectations' own result dicts
    (`expectation_config: {type, kwargs}`, `result: {observed_value}`) and flat
    `{"expectation", "kwargs", "observed_value", "success"}` items.
    """
    results = validation.get("results")
    if results is None:
        results = validation.get("expectations")
    out = []
    for item in results if isinstance(results, list) else []:
        if not isinstance(item, dict):
            continue
        config = _as_dict(item.get("expectation_config"))
        kwargs = _as_dict(item.get("kwargs")) or _as_dict(config.get("kwargs"))
        meta = _as_dict(item.get("meta")) or _as_dict(config.get("meta"))
        details = _as_dict(item.get("details"))
        name = (
            item.get("description")
            or meta.get("description")
            or item.get("name")
            or (item.get("expectation") if isinstance(item.get("expectation"), str) else None)
            or item.get("expectation_type")
            or item.get("type")
            or config.get("type")
            or config.get("expectation_type")
            or "expectation"
        )
        if "observed" in item:
            observed = item["observed"]
        elif "observed_value" in item:
            observed = item["observed_value"]
        else:
            observed = _as_dict(item.get("result")).get("observed_value")
        if isinstance(item.get("expected"), str):
            expected = item["expected"]
        else:
            bounds = {k: v for k, v in kwargs.items() if k not in ("column", "batch_id") and v is not None}
            expected = _short(bounds) if bounds else "—"
        observed_text = _short(observed)
        full = None
        if len(observed_text) > _OBSERVED_CHARS:
            full, observed_text = observed_text, observed_text[: _OBSERVED_CHARS - 1].rstrip(" ,") + "…"
        success = item.get("success")
        failures = details.get("failures")
        out.append(
            Expectation(
                name=str(name),
                column=str(item.get("column") or kwargs.get("column") or "") or None,
                expected=redact(expected),
                observed=redact(observed_text),
                observed_full=redact(full) if full else None,
                passed=success if isinstance(success, bool) else None,
                failures=[redact(f) for f in failures] if isinstance(failures, list) else [],
                skipped=redact(details["skipped"]) if details.get("skipped") else None,
            )
        )
    return out


def validations(run: RunResults, colors: dict[str, str]) -> list[StoreValidation]:
    out = []
    for name, store in run.stores.items():
        if store.validation is None:
            note = (
                "not validated (the store failed before producing results)"
                if store.status == "failed"
                else None
            )
            out.append(StoreValidation(name, colors[name], None, [], note or "no validation.json"))
            continue
        validation = store.validation
        expectations = parse_expectations(validation)
        success = validation.get("success")
        if not isinstance(success, bool):
            known = [e.passed for e in expectations if e.passed is not None]
            success = all(known) if known else None
        note = redact(validation["error"]) if validation.get("error") else None
        message = validation.get("message") if success is False else None
        thresholds = _as_dict(validation.get("thresholds"))
        out.append(
            StoreValidation(
                name,
                colors[name],
                success,
                expectations,
                note,
                message=redact(message) if message else None,
                thresholds=", ".join(f"{k} = {_short(v)}" for k, v in thresholds.items()) or None,
            )
        )
    return out


@dataclass
class Curve:
    """A latency percentile curve: percentiles (percent, below 100) and their latency in µs."""

    percentiles: list[float]
    values_us: list[float]
    max_us: float | None
    from_histogram: bool


# Points per decade of the "nines" axis when a full histogram is available.
_CURVE_POINTS_PER_DECADE = 16


def percentile_curve(row: dict[str, Any]) -> Curve | None:
    """The latency distribution of one summary row.

    From the row's encoded HdrHistogram when there is one (a full curve, from the
    median out to the last recorded value), otherwise from the stored percentile
    columns. None when the row has neither.
    """
    encoded = row.get("histogram")
    if isinstance(encoded, bytes | str) and encoded:
        try:
            from hdrh.histogram import HdrHistogram

            histogram = HdrHistogram.decode(encoded)
            count = histogram.get_total_count()
        except Exception as error:  # an undecodable blob must not cost the whole chart
            log.warning("cannot decode the histogram of %s: %s", row.get("operation"), error)
            count = 0
        if count > 1:
            # x = 1 / (1 - p) runs from 2 (the median) to the count (the last value but one).
            top = math.log10(count)
            start = math.log10(2)
            steps = max(2, math.ceil((top - start) * _CURVE_POINTS_PER_DECADE))
            percentiles = [
                100.0 * (1.0 - 10 ** -(start + (top - start) * i / steps)) for i in range(steps + 1)
            ]
            # One pass over the counts for all points (get_value_at_percentile walks them each time).
            at = histogram.get_percentile_to_value_dict(percentiles)
            values = [float(at[p]) for p in percentiles]
            return Curve(percentiles, values, float(histogram.get_max_value()), True)
    points = [
        (percent, float(row[f"latency_{suffix}_us"]))
        for suffix, percent in STORED_PERCENTILES
        if not is_missing(row.get(f"latency_{suffix}_us"))
    ]
    max_us = row.get("latency_max_us")
    if not points and is_missing(max_us):
        return None
    return Curve(
        [p for p, _ in points], [v for _, v in points], None if is_missing(max_us) else float(max_us), False
    )


def latency_curves(run: RunResults) -> dict[str, dict[str, Curve]]:
    """{operation: {store: curve}}, operations in YCSB order with ALL first."""
    curves: dict[str, dict[str, Curve]] = {}
    for name, store in run.stores.items():
        for row in ordered_rows(store.summary):
            curve = percentile_curve(row)
            if curve is not None:
                curves.setdefault(str(row["operation"]), {})[name] = curve
    return dict(sorted(curves.items(), key=lambda item: operation_key(item[0])))


@dataclass
class Series:
    seconds: list[float]
    values: list[float]


def timeseries(run: RunResults, column: str) -> dict[str, Series]:
    """{store: per-second values of a column} for all operations merged (the ALL rows).

    Throughput falls back to the sum over operations when a store has no ALL rows;
    percentiles do not (a percentile of the merge is not a function of the parts').
    """
    out: dict[str, Series] = {}
    for name, store in run.stores.items():
        frame = store.timeseries
        if frame is None or frame.empty or "second" not in frame.columns:
            continue
        col = column
        if col == "throughput_ops_s" and col not in frame.columns and "ops" in frame.columns:
            col = "ops"  # one-second bins: ops per bin is ops/s
        if col not in frame.columns:
            continue
        rows = frame[frame["operation"] == "ALL"] if "operation" in frame.columns else frame
        if rows.empty and col in ("throughput_ops_s", "ops") and "operation" in frame.columns:
            rows = frame.groupby("second", as_index=False)[col].sum()
        rows = rows.dropna(subset=[col]).sort_values("second")
        if not rows.empty:
            out[name] = Series(rows["second"].astype(float).tolist(), rows[col].astype(float).tolist())
    return out


def throughputs(run: RunResults) -> list[tuple[str, float | None, str]]:
    """(store, throughput of all operations in ops/s or None, status) per store."""
    out = []
    for name, store in run.stores.items():
        value = None
        for row in ordered_rows(store.summary):
            if row.get("operation") == "ALL" and not is_missing(row.get("throughput_ops_s")):
                value = float(row["throughput_ops_s"])
        out.append((name, value, store.status))
    return out


@dataclass
class StatLine:
    """One store statistic over the measured window: a counter's change, or a gauge's range."""

    metric: str
    kind: str  # counter | gauge
    change: str  # counters: the change over the window; gauges: "—"
    per_s: str  # counters: the change per second
    low: str  # gauges: min over the window
    mean: str
    high: str


@dataclass
class StoreResources:
    """One store's sampled resources: lines per process for the charts, a summary, store statistics."""

    store: str
    color: str
    cpu: dict[str, Series]  # label -> % of one core, by seconds since the load started
    memory_mib: dict[str, Series]  # label -> RSS in MiB
    window_s: tuple[float, float] | None  # the measured window on the same axis
    summary: list[str]  # one line per source, from run.json `resources`
    stats: list[StatLine]
    stats_note: str | None  # why there are no store statistics

    @property
    def has_chart(self) -> bool:
        return bool(self.cpu or self.memory_mib)


def _resource_label(source: str, process: Any) -> str:
    if source == "server":
        return f"server: {process} (whole process tree)"
    return f"load: {process}"


def _source_summary(name: str, entry: dict[str, Any]) -> str:
    if entry.get("absent"):
        return f"{name}: not sampled — {entry['absent']}"
    parts = []
    if not is_missing(entry.get("cpu_percent_mean")):
        parts.append(
            f"CPU mean {fmt_number(entry['cpu_percent_mean'], 0)}%, max {fmt_number(entry.get('cpu_percent_max'), 0)}%"
            " of one core"
        )
    if not is_missing(entry.get("rss_bytes_max")):
        parts.append(f"RSS max {fmt_number(float(entry['rss_bytes_max']) / 2**20, 0)} MiB")
    if entry.get("processes"):
        parts.append(f"{entry['processes']} processes")
    if entry.get("tree_processes_max"):
        parts.append(f"up to {entry['tree_processes_max']} processes in its tree")
    text = f"{name}: " + (", ".join(parts) or "no samples")
    if entry.get("stopped"):
        text += f" (sampling stopped: {entry['stopped']})"
    return text


def _stat_lines(entry: dict[str, Any]) -> list[StatLine]:
    lines = []
    for metric, item in sorted(_as_dict(entry.get("window")).items()):
        item = _as_dict(item)
        if item.get("kind") == "counter":
            lines.append(
                StatLine(
                    metric,
                    "counter",
                    fmt_number(item.get("delta"), 0),
                    fmt_number(item.get("per_s")),
                    "—",
                    "—",
                    "—",
                )
            )
        else:
            lines.append(
                StatLine(
                    metric,
                    "gauge",
                    "—",
                    "—",
                    fmt_number(item.get("min")),
                    fmt_number(item.get("mean")),
                    fmt_number(item.get("max")),
                )
            )
    return lines


def store_resources(run: RunResults, colors: dict[str, str]) -> list[StoreResources]:
    """Per store with a resources.parquet (older runs have none): chart lines, summary, statistics."""
    out = []
    for name, store in run.stores.items():
        frame = store.resources
        if frame is None or frame.empty:
            continue
        cpu: dict[str, Series] = {}
        memory: dict[str, Series] = {}
        machine = frame[frame["source"].isin(["load", "server"])].sort_values("offset_s")
        for (source, process), rows in machine.groupby(["source", "process"], sort=False):
            label = _resource_label(str(source), process)
            for metric, target, scale in (("cpu_percent", cpu, 1.0), ("rss_bytes", memory, 1 / 2**20)):
                values = rows[rows["metric"] == metric]
                if not values.empty:
                    target[label] = Series(
                        values["offset_s"].astype(float).tolist(),
                        (values["value"].astype(float) * scale).tolist(),
                    )
        inside = frame[frame["in_window"].astype(bool)]["offset_s"]
        window = (float(inside.min()), float(inside.max())) if len(inside) else None
        info = _as_dict(store.run.get("resources"))
        summary = [
            _source_summary(label, _as_dict(info.get(source)))
            for source, label in (("load", "load processes"), ("server", "server"))
            if info.get(source)
        ]
        if info.get("sampler_cpu_percent") is not None:
            summary.append(f"the sampler itself: {fmt_number(info['sampler_cpu_percent'], 2)}% of one core")
        store_entry = _as_dict(info.get("store"))
        stats = _stat_lines(store_entry)
        note = None
        if not stats:
            note = store_entry.get("absent") or "No store statistics over the measured window."
        out.append(
            StoreResources(
                name, colors[name], cpu, memory, window, summary, stats, None if stats else str(note)
            )
        )
    return out


@dataclass
class Report:
    """Everything the report template prints, except the charts."""

    run_id: str
    label: str | None
    status: str
    started_at: str
    finished_at: str
    generated_at: str
    workload: str | None
    stores: list[StoreInfo]
    parameters: list[Row]
    summaries: list[StoreSummary]
    target_rate: bool
    errors: list[ErrorLine]
    slowest: list[SlowOperation]
    validations: list[StoreValidation]
    colors: dict[str, str]
    resources: list[StoreResources] = field(default_factory=list)
    percentile_labels: list[str] = field(default_factory=lambda: [label for _, label in PERCENTILES])

    @property
    def failed(self) -> list[StoreInfo]:
        return [s for s in self.stores if s.status == "failed"]

    @property
    def has_validation(self) -> bool:
        return any(v.expectations or v.success is not None for v in self.validations)


def build_report(run: RunResults, now: datetime | None = None) -> Report:
    """The report's content for one run."""
    colors = store_colors(run.stores)
    summaries, target_rate = summary_tables(run, colors)
    workload = run.first("workload")
    return Report(
        run_id=run.run_id,
        label=run.label,
        status=run.status,
        started_at=fmt_time(run.started_at),
        finished_at=fmt_time(run.finished_at),
        generated_at=fmt_time((now or datetime.now(UTC)).isoformat(timespec="seconds")),
        workload=str(workload.get("name")) if isinstance(workload, dict) and workload.get("name") else None,
        stores=store_infos(run, colors),
        parameters=parameter_rows(run),
        summaries=summaries,
        target_rate=target_rate,
        errors=error_lines(run),
        slowest=slowest_operations(run),
        validations=validations(run, colors),
        colors=colors,
        resources=store_resources(run, colors),
    )
