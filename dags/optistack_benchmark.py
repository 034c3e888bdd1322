"""OptiStack benchmark: one run over the stores chosen in the trigger form.

`plan` validates the settings again (a conf from the API or CLI never saw the form) and
finds every store's URL before anything connects. Each store then runs
provision -> seed -> run -> validate -> publish in its own mapped task group; publish
runs even after a failure, so a failed store is published with the reason. `report`
writes the HTML comparison report and the index, then fails the DAG run if any store
did not succeed. Results: `$OPTISTACK_RESULTS/runs/run_id=<id>/`, report
`$OPTISTACK_RESULTS/reports/<id>.html`, where `<id>` is this DAG run's id made file-safe.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import TriggerRule, dag, task
from optistack_common import (
    REPORTS_ASSET,
    benchmark_params,
    plan_benchmark,
    store_benchmark,
    write_reports,
)


@dag(
    dag_id="optistack_benchmark",
    dag_display_name="OptiStack benchmark",
    description="Benchmark data stores with a YCSB workload; ends in an HTML comparison report",
    doc_md=__doc__,
    schedule=None,
    start_date=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    tags=["optistack", "benchmark"],
    params=benchmark_params(),
    # The stores share the workers' machine: one benchmark task at a time keeps one
    # store's seeding or load from skewing another's measurements.
    max_active_runs=1,
    max_active_tasks=1,
    default_args={"owner": "optistack", "retries": 0},
)
def optistack_benchmark() -> None:
    @task
    def plan(params: dict | None = None, run_id: str | None = None) -> list[dict]:
        return plan_benchmark(params or {}, run_id or "", "optistack_benchmark")

    @task(trigger_rule=TriggerRule.ALL_DONE, outlets=[REPORTS_ASSET])
    def report(store_runs: list[dict] | None) -> list[str]:
        return write_reports(store_runs)

    store_runs = plan()
    store_benchmark.expand_kwargs(store_runs) >> report(store_runs)


optistack_benchmark()
