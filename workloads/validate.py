"""Validation of one store's results with Great Expectations (GX Core 1.x), in-process.

Each check is one or more GX expectations run against a pandas DataFrame: the results
files themselves, or a small frame derived from them (one row per operation, per
latency-percentile pair, per gap in the time series) so that every verdict comes from
GX and every failing row GX reports can be named in the message.

Great Expectations is imported lazily, on the first validation: the import alone takes
seconds, and `workloads` must stay importable where the `airflow` extra (which brings
GX) is not installed. The ephemeral GX context, its pandas data source and batch
definition are created once per process and reused.

See docs/validation.md for the expectations, their thresholds and why.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import pandas as pd

from workloads.errors import OptiStackError
from workloads.spec import WorkloadSpec

VALIDATION_FILE = "validation.json"
SUMMARY_FILE = "summary.parquet"
TIMESERIES_FILE = "timeseries.parquet"
RUN_FILE = "run.json"
ALL = "ALL"

# Percentile columns in the order they must not decrease.
LATENCY_CHAIN = (
    "latency_p50_us",
    "latency_p90_us",
    "latency_p95_us",
    "latency_p99_us",
    "latency_p999_us",
    "latency_max_us",
)
INTENDED_CHAIN = tuple(f"intended_{name}" for name in LATENCY_CHAIN)

# Columns the checks read; docs/results.md promises more, but these are the ones needed.
SUMMARY_COLUMNS = ("operation", "ops", "errors", "duration_s", "throughput_ops_s", *LATENCY_CHAIN)
TIMESERIES_COLUMNS = ("operation", "second")

# A sampling band of 4 standard errors: a correct mix of n random draws lands outside
# it with probability ~6e-5 per operation, so small runs do not fail on noise alone.
MIX_SIGMAS = 4.0


@dataclass(frozen=True)
class Thresholds:
    """Limits the expectations apply; defaults are documented in docs/validation.md.

    - `max_error_ratio`: errors / (ops + errors) allowed, overall and per operation.
    - `mix_tolerance`: absolute deviation allowed between an operation's observed share
      and its share in the spec; widened to 4 standard errors of a binomial share for
      small runs: max(mix_tolerance, 4 * sqrt(p * (1 - p) / n)).
    - `max_gap_s`: a run of this many consecutive seconds without a time-series row
      fails (1: any missing second fails).
    """

    max_error_ratio: float = 0.01
    mix_tolerance: float = 0.02
    max_gap_s: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 <= self.max_error_ratio <= 1.0:
            problems.append(f"max_error_ratio must be between 0 and 1, not {self.max_error_ratio}")
        if not 0.0 <= self.mix_tolerance <= 1.0:
            problems.append(f"mix_tolerance must be between 0 and 1, not {self.mix_tolerance}")
        if not self.max_gap_s > 0:
            problems.append(f"max_gap_s must be above 0 seconds, not {self.max_gap_s}")
        if problems:
            raise OptiStackError("validation thresholds are not valid: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Thresholds:
        """Build thresholds from a mapping (Airflow params, YAML); unknown keys are an error."""
        data = dict(data or {})
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            known = ", ".join(cls.__dataclass_fields__)
            raise OptiStackError(f"unknown validation threshold {', '.join(unknown)}; known: {known}")
        try:
            return cls(**{k: float(v) for k, v in data.items()})
        except (TypeError, ValueError):
            raise OptiStackError(f"validation thresholds must be numbers, not {data}") from None


@dataclass
class ExpectationOutcome:
    """The verdict of one named check.

    `observed` is what the results show (JSON values), `expected` says in words what
    they should show, and `details` keeps the failing rows (`failures`) and the raw GX
    verdict of each expectation behind the check (`gx`).
    """

    name: str
    success: bool
    observed: Any
    expected: str
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.observed = _jsonable(self.observed)
        self.details = _jsonable(self.details)

    def failure_text(self) -> str:
        """One sentence naming the check, what was observed and what was expected."""
        failures = self.details.get("failures") or [f"observed {_short(self.observed)}"]
        note = f" {self.details['note']}" if self.details.get("note") else ""
        return f"{self.name} failed: {'; '.join(failures)} (expected {self.expected}).{note}"


@dataclass
class ValidationReport:
    """All outcomes of validating one store's results; `success` only if all passed."""

    run_id: str | None
    store: str | None
    success: bool
    results: list[ExpectationOutcome]
    thresholds: dict[str, float]
    validated_at: str
    elapsed_s: float
    gx_version: str | None = None

    def failed(self) -> list[ExpectationOutcome]:
        """The outcomes that did not pass."""
        return [outcome for outcome in self.results if not outcome.success]

    def summary_message(self) -> str:
        """One readable paragraph: passed, or each failed expectation with its observed value."""
        who = f"{self.store or 'store'} run {self.run_id or '?'}"
        if self.success:
            return f"Validation passed for {who}: all {len(self.results)} expectations met."
        failed = self.failed()
        head = f"Validation failed for {who}: {len(failed)} of {len(self.results)} expectations failed."
        return " ".join([head, *(outcome.failure_text() for outcome in failed)])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable mapping (the content of validation.json)."""
        data = asdict(self)
        data["message"] = self.summary_message()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationReport:
        """Rebuild a report from `to_dict()` output (e.g. a validation.json read back)."""
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["results"] = [ExpectationOutcome(**item) for item in data.get("results", [])]
        return cls(**fields)

    def write(self, store_dir: Path) -> Path:
        """Write `validation.json` into the store's folder atomically; return its path."""
        store_dir = Path(store_dir)
        target = store_dir / VALIDATION_FILE
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{VALIDATION_FILE}.", suffix=".tmp", dir=store_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
                # mkstemp makes the file private (0600); the report server must read it.
                os.fchmod(handle.fileno(), 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target


def validate_run(
    store_dir: Path,
    spec: WorkloadSpec,
    expected_records: int,
    thresholds: Thresholds | None = None,
) -> ValidationReport:
    """Validate the results in one store folder (summary, timeseries, run.json).

    Returns the report; it does not write it (call `report.write(store_dir)`).
    Raises `OptiStackError` when the folder lacks a results file.
    """
    store_dir = Path(store_dir)
    run_info = _read_run_info(store_dir)
    frames = []
    for name in (SUMMARY_FILE, TIMESERIES_FILE):
        path = store_dir / name
        if not path.is_file():
            why = f" (run.json: status {run_info.get('status')!r}, error {run_info.get('error')!r})"
            raise OptiStackError(f"cannot validate {store_dir}: {name} is missing{why}")
        try:
            frames.append(pd.read_parquet(path))
        except Exception as error:  # pyarrow raises several types for a damaged file
            raise OptiStackError(f"cannot validate {store_dir}: {name} is not readable: {error}") from None
    return validate_frames(frames[0], frames[1], run_info, spec, expected_records, thresholds)


def validate_frames(
    summary_df: pd.DataFrame,
    timeseries_df: pd.DataFrame,
    run_info: dict[str, Any],
    spec: WorkloadSpec,
    expected_records: int,
    thresholds: Thresholds | None = None,
) -> ValidationReport:
    """Validate results already in memory; `validate_run` reads the files and calls this.

    `run_info` is the content of run.json (only `run_id`, `store` and `seed.count` are read).
    """
    started = time.perf_counter()
    thresholds = thresholds or Thresholds()
    runtime = _gx_runtime()
    summary = summary_df.reset_index(drop=True)
    timeseries = timeseries_df.reset_index(drop=True)

    E = runtime.expectations
    outcomes = [runtime.run(_schema_check(E, summary, timeseries))]
    if outcomes[0].success:
        checks = [
            _seeded_count_check(E, run_info, expected_records),
            _operations_executed_check(E, summary, spec),
            _mix_check(E, summary, spec, thresholds),
            _error_ratio_check(E, summary, thresholds),
            _latency_order_check(E, summary, LATENCY_CHAIN, "latency_percentiles_ordered"),
            _latency_order_check(E, summary, INTENDED_CHAIN, "intended_latency_percentiles_ordered"),
            _timeseries_check(E, summary, timeseries, run_info, thresholds),
            _throughput_check(E, summary),
        ]
        outcomes += [runtime.run(check) for check in checks]
    else:
        outcomes[0].details["note"] = "The other expectations were not evaluated."

    return ValidationReport(
        run_id=_first(run_info.get("run_id"), _column_value(summary, "run_id")),
        store=_first(run_info.get("store"), _column_value(summary, "store")),
        success=all(outcome.success for outcome in outcomes),
        results=outcomes,
        thresholds=asdict(thresholds),
        validated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        elapsed_s=round(time.perf_counter() - started, 3),
        gx_version=runtime.version,
    )


# --- checks -----------------------------------------------------------------------------


@dataclass
class _Part:
    """Expectations run on one frame; `describe` names a failing row in the user's words."""

    frame: pd.DataFrame
    expectations: list[Any]
    describe: Callable[[pd.Series], str] | None = None


@dataclass
class _Check:
    name: str
    parts: list[_Part]
    observed: Any
    expected: str
    skipped: str | None = None


def _schema_check(E: Any, summary: pd.DataFrame, timeseries: pd.DataFrame) -> _Check:
    has_operation = "operation" in summary.columns
    summary_expectations = [
        E.ExpectTableColumnsToMatchSet(column_set=list(SUMMARY_COLUMNS), exact_match=False)
    ]
    if has_operation:
        summary_expectations.append(
            E.ExpectColumnDistinctValuesToContainSet(column="operation", value_set=[ALL])
        )
    observed = {
        "summary_missing_columns": [c for c in SUMMARY_COLUMNS if c not in summary.columns],
        "timeseries_missing_columns": [c for c in TIMESERIES_COLUMNS if c not in timeseries.columns],
        "summary_operations": sorted(map(str, summary["operation"].unique())) if has_operation else [],
    }
    return _Check(
        name="results_schema",
        parts=[
            _Part(summary, summary_expectations),
            _Part(
                timeseries,
                [E.ExpectTableColumnsToMatchSet(column_set=list(TIMESERIES_COLUMNS), exact_match=False)],
            ),
        ],
        observed=observed,
        expected=f"summary.parquet with columns {', '.join(SUMMARY_COLUMNS)} and an ALL row; "
        f"timeseries.parquet with columns {', '.join(TIMESERIES_COLUMNS)}",
    )


def _seeded_count_check(E: Any, run_info: dict[str, Any], expected_records: int) -> _Check:
    seed = run_info.get("seed") or {}
    count = seed.get("count") if isinstance(seed, dict) else None
    frame = pd.DataFrame({"seeded_count": pd.Series([count], dtype="float64")})

    def describe(row: pd.Series) -> str:
        if pd.isna(row["seeded_count"]):
            return "run.json has no seed.count"
        return f"{int(row['seeded_count'])} records counted in the store after seeding"

    return _Check(
        name="seeded_count",
        parts=[
            _Part(
                frame,
                [
                    E.ExpectColumnValuesToNotBeNull(column="seeded_count"),
                    E.ExpectColumnValuesToBeBetween(
                        column="seeded_count", min_value=expected_records, max_value=expected_records
                    ),
                ],
                describe,
            )
        ],
        observed=count,
        expected=f"{expected_records} records",
    )


def _operations_executed_check(E: Any, summary: pd.DataFrame, spec: WorkloadSpec) -> _Check:
    per_op = _by_operation(summary)
    names = [name.upper() for name in spec.operations]
    frame = pd.DataFrame(
        {
            "operation": names,
            "ops": [_number(per_op, name, "ops") for name in names],
            "in_summary": [name in per_op.index for name in names],
        }
    )

    def describe(row: pd.Series) -> str:
        if not row["in_summary"]:
            return f"{row['operation']} has no row in summary.parquet"
        return f"{row['operation']} completed {int(row['ops'])} ops"

    return _Check(
        name="operations_executed",
        parts=[_Part(frame, [E.ExpectColumnValuesToBeBetween(column="ops", min_value=1)], describe)],
        observed=dict(zip(frame["operation"], frame["ops"].astype(int), strict=True)),
        expected=f"ops > 0 for each operation of the mix ({', '.join(names)})",
    )


def _mix_check(E: Any, summary: pd.DataFrame, spec: WorkloadSpec, thresholds: Thresholds) -> _Check:
    per_op = _by_operation(summary)
    attempts = {
        str(name): _number(per_op, name, "ops") + _number(per_op, name, "errors")
        for name in per_op.index
        if name != ALL
    }
    total = sum(attempts.values())
    expected = {name.upper(): share for name, share in spec.operations.items()}
    names = list(expected) + [name for name in attempts if name not in expected]
    rows = []
    for name in names:
        p = expected.get(name, 0.0)
        observed = attempts.get(name, 0.0) / total if total else 0.0
        noise = MIX_SIGMAS * math.sqrt(p * (1.0 - p) / total) if total else 0.0
        rows.append((name, p, observed, abs(observed - p), max(thresholds.mix_tolerance, noise)))
    frame = pd.DataFrame(
        rows, columns=["operation", "expected_share", "observed_share", "deviation", "allowed"]
    )

    def describe(row: pd.Series) -> str:
        return (
            f"{row['operation']} was {row['observed_share']:.4f} of {int(total)} operations "
            f"(spec {row['expected_share']:.4f} ± {row['allowed']:.4f})"
        )

    return _Check(
        name="operation_mix",
        parts=[
            _Part(
                frame,
                [
                    E.ExpectColumnPairValuesAToBeGreaterThanB(
                        column_A="allowed", column_B="deviation", or_equal=True
                    )
                ],
                describe,
            )
        ],
        observed={row[0]: round(row[2], 6) for row in rows},
        expected="each operation's share of ops + errors within "
        f"max({thresholds.mix_tolerance:g}, {MIX_SIGMAS:g}·sqrt(p(1-p)/n)) of the spec: "
        + ", ".join(f"{name} {share:g}" for name, share in expected.items()),
    )


def _error_ratio_check(E: Any, summary: pd.DataFrame, thresholds: Thresholds) -> _Check:
    frame = summary[["operation", "ops", "errors"]].copy()
    frame["ops"] = frame["ops"].fillna(0).astype("int64")
    frame["errors"] = frame["errors"].fillna(0).astype("int64")
    attempts = frame["ops"] + frame["errors"]
    # No attempts means no errors either; "operations_executed" reports the empty operation.
    frame["error_ratio"] = (frame["errors"] / attempts.where(attempts > 0)).fillna(0.0)

    def describe(row: pd.Series) -> str:
        tried = int(row["ops"] + row["errors"])
        return f"{row['operation']} error ratio {row['error_ratio']:.4g} ({int(row['errors'])} errors in {tried} attempts)"

    return _Check(
        name="error_ratio",
        parts=[
            _Part(
                frame,
                [
                    E.ExpectColumnValuesToBeBetween(
                        column="error_ratio", min_value=0, max_value=thresholds.max_error_ratio
                    )
                ],
                describe,
            )
        ],
        observed=dict(zip(frame["operation"].astype(str), frame["error_ratio"].round(6), strict=True)),
        expected=f"errors / (ops + errors) at most {thresholds.max_error_ratio:g}, overall (ALL) and per operation",
    )


def _latency_order_check(E: Any, summary: pd.DataFrame, chain: tuple[str, ...], name: str) -> _Check:
    columns = [c for c in chain if c in summary.columns]
    rows = summary
    if chain is LATENCY_CHAIN:
        # An operation without one success has no latency distribution to order.
        rows = summary[summary["ops"].fillna(0) > 0]
    elif columns:
        rows = summary[summary[columns].notna().any(axis=1)]
    expected = " <= ".join(["0", *columns])
    if not columns or rows.empty:
        what = "intended-start latencies (target-rate mode only)" if chain is INTENDED_CHAIN else "latencies"
        return _Check(name, [], None, expected, skipped=f"no {what} in summary.parquet")

    # One row per adjacent pair, led by 0 <= first percentile, so a single GX column-pair
    # expectation checks non-negativity and order for every operation at once.
    pairs = []
    for _, row in rows.iterrows():
        lower_name, lower = "0", 0.0
        for column in columns:
            pairs.append((row["operation"], lower_name, column, lower, row[column]))
            lower_name, lower = column, row[column]
    frame = pd.DataFrame(pairs, columns=["operation", "lower_column", "upper_column", "lower_us", "upper_us"])
    frame[["lower_us", "upper_us"]] = frame[["lower_us", "upper_us"]].astype("float64")

    def describe(row: pd.Series) -> str:
        if pd.isna(row["upper_us"]) or pd.isna(row["lower_us"]):
            missing = row["upper_column"] if pd.isna(row["upper_us"]) else row["lower_column"]
            return f"{row['operation']} {missing} is null"
        if row["lower_column"] == "0":
            return f"{row['operation']} {row['upper_column']} is negative ({row['upper_us']:g})"
        return (
            f"{row['operation']} {row['upper_column']} {row['upper_us']:g} < "
            f"{row['lower_column']} {row['lower_us']:g}"
        )

    observed = {
        str(row["operation"]): {c.removeprefix("intended_"): row[c] for c in columns}
        for _, row in rows.iterrows()
    }
    return _Check(
        name=name,
        parts=[
            _Part(
                frame,
                [
                    E.ExpectColumnPairValuesAToBeGreaterThanB(
                        column_A="upper_us", column_B="lower_us", or_equal=True, ignore_row_if="neither"
                    )
                ],
                describe,
            )
        ],
        observed=observed,
        expected=f"{expected} on every row with measurements",
    )


def _timeseries_check(
    E: Any, summary: pd.DataFrame, timeseries: pd.DataFrame, run_info: dict[str, Any], thresholds: Thresholds
) -> _Check:
    seconds = timeseries.loc[timeseries["operation"] == ALL, ["second"]].reset_index(drop=True)
    seconds["second"] = seconds["second"].astype("float64")
    duration = _measured_duration(summary, run_info, seconds["second"])
    # Seconds 0..floor(d)-1 must be there; a last, partial second (d not whole) may be.
    required = math.floor(duration + 1e-9)
    last_allowed = max(math.ceil(duration - 1e-9), 1) - 1

    present = sorted({int(s) for s in seconds["second"].dropna() if 0 <= s <= last_allowed})
    bounds = [-1, *present, max(required, present[-1] + 1 if present else 0)]
    gaps = pd.DataFrame(
        [(a + 1, b - 1, b - a - 1) for a, b in pairwise(bounds)],
        columns=["first_missing", "last_missing", "missing_seconds"],
    )

    def describe_gap(row: pd.Series) -> str:
        first, last = int(row["first_missing"]), int(row["last_missing"])
        span = f"second {first}" if first == last else f"seconds {first}-{last}"
        return f"{span} of ALL missing ({int(row['missing_seconds'])} s)"

    def describe_second(row: pd.Series) -> str:
        second = row["second"]
        if pd.isna(second):
            return "a time-series row of ALL has no second"
        if 0 <= second <= last_allowed:
            return f"second {int(second)} of ALL appears more than once"
        return f"second {second:g} of ALL lies outside the measured window 0..{last_allowed}"

    missing = gaps[gaps["missing_seconds"] > 0]
    return _Check(
        name="timeseries_contiguous",
        parts=[
            _Part(
                seconds,
                [
                    E.ExpectColumnValuesToNotBeNull(column="second"),
                    E.ExpectColumnValuesToBeBetween(column="second", min_value=0, max_value=last_allowed),
                    E.ExpectColumnValuesToBeUnique(column="second"),
                ],
                describe_second,
            ),
            _Part(
                gaps,
                [
                    E.ExpectColumnValuesToBeBetween(
                        column="missing_seconds", min_value=0, max_value=thresholds.max_gap_s, strict_max=True
                    )
                ],
                describe_gap,
            ),
        ],
        observed={
            "duration_s": duration,
            "seconds": len(present),
            "missing": [[int(r.first_missing), int(r.last_missing)] for r in missing.itertuples()],
        },
        expected=f"one ALL row per second 0..{required - 1}"
        + (f" (second {last_allowed} optional)" if last_allowed >= required else "")
        + f", no gap of {thresholds.max_gap_s:g} s or more",
    )


def _throughput_check(E: Any, summary: pd.DataFrame) -> _Check:
    # CONNECT rows count failed connection attempts only: they never have a throughput,
    # and the error_ratio check already judges them.
    frame = summary.loc[summary["operation"] != "CONNECT", ["operation", "throughput_ops_s"]]

    def describe(row: pd.Series) -> str:
        value = row["throughput_ops_s"]
        return f"{row['operation']} throughput {'null' if pd.isna(value) else f'{value:g} ops/s'}"

    return _Check(
        name="throughput_positive",
        parts=[
            _Part(
                frame,
                [
                    E.ExpectColumnValuesToNotBeNull(column="throughput_ops_s"),
                    E.ExpectColumnValuesToBeBetween(column="throughput_ops_s", min_value=0, strict_min=True),
                ],
                describe,
            )
        ],
        observed=dict(zip(frame["operation"].astype(str), frame["throughput_ops_s"], strict=True)),
        expected="throughput_ops_s > 0 on every summary row but CONNECT",
    )


# --- the GX runtime ---------------------------------------------------------------------


class _GxRuntime:
    """One ephemeral GX context with a pandas data source, built once per process."""

    def __init__(self) -> None:
        # GX reads this before deciding whether to send usage statistics; a benchmark
        # host must not phone home. Respect an explicit setting by the operator.
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        try:
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig
        except ImportError as error:
            raise OptiStackError(
                "validation needs Great Expectations: install it with `pip install 'optistack[airflow]'` "
                f"({error})"
            ) from None
        self.version: str = gx.__version__
        self.expectations = gx.expectations
        self._suite_type = gx.ExpectationSuite
        self.context = gx.get_context(mode="ephemeral")
        # tqdm bars for every metric computation would flood task logs.
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        asset = self.context.data_sources.add_pandas(name="optistack_results").add_dataframe_asset(
            name="frame"
        )
        self._batch_definition = asset.add_batch_definition_whole_dataframe("whole_frame")
        # The data source's execution engine has one active-batch slot: one validation at a time.
        self._lock = threading.Lock()

    def run(self, check: _Check) -> ExpectationOutcome:
        """Run every part of a check through GX and fold the verdicts into one outcome."""
        if check.skipped:
            return ExpectationOutcome(
                check.name, True, check.observed, check.expected, {"skipped": check.skipped}
            )
        verdicts: list[dict[str, Any]] = []
        failures: list[str] = []
        for part in check.parts:
            suite = self._suite_type(name=check.name, expectations=part.expectations)
            with self._lock:
                batch = self._batch_definition.get_batch(batch_parameters={"dataframe": part.frame})
                result = batch.validate(suite, result_format="COMPLETE")
            for item in result.results:
                verdicts.append(_verdict(item))
                if not item.success:
                    failures += _describe_failure(item, part)
        return ExpectationOutcome(
            name=check.name,
            success=all(v["success"] for v in verdicts),
            observed=check.observed,
            expected=check.expected,
            details={"failures": list(dict.fromkeys(failures)), "gx": verdicts},
        )


_RUNTIME: _GxRuntime | None = None
_RUNTIME_LOCK = threading.Lock()


def _gx_runtime() -> _GxRuntime:
    global _RUNTIME
    with _RUNTIME_LOCK:
        if _RUNTIME is None:
            _RUNTIME = _GxRuntime()
        return _RUNTIME


def _verdict(item: Any) -> dict[str, Any]:
    config = item.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
    result = item.result or {}
    exception = (item.exception_info or {}).get("exception_message")
    if exception is None:  # metric errors arrive keyed by metric id
        messages = [
            v.get("exception_message") for v in (item.exception_info or {}).values() if isinstance(v, dict)
        ]
        exception = next((m for m in messages if m), None)
    verdict = {"expectation": config.type, "kwargs": kwargs, "success": bool(item.success)}
    for key in ("observed_value", "element_count", "unexpected_count", "details"):
        if key in result:
            verdict[key] = result[key]
    if exception:
        verdict["exception"] = exception
    return verdict


def _describe_failure(item: Any, part: _Part) -> list[str]:
    verdict = _verdict(item)
    if "exception" in verdict:
        return [f"GX could not evaluate {verdict['expectation']}: {verdict['exception']}"]
    indexes = (item.result or {}).get("unexpected_index_list")
    if part.describe is not None and indexes:
        return [part.describe(part.frame.loc[index]) for index in indexes]
    details = (verdict.get("details") or {}).get("mismatched") or {}
    if details.get("missing"):
        return [f"columns missing: {', '.join(map(str, details['missing']))}"]
    if verdict["expectation"] == "expect_column_distinct_values_to_contain_set":
        return [
            f"operations {verdict.get('observed_value')} lack {item.expectation_config.kwargs['value_set']}"
        ]
    return [f"{verdict['expectation']} observed {_short(verdict.get('observed_value'))}"]


# --- helpers ----------------------------------------------------------------------------


def _read_run_info(store_dir: Path) -> dict[str, Any]:
    path = store_dir / RUN_FILE
    if not path.is_file():
        raise OptiStackError(
            f"cannot validate {store_dir}: {RUN_FILE} is missing (is this a store's results folder?)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise OptiStackError(f"cannot validate {store_dir}: {RUN_FILE} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise OptiStackError(f"cannot validate {store_dir}: {RUN_FILE} must hold a JSON object")
    return data


def _by_operation(summary: pd.DataFrame) -> pd.DataFrame:
    return (
        summary.assign(operation=summary["operation"].astype(str))
        .drop_duplicates("operation")
        .set_index("operation")
    )


def _number(per_op: pd.DataFrame, operation: str, column: str) -> float:
    if operation not in per_op.index:
        return 0.0
    value = per_op.at[operation, column]
    return 0.0 if pd.isna(value) else float(value)


def _measured_duration(summary: pd.DataFrame, run_info: dict[str, Any], seconds: pd.Series) -> float:
    """The measured window: summary ALL duration_s, else run.json load.measured_s, else the series."""
    all_rows = summary.loc[summary["operation"] == ALL, "duration_s"].dropna()
    if not all_rows.empty and float(all_rows.iloc[0]) > 0:
        return float(all_rows.iloc[0])
    measured = (run_info.get("load") or {}).get("measured_s")
    if isinstance(measured, int | float) and measured > 0:
        return float(measured)
    return float(seconds.max() + 1) if seconds.notna().any() else 0.0


def _column_value(frame: pd.DataFrame, column: str) -> str | None:
    if column in frame.columns and len(frame) and pd.notna(frame[column].iloc[0]):
        return str(frame[column].iloc[0])
    return None


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _short(value: Any, limit: int = 200) -> str:
    text = json.dumps(_jsonable(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars unwrapped, NaN/inf and pandas NA as None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | str):
        return value
    if hasattr(value, "item") and not isinstance(value, int | float):  # numpy scalar
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):
        return value
    if isinstance(value, datetime | pd.Timestamp):
        return value.isoformat()
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


__all__ = [
    "ExpectationOutcome",
    "Thresholds",
    "ValidationReport",
    "validate_frames",
    "validate_run",
]
