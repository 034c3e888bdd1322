"""The terminal summary printed at the end of `optistack run`."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd


def _us(value: float | None) -> str:
    if value is None or pd.isna(value):
        return "-"
    return f"{value / 1000:,.1f}ms" if value >= 10_000 else f"{value:,.0f}us"


def summary_lines(store_dirs: Iterable[Path]) -> tuple[list[str], bool]:
    """Lines of the summary table, and whether any store failed or failed validation.

    A failed validation counts as a failure: a nightly job must not exit 0 on figures
    its own checks rejected.
    """
    header = f"{'store':<12} {'operation':<18} {'ops/s':>10} {'p50':>9} {'p95':>9} {'p99':>9} {'p99.9':>9} {'errors':>8}"
    lines = [header, "-" * len(header)]
    failed = False
    for directory in store_dirs:
        info = json.loads((directory / "run.json").read_text())
        store = info.get("store", directory.name.removeprefix("store="))
        if info.get("status") == "failed":
            failed = True
            lines.append(f"{store:<12} FAILED: {info.get('error')}")
            continue
        summary = pd.read_parquet(directory / "summary.parquet")
        for row in summary.itertuples():
            lines.append(
                f"{store:<12} {row.operation:<18} {row.throughput_ops_s:>10,.0f} {_us(row.latency_p50_us):>9} "
                f"{_us(row.latency_p95_us):>9} {_us(row.latency_p99_us):>9} {_us(row.latency_p999_us):>9} "
                f"{row.errors:>8,}"
            )
        notes = []
        all_row = summary[summary["operation"] == "ALL"].iloc[0]
        if all_row.get("repeats", 1) > 1:
            notes.append(
                f"{int(all_row['repeats'])} repeats: throughput {all_row['throughput_mean_ops_s']:,.0f} ops/s "
                f"(95% CI {all_row['throughput_ci95_low_ops_s']:,.0f}-{all_row['throughput_ci95_high_ops_s']:,.0f}), "
                f"p99 {_us(all_row['latency_p99_mean_us'])} "
                f"(95% CI {_us(all_row['latency_p99_ci95_low_us'])}-{_us(all_row['latency_p99_ci95_high_us'])})"
            )
        if info.get("load", {}).get("client_saturated"):
            notes.append("client-bound: " + info["load"]["client_saturation"])
        if info.get("status") == "degraded":
            notes.append("degraded: some operations failed (see errors.parquet)")
        validation = directory / "validation.json"
        if validation.exists() and not json.loads(validation.read_text()).get("success", True):
            failed = True
            notes.append("validation failed (see validation.json)")
        lines += [f"{'':<12} note: {n}" for n in notes]
    return lines, failed


def print_summary(store_dirs: Iterable[Path]) -> bool:
    """Print the table; return True when a store failed or failed validation."""
    lines, failed = summary_lines(store_dirs)
    print("\n".join(lines), flush=True)
    return failed
