"""Every DAG file imports cleanly, has the expected shape, and its form only allows what runs."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pytest

from tests.dags.conftest import DAGS, REPO
from workloads.runner import WORKLOAD_DIRS, parse_options
from workloads.spec import CORE_WORKLOADS, load_workload
from workloads.stores import store_names

STAGE_TASKS = ["store.provision", "store.seed", "store.run", "store.validate", "store.publish"]
EXPECTED_TASKS = {
    "optistack_benchmark": {"plan", *STAGE_TASKS, "report"},
    "optistack_nightly": {"plan", *STAGE_TASKS, "report", "regressions"},
}
FORM_PARAMS = [
    "stores",
    "workload",
    "record_count",
    "duration_s",
    "users",
    "target_rate",
    "processes",
    "warmup_s",
    "field_count",
    "field_length",
    "teardown",
]


def test_every_dag_file_imports_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == set(EXPECTED_TASKS)
    dag_files = {Path(dag.fileloc).name for dag in dagbag.dags.values()}
    assert dag_files == {p.name for p in DAGS.glob("*.py") if p.name != "optistack_common.py"}


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_TASKS))
def test_dag_shape(dagbag, dag_id: str) -> None:
    from airflow.utils.dag_cycle_tester import check_cycle

    dag = dagbag.get_dag(dag_id)
    check_cycle(dag)  # raises on a cycle
    assert set(dag.task_ids) == EXPECTED_TASKS[dag_id]
    assert "optistack" in dag.tags
    assert dag.catchup is False
    # stage order inside the store group, then the report after the whole group
    chain = ["plan", *STAGE_TASKS, "report"]
    for upstream, downstream in itertools.pairwise(chain):
        assert downstream in dag.get_task(upstream).downstream_task_ids, (upstream, downstream)
    # failures are published and reported, not skipped
    assert dag.get_task("store.publish").trigger_rule == "all_done"
    assert dag.get_task("report").trigger_rule == "all_done"
    assert dag.get_task("store.run").retries == 0
    assert [a.uri for a in dag.get_task("store.publish").outlets] == ["optistack://results/runs"]
    assert [a.uri for a in dag.get_task("report").outlets] == ["optistack://results/reports"]
    assert dag.max_active_tasks == 1  # one measurement at a time on a shared machine
    if dag_id == "optistack_nightly":  # judged against earlier nights even when a store failed
        assert "regressions" in dag.get_task("report").downstream_task_ids
        assert dag.get_task("regressions").trigger_rule == "all_done"
        assert dag.params["fail_on_regression"] is True


def test_schedules(dagbag) -> None:
    benchmark = dagbag.get_dag("optistack_benchmark")
    nightly = dagbag.get_dag("optistack_nightly")
    assert benchmark.schedule is None
    assert nightly.schedule == "0 2 * * *"
    assert type(nightly.timetable).__name__ == "CronTriggerTimetable"
    assert nightly.start_date.tzinfo is not None and nightly.start_date.utcoffset().total_seconds() == 0


def test_form_params_explain_themselves_and_defaults_run(dagbag) -> None:
    from optistack_common import options_from_params

    params = dagbag.get_dag("optistack_benchmark").params
    assert list(params)[: len(FORM_PARAMS)] == FORM_PARAMS
    for name in params:
        schema = params.get_param(name).schema
        assert schema.get("title") and params.get_param(name).description, name
    params.validate()  # the defaults pass the form's own schema
    defaults = {name: params[name] for name in params}
    options = parse_options({**options_from_params(defaults), "run_id": "integrity"})
    assert options.stores == ["postgres", "redis"]
    assert (options.record_count, options.duration_s, options.users, options.warmup_s) == (10_000, 30, 16, 5)
    assert (options.target_rate, options.processes) == (None, None)  # 0 in the form: closed loop, per core
    assert options.expect_workers is None  # 0 in the form: local load processes
    assert (options.sweep_users, options.sweep_target_rates) == (None, None)  # [] in the form: no sweep
    assert (options.field_count, options.field_length, options.teardown) == (10, 100, True)


def test_stores_is_a_multi_select_of_every_store(dagbag) -> None:
    schema = dagbag.get_dag("optistack_benchmark").params.get_param("stores").schema
    assert schema["type"] == "array"
    assert sorted(schema["items"]["enum"]) == store_names()
    # The UI renders an array as a multi-select when it has `examples` (or a top-level enum).
    assert schema["examples"] == schema["items"]["enum"]
    assert schema["uniqueItems"] is True and schema["minItems"] == 1
    assert set(schema["values_display"]) == set(store_names())


def test_workload_dropdown_lists_core_and_custom_workloads(dagbag) -> None:
    schema = dagbag.get_dag("optistack_benchmark").params.get_param("workload").schema
    custom = sorted(p.stem for d in WORKLOAD_DIRS for p in d.glob("*.yaml"))
    assert "read_mostly_uniform" in custom
    assert schema["enum"] == [*CORE_WORKLOADS, *custom]
    for name in schema["enum"]:
        load_workload(name, WORKLOAD_DIRS)  # every choice is a workload that parses
        assert schema["values_display"][name].startswith(f"{name}: ")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("stores", ["oracle"]),
        ("stores", ["redis", "redis"]),
        ("stores", []),
        ("workload", "z"),
        ("record_count", 0),
        ("record_count", 1_000_000_001),
        ("duration_s", 0),
        ("users", -1),
        ("users", 10_001),
        ("target_rate", -5),
        ("processes", 257),
        ("expect_workers", -1),
        ("expect_workers", 257),
        ("warmup_s", 3_601),
        ("field_count", 0),
        ("field_length", 1_000_001),
        ("teardown", "maybe"),
        ("namespace", "users"),
        ("sweep_users", [0, 4]),
        ("sweep_users", [4, 4]),
        ("sweep_users", list(range(1, 22))),
        ("sweep_target_rates", [0, 100]),
        ("sweep_target_rates", "100,200"),
    ],
)
def test_form_refuses_impossible_values(dagbag, name: str, value: object) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dagbag.get_dag("optistack_benchmark").params)
    with pytest.raises(ParamValidationError):
        params[name] = value  # a ParamsDict validates on assignment, as a trigger does


def test_nightly_matrix_in_the_repository_is_valid() -> None:
    from optistack_common import DEFAULT_NIGHTLY_MATRIX, load_matrix, options_from_params, param_defaults

    assert DEFAULT_NIGHTLY_MATRIX == REPO / "include" / "benchmarks" / "nightly.yaml"
    entries = load_matrix(DEFAULT_NIGHTLY_MATRIX)
    assert entries
    for index, entry in enumerate(entries):
        options = parse_options(
            {**options_from_params({**param_defaults(), **entry}), "run_id": f"n-{index}"}
        )
        load_workload(options.workload, WORKLOAD_DIRS)
