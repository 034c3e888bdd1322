"""Regression detection across nights, and the trend page.

The statistical tests build histories in memory (a summary frame as `load_runs` returns
it, and the run.json of each store), so hundreds of series stay fast. The end-to-end
tests write a real results tree as docs/results.md describes it and read it back.
"""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import shutil
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reports.history import load_runs
from reports.regression import (
    IMPROVEMENT,
    NEW_BASELINE,
    NOT_ENOUGH_HISTORY,
    OK,
    REGRESSION,
    RegressionRule,
    band,
    describe_change,
    detect,
    detect_from_results,
    findings_frame,
    fingerprint,
    has_regressions,
    judge_history,
    load_run_infos,
    qn_factor,
    qn_rank,
    qn_scale,
    run_config,
    summary_text,
    widening,
)
from reports.trend import TREND_FILE, write_trend_report
from tests.reports.conftest import WORKLOAD_A, StoreSpec, write_run
from workloads.errors import OptiStackError

FIRST_NIGHT = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
EXTERNAL_REFERENCE = re.compile(
    r"""(?:\b(?:src|href|xlink:href|action|poster|srcset)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//)"""
    r"""|url\(\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//|@import""",
    re.IGNORECASE,
)


def night_id(night: int) -> str:
    return f"nightly-{night:03d}"


def run_json(run_id: str, store: str, night: int, **changes: Any) -> dict[str, Any]:
    """A store's run.json as the engine writes it; `changes` are dotted paths, e.g. `server.version`."""
    run = {
        "run_id": run_id,
        "store": store,
        "status": "ok",
        "error": None,
        "started_at": (FIRST_NIGHT + timedelta(days=night)).isoformat(),
        "url": "postgresql://optistack:***@db-01.internal:5432/optistack",
        "server": {"product": "PostgreSQL", "version": "15.19"},
        "workload": copy.deepcopy(WORKLOAD_A),
        "settings": {"users": 16, "processes": 2, "duration_s": 60, "operations": None, "warmup_s": 5,
                     "target_rate": None, "spawn_rate": 16, "seed": 42, "operation_timeout_s": 10,
                     "insert_order": "hashed", "repeats": 1},
        "versions": {"optistack": "0.1.0", "python": "3.11.7", "locust": "2.47.0", "hdrhistogram": "0.10.3",
                     "driver": {"psycopg": "3.3.9"}},
        "host": {"hostname": "bench-01", "platform": "Linux-6.1.0-x86_64", "cpu_count": 8, "memory_gib": 31.3},
        "command": f"optistack run --store {store} --workload a",
    }  # fmt: skip
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        target = run
        for key in parents:
            target = target.setdefault(key, {})
        target[leaf] = value
    return run


def history_of(
    series: dict[str, Sequence[tuple[float, float]]],
    changes: dict[str, dict[int, dict[str, Any]]] | None = None,
) -> tuple[pd.DataFrame, dict[tuple[str, str], dict[str, Any]]]:
    """A history as `load_runs` and `load_run_infos` return it.

    `series` maps a store to its (throughput, p99) per night (ALL operation);
    `changes[store][night]` are run.json changes from that night on.
    """
    rows, infos = [], {}
    for store, nights in series.items():
        current: dict[str, Any] = {}
        for night, (throughput, p99) in enumerate(nights):
            current = {**current, **((changes or {}).get(store, {}).get(night, {}))}
            run_id = night_id(night)
            rows.append({"run_id": run_id, "store": store, "workload": "a", "operation": "ALL",
                         "throughput_ops_s": throughput, "latency_p50_us": p99 / 3, "latency_p99_us": p99})  # fmt: skip
            infos[(run_id, store)] = run_json(run_id, store, night, **current)
    return pd.DataFrame(rows), infos


def noisy(rng: np.random.Generator, nights: int, cv: float, level: float = 1.0) -> np.ndarray:
    return level * rng.normal(1.0, cv, nights)


def verdicts(findings, store: str, metric: str) -> list[str]:
    """The verdict of each night of one store's series, in night order."""
    by_night = {f.run_id: f.verdict for f in findings if f.store == store and f.metric == metric}
    return [by_night[run_id] for run_id in sorted(by_night)]


# --- the rule ----------------------------------------------------------------------------------
def test_qn_estimates_sigma_and_ignores_outlying_nights():
    rng = np.random.default_rng(1)
    estimates = [qn_scale(rng.normal(100, 2, 14)) for _ in range(2000)]
    assert np.mean(estimates) == pytest.approx(2.0, rel=0.03)
    spoiled = [*rng.normal(100, 2, 10), 1000, 5, 900, 2000]  # 4 of 14 nights wildly off
    assert qn_scale(spoiled) < 5
    assert qn_scale([7.0]) == 0.0


def _qn_rows(rows: np.ndarray) -> np.ndarray:
    """`qn_scale` of every row at once, for the simulation below."""
    n = rows.shape[1]
    upper = np.triu_indices(n, 1)
    distances = np.abs(rows[:, :, None] - rows[:, None, :])[:, upper[0], upper[1]]
    return qn_factor(n) * np.partition(distances, qn_rank(n) - 1, axis=1)[:, qn_rank(n) - 1]


@pytest.mark.parametrize("n", [10, 14])
def test_the_widening_table_matches_a_fresh_simulation(n):
    rng = np.random.default_rng(n)
    baseline, tonight = rng.normal(size=(100_000, n)), rng.normal(size=100_000)
    stray = np.abs(tonight - np.median(baseline, axis=1)) / _qn_rows(baseline)
    assert np.quantile(stray, 0.999) / 3.2905 == pytest.approx(widening(n), rel=0.06)


def test_the_band_has_a_relative_floor_and_the_verdict_knows_which_way_is_better():
    rule = RegressionRule()
    flat = [1000.0] * 10  # no spread at all: only the 5 % floor remains
    assert band(flat, rule) == (1000.0, 950.0, 1050.0)
    history, infos = history_of({"postgres": [(1000.0, 200.0)] * 10 + [(940.0, 212.0)]})
    tonight = {f.metric: f for f in detect(history, infos, night_id(10), rule)}

    assert tonight["throughput_ops_s"].verdict == REGRESSION  # lower throughput is worse
    assert tonight["latency_p99_us"].verdict == REGRESSION  # higher latency is worse
    history, infos = history_of({"postgres": [(1000.0, 200.0)] * 10 + [(970.0, 204.0)]})
    assert {f.verdict for f in detect(history, infos, night_id(10), rule)} == {OK}  # within 5 %
    history, infos = history_of({"postgres": [(1000.0, 200.0)] * 10 + [(1060.0, 188.0)]})
    tonight = {f.metric: f for f in detect(history, infos, night_id(10), rule)}
    assert tonight["throughput_ops_s"].verdict == IMPROVEMENT
    assert tonight["latency_p99_us"].verdict == IMPROVEMENT
    throughput = tonight["throughput_ops_s"]
    assert (throughput.change_pct, throughput.change_abs, throughput.samples) == (
        pytest.approx(6.0), pytest.approx(60.0), 10
    )  # fmt: skip


def test_the_band_is_wider_for_a_noisier_baseline():
    rng = np.random.default_rng(2)
    quiet, loud = 1000 * rng.normal(1, 0.01, 14), 1000 * rng.normal(1, 0.08, 14)
    _, quiet_low, quiet_high = band(quiet, RegressionRule())
    _, loud_low, loud_high = band(loud, RegressionRule())
    assert quiet_high - quiet_low == pytest.approx(100, rel=0.3)  # the 5 % floor dominates
    assert loud_high - loud_low > 4 * (quiet_high - quiet_low)


@pytest.mark.parametrize(
    "settings",
    [
        {"window": 3, "min_samples": 5},
        {"min_samples": 2},
        {"k": 0},
        {"min_relative_change": 5},
        {"metrics": ("qps",)},
    ],
)
def test_a_rule_that_makes_no_sense_is_refused_with_what_to_change(settings):
    with pytest.raises(OptiStackError, match="regression rule: "):
        RegressionRule(**settings)


# --- detection over synthetic histories -----------------------------------------------------
def test_a_real_step_change_is_found_on_the_night_it_happens():
    rng = np.random.default_rng(30)
    series = {}
    for s in range(12):
        # 2 % night-to-night noise: the 20 % step is 10 standard deviations.
        throughput = noisy(rng, 40, 0.02, 5000)
        p99 = noisy(rng, 40, 0.02, 800)
        throughput[30:] *= 0.80  # a 20 % throughput drop from night 30 on
        p99[30:] *= 1.25  # and the tail gets 25 % slower
        series[f"store{s}"] = list(zip(throughput, p99, strict=True))
    history, infos = history_of(series)

    findings = judge_history(history, infos)

    for store in series:
        for metric, size in (("throughput_ops_s", -20), ("latency_p99_us", 25)):
            nights = verdicts(findings, store, metric)
            assert nights.index(REGRESSION) == 30, (store, metric, nights)
            step = next(f for f in findings if (f.store, f.metric, f.run_id) == (store, metric, night_id(30)))
            assert step.change_pct == pytest.approx(size, abs=7)
            assert step.change_abs == pytest.approx(step.value - step.baseline_median)
            assert nights[:5] == [NOT_ENOUGH_HISTORY] * 5
            # A lasting regression does not widen the band and hide itself: it stays flagged
            # until 5 (min_samples) nights have shown it, then it is the new normal.
            assert nights[30:35] == [REGRESSION] * 5, (store, metric, nights[30:])
            assert set(nights[35:]) == {OK}, (store, metric, nights[30:])
            accepted = next(
                f for f in findings if (f.store, f.metric, f.run_id) == (store, metric, night_id(34))
            )
            assert accepted.note.startswith("5 of the last 14 nights")
            assert f"nights since run {night_id(30)} are the baseline" in accepted.note


def test_at_three_percent_noise_a_thirty_percent_step_is_flagged_on_its_night():
    rng = np.random.default_rng(31)
    series = {}
    for s in range(100):
        throughput, p99 = noisy(rng, 31, 0.03, 5000), noisy(rng, 31, 0.03, 800)
        throughput[30], p99[30] = throughput[30] * 0.7, p99[30] * 1.3
        series[f"s{s:03d}"] = list(zip(throughput, p99, strict=True))
    history, infos = history_of(series)

    frame = findings_frame(judge_history(history, infos, run_ids=[night_id(30)]))

    frame = frame[frame["metric"].isin(["throughput_ops_s", "latency_p99_us"])]
    assert len(frame) == 200
    assert (frame["verdict"] == REGRESSION).mean() >= 0.95


def test_pure_noise_raises_false_alarms_on_well_under_one_percent_of_judged_nights():
    rng = np.random.default_rng(2026)
    series = {}
    for s in range(300):
        cv = rng.uniform(0.03, 0.05)
        series[f"s{s:03d}"] = list(zip(noisy(rng, 30, cv, 4000), noisy(rng, 30, cv, 900), strict=True))
    history, infos = history_of(series)
    rule = RegressionRule(metrics=("throughput_ops_s", "latency_p99_us"))

    found = Counter(f.verdict for f in judge_history(history, infos, rule))

    judged = found[OK] + found[REGRESSION] + found[IMPROVEMENT]
    assert judged == 300 * 2 * (30 - 5)  # judged from the 5th earlier night on
    assert found[NOT_ENOUGH_HISTORY] == 300 * 2 * 5
    rate = (found[REGRESSION] + found[IMPROVEMENT]) / judged
    print(f"false-alarm rate on pure noise: {rate:.3%} of {judged} judged nights ({dict(found)})")
    assert rate < 0.01, f"{rate:.3%} of judged nights flagged on pure noise"


def test_fewer_nights_than_the_minimum_is_not_enough_history_not_a_regression():
    history, infos = history_of({"postgres": [(1000.0, 200.0)] * 4 + [(500.0, 400.0)]})

    findings = detect(history, infos, night_id(4))

    assert {f.verdict for f in findings} == {NOT_ENOUGH_HISTORY}
    assert {f.samples for f in findings} == {4}
    assert all(f.baseline_median is None and f.change_pct is None for f in findings)
    assert not has_regressions(findings)
    assert "not enough history (4 comparable nights)" in findings[0].message


def test_a_server_upgrade_starts_a_new_baseline_instead_of_an_alarm():
    rng = np.random.default_rng(7)
    throughput, p99 = noisy(rng, 30, 0.02, 5000), noisy(rng, 30, 0.02, 800)
    throughput[20:] *= 0.70  # the new version is 30 % slower: a known, accepted change
    p99[20:] *= 1.40
    throughput[28] *= 0.80  # and night 28 is a real regression within the new version
    history, infos = history_of(
        {"postgres": list(zip(throughput, p99, strict=True))}, {"postgres": {20: {"server.version": "16.4"}}}
    )

    findings = judge_history(history, infos)

    nights = verdicts(findings, "postgres", "throughput_ops_s")
    assert nights[20] == NEW_BASELINE
    assert nights[21:25] == [NOT_ENOUGH_HISTORY] * 4  # 1 to 4 nights of 16.4 so far
    assert nights[25:28] == [OK] * 3  # judged again from the 5th night of the new version
    assert nights[28] == REGRESSION
    assert REGRESSION not in verdicts(findings, "postgres", "latency_p99_us")[:28]
    upgrade = [f for f in findings if f.run_id == night_id(20)]
    assert {f.verdict for f in upgrade} == {NEW_BASELINE}
    assert {f.config_change for f in upgrade} == {"server version 15.19 → 16.4"}
    assert "configuration changed: server version 15.19 → 16.4" in upgrade[0].message
    after = next(f for f in findings if (f.run_id, f.metric) == (night_id(28), "throughput_ops_s"))
    assert after.samples == 8 and set(after.baseline_runs) == {night_id(n) for n in range(20, 28)}
    assert after.config_change is None


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"versions.driver": {"psycopg": "3.3.10"}}, "client psycopg 3.3.9 → 3.3.10"),
        ({"versions.locust": "2.48.0"}, "client locust 2.47.0 → 2.48.0"),
        ({"settings.users": 32}, "users 16 → 32"),
        ({"settings.processes": 4}, "load processes 2 → 4"),
        ({"settings.target_rate": 2000}, "target rate none → 2000"),
        ({"workload.record_count": 100000}, "record count 10000 → 100000"),
        ({"workload.operations": {"read": 0.95, "update": 0.05}}, "operation mix"),
        ({"host.hostname": "bench-02"}, "host bench-01 → bench-02"),
        ({"url": "postgresql://optistack:***@db-02.internal:5432/optistack"}, "server host db-01.internal → db-02.internal"),
    ],
)  # fmt: skip
def test_every_kind_of_configuration_change_starts_a_new_baseline(change, said):
    history, infos = history_of(
        {"postgres": [(1000.0, 200.0)] * 10 + [(700.0, 300.0)]}, {"postgres": {10: change}}
    )

    findings = detect(history, infos, night_id(10))

    assert {f.verdict for f in findings} == {NEW_BASELINE}
    assert said in findings[0].config_change
    assert not has_regressions(findings)


def test_what_does_not_shape_the_figures_does_not_start_a_new_baseline():
    unimportant = {"settings.seed": 7, "workload.description": "reworded", "command": "optistack run ...",
                   "settings.spawn_rate": 4, "url": "postgresql://other:***@db-01.internal:6432/optistack"}  # fmt: skip
    history, infos = history_of(
        {"postgres": [(1000.0, 200.0)] * 10 + [(700.0, 300.0)]}, {"postgres": {10: unimportant}}
    )

    findings = detect(history, infos, night_id(10))

    assert {f.config_change for f in findings} == {None}
    assert has_regressions(findings)


def test_back_to_an_earlier_configuration_is_compared_with_its_own_nights():
    nights = [(1000.0, 200.0)] * 10 + [(600.0, 350.0)] * 3 + [(1001.0, 201.0)]
    history, infos = history_of(
        {"postgres": nights}, {"postgres": {10: {"server.version": "16.4"}, 13: {"server.version": "15.19"}}}
    )

    findings = detect(history, infos, night_id(13))

    assert {f.verdict for f in findings} == {OK}
    assert {f.samples for f in findings} == {10}
    # 15.19 ran within the last 14 nights: a return, not a new configuration.
    assert {f.config_change for f in findings} == {None}


def test_configurations_that_take_turns_each_keep_their_own_baseline():
    # Two matrix entries of one workload, 16 and 64 users, run every night one after the other.
    rng = np.random.default_rng(64)
    rows, infos = [], {}
    for night in range(24):
        for entry, (users, level) in enumerate(((16, 1000.0), (64, 3000.0))):
            run_id = f"nightly-{night:03d}-{entry}"
            drop = 0.7 if (entry, night) == (1, 23) else 1.0
            rows.append({"run_id": run_id, "store": "postgres", "workload": "a", "operation": "ALL",
                         "throughput_ops_s": level * drop * rng.normal(1, 0.02)})  # fmt: skip
            infos[(run_id, "postgres")] = run_json(run_id, "postgres", night, **{"settings.users": users})

    findings = judge_history(pd.DataFrame(rows), infos, RegressionRule(metrics=("throughput_ops_s",)))

    by_run = {f.run_id: f for f in findings}
    assert by_run["nightly-000-1"].verdict == NEW_BASELINE
    assert by_run["nightly-000-1"].config_change == "users 16 → 64"
    assert [f.run_id for f in findings if f.config_change] == ["nightly-000-1"]
    assert [f.run_id for f in findings if f.verdict == REGRESSION] == ["nightly-023-1"]
    assert by_run["nightly-023-1"].baseline_median == pytest.approx(3000, rel=0.03)


def test_an_ignored_configuration_key_does_not_reset_the_baseline():
    history, infos = history_of(
        {"postgres": [(1000.0, 200.0)] * 10 + [(700.0, 300.0)]},
        {"postgres": {10: {"versions.optistack": "0.2.0"}}},
    )
    assert {f.verdict for f in detect(history, infos, night_id(10))} == {NEW_BASELINE}

    findings = detect(history, infos, night_id(10), RegressionRule(ignore_config=("client.optistack",)))

    assert has_regressions(findings)


def test_the_fingerprint_is_stable_and_an_older_run_json_only_lacks_keys():
    new = run_json("r", "postgres", 0)
    assert fingerprint(run_config(new)) == fingerprint(run_config(json.loads(json.dumps(new))))
    assert fingerprint(run_config(run_json("r", "postgres", 0, **{"settings.users": 16.0}))) == fingerprint(
        run_config(new)
    )
    old = copy.deepcopy(new)
    del old["versions"]["hdrhistogram"]
    assert describe_change(run_config(old), run_config(new)) == "client hdrhistogram not recorded → 0.10.3"


def test_detect_puts_the_most_urgent_first_and_says_how_big():
    history, infos = history_of(
        {
            "postgres": [(1000.0, 200.0)] * 10 + [(700.0, 200.0)],
            "redis": [(9000.0, 60.0)] * 10 + [(9000.0, 60.0)],
        }
    )

    findings = detect(history, infos, [night_id(10)])

    first = findings[0]
    assert (first.store, first.metric, first.verdict) == ("postgres", "throughput_ops_s", REGRESSION)
    assert (first.value, first.baseline_median, first.change_pct, first.change_abs) == (700, 1000, -30, -300)
    assert first.message.startswith(
        "postgres · workload a · ALL · throughput: regression -30.0% (-300 ops/s)"
    )
    assert {f.verdict for f in findings if f.store == "redis"} == {OK}
    assert has_regressions(findings)
    text = summary_text(findings)
    assert text.splitlines()[0] == "regression: 1, ok: 5"
    assert "postgres · workload a · ALL · throughput: regression" in text
    frame = findings_frame(findings)
    assert list(frame.columns[:7]) == [
        "run_id",
        "store",
        "workload",
        "operation",
        "metric",
        "verdict",
        "value",
    ]
    assert frame["change_pct"].dtype == "float64" and frame["samples"].dtype == "int64"
    assert frame.loc[0, "message"] == first.message
    assert findings_frame([]).empty


def test_detect_of_an_unknown_run_says_which_runs_exist():
    history, infos = history_of({"postgres": [(1000.0, 200.0)] * 3})
    with pytest.raises(OptiStackError, match=r"no results for run nightly-999 .*nightly-002"):
        detect(history, infos, "nightly-999")


def test_a_store_without_figures_tonight_has_no_findings():
    history, infos = history_of({"postgres": [(1000.0, 200.0)] * 10})
    infos[(night_id(10), "postgres")] = {"status": "failed", "error": "connect: refused"}

    assert detect(history, infos, night_id(10)) == []


# --- end to end: a results tree on disk --------------------------------------------------------
NIGHTS = 16
LATENCY_COLUMNS = re.compile(r"^(intended_)?latency_.*_us$")


def publish(root: Path, template: Path, run_id: str, night: int, throughput: float, latency: float,
            **changes: Any) -> None:  # fmt: skip
    """A store's folder for one night, from a template folder: figures scaled, run.json updated.

    Written aside and renamed into place, as the engine publishes.
    """
    run_dir = root / "runs" / f"run_id={run_id}"
    run_dir.mkdir(parents=True, exist_ok=True)
    store = template.name.split("=", 1)[1]
    staging = run_dir / f".store={store}.{secrets.token_hex(4)}"
    shutil.copytree(template, staging)
    for name in ("summary.parquet", "timeseries.parquet"):
        table = pq.read_table(staging / name)
        frame = table.to_pandas()
        frame["run_id"] = run_id
        if name == "summary.parquet":
            frame["throughput_ops_s"] *= throughput
            frame["ops"] = (frame["ops"] * throughput).round().astype("int64")
            for column in (c for c in frame.columns if LATENCY_COLUMNS.match(c)):
                frame[column] *= latency
        pq.write_table(pa.Table.from_pandas(frame, schema=table.schema, preserve_index=False), staging / name)
    run = json.loads((staging / "run.json").read_text())
    started = FIRST_NIGHT + timedelta(days=night)
    run.update(
        run_id=run_id,
        started_at=started.isoformat(),
        finished_at=(started + timedelta(minutes=2)).isoformat(),
    )
    for path, value in changes.items():
        section, key = path.split(".")
        run[section][key] = value
    (staging / "run.json").write_text(json.dumps(run, indent=2))
    os.replace(staging, run_dir / f"store={store}")


HOSTILE_VERSION = '7.4.1 <script>alert("x")</script>'


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 nights of postgres and redis: postgres drops 25 % on the last night; redis is
    upgraded (to a version string with markup in it) on night 12 and gets 15 % faster;
    the first night was written by an older version without the newer columns."""
    scratch = tmp_path_factory.mktemp("templates")
    write_run(scratch, "template", stores=[StoreSpec("postgres"), StoreSpec("redis")])
    old_columns = ("latency_p999_us", "histogram", "intended_latency_p99_us", "intended_latency_p50_us")
    write_run(scratch, "old", stores=[StoreSpec("postgres", drop_columns=old_columns)])
    templates = scratch / "runs" / "run_id=template"
    root = tmp_path_factory.mktemp("results")
    rng = np.random.default_rng(16)
    for night in range(NIGHTS):
        run_id = night_id(night)
        drop = 0.75 if night == NIGHTS - 1 else 1.0
        postgres = (
            scratch / "runs" / "run_id=old" / "store=postgres" if night == 0 else templates / "store=postgres"
        )
        publish(root, postgres, run_id, night, drop * rng.normal(1, 0.02), rng.normal(1, 0.02) / drop)
        upgraded = {"server.version": HOSTILE_VERSION} if night >= 12 else {}
        faster = 1.15 if night >= 12 else 1.0
        publish(root, templates / "store=redis", run_id, night, faster * rng.normal(1, 0.02),
                rng.normal(1, 0.02) / faster, **upgraded)  # fmt: skip
    return root


@pytest.fixture(scope="module")
def trend_page(results: Path) -> Path:
    """The trend page of the results tree, written once; tests only read it."""
    return write_trend_report(results, now=datetime(2026, 11, 17, 8, 0, tzinfo=UTC))


def test_the_history_of_a_results_tree_loads_in_one_call_with_older_runs_included(results):
    history = load_runs(results)

    assert history["run_id"].nunique() == NIGHTS
    assert len(history) == NIGHTS * 2 * 3  # 2 stores, 3 rows each (READ, UPDATE, ALL)
    old = history[(history["run_id"] == night_id(0)) & (history["store"] == "postgres")]
    assert old["latency_p999_us"].isna().all() and old["latency_p99_us"].notna().all()
    assert set(load_run_infos(results)) == {
        (night_id(n), s) for n in range(NIGHTS) for s in ("postgres", "redis")
    }


def test_tonight_on_a_results_tree_finds_the_drop_and_the_upgrade(results):
    tonight = night_id(NIGHTS - 1)

    findings = detect_from_results(results, tonight)

    assert has_regressions(findings)
    postgres = {(f.operation, f.metric): f for f in findings if f.store == "postgres"}
    for operation in ("ALL", "READ", "UPDATE"):
        assert postgres[(operation, "throughput_ops_s")].verdict == REGRESSION
        assert postgres[(operation, "throughput_ops_s")].change_pct == pytest.approx(-25, abs=6)
        assert postgres[(operation, "latency_p99_us")].verdict == REGRESSION
        assert postgres[(operation, "throughput_ops_s")].samples == 14  # the window
    # redis: 3 nights of the new version so far, so not judged, and no false alarm.
    assert {f.verdict for f in findings if f.store == "redis"} == {NOT_ENOUGH_HISTORY}
    assert findings[0].verdict == REGRESSION and findings[0].store == "postgres"
    upgrade = detect_from_results(results, night_id(12))
    assert {f.verdict for f in upgrade if f.store == "redis"} == {NEW_BASELINE}
    assert {f.config_change for f in upgrade if f.store == "redis"} == {
        f"server version 7.2.5 → {HOSTILE_VERSION}"
    }
    assert {f.verdict for f in upgrade if f.store == "postgres"} <= {OK, IMPROVEMENT}


def test_the_trend_report_lists_regressions_first_and_draws_every_series(results, trend_page):
    path = trend_page

    assert path == results / "reports" / TREND_FILE
    html = path.read_text()
    assert html.startswith("<!DOCTYPE html>")
    top = html[html.index('id="regressions"') : html.index('id="workload-1"')]
    assert "9 regressions in the latest runs" in top  # postgres: throughput, p50 and p99 of ALL, READ, UPDATE
    assert "postgres" in top and night_id(NIGHTS - 1) in top and re.search(r"<b>-2\d\.\d %</b>", top)
    assert html.index('id="regressions"') < html.index('id="baseline-changes"') < html.index("<svg")
    assert html.count("<svg") == 2  # workload a on postgres and on redis
    assert 'id="trend-a-postgres"' in html and 'id="trend-a-redis"' in html
    # The upgrade is shown as a configuration change, with the server's text escaped.
    assert (
        "configuration changed: server version 7.2.5 → 7.4.1 &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"
        in html
    )
    assert "<script" not in html
    # Self-contained: no external reference, the page's own policy forbids fetching anything.
    assert not EXTERNAL_REFERENCE.search(html)
    assert "default-src 'none'" in html
    assert 'href="index.html"' in html
    assert sorted(p.name for p in path.parent.iterdir()) == [TREND_FILE]  # nothing temporary left


def test_the_trend_report_of_an_empty_results_folder_says_so(tmp_path):
    html = write_trend_report(tmp_path).read_text()

    assert "No measured runs yet" in html
    assert "<svg" not in html


def test_the_index_template_links_the_trend_page_when_told_to():
    from reports.render import _environment

    template = _environment().get_template("index.html.j2")
    assert 'href="trend.html"' in template.render(entries=[], generated_at="now", trend_href="trend.html")
    assert "trend.html" not in template.render(entries=[], generated_at="now")


def test_the_index_does_not_list_the_trend_page_as_a_run(results, trend_page):
    from reports.render import index_entries

    assert trend_page.is_file()
    assert "trend" not in [entry.run_id for entry in index_entries(results)]


@pytest.mark.slow
@pytest.mark.skipif(
    not Path("/usr/bin/chromium").exists(),
    reason="/usr/bin/chromium is missing (apt-get install -y chromium); CI installs it",
)
def test_chromium_opens_the_trend_page_with_its_charts_and_no_console_errors(trend_page, tmp_path):
    from tests.reports.test_browser import chromium, console_errors

    dom = chromium(tmp_path / "profile", trend_page.as_uri(), "--dump-dom")

    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_errors(dom.stderr) == []
    assert len(re.findall(r"<svg\b", dom.stdout)) == 2
    assert re.search(r"<h2>9 regressions in the latest runs</h2>", dom.stdout)
