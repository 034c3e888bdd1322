"""OptiStack nightly: every run of the benchmark matrix, at 02:00 UTC.

The matrix is `include/benchmarks/nightly.yaml` (or `$OPTISTACK_NIGHTLY_MATRIX`), read when
the run starts: a list of runs under `runs:`, each with the trigger form's settings of
`optistack_benchmark` (missing ones take the form's defaults). `plan` validates every
entry before anything connects. Entry N of a night has the run id
`nightly-<YYYYMMDDTHHMM>Z-N`, so entry N is comparable night after night. `report` writes
one report per run and the index; `regressions` then judges tonight against the earlier
nights of the same configuration (reports/regression.py), writes the trend report, and
fails on a regression unless the `fail_on_regression` param is off.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, TriggerRule, dag, task
from optistack_common import REPORTS_ASSET, detect_regressions, plan_nightly, store_benchmark, write_reports


@dag(
    dag_id="optistack_nightly",
    dag_display_name="OptiStack nightly",
    description="The nightly benchmark matrix (include/benchmarks/nightly.yaml), a report per run",
    doc_md=__doc__,
    schedule="0 2 * * *",
    start_date=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    tags=["optistack", "benchmark", "nightly"],
    max_active_runs=1,
    max_active_tasks=1,  # one measurement at a time on a shared machine
    default_args={"owner": "optistack", "retries": 0},
    params={
        "fail_on_regression": Param(
            True,
            type="boolean",
            title="Fail on regression",
            description="Fail the run when tonight regressed against earlier nights, so Airflow's "
            "alerting and failure callbacks fire.",
        )
    },
)
def optistack_nightly() -> None:
    @task
    def plan(
        logical_date: dt.datetime | None = None,
        dag_run: object | None = None,
        run_id: str | None = None,
    ) -> list[dict]:
        # A manual run may have no logical date; it still has a run_after.
        when = logical_date or dag_run.run_after  # type: ignore[union-attr]
        return plan_nightly(when, run_id or "", "optistack_nightly")

    @task(trigger_rule=TriggerRule.ALL_DONE, outlets=[REPORTS_ASSET])
    def report(store_runs: list[dict] | None) -> list[str]:
        return write_reports(store_runs)

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def regressions(store_runs: list[dict] | None, params: dict | None = None) -> dict:
        return detect_regressions(store_runs, bool((params or {}).get("fail_on_regression", True)))

    store_runs = plan()
    store_benchmark.expand_kwargs(store_runs) >> report(store_runs) >> regressions(store_runs)


optistack_nightly()
