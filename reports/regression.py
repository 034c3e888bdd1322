"""Regression detection: tonight's figures against a noise-aware baseline of comparable nights.

A *series* is one (store, workload, operation, metric), for example redis / a / READ /
p99 latency. Each run of a store has a *configuration fingerprint*, a hash of what
run.json says shapes the figures: the workload spec, the users, processes, target rate
and measured window, the server product and version, the client library versions and
the host. A night is only ever compared with earlier nights of the same series that
have the same fingerprint, so an upgrade starts a new baseline ("configuration changed:
server version 15.19 -> 16.4") instead of raising a false alarm.

The rule (see docs/regressions.md for why each piece is there):

    band = median ± max(k · s · w(n), min_relative_change · |median|)

over the last `window` comparable nights (n of them, judged only when n ≥
`min_samples`). s is the Qn scale estimator of Rousseeuw and Croux (1993): like
1.4826·MAD it estimates sigma and ignores up to half the nights being outliers, but it
wastes less of a short baseline (82 % Gaussian efficiency against MAD's 37 %).
w(n) widens the band for short baselines, where s and the median are themselves
uncertain: it is calibrated (by simulation) so that a night of pure normal noise is
flagged about equally rarely whatever n is: 1.51 at 14 nights, 10 at 5, → 1 for many.
A value outside the band is a regression or an improvement by the direction of the
metric: higher is better for throughput, lower for latency.

A flagged night does not join the baseline, so a regression that lasts cannot widen the
band until it hides itself; once `min_samples` of the last `window` nights are flagged
on the same side, the change has lasted and the nights since the first of them become
the baseline (the new normal; the finding's `note` says so).

Everything here is data in, data out: no HTML, no matplotlib, no files written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from reports.history import RUN_FILE, RUNS_DIR, _read_json, _visible_dirs, load_runs, parse_time
from reports.model import fmt_number, operation_key
from workloads.errors import OptiStackError

REGRESSION = "regression"
IMPROVEMENT = "improvement"
OK = "ok"
NOT_ENOUGH_HISTORY = "not enough history"
NEW_BASELINE = "new baseline"
VERDICTS = (REGRESSION, IMPROVEMENT, NEW_BASELINE, NOT_ENOUGH_HISTORY, OK)  # most urgent first


@dataclass(frozen=True)
class Metric:
    """A summary column that is judged, and which way is better."""

    column: str
    label: str
    unit: str
    higher_is_better: bool


METRICS: dict[str, Metric] = {
    m.column: m
    for m in (
        Metric("throughput_ops_s", "throughput", "ops/s", True),
        Metric("latency_p50_us", "p50 latency", "µs", False),
        Metric("latency_p90_us", "p90 latency", "µs", False),
        Metric("latency_p99_us", "p99 latency", "µs", False),
        Metric("latency_p999_us", "p99.9 latency", "µs", False),
        Metric("intended_latency_p50_us", "p50 latency from the intended start", "µs", False),
        Metric("intended_latency_p99_us", "p99 latency from the intended start", "µs", False),
    )
}

# The intended-start percentiles exist only in target-rate runs; elsewhere they are null
# and simply produce no finding.
DEFAULT_METRICS = ("throughput_ops_s", "latency_p50_us", "latency_p99_us", "intended_latency_p99_us")


@dataclass(frozen=True)
class RegressionRule:
    """When a night's figure is a regression: see the module docstring for the formula.

    - `window`: at most this many earlier comparable nights form the baseline (newest kept).
    - `min_samples`: fewer comparable nights than this give "not enough history".
    - `k`: the band's half-width in robust standard deviations for a long baseline
      (`widening(n)` times more for a baseline of n nights).
    - `min_relative_change`: the band is never narrower than this fraction of the
      median, so a statistically clear but practically irrelevant change is not flagged.
    - `metrics`: the summary columns judged (keys of `METRICS`).
    - `ignore_config`: configuration keys left out of the fingerprint (a key or a
      prefix such as `"client."`), for what changes often without mattering to you.
    """

    window: int = 14
    min_samples: int = 5
    k: float = 3.5
    min_relative_change: float = 0.05
    metrics: tuple[str, ...] = DEFAULT_METRICS
    ignore_config: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if not 3 <= self.min_samples <= self.window:
            problems.append(
                f"min_samples must be at least 3 and at most window ({self.window}), not {self.min_samples}"
            )
        if not (math.isfinite(self.k) and self.k > 0):
            problems.append(f"k must be a positive number, not {self.k}")
        if not 0 <= self.min_relative_change < 1:
            problems.append(f"min_relative_change is a fraction (0.05 = 5 %), not {self.min_relative_change}")
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            problems.append(f"unknown metrics {unknown or '(none given)'}; choose from {', '.join(METRICS)}")
        if problems:
            raise OptiStackError("regression rule: " + "; ".join(problems))
        # Accept lists from YAML or JSON; the rule stays hashable.
        object.__setattr__(self, "metrics", tuple(self.metrics))
        object.__setattr__(self, "ignore_config", tuple(self.ignore_config))

    def describe(self) -> str:
        """The rule in one line, for report headers and logs."""
        return (
            f"median ± max({self.k:g} robust sigma, {self.min_relative_change * 100:g} % of the median) "
            f"of the last {self.window} comparable nights, judged from {self.min_samples} nights on"
        )


# --- statistics ------------------------------------------------------------------------
# Small-sample factors that make Qn unbiased for sigma of a normal sample of n (Croux &
# Rousseeuw 1992, "Time-efficient algorithms for two highly robust estimators of scale").
_QN_SMALL = {2: 0.399, 3: 0.994, 4: 0.512, 5: 0.844, 6: 0.611, 7: 0.857, 8: 0.669, 9: 0.872}
_QN_CONSTANT = 2.2219  # 1 / (sqrt(2) · Φ⁻¹(5/8)): consistency for sigma at the normal


def qn_scale(values: Sequence[float]) -> float:
    """Rousseeuw & Croux's Qn: the k-th smallest pairwise distance, k = C(n//2 + 1, 2), scaled to sigma.

    Robust to up to half the values being outliers, like the MAD, but with 82 % of the
    standard deviation's efficiency on normal data instead of the MAD's 37 %, which is
    what a baseline of 5 to 14 nights needs. O(n²) in plain Python: a baseline is short,
    and numpy's per-call overhead would dominate.
    """
    x = [float(v) for v in values]
    n = len(x)
    if n < 2:
        return 0.0
    distances = sorted(abs(a - b) for i, a in enumerate(x) for b in x[i + 1 :])
    return qn_factor(n) * distances[qn_rank(n) - 1]


def qn_rank(n: int) -> int:
    """Which smallest pairwise distance Qn takes for n values: C(n//2 + 1, 2)."""
    h = n // 2 + 1
    return h * (h - 1) // 2


def qn_factor(n: int) -> float:
    """What Qn multiplies its pairwise distance by to estimate sigma for n normal values."""
    return _QN_CONSTANT * _QN_SMALL.get(n, n / (n + 1.4) if n % 2 else n / (n + 3.8))


# The 99.9 % quantile of |x - median| / Qn, where x and the n baseline values are
# independent normal draws: how far a normal night strays, in units of the estimated
# spread, once the median and Qn of only n nights are themselves uncertain. Simulated
# with 2,000,000 draws per n (docs/regressions.md shows how); Qn's rank moves every
# second n, hence the pairs. Above 15 nights the simulated values follow
# 3.2905 · (1 + 3.70/n + 49.7/n²) within 1 %.
_STRAY_999 = {
    3: 769.2, 4: 34.07, 5: 32.74, 6: 12.35, 7: 11.80, 8: 7.833, 9: 7.664,
    10: 6.195, 11: 6.192, 12: 5.425, 13: 5.345, 14: 4.977, 15: 4.942,
}  # fmt: skip
_NORMAL_999 = 3.2905  # the same quantile when median and sigma are known: |z| of a two-sided 99.9 %


@cache
def widening(n: int) -> float:
    """How much wider than k·s the band is for a baseline of n nights (1 for a very long one).

    The ratio of the 99.9 % quantile of |x - median| / Qn for n baseline nights to its
    limit, so that on normal noise a night is flagged about equally rarely whatever the
    length of its baseline: a short baseline gets a wide band rather than false alarms.
    """
    if n < 3:
        raise ValueError("a baseline needs at least 3 nights")
    stray = _STRAY_999.get(n) or _NORMAL_999 * (1 + 3.70 / n + 49.7 / n**2)
    return stray / _NORMAL_999


def band(baseline: Sequence[float], rule: RegressionRule) -> tuple[float, float, float]:
    """(median, low, high) of the band for a baseline of earlier values."""
    median = float(statistics.median(baseline))
    half = max(rule.k * qn_scale(baseline) * widening(len(baseline)), rule.min_relative_change * abs(median))
    return median, median - half, median + half


def judge(value: float, baseline: Sequence[float], higher_is_better: bool, rule: RegressionRule) -> str:
    """The verdict of one value against its baseline: regression, improvement, ok, not enough history."""
    if len(baseline) < rule.min_samples:
        return NOT_ENOUGH_HISTORY
    _, low, high = band(baseline, rule)
    return _side(value, low, high, higher_is_better)


def _side(value: float, low: float, high: float, higher_is_better: bool) -> str:
    if value > high:
        return IMPROVEMENT if higher_is_better else REGRESSION
    if value < low:
        return REGRESSION if higher_is_better else IMPROVEMENT
    return OK


# --- configuration fingerprint -----------------------------------------------------------
# run.json settings that change what is measured. Left out on purpose: the random seed
# (a different key order, not a different system), the spawn rate (before the measured
# window), the operation timeout (only matters when operations fail, which errors show),
# the namespace and teardown.
_SETTINGS = (
    "users",
    "processes",
    "target_rate",
    "duration_s",
    "operations",
    "warmup_s",
    "repeats",
    "insert_order",
)
_HOST = ("hostname", "platform", "cpu_count", "memory_gib")
_WORKLOAD_IGNORED = ("description",)  # prose; changing it changes nothing measured


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _canonical(value: Any) -> Any:
    """A JSON-stable form: 16 and 16.0 are the same setting, dicts are sorted."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        number = float(value)
        return int(number) if number.is_integer() else number
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return str(value)


def run_config(run: Mapping[str, Any], ignore: Iterable[str] = ()) -> dict[str, Any]:
    """What in a store's run.json shapes its figures, as flat `key: value` pairs.

    Keys: `workload.<field>` (the whole spec but its description), `settings.<name>`,
    `server.product`, `server.version`, `client.<package>` (the store's driver, Locust,
    Python, hdrhistogram, OptiStack), `host.<field>` and `endpoint` (the server's host
    name, no port, user or password). Keys absent from run.json (an older version did
    not record them) are left out. `ignore` drops keys equal to or starting with an entry.
    """
    config: dict[str, Any] = {}
    for key, value in _as_dict(run.get("workload")).items():
        if key not in _WORKLOAD_IGNORED:
            config[f"workload.{key}"] = value
    settings = _as_dict(run.get("settings"))
    for key in _SETTINGS:
        if key in settings:
            config[f"settings.{key}"] = settings[key]
    server = _as_dict(run.get("server"))
    for key in ("product", "version"):
        if key in server:
            config[f"server.{key}"] = server[key]
    versions = _as_dict(run.get("versions"))
    for package, version in _as_dict(versions.get("driver")).items():
        config[f"client.{package}"] = version
    for key, value in versions.items():
        if key != "driver":
            config[f"client.{key}"] = value
    host = _as_dict(run.get("host"))
    for key in _HOST:
        if key in host:
            config[f"host.{key}"] = host[key]
    if run.get("url"):
        with contextlib.suppress(ValueError):  # an unparseable URL is simply not compared
            config["endpoint"] = urlsplit(str(run["url"])).hostname
    ignore = tuple(ignore)
    return {
        key: _canonical(value)
        for key, value in sorted(config.items())
        if not any(key == i or (i.endswith(".") and key.startswith(i)) for i in ignore)
    }


def fingerprint(config: Mapping[str, Any]) -> str:
    """A short stable hash of a configuration (`run_config`): equal configurations, equal hashes."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


_LABELS = {
    "server.version": "server version",
    "server.product": "server product",
    "endpoint": "server host",
    "settings.users": "users",
    "settings.processes": "load processes",
    "settings.target_rate": "target rate",
    "settings.duration_s": "measured duration (s)",
    "settings.warmup_s": "warm-up (s)",
    "settings.operations": "operations per run",
    "settings.repeats": "repeats",
    "settings.insert_order": "insert order",
    "workload.record_count": "record count",
    "workload.operations": "operation mix",
    "host.hostname": "host",
    "host.cpu_count": "host CPUs",
    "host.memory_gib": "host memory (GiB)",
    "host.platform": "host platform",
}


def _label(key: str) -> str:
    if key in _LABELS:
        return _LABELS[key]
    if key.startswith("client."):
        return f"client {key[len('client.') :]}"
    return key.replace("_", " ")


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def describe_change(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """`server version 15.19 → 16.4; users 16 → 32`: every key whose value differs."""
    parts = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key, _ABSENT), after.get(key, _ABSENT)
        if old == new:
            continue
        old_text = "not recorded" if old is _ABSENT else _show(old)
        new_text = "not recorded" if new is _ABSENT else _show(new)
        parts.append(f"{_label(key)} {old_text} → {new_text}")
    return "; ".join(parts)


_ABSENT = object()


# --- findings ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    """The verdict on one figure of one run: a regression, an improvement, ok, or why not judged.

    `value` is tonight's figure; `baseline_median`, `band_low`, `band_high` describe
    the band it was judged against (None when not judged); `change_pct` and
    `change_abs` are tonight minus the baseline median, in percent of the median and in
    the metric's unit; `samples` is the number of comparable earlier nights used;
    `config_change` says what changed when this run's configuration is none of those of
    the series' last `window` runs (None otherwise); `note` says when this night made a lasting change the new baseline.
    `baseline_runs` are the runs whose figures formed the baseline.
    """

    run_id: str
    store: str
    workload: str
    operation: str
    metric: str
    verdict: str
    value: float
    baseline_median: float | None = None
    band_low: float | None = None
    band_high: float | None = None
    change_pct: float | None = None
    change_abs: float | None = None
    samples: int = 0
    config_change: str | None = None
    started_at: str | None = None
    fingerprint: str = ""
    status: str = "unknown"
    note: str | None = None
    baseline_runs: tuple[str, ...] = field(default=(), repr=False)

    @property
    def higher_is_better(self) -> bool:
        """True for throughput, False for latencies."""
        return METRICS[self.metric].higher_is_better

    @property
    def flagged(self) -> bool:
        """A regression or an improvement."""
        return self.verdict in (REGRESSION, IMPROVEMENT)

    @property
    def metric_label(self) -> str:
        """`p99 latency`, `throughput`, ..."""
        return METRICS[self.metric].label

    @property
    def unit(self) -> str:
        """`ops/s` or `µs`."""
        return METRICS[self.metric].unit

    @property
    def subject(self) -> str:
        """`postgres · workload a · READ · p99 latency`."""
        return f"{self.store} · workload {self.workload} · {self.operation} · {self.metric_label}"

    @property
    def message(self) -> str:
        """One line an engineer can act on, e.g. for the DAG's log and failure message."""
        unit = self.unit
        value = f"{fmt_number(self.value)} {unit}"
        if self.verdict in (REGRESSION, IMPROVEMENT, OK):
            text = (
                f"{self.subject}: {self.verdict} {_signed(self.change_pct, '%')} "
                f"({_signed(self.change_abs, ' ' + unit)}), {value} against a median of "
                f"{fmt_number(self.baseline_median)} {unit} "
                f"(band {fmt_number(self.band_low)}-{fmt_number(self.band_high)} {unit}, "
                f"{self.samples} nights) in run {self.run_id}"
            )
        elif self.verdict == NEW_BASELINE:
            text = f"{self.subject}: new baseline at {value} in run {self.run_id}"
        else:
            text = f"{self.subject}: not enough history ({self.samples} comparable nights), {value} in run {self.run_id}"
        if self.config_change:
            text += f"; configuration changed: {self.config_change}"
        if self.note:
            text += f"; {self.note}"
        return text


def _signed(value: float | None, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{'+' if value >= 0 else '-'}{fmt_number(abs(value), 1 if abs(value) < 100 else 0)}{unit}"


def load_run_infos(results_root: str | Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Every store's run.json, by (run_id, store); folders still being written are skipped."""
    infos: dict[tuple[str, str], dict[str, Any]] = {}
    for run_id, run_dir in _visible_dirs(Path(results_root) / RUNS_DIR, "run_id").items():
        for store, store_dir in _visible_dirs(run_dir, "store").items():
            infos[(run_id, store)] = _read_json(store_dir / RUN_FILE) or {}
    return infos


def _points(
    history: pd.DataFrame, run_infos: Mapping[tuple[str, str], Mapping[str, Any]], rule: RegressionRule
) -> tuple[pd.DataFrame, dict[tuple[str, str], dict[str, Any]]]:
    """One row per (run, store, operation, metric) with a value, in time order, with its
    fingerprint; and each (run, store)'s configuration."""
    columns = ["run_id", "store", "workload", "operation"]
    if history.empty or not {"run_id", "store", "operation"} <= set(history.columns):
        return pd.DataFrame(), {}
    metrics = [m for m in rule.metrics if m in history.columns]
    frame = history.reindex(columns=columns + metrics).copy()
    for column in columns:
        frame[column] = frame[column].astype("object")
    per_store: dict[tuple[str, str], dict[str, Any]] = {}
    for key in dict.fromkeys(zip(frame["run_id"], frame["store"], strict=True)):
        info = run_infos.get(key) or {}
        config = run_config(info, rule.ignore_config)
        when = info.get("started_at")
        per_store[key] = {
            "config": config,
            "fingerprint": fingerprint(config),
            "started_at": None if when in (None, "") else str(when),
            "when": parse_time(when).timestamp(),  # a float: no datetime64 range or tz mixing
            "status": str(info.get("status") or "unknown"),
            "workload_name": _as_dict(info.get("workload")).get("name"),
        }
    keys = list(zip(frame["run_id"], frame["store"], strict=True))
    frame["fingerprint"] = [per_store[k]["fingerprint"] for k in keys]
    frame["started_at"] = [per_store[k]["started_at"] for k in keys]
    frame["when"] = [per_store[k]["when"] for k in keys]
    frame["status"] = [per_store[k]["status"] for k in keys]
    # A summary without a workload column (never written so, but cheap to survive) names it from run.json.
    names = [per_store[k]["workload_name"] for k in keys]
    frame["workload"] = [
        str(w) if isinstance(w, str) and w else (str(n) if n else "?")
        for w, n in zip(frame["workload"], names, strict=True)
    ]
    long = frame.melt(
        id_vars=[*columns, "fingerprint", "started_at", "when", "status"],
        value_vars=metrics,
        var_name="metric",
        value_name="value",
    )
    long["value"] = pd.to_numeric(long["value"], errors="coerce").astype("float64")
    long = long[np.isfinite(long["value"].to_numpy())]
    long = long.sort_values(["when", "run_id"], kind="stable").reset_index(drop=True)
    return long, {k: v["config"] for k, v in per_store.items()}


def _judge_points(
    points: pd.DataFrame,
    configs: Mapping[tuple[str, str], Mapping[str, Any]],
    rule: RegressionRule,
    targets: set[str] | None,
) -> list[Finding]:
    if points.empty:
        return []
    changes: dict[tuple[tuple[str, str], tuple[str, str]], str] = {}
    findings = []
    for (store, workload, operation, metric), series in points.groupby(
        ["store", "workload", "operation", "metric"], sort=False
    ):
        higher = METRICS[metric].higher_is_better
        baselines: dict[str, _Baseline] = {}
        earlier: list[tuple[str, str]] = []  # (run_id, fingerprint) of the series' runs so far
        for run_id, value, fp, started, status in zip(
            series["run_id"], series["value"], series["fingerprint"], series["started_at"], series["status"],
            strict=True,
        ):  # fmt: skip
            config_change = _config_change(earlier[-rule.window :], (run_id, fp), store, configs, changes)
            earlier.append((run_id, fp))
            # Every night is judged, tonight's or not: whether earlier nights were flagged
            # decides which of them form tonight's baseline.
            baseline = baselines.setdefault(fp, _Baseline())
            verdict = baseline.judge(float(value), higher, rule, config_change)
            note = baseline.add(float(value), run_id, verdict, rule)
            if targets is None or run_id in targets:
                findings.append(
                    Finding(
                        run_id=run_id, store=store, workload=workload, operation=operation, metric=metric,
                        value=float(value), config_change=config_change, started_at=started, fingerprint=fp,
                        status=status, note=note, **verdict,
                    )
                )  # fmt: skip
    return findings


def _config_change(
    recent: list[tuple[str, str]],
    tonight: tuple[str, str],
    store: str,
    configs: Mapping[tuple[str, str], Mapping[str, Any]],
    cache: dict[tuple[tuple[str, str], tuple[str, str]], str],
) -> str | None:
    """What changed, when tonight's configuration is none of the series' recent runs' ones.

    Configurations that take turns (two matrix entries of one workload with different
    users, the steps of a sweep) each go on with their own history: not a change.
    A new one is described against the most similar recent one (fewest differing keys,
    then the newest).
    """
    run_id, fp = tonight
    if not recent or fp in {f for _, f in recent}:
        return None
    mine = configs[(run_id, store)]

    def distance(item: tuple[int, tuple[str, str]]) -> tuple[int, int]:
        index, (other, _) = item
        theirs = configs[(other, store)]
        return (sum(mine.get(k, _ABSENT) != theirs.get(k, _ABSENT) for k in set(mine) | set(theirs)), -index)

    _, (closest, _) = min(enumerate(recent), key=distance)
    pair = ((closest, store), (run_id, store))
    if pair not in cache:
        cache[pair] = (
            describe_change(configs[pair[0]], configs[pair[1]]) or "configuration fingerprint differs"
        )
    return cache[pair]


@dataclass
class _Baseline:
    """The nights of one series and configuration so far, oldest first, and which form the baseline.

    A flagged night does not join the baseline: a regression that lasts must not widen
    the band or drag the median until it hides itself. When `min_samples` of the last
    `window` nights are flagged on the same side, the change has lasted: the nights
    since the first of them become the baseline (the new normal), and judging goes on
    against them from the next night.
    """

    values: list[float] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    sides: list[int] = field(default_factory=list)  # +1 above the band, -1 below, 0 within or not judged
    calm: list[int] = field(default_factory=list)  # indices of the nights that form the baseline
    start: int = 0  # nights before this one belong to an older level

    def judge(
        self, value: float, higher_is_better: bool, rule: RegressionRule, config_change: str | None
    ) -> dict:
        """The verdict fields of a `Finding` for `value` against the last `window` baseline nights."""
        chosen = self.calm[-rule.window :]
        values = [self.values[i] for i in chosen]
        common: dict[str, Any] = {
            "samples": len(values),
            "baseline_runs": tuple(self.runs[i] for i in chosen),
        }
        if len(values) < rule.min_samples:
            # The first night of a new configuration says so; the nights after it until the
            # baseline is long enough are "not enough history", like a brand new series.
            return {"verdict": NEW_BASELINE if config_change else NOT_ENOUGH_HISTORY, **common}
        median, low, high = band(values, rule)
        change = value - median
        return {
            "verdict": _side(value, low, high, higher_is_better),
            "baseline_median": median,
            "band_low": low,
            "band_high": high,
            "change_abs": change,
            "change_pct": 100.0 * change / median if median else None,
            **common,
        }

    def add(self, value: float, run_id: str, verdict: dict, rule: RegressionRule) -> str | None:
        """Record a judged night; say so when it makes a lasting change the new baseline."""
        side = 0
        if verdict["verdict"] in (REGRESSION, IMPROVEMENT):
            side = 1 if value > verdict["band_high"] else -1
        self.values.append(value)
        self.runs.append(run_id)
        self.sides.append(side)
        if side == 0:
            self.calm.append(len(self.values) - 1)
            return None
        recent = range(max(self.start, len(self.values) - rule.window), len(self.values))
        same = [i for i in recent if self.sides[i] == side]
        if len(same) < rule.min_samples:
            return None
        self.start = same[0]
        self.sides[self.start :] = [0] * (len(self.sides) - self.start)
        self.calm = list(range(self.start, len(self.values)))
        where = "above" if side > 0 else "below"
        return (
            f"{len(same)} of the last {len(recent)} nights {where} the band: a lasting change, so the "
            f"nights since run {self.runs[self.start]} are the baseline from the next night on"
        )


def _severity(finding: Finding) -> tuple:
    return (
        VERDICTS.index(finding.verdict),
        -abs(finding.change_pct or 0.0),
        finding.store,
        finding.workload,
        operation_key(finding.operation),
        list(METRICS).index(finding.metric),
        finding.run_id,
    )


def judge_history(
    history: pd.DataFrame,
    run_infos: Mapping[tuple[str, str], Mapping[str, Any]],
    rule: RegressionRule | None = None,
    run_ids: Iterable[str] | None = None,
) -> list[Finding]:
    """Judge every figure of `run_ids` (default: every run) against the nights before it.

    `history` is `load_runs(results_root)`; `run_infos` maps (run_id, store) to that
    store's run.json (`load_run_infos`), which gives each run its time and fingerprint.
    "Before" is by run.json `started_at` (then run id). The result is in time order
    within each series; the trend report draws it.
    """
    rule = rule or RegressionRule()
    targets = None if run_ids is None else set(run_ids)
    points, configs = _points(history, run_infos, rule)
    return _judge_points(points, configs, rule, targets)


def detect(
    history: pd.DataFrame,
    run_infos: Mapping[tuple[str, str], Mapping[str, Any]],
    tonight_run_id: str | Iterable[str],
    rule: RegressionRule | None = None,
) -> list[Finding]:
    """The findings of tonight's run(s), most urgent first: regressions, then improvements, ...

    `tonight_run_id` is a run id, or several (a nightly matrix is one run per entry).
    Every (store, workload, operation, metric) figure of those runs gets a verdict:
    `regression`, `improvement`, `ok`, `not enough history` or `new baseline` (see
    `Finding`). A store that failed has no figures, hence no findings: the report says
    why it failed. Raises `OptiStackError` for a run id that is in neither the history
    nor the run.json files.
    """
    targets = {tonight_run_id} if isinstance(tonight_run_id, str) else set(tonight_run_id)
    known = set(history["run_id"]) if "run_id" in history.columns else set()
    known |= {run_id for run_id, _ in run_infos}
    missing = sorted(targets - known)
    if missing or not targets:
        latest = ", ".join(sorted(known)[-5:]) or "none yet"
        raise OptiStackError(
            f"no results for run {', '.join(missing) or '(none given)'} (latest runs: {latest}); "
            "check the run id and the results folder"
        )
    return sorted(judge_history(history, run_infos, rule, targets), key=_severity)


def detect_from_results(
    results_root: str | Path, tonight_run_id: str | Iterable[str], rule: RegressionRule | None = None
) -> list[Finding]:
    """`detect` on the results under `results_root` (loads the history and the run.json files)."""
    return detect(load_runs(results_root), load_run_infos(results_root), tonight_run_id, rule)


def has_regressions(findings: Iterable[Finding]) -> bool:
    """True when any finding is a regression (improvements and new baselines are not)."""
    return any(f.verdict == REGRESSION for f in findings)


def counts(findings: Iterable[Finding]) -> dict[str, int]:
    """How many findings of each verdict, in `VERDICTS` order (zeros included)."""
    found = [f.verdict for f in findings]
    return {verdict: found.count(verdict) for verdict in VERDICTS}


def summary_text(findings: Sequence[Finding]) -> str:
    """A log-ready text: the counts, then every regression, improvement and configuration change."""
    tally = ", ".join(f"{verdict}: {n}" for verdict, n in counts(findings).items() if n) or "no findings"
    lines = [f.message for f in sorted(findings, key=_severity) if f.flagged or f.verdict == NEW_BASELINE]
    return "\n".join([tally, *(f"  {line}" for line in lines)])


_FRAME_COLUMNS = [f.name for f in fields(Finding)]


def findings_frame(findings: Iterable[Finding]) -> pd.DataFrame:
    """The findings as a DataFrame, one row each, columns as `Finding`'s fields plus `message`."""
    rows = [
        {
            **{name: getattr(f, name) for name in _FRAME_COLUMNS},
            "baseline_runs": list(f.baseline_runs),
            "message": f.message,
        }
        for f in findings
    ]
    frame = pd.DataFrame(rows, columns=[*_FRAME_COLUMNS, "message"])
    for column in ("value", "baseline_median", "band_low", "band_high", "change_pct", "change_abs"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    frame["samples"] = frame["samples"].astype("int64")
    return frame


__all__ = [
    "DEFAULT_METRICS",
    "IMPROVEMENT",
    "METRICS",
    "NEW_BASELINE",
    "NOT_ENOUGH_HISTORY",
    "OK",
    "REGRESSION",
    "VERDICTS",
    "Finding",
    "Metric",
    "RegressionRule",
    "band",
    "counts",
    "describe_change",
    "detect",
    "detect_from_results",
    "findings_frame",
    "fingerprint",
    "has_regressions",
    "judge",
    "judge_history",
    "load_run_infos",
    "qn_scale",
    "run_config",
    "summary_text",
    "widening",
]
