"""The glue between Airflow and the engine: run ids, params, connections, the matrix."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from workloads.errors import OptiStackError
from workloads.runner import RUN_ID_PATTERN


@pytest.fixture(autouse=True)
def _airflow(airflow_db: Path) -> None:
    """Connections are looked up through Airflow, which needs its configuration."""


@pytest.mark.parametrize(
    ("airflow_run_id", "expected"),
    [
        ("manual__2026-12-04T20:15:00.123456+00:00", "manual__2026-12-04T20-15-00.123456-00-00"),
        ("scheduled__2026-12-05T02:00:00+00:00", "scheduled__2026-12-05T02-00-00-00-00"),
        ("my run/ä", "my-run"),
        ("__odd__", "odd"),
    ],
)
def test_engine_run_id_is_file_safe_and_stable(airflow_run_id: str, expected: str) -> None:
    from optistack_common import engine_run_id

    assert engine_run_id(airflow_run_id) == expected
    assert engine_run_id(airflow_run_id) == engine_run_id(airflow_run_id)
    assert RUN_ID_PATTERN.match(expected)


def test_engine_run_id_of_a_long_id_is_cut_but_unique() -> None:
    from optistack_common import engine_run_id

    first, second = engine_run_id("x" * 150 + "1"), engine_run_id("x" * 150 + "2")
    assert first != second
    assert RUN_ID_PATTERN.match(first) and len(first) <= 100


def test_nightly_run_id_names_the_night_and_the_entry() -> None:
    from optistack_common import nightly_run_id

    when = dt.datetime(2026, 12, 5, 3, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert nightly_run_id(when, 3) == "nightly-20261205T0200Z-3"


def test_options_from_params_maps_zero_to_unset_and_refuses_unknown_names() -> None:
    from optistack_common import options_from_params, param_defaults

    options = options_from_params({**param_defaults(), "target_rate": 0, "processes": 0})
    assert options["target_rate"] is None and options["processes"] is None
    options = options_from_params({**param_defaults(), "target_rate": 500, "processes": 2})
    assert options["target_rate"] == 500 and options["processes"] == 2
    # 0 remote workers: the load runs in local processes; N: Locust's distributed mode.
    assert options_from_params({**param_defaults(), "expect_workers": 0})["expect_workers"] is None
    assert options_from_params({**param_defaults(), "expect_workers": 3})["expect_workers"] == 3
    # an empty sweep list: no sweep
    options = options_from_params({**param_defaults(), "sweep_users": [], "sweep_target_rates": []})
    assert options["sweep_users"] is None and options["sweep_target_rates"] is None
    assert options_from_params({**param_defaults(), "sweep_users": [1, 8]})["sweep_users"] == [1, 8]
    with pytest.raises(OptiStackError, match=r"unknown setting.*record_cont"):
        options_from_params({**param_defaults(), "record_cont": 5})
    with pytest.raises(OptiStackError, match=r"unknown setting.*urls"):  # no URLs through a conf
        options_from_params({**param_defaults(), "urls": {"redis": "redis://evil:6379/0"}})


def test_connection_wins_over_the_environment_and_keeps_host_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    from optistack_common import connection_url, store_url

    assert connection_url("redis") is None
    monkeypatch.setenv("OPTISTACK_REDIS_URL", "redis://127.0.0.1:6379/3")
    assert store_url("redis") == "redis://127.0.0.1:6379/3"
    monkeypatch.setenv("AIRFLOW_CONN_OPTISTACK_REDIS", "redis://:pw@10.0.0.9:6380/4")
    assert store_url("redis") == "redis://:pw@10.0.0.9:6380/4"
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPTISTACK_CASSANDRA", "cassandra://u:p@h1,h2:9042/optistack?replication_factor=1"
    )
    assert connection_url("cassandra") == "cassandra://u:p@h1,h2:9042/optistack?replication_factor=1"


def test_a_connection_of_another_type_takes_the_stores_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    from optistack_common import connection_url

    # What the UI makes when "Generic" is the closest type it offers (stored as JSON).
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPTISTACK_REDIS",
        '{"conn_type": "generic", "host": "127.0.0.1", "port": 6379, "schema": "3", "password": "pw"}',
    )
    assert connection_url("redis") == "redis://:pw@127.0.0.1:6379/3"
    monkeypatch.setenv("AIRFLOW_CONN_OPTISTACK_COCKROACHDB", "postgresql://root@crdb:26257/defaultdb")
    assert connection_url("cockroachdb") == "postgres://root@crdb:26257/defaultdb"  # a scheme it takes


def test_a_store_without_any_url_is_refused_by_the_plan(tmp_path: Path, monkeypatch) -> None:
    from optistack_common import param_defaults, plan_runs

    monkeypatch.setenv("OPTISTACK_RESULTS", str(tmp_path))
    with pytest.raises(
        OptiStackError,
        match=r"no URL for cassandra: add the Airflow Connection optistack_cassandra .*OPTISTACK_CASSANDRA_URL",
    ):
        plan_runs({**param_defaults(), "stores": ["cassandra"]}, "no-url", "test")
    assert not (tmp_path / "runs").exists()


def test_the_plan_in_xcom_has_no_password(tmp_path: Path, monkeypatch) -> None:
    from optistack_common import hydrate, param_defaults, plan_runs

    monkeypatch.setenv("OPTISTACK_RESULTS", str(tmp_path))
    monkeypatch.setenv("AIRFLOW_CONN_OPTISTACK_POSTGRES", "postgresql://bench:Sekr1t-pw@db.example:5432/b")
    (plan,) = plan_runs({**param_defaults(), "stores": ["postgres"]}, "redacted", "test")
    assert "Sekr1t-pw" not in repr(plan)
    assert plan["urls"] == {"postgres": "postgres://bench:***@db.example:5432/b"}
    assert plan["options"]["urls"] == {}
    # each task gets the real URL back by looking it up again
    assert hydrate(plan, "postgres").urls == {"postgres": "postgres://bench:Sekr1t-pw@db.example:5432/b"}
    monkeypatch.setenv("AIRFLOW_CONN_OPTISTACK_POSTGRES", "postgresql://bench:x@elsewhere:5432/b")
    with pytest.raises(OptiStackError, match="connection changed during the run"):
        hydrate(plan, "postgres")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("runs: []", "non-empty list under `runs:`"),
        ("- stores: [redis]", "non-empty list under `runs:`"),
        ("runs: [redis]", "entry 0 .* must be a mapping"),
        ("runs: [{stores: [redis]", "not valid YAML"),
    ],
)
def test_a_malformed_matrix_file_is_refused(tmp_path: Path, text: str, message: str) -> None:
    from optistack_common import load_matrix

    path = tmp_path / "matrix.yaml"
    path.write_text(text)
    with pytest.raises(OptiStackError, match=message):
        load_matrix(path)


def plan_matrix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *entries: str) -> list[dict]:
    """`plan_nightly` on a matrix of these entries (YAML flow mappings), redis and postgres set."""
    from optistack_common import plan_nightly

    matrix = tmp_path / "matrix.yaml"
    matrix.write_text("runs:\n" + "".join(f"  - {entry}\n" for entry in entries))
    monkeypatch.setenv("OPTISTACK_NIGHTLY_MATRIX", str(matrix))
    monkeypatch.setenv("OPTISTACK_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("OPTISTACK_REDIS_URL", "redis://127.0.0.1:6379/3")
    monkeypatch.setenv("OPTISTACK_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    return plan_nightly(dt.datetime(2026, 1, 2, 2, tzinfo=dt.UTC), "scheduled__x", "optistack_nightly")


def test_the_nightly_plan_names_every_invalid_entry_and_runs_none(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(OptiStackError) as refused:
        plan_matrix(
            tmp_path,
            monkeypatch,
            "{stores: [redis], workload: a}",
            "{stores: [redis], record_count: 0}",
            "{stores: [redis], users: 4, duratoin_s: 3}",
        )
    message = str(refused.value)
    assert "entry 1:" in message and "record_count" in message
    assert "entry 2:" in message and "duratoin_s" in message
    assert "entry 0" not in message
    assert not (tmp_path / "results" / "runs").exists()


def test_a_sweep_in_the_form_plans_one_run_per_step(tmp_path: Path, monkeypatch) -> None:
    from optistack_common import param_defaults, plan_benchmark

    monkeypatch.setenv("OPTISTACK_RESULTS", str(tmp_path))
    monkeypatch.setenv("OPTISTACK_REDIS_URL", "redis://:Sekr1t-pw@127.0.0.1:6379/3")
    settings = {**param_defaults(), "stores": ["postgres", "redis"], "sweep_target_rates": [250, 1000.5]}
    monkeypatch.setenv("OPTISTACK_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    items = plan_benchmark(settings, "manual__x", "optistack_benchmark")
    assert [item["label"] for item in items] == [
        "rate=250 postgres",
        "rate=250 redis",
        "rate=1000.5 postgres",
        "rate=1000.5 redis",
    ]
    assert [item["plan"]["run_id"] for item in items] == ["manual__x.r250"] * 2 + ["manual__x.r1000.5"] * 2
    assert [item["plan"]["options"]["target_rate"] for item in items] == [250, 250, 1000.5, 1000.5]
    # the steps share the stores: each gets its own namespace, or one would seed over the other
    assert [item["plan"]["options"]["namespace"] for item in items] == [
        "optistack_usertable_0",
        "optistack_usertable_0",
        "optistack_usertable_1",
        "optistack_usertable_1",
    ]
    assert "Sekr1t-pw" not in repr(items)


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"sweep_users": [4]}, "a sweep needs 2 to 20 values"),
        ({"sweep_users": [1, 4], "sweep_target_rates": [10, 20]}, "sweep either users or target rates"),
    ],
)
def test_a_sweep_the_form_cannot_refuse_is_refused_by_the_plan(
    tmp_path: Path, monkeypatch, sweep: dict, message: str
) -> None:
    from optistack_common import param_defaults, plan_runs

    monkeypatch.setenv("OPTISTACK_RESULTS", str(tmp_path))
    monkeypatch.setenv("OPTISTACK_REDIS_URL", "redis://127.0.0.1:6379/3")
    with pytest.raises(OptiStackError, match=message):
        plan_runs({**param_defaults(), "stores": ["redis"], **sweep}, "bad-sweep", "test")
    assert not (tmp_path / "runs").exists()


def test_a_nightly_entry_may_be_a_sweep(tmp_path: Path, monkeypatch) -> None:
    items = plan_matrix(tmp_path, monkeypatch, "{stores: [redis]}", "{stores: [redis], sweep_users: [1, 8]}")
    assert [
        (item["label"], item["plan"]["run_id"], item["plan"]["options"]["namespace"]) for item in items
    ] == [
        ("0: redis", "nightly-20260102T0200Z-0", "optistack_usertable_0"),
        ("1: users=1 redis", "nightly-20260102T0200Z-1.u1", "optistack_usertable_1"),
        ("1: users=8 redis", "nightly-20260102T0200Z-1.u8", "optistack_usertable_2"),
    ]


def test_nightly_entries_keep_their_namespace_unless_they_share_a_store(tmp_path: Path, monkeypatch) -> None:
    items = plan_matrix(
        tmp_path,
        monkeypatch,
        "{stores: [redis]}",
        "{stores: [postgres]}",
        "{stores: [redis], namespace: optistack_other}",
    )
    assert [item["plan"]["options"]["namespace"] for item in items] == [
        "optistack_usertable",
        "optistack_usertable",
        "optistack_other",
    ]


def test_a_namespace_too_long_to_share_is_refused_by_the_plan(tmp_path: Path, monkeypatch) -> None:
    from optistack_common import param_defaults, plan_benchmark

    monkeypatch.setenv("OPTISTACK_RESULTS", str(tmp_path))
    monkeypatch.setenv("OPTISTACK_REDIS_URL", "redis://127.0.0.1:6379/3")
    namespace = "optistack_" + "n" * 38  # the longest the form takes
    settings = {**param_defaults(), "stores": ["redis"], "sweep_users": [1, 2], "namespace": namespace}
    with pytest.raises(
        OptiStackError, match=r"too long to give each of the 2 runs .* shorten it to 46 characters"
    ):
        plan_benchmark(settings, "manual__x", "optistack_benchmark")
    settings["namespace"] = "optistack_" + "n" * 36
    items = plan_benchmark(settings, "manual__x", "optistack_benchmark")
    assert [len(item["plan"]["options"]["namespace"]) for item in items] == [48, 48]
