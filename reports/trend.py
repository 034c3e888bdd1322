"""The nightly trend page: every series across nights, its baseline band, and what was flagged.

`<results>/reports/trend.html`, self-contained and offline like the run reports (same
base template, CSS inline, charts inline SVG drawn by matplotlib, Jinja2 autoescaping).
From top to bottom: the regressions of each series' latest run, then its improvements
and configuration changes, then one chart per workload and store (throughput and p99
latency of all operations, night by night, with the band each night was judged
against and the flagged nights marked), then every flag in the nights shown.

The verdicts are `reports.regression.judge_history`'s: each night judged against the
comparable nights before it, exactly as the nightly check judged it.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reports.history import REPORTS_DIR, load_runs, parse_time
from reports.model import fmt_number, fmt_time, store_colors
from reports.regression import (
    IMPROVEMENT,
    METRICS,
    NOT_ENOUGH_HISTORY,
    OK,
    REGRESSION,
    Finding,
    RegressionRule,
    judge_history,
    load_run_infos,
)
from reports.render import Chart, _atomic_write, _chart, _environment

log = logging.getLogger(__name__)

TREND_FILE = "trend.html"
TREND_OPERATION = "ALL"  # the charts show all operations merged; the tables every operation
TREND_METRICS = ("throughput_ops_s", "latency_p99_us")
MAX_NIGHTS = 60  # nights drawn per chart; older ones still form the first bands


@dataclass
class Line:
    """One finding as the tables print it."""

    store: str
    workload: str
    operation: str
    metric: str
    verdict: str
    run_id: str
    href: str | None  # the run's report, when it was written
    when: str
    value: str
    median: str
    band: str
    change_pct: str
    change_abs: str
    samples: int
    config_change: str | None
    note: str | None  # a lasting change became the baseline on this night
    size: float  # |change| in percent, for sorting the biggest first
    anchor: str  # the chart of its store and workload on the page


@dataclass
class MetricSeries:
    """One metric of one chart, night by night (NaN where a night was not judged)."""

    label: str
    unit: str
    higher_is_better: bool
    times: list[datetime] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    medians: list[float] = field(default_factory=list)
    lows: list[float] = field(default_factory=list)
    highs: list[float] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    change_pcts: list[float] = field(default_factory=list)
    config_changed: list[bool] = field(default_factory=list)


@dataclass
class BaselineChange:
    when: str
    run_id: str
    what: str


@dataclass
class Panel:
    """One workload on one store: its chart and what happened to it."""

    workload: str
    store: str
    color: str
    anchor: str
    nights: int
    latest_run_id: str
    latest_at: str
    flagged: int
    baseline_changes: list[BaselineChange]
    chart: Chart


@dataclass
class Trend:
    """Everything the trend page prints."""

    generated_at: str
    rule: str
    rule_settings: RegressionRule
    series: int
    runs: int
    regressions: list[Line]
    improvements: list[Line]
    baseline_changes: list[Line]  # the latest new baseline of each series within the last `window` nights
    waiting: list[Line]  # not enough history yet
    ok: int
    workloads: list[tuple[str, list[Panel]]]
    flags: list[Line]  # every regression and improvement in the nights drawn, newest first
    colors: dict[str, str]  # per store, as in the charts


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{fmt_number(value)}{' ' + unit if unit else ''}"


def _signed(value: float | None, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    sign = "+" if value >= 0 else "-"
    return f"{sign}{fmt_number(abs(value), 1 if abs(value) < 100 else 0)}{unit}"


def _when(finding: Finding) -> datetime:
    return parse_time(finding.started_at)


def _line(finding: Finding, reports: Path) -> Line:
    unit = finding.unit
    report = reports / f"{finding.run_id}.html"
    judged = finding.baseline_median is not None
    return Line(
        store=finding.store,
        workload=finding.workload,
        operation=finding.operation,
        metric=finding.metric_label,
        verdict=finding.verdict,
        run_id=finding.run_id,
        href=report.name if report.is_file() else None,
        when=fmt_time(finding.started_at),
        value=_fmt(finding.value, unit),
        median=_fmt(finding.baseline_median, unit),
        band=f"{_fmt(finding.band_low)} to {_fmt(finding.band_high, unit)}" if judged else "—",
        change_pct=_signed(finding.change_pct, " %"),
        change_abs=_signed(finding.change_abs, f" {unit}"),
        samples=finding.samples,
        config_change=finding.config_change,
        note=finding.note,
        size=abs(finding.change_pct) if finding.change_pct is not None else 0.0,
        anchor=_anchor(finding.workload, finding.store),
    )


def _anchor(workload: str, store: str) -> str:
    return "trend-" + re.sub(r"[^A-Za-z0-9_-]+", "-", f"{workload}-{store}").strip("-")


def _naive_utc(when: datetime) -> datetime:
    # matplotlib's date axis wants one time zone; the page says UTC.
    return when.astimezone(UTC).replace(tzinfo=None)


def _series(findings: Sequence[Finding], metric: str) -> MetricSeries | None:
    points = [f for f in findings if f.metric == metric and f.started_at]
    if not points:
        return None
    spec = METRICS[metric]
    out = MetricSeries(label=spec.label, unit=spec.unit, higher_is_better=spec.higher_is_better)
    nan = float("nan")
    for f in points:
        out.times.append(_naive_utc(_when(f)))
        out.values.append(f.value)
        out.medians.append(nan if f.baseline_median is None else f.baseline_median)
        out.lows.append(nan if f.band_low is None else f.band_low)
        out.highs.append(nan if f.band_high is None else f.band_high)
        out.verdicts.append(f.verdict)
        out.change_pcts.append(nan if f.change_pct is None else f.change_pct)
        out.config_changed.append(bool(f.config_change))
    return out


def trend_chart(chart_id: str, title: str, series: Sequence[MetricSeries], color: str) -> str:
    """Throughput and p99 latency across nights for one store and workload, as inline SVG.

    The shaded band is the range each night was judged against (from the nights before
    it), the dashed line its median; red marks a regression, green an improvement, a
    dotted vertical line a configuration change (a new baseline starts there).
    """
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    from reports.charts import FAILED, INK, MUTED, _figure, _number, _render, _style

    improved = "#15803d"

    def draw() -> Any:
        fig = _figure(10.5, 1.2 + 2.3 * len(series))
        axes = fig.subplots(len(series), 1, sharex=True, squeeze=False)[:, 0]
        for ax, s in zip(axes, series, strict=True):
            ax.fill_between(s.times, s.lows, s.highs, step="mid", color=color, alpha=0.16, linewidth=0)
            ax.plot(s.times, s.medians, drawstyle="steps-mid", color=color, linestyle="--", linewidth=1)
            ax.plot(s.times, s.values, color=color, linewidth=1.4, marker="o", markersize=3)
            for verdict, mark, tint in ((REGRESSION, "o", FAILED), (IMPROVEMENT, "D", improved)):
                at = [i for i, v in enumerate(s.verdicts) if v == verdict]
                if not at:
                    continue
                ax.plot(
                    [s.times[i] for i in at], [s.values[i] for i in at], linestyle="none",
                    marker=mark, markersize=8, color=tint, markeredgecolor="white", zorder=5,
                )  # fmt: skip
                for i in at:
                    # Label the first night of a run of flagged nights only: labels would overlap.
                    if i - 1 in at or not math.isfinite(s.change_pcts[i]):
                        continue
                    above = math.isfinite(s.highs[i]) and s.values[i] > s.highs[i]
                    ax.annotate(
                        f"{s.change_pcts[i]:+.0f}%", (s.times[i], s.values[i]), xytext=(-7, 7 if above else -9),
                        textcoords="offset points", ha="right", va="center", color=tint, fontweight="bold",
                        fontsize=8.5, bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
                    )  # fmt: skip
            for i, changed in enumerate(s.config_changed):
                if changed:
                    ax.axvline(s.times[i], color=MUTED, linestyle=":", linewidth=1.3)
            # The nights' values set the scale: a short baseline's wide band must not flatten them.
            seen = [v for v in (*s.values, *s.medians) if math.isfinite(v)]
            low, high = min(seen), max(seen)
            pad = max((high - low) * 0.25, abs(high) * 0.05, 1e-9)
            ax.set_ylim(max(low - pad, 0) if low >= 0 else low - pad, high + pad)
            ax.set_ylabel(f"{s.label} ({s.unit})")
            ax.yaxis.set_major_formatter(FuncFormatter(_number))
            better = "higher is better" if s.higher_is_better else "lower is better"
            ax.set_title(f"{s.label}, all operations ({better})", loc="left")
            _style(ax)
        locator = AutoDateLocator(minticks=3, maxticks=10)
        axes[-1].xaxis.set_major_locator(locator)
        axes[-1].xaxis.set_major_formatter(ConciseDateFormatter(locator))
        axes[-1].set_xlabel("night (run start, UTC)")
        handles = [
            Line2D([], [], color=color, marker="o", markersize=3, linewidth=1.4, label="night's value"),
            Patch(color=color, alpha=0.25, label="baseline band"),
            Line2D([], [], color=color, linestyle="--", linewidth=1, label="baseline median"),
            Line2D([], [], color=FAILED, marker="o", linestyle="none", markersize=7, label="regression"),
            Line2D([], [], color=improved, marker="D", linestyle="none", markersize=6, label="improvement"),
            Line2D([], [], color=MUTED, linestyle=":", linewidth=1.3, label="configuration changed"),
        ]
        fig.legend(handles=handles, loc="outside upper left", ncols=6, fontsize=8.5, labelcolor=INK)
        return fig

    return _render(chart_id, title, draw)


def _latest_runs(findings: Sequence[Finding]) -> dict[tuple[str, str], str]:
    """The newest run of each (store, workload)."""
    latest: dict[tuple[str, str], tuple[datetime, str]] = {}
    for f in findings:
        key, candidate = (f.store, f.workload), (_when(f), f.run_id)
        if key not in latest or candidate > latest[key]:
            latest[key] = candidate
    return {key: run_id for key, (_, run_id) in latest.items()}


def build_trend(
    results_root: str | Path,
    rule: RegressionRule | None = None,
    now: datetime | None = None,
    max_nights: int = MAX_NIGHTS,
) -> Trend:
    """What the trend page shows, computed from every run under `results_root`."""
    rule = rule or RegressionRule()
    root = Path(results_root)
    reports = root / REPORTS_DIR
    findings = judge_history(load_runs(root), load_run_infos(root), rule)
    latest = _latest_runs(findings)
    current = [f for f in findings if latest.get((f.store, f.workload)) == f.run_id]

    def lines(verdict: str) -> list[Line]:
        chosen = [_line(f, reports) for f in current if f.verdict == verdict]
        return sorted(chosen, key=lambda line: (-line.size, line.store, line.workload, line.operation))

    groups: dict[tuple[str, str], list[Finding]] = {}
    for f in findings:
        groups.setdefault((f.workload, f.store), []).append(f)
    colors = store_colors(sorted({store for _, store in groups}))
    workloads: dict[str, list[Panel]] = {}
    flags: list[tuple[datetime, Line]] = []
    recent_changes: list[tuple[datetime, Line]] = []
    for index, ((workload, store), group) in enumerate(sorted(groups.items())):
        runs = list(dict.fromkeys(f.run_id for f in sorted(group, key=lambda f: (_when(f), f.run_id))))
        shown_runs = set(runs[-max_nights:])
        shown = [f for f in group if f.run_id in shown_runs]
        flags += [(_when(f), _line(f, reports)) for f in shown if f.flagged]
        changes = {}
        for f in shown:
            if f.config_change:
                what = f"configuration changed: {f.config_change}"
                changes.setdefault(f.run_id, BaselineChange(fmt_time(f.started_at), f.run_id, what))
            if f.note:
                changes.setdefault(
                    f.run_id,
                    BaselineChange(
                        fmt_time(f.started_at), f.run_id, f"{f.operation} {f.metric_label}: {f.note}"
                    ),
                )
        # A new baseline within the last `window` nights still shapes tonight's verdicts: say so at the top.
        last_runs = set(runs[-rule.window :])
        recent = [f for f in group if (f.config_change or f.note) and f.run_id in last_runs]
        if recent:
            change = max(recent, key=lambda f: (_when(f), f.run_id))
            recent_changes.append((_when(change), _line(change, reports)))
        chart_findings = [f for f in shown if f.operation == TREND_OPERATION]
        series = [s for s in (_series(chart_findings, m) for m in TREND_METRICS) if s is not None]
        title = f"Throughput and p99 latency of workload {workload} on {store}, night by night"
        chart = (
            _chart("trend", trend_chart, f"trend-{index}", title, series, colors[store])
            if series
            else Chart(note=f"No {TREND_OPERATION} figures with a start time to draw.")
        )
        last = latest[(store, workload)]
        panel = Panel(
            workload=workload,
            store=store,
            color=colors[store],
            anchor=_anchor(workload, store),
            nights=len(shown_runs),
            latest_run_id=last,
            latest_at=fmt_time(next(f.started_at for f in group if f.run_id == last)),
            flagged=len({f.run_id for f in shown if f.flagged}),
            baseline_changes=sorted(changes.values(), key=lambda c: c.when, reverse=True),
            chart=chart,
        )
        workloads.setdefault(workload, []).append(panel)
    flags.sort(key=lambda pair: (pair[0], pair[1].run_id), reverse=True)
    return Trend(
        generated_at=fmt_time((now or datetime.now(UTC)).isoformat(timespec="seconds")),
        rule=rule.describe(),
        rule_settings=rule,
        series=len(groups),
        runs=len({f.run_id for f in findings}),
        regressions=lines(REGRESSION),
        improvements=lines(IMPROVEMENT),
        baseline_changes=[line for _, line in sorted(recent_changes, key=lambda pair: pair[0], reverse=True)],
        waiting=lines(NOT_ENOUGH_HISTORY),
        ok=sum(f.verdict == OK for f in current),
        workloads=sorted(workloads.items()),
        flags=[line for _, line in flags],
        colors=colors,
    )


def render_trend(
    results_root: str | Path,
    rule: RegressionRule | None = None,
    now: datetime | None = None,
    max_nights: int = MAX_NIGHTS,
) -> str:
    """The trend page as an HTML string."""
    trend = build_trend(results_root, rule, now=now, max_nights=max_nights)
    return _environment().get_template("trend.html.j2").render(trend=trend)


def write_trend_report(
    results_root: str | Path,
    rule: RegressionRule | None = None,
    now: datetime | None = None,
    max_nights: int = MAX_NIGHTS,
) -> Path:
    """Write `<results>/reports/trend.html` atomically and return its path.

    Renders with no runs at all too (the page then says so). `rule` defaults to
    `RegressionRule()`; `max_nights` limits the nights drawn per chart.
    """
    root = Path(results_root)
    html = render_trend(root, rule, now=now, max_nights=max_nights)
    path = _atomic_write(root / REPORTS_DIR / TREND_FILE, html)
    log.info("trend report: %s", path)
    return path
