"""Charts as inline SVG, drawn with matplotlib: no JavaScript, no network, readable offline.

matplotlib is imported inside the functions (importing it costs about a second) and
only its object API is used (`matplotlib.figure.Figure`, never pyplot): no GUI backend
is ever selected, no global figure registry fills up, and the host process's backend
(Agg or anything else) is left alone. SVG output goes through matplotlib's SVG
backend, which escapes every text it writes.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from typing import Any

from markupsafe import escape

from reports.model import Curve, Series

# Page colours the charts share with the stylesheet.
INK = "#1f2937"
MUTED = "#6b7280"
GRID = "#e5e7eb"
FAILED = "#b91c1c"

_RC = {
    "svg.fonttype": "none",  # text stays text: selectable, searchable, small
    "text.parse_math": False,  # a `$` in a store name is a dollar, not TeX
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"],
    "font.size": 9,
    "axes.edgecolor": "#9ca3af",
    "axes.labelcolor": INK,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.titlecolor": INK,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "xtick.labelcolor": INK,
    "ytick.labelcolor": INK,
    "legend.frameon": False,
}

# Removes the RDF block (creator, date) so the output is deterministic and has no URLs.
_NO_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}

# "nines" axis ticks: x = 1 / (1 - p).
# Labels without "%" (the axis says it) so seven decades fit a third of the page.
_NINES = (
    (2.0, "50"),
    (10.0, "90"),
    (100.0, "99"),
    (1e3, "99.9"),
    (1e4, "99.99"),
    (1e5, "99.999"),
    (1e6, "99.9999"),
)


def _figure(width_in: float, height_in: float, **kwargs: Any) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), layout="constrained", **kwargs)


def _style(ax: Any) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(True, which="major", color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)


def _number(value: float, _pos: Any = None) -> str:
    if value >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def _log_y(ax: Any, low: float, high: float) -> None:
    """A log latency axis labelled in plain numbers, denser when the range is narrow."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    low, high = max(low, 1e-3), max(high, low * 1.01, 1e-3)
    decades = math.log10(high) - math.log10(low)
    ax.set_yscale("log")
    subs = (1.0, 2.0, 5.0) if decades < 2.5 else (1.0,)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(_number))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(low / 1.4, high * 1.4)


def to_inline_svg(fig: Any, chart_id: str, label: str) -> str:
    """The figure as an `<svg>` element to inline in HTML.

    The XML prolog and DOCTYPE go; every id gets the chart's prefix (several charts
    share one page, and matplotlib names groups `figure_1`, `axes_1`, ... in each);
    `role="img"` and an escaped `aria-label` describe it to screen readers.
    """
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata=_NO_METADATA)
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{chart_id}-\1"', svg)
    svg = re.sub(r'href="#([^"]+)"', rf'href="#{chart_id}-\1"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", rf"url(#{chart_id}-\1)", svg)
    return svg.replace("<svg ", f'<svg role="img" aria-label="{escape(label)}" class="chart-svg" ', 1)


def _render(chart_id: str, label: str, draw: Any) -> str:
    import matplotlib

    with matplotlib.rc_context({**_RC, "svg.hashsalt": chart_id}):
        fig = draw()
        return to_inline_svg(fig, chart_id, label)


def throughput_chart(values: Sequence[tuple[str, float | None, str]], colors: dict[str, str]) -> str:
    """Horizontal bars of throughput (all operations, ops/s) per store; failed stores say so."""

    def draw() -> Any:
        fig = _figure(10.5, 0.9 + 0.45 * len(values))
        ax = fig.add_subplot()
        names = [name for name, _, _ in values][::-1]
        numbers = [value for _, value, _ in values][::-1]
        statuses = [status for _, _, status in values][::-1]
        top = max((v for v in numbers if v is not None), default=1.0) or 1.0
        ax.barh(names, [v or 0 for v in numbers], color=[colors[n] for n in names], height=0.6)
        for y, (value, status) in enumerate(zip(numbers, statuses, strict=True)):
            if value is None:
                text = "failed — no measurement" if status == "failed" else "no measurement"
                ax.text(top * 0.01, y, text, va="center", color=FAILED, fontweight="bold")
            else:
                ax.text(value + top * 0.01, y, f"{_number(value)} ops/s", va="center", color=INK)
        ax.set_xlim(0, top * 1.18)
        ax.set_xlabel("throughput, all operations (ops/s)")
        from matplotlib.ticker import FuncFormatter

        ax.xaxis.set_major_formatter(FuncFormatter(_number))
        _style(ax)
        ax.grid(False, axis="y")
        ax.tick_params(axis="y", length=0, labelsize=10)
        return fig

    return _render("throughput", "Throughput per store, all operations, in operations per second", draw)


def latency_chart(curves: dict[str, dict[str, Curve]], colors: dict[str, str]) -> str:
    """Latency percentile curves, one panel per operation, one line per store.

    x is the percentile on a "nines" scale (log of 1 / (1 - p)) as HdrHistogram's
    plots draw it, y is the latency on a log scale; the max sits on its own tick.
    """
    from matplotlib.lines import Line2D

    operations = list(curves)
    stores = list(dict.fromkeys(store for by_store in curves.values() for store in by_store))

    def draw() -> Any:
        columns = min(3, len(operations))
        rows = math.ceil(len(operations) / columns)
        fig = _figure(10.5, 0.6 + 2.9 * rows)
        for index, operation in enumerate(operations):
            ax = fig.add_subplot(rows, columns, index + 1)
            by_store = curves[operation]
            last_x = max(
                (1.0 / (1.0 - p / 100.0) for c in by_store.values() for p in c.percentiles), default=1e3
            )
            max_x = 10 ** (math.floor(math.log10(last_x)) + 1)
            lows, highs = [], []
            for store, curve in by_store.items():
                xs = [1.0 / (1.0 - p / 100.0) for p in curve.percentiles]
                ys = [max(v, 1e-3) for v in curve.values_us]
                color = colors[store]
                if curve.from_histogram:
                    ax.plot(xs, ys, color=color, linewidth=1.8)
                else:
                    ax.plot(xs, ys, color=color, linewidth=1.8, marker="o", markersize=3.5)
                if curve.max_us is not None:
                    tail_x = [xs[-1], max_x] if xs else [max_x]
                    tail_y = [ys[-1], max(curve.max_us, 1e-3)] if ys else [max(curve.max_us, 1e-3)]
                    ax.plot(tail_x, tail_y, color=color, linewidth=1.2, linestyle=":")
                    ax.plot([max_x], [max(curve.max_us, 1e-3)], color=color, marker="D", markersize=4)
                    highs.append(curve.max_us)
                lows += ys[:1]
                highs += ys[-1:]
            ax.set_xscale("log")
            ticks = [(x, text) for x, text in _NINES if x < max_x] + [(max_x, "max")]
            if max_x > 1e5:  # 50 and 90 sit 0.7 decade apart: too close once the axis is long
                ticks = [(x, text) for x, text in ticks if text != "90"]
            ax.set_xticks([x for x, _ in ticks], [text for _, text in ticks])
            ax.minorticks_off()
            ax.set_xlim(1.6, max_x * 1.6)
            _log_y(ax, min(lows, default=1.0), max(highs, default=10.0))
            ax.set_title("all operations" if operation == "ALL" else operation, loc="left")
            if index % columns == 0:
                ax.set_ylabel("latency (µs)")
            ax.set_xlabel("percentile (%)")
            ax.tick_params(axis="x", labelsize=8)
            _style(ax)
            ax.grid(True, which="major", axis="x", color=GRID, linewidth=0.6)
        handles = [Line2D([], [], color=colors[s], linewidth=2.2, label=s) for s in stores]
        fig.legend(handles=handles, loc="outside upper left", ncols=min(len(stores), 8), fontsize=10)
        return fig

    return _render(
        "latency", "Latency percentile distribution per operation and store, log scales, microseconds", draw
    )


def timeseries_chart(throughput: dict[str, Series], p99: dict[str, Series], colors: dict[str, str]) -> str:
    """Throughput (ops/s) and p99 latency (µs, log) over the measured window, per store."""
    from matplotlib.lines import Line2D

    stores = list(dict.fromkeys([*throughput, *p99]))

    def draw() -> Any:
        fig = _figure(10.5, 5.6)
        top, bottom = fig.subplots(2, 1, sharex=True)
        for store, series in throughput.items():
            top.plot(series.seconds, series.values, color=colors[store], linewidth=1.5)
        top.set_ylim(bottom=0)
        top.set_ylabel("throughput (ops/s)")
        from matplotlib.ticker import FuncFormatter

        top.yaxis.set_major_formatter(FuncFormatter(_number))
        top.set_title("throughput per second, all operations", loc="left")
        _style(top)
        values = []
        for store, series in p99.items():
            bottom.plot(series.seconds, series.values, color=colors[store], linewidth=1.5)
            values += [v for v in series.values if v > 0]
        if values:
            _log_y(bottom, min(values), max(values))
        bottom.set_ylabel("p99 latency (µs)")
        bottom.set_xlabel("second of the measured window (s, warm-up excluded)")
        bottom.set_title("p99 latency per second, all operations", loc="left")
        _style(bottom)
        handles = [Line2D([], [], color=colors[s], linewidth=2.2, label=s) for s in stores]
        fig.legend(handles=handles, loc="outside upper left", ncols=min(len(stores), 8), fontsize=10)
        return fig

    return _render(
        "timeseries", "Throughput and p99 latency per second of the measured window, per store", draw
    )


def sweep_chart(points: dict[str, list[dict[str, Any]]], colors: dict[str, str]) -> str:
    """Latency-throughput curve per store: one point per sweep step (p99 on a log scale).

    Where the curve turns up steeply is the knee: more offered load buys latency, not
    throughput.
    """

    def draw() -> Any:
        fig = _figure(10.5, 4.2)
        ax = fig.add_subplot()
        for store, steps in points.items():
            xs = [p["throughput_ops_s"] for p in steps]
            ys = [p["latency_p99_us"] for p in steps]
            color = colors.get(store, INK)
            ax.plot(xs, ys, marker="o", color=color, label=store)
            for point in steps:
                prefix = "u" if point["parameter"] == "users" else ""
                ax.annotate(
                    f"{prefix}{_number(point['value'])}",
                    (point["throughput_ops_s"], point["latency_p99_us"]),
                    textcoords="offset points",
                    xytext=(4, 6),
                    fontsize=8,
                    color=color,
                )
        values = [p["latency_p99_us"] for steps in points.values() for p in steps]
        _log_y(ax, min(values), max(values))
        from matplotlib.ticker import FuncFormatter

        ax.xaxis.set_major_formatter(FuncFormatter(_number))
        ax.set_xlabel("throughput, all operations (ops/s)")
        ax.set_ylabel("p99 latency (µs)")
        ax.legend(loc="upper left", frameon=False)
        _style(ax)
        return fig

    return _render("sweep", "Latency-throughput curve: p99 against throughput per sweep step and store", draw)


def resources_chart(chart_id: str, store: str, resources: Any) -> str:
    """CPU (% of one core) and memory (RSS, MiB) over time for one store's load processes
    and its server (a `model.StoreResources`); the measured window is shaded."""
    from matplotlib.ticker import FuncFormatter

    labels = list(dict.fromkeys([*resources.cpu, *resources.memory_mib]))
    # The server stands out in ink; load processes take the palette in order.
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    load_labels = [label for label in labels if not label.startswith("server")]
    colors = {label: palette[i % len(palette)] for i, label in enumerate(load_labels)}

    def style_of(label: str) -> dict[str, Any]:
        if label.startswith("server"):
            return {"color": INK, "linewidth": 2.2}
        return {"color": colors[label], "linewidth": 1.3}

    def draw() -> Any:
        fig = _figure(10.5, 5.2)
        top, bottom = fig.subplots(2, 1, sharex=True)
        for ax, lines, ylabel, title in (
            (top, resources.cpu, "CPU (% of one core)", "CPU per process"),
            (bottom, resources.memory_mib, "RSS (MiB)", "memory (resident set) per process"),
        ):
            for label, series in lines.items():
                ax.plot(series.seconds, series.values, marker=".", markersize=3, **style_of(label))
            if resources.window_s is not None:
                ax.axvspan(*resources.window_s, color=GRID, alpha=0.6, linewidth=0)
            ax.set_ylim(bottom=0)
            ax.set_ylabel(ylabel)
            ax.set_title(title, loc="left")
            ax.yaxis.set_major_formatter(FuncFormatter(_number))
            _style(ax)
        bottom.set_xlabel("seconds since the load started (shaded: measured window)")
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], label=label, **style_of(label)) for label in labels]
        fig.legend(handles=handles, loc="outside upper left", ncols=min(len(labels), 3), fontsize=9)
        return fig

    return _render(chart_id, f"CPU and memory over time of {store}'s load processes and server", draw)
