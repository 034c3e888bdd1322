"""The terminal summary of `optistack run`: its lines and what counts as a failed run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from workloads.summary import summary_lines


def write_store(root: Path, store: str, status: str = "ok", validation: bool | None = None) -> Path:
    """A published store folder with run.json, a one-row summary and maybe validation.json."""
    folder = root / f"store={store}"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"store": store, "status": status, "error": None}))
    row = {
        "operation": "ALL",
        "ops": 1000,
        "errors": 0,
        "throughput_ops_s": 500.0,
        **{f"latency_{p}_us": 100.0 * i for i, p in enumerate(("p50", "p95", "p99", "p999"), start=1)},
    }
    pd.DataFrame([row]).to_parquet(folder / "summary.parquet")
    if validation is not None:
        (folder / "validation.json").write_text(json.dumps({"success": validation}))
    return folder


def test_a_store_that_passed_validation_is_not_a_failure(tmp_path: Path) -> None:
    lines, failed = summary_lines([write_store(tmp_path, "redis", validation=True)])
    assert not failed
    assert any(line.startswith("redis") and "500" in line for line in lines)


def test_a_failed_validation_fails_the_run(tmp_path: Path) -> None:
    # A degraded store whose figures its own checks rejected: the CLI must not exit 0.
    good = write_store(tmp_path, "postgres", validation=True)
    bad = write_store(tmp_path, "redis", status="degraded", validation=False)
    lines, failed = summary_lines([good, bad])
    assert failed
    assert any("validation failed" in line for line in lines)


def test_a_failed_store_fails_the_run(tmp_path: Path) -> None:
    folder = tmp_path / "store=mysql"
    folder.mkdir()
    (folder / "run.json").write_text(
        json.dumps({"store": "mysql", "status": "failed", "error": "seed: boom"})
    )
    lines, failed = summary_lines([folder])
    assert failed
    assert lines[-1] == "mysql        FAILED: seed: boom"
