"""`optistack_nightly` end to end on a tiny matrix file against the real Redis."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from pathlib import Path

import pandas as pd
import pytest

from tests.dags.conftest import run_dag

pytestmark = pytest.mark.slow

NIGHT = dt.datetime(2026, 1, 2, 2, 0, tzinfo=dt.UTC)


def test_the_nightly_matrix_runs_and_publishes_a_report_per_entry(
    dagbag, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace = f"optistack_nightlytest_{secrets.token_hex(3)}"
    matrix = tmp_path / "nightly.yaml"
    common = f"record_count: 1000, duration_s: 2, warmup_s: 0, users: 2, processes: 1, namespace: {namespace}"
    matrix.write_text(
        "runs:\n"
        f"  - {{stores: [redis], workload: c, {common}}}\n"
        f"  - {{stores: [redis], workload: read_mostly_uniform, {common}}}\n"
    )
    results = tmp_path / "results"
    monkeypatch.setenv("OPTISTACK_NIGHTLY_MATRIX", str(matrix))
    monkeypatch.setenv("OPTISTACK_RESULTS", str(results))
    monkeypatch.setenv("OPTISTACK_REDIS_URL", "redis://127.0.0.1:6379/3")

    result = run_dag(dagbag.get_dag("optistack_nightly"), logical_date=NIGHT)

    assert result.state == "success", result.states
    assert result.labels["store.publish"] == ["0: redis", "1: redis"]
    run_ids = ["nightly-20260102T0200Z-0", "nightly-20260102T0200Z-1"]
    for run_id, workload in zip(run_ids, ["c", "read_mostly_uniform"], strict=True):
        store = results / "runs" / f"run_id={run_id}" / "store=redis"
        assert json.loads((store / "run.json").read_text())["status"] == "ok"
        summary = pd.read_parquet(store / "summary.parquet")
        assert set(summary["workload"]) == {workload}
        assert summary.loc[summary["operation"] == "ALL", "ops"].iloc[0] > 0
        assert (results / "reports" / f"{run_id}.html").is_file()
        assert run_id in (results / "reports" / "index.html").read_text()
    (reports,) = result.xcoms["report"]
    assert reports == [str(results / "reports" / f"{run_id}.html") for run_id in run_ids]
    events = [(uri, extra.get("run_id")) for uri, extra in result.asset_events]
    assert sorted(events) == [
        ("optistack://results/reports", None),
        ("optistack://results/runs", run_ids[0]),
        ("optistack://results/runs", run_ids[1]),
    ]
