"""Resource sampling against the real servers: a short real run per store, read back from
resources.parquet and run.json, and each store's `stats()` on its own.

Namespaces are `optistack_resources_*` plus a random suffix, results go to tmp_path, so
parallel runs of other tests never collide with these.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pandas as pd
import psutil
import psycopg
import pytest
import redis

from reports.render import write_report
from workloads import runner
from workloads.resources import ResourceSampler, find_listener, is_local_host, url_port
from workloads.stores import get_store
from workloads.stores.base import StoreSettings

pytestmark = pytest.mark.slow

RESOURCE_COLUMNS = [
    "run_id",
    "store",
    "time",
    "offset_s",
    "in_window",
    "source",
    "process",
    "pid",
    "metric",
    "value",
]


def namespace() -> str:
    return f"optistack_resources_{uuid.uuid4().hex[:8]}"


def short_run(tmp_path: Path, store: str, url: str, **options) -> tuple[Path, pd.DataFrame, dict, pd.Series]:
    """A tiny real run; returns the store folder, resources.parquet, run.json and the ALL summary row."""
    plan = runner.plan(
        {
            "stores": [store],
            "workload": "b",
            "record_count": 500,
            "duration_s": 2,
            "warmup_s": 0.5,
            "users": 2,
            "processes": 2,
            "results": str(tmp_path / "results"),
            "run_id": f"resources-{store}",
            "namespace": namespace(),
            "urls": {store: url},
            **options,
        }
    )
    lines: list[str] = []
    [folder] = runner.run(plan, log=lines.append)
    info = json.loads((folder / "run.json").read_text())
    assert info["status"] == "ok", "\n".join(lines)
    summary = pd.read_parquet(folder / "summary.parquet")
    frame = pd.read_parquet(folder / "resources.parquet")
    return folder, frame, info, summary[summary["operation"] == "ALL"].iloc[0]


def check_load_rows(frame: pd.DataFrame, processes: int) -> None:
    """Every load process (a master and its workers) has CPU and RSS about once a second."""
    load = frame[frame["source"] == "load"]
    roles = {label.split()[0] for label in load["process"]}
    assert roles == {"master", "worker"}
    assert load["pid"].nunique() == processes + 1  # the master and its forked workers
    for _, rows in load.groupby("pid"):
        rss = rows[rows["metric"] == "rss_bytes"]["value"]
        assert len(rss) and (rss > 0).all()
    master = load[load["process"].str.startswith("master")]
    cpu = master[master["metric"] == "cpu_percent"].sort_values("time")
    assert len(cpu) >= 3, cpu
    gaps = cpu["time"].diff().dropna().dt.total_seconds()
    assert gaps.median() == pytest.approx(1.0, abs=0.15)
    # The load itself is busy: its processes used CPU inside the measured window.
    in_window = load[(load["metric"] == "cpu_percent") & load["in_window"]]
    assert in_window.groupby("time")["value"].sum().max() > 5.0


def test_a_postgres_run_samples_load_processes_server_and_pg_stat_database(tmp_path, store_server):
    postgres = store_server("postgres")
    _, frame, info, all_row = short_run(tmp_path, "postgres", postgres.url)

    assert list(frame.columns) == RESOURCE_COLUMNS
    assert str(frame["time"].dt.tz) == "UTC"
    assert set(frame["source"]) == {"load", "server", "store"}
    assert frame["in_window"].any() and not frame["in_window"].all()
    check_load_rows(frame, processes=2)

    # The server rows are the postmaster's tree: its pid is the parent of a backend's.
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        postmaster = psutil.Process(backend).ppid()  # while connected: the backend exits on close
    server = frame[frame["source"] == "server"]
    assert set(server["pid"]) == {postmaster}
    assert server["process"].iloc[0] == f"{psutil.Process(postmaster).name()} {postmaster}"
    tree = server[server["metric"] == "processes"]["value"]
    assert tree.max() >= 2 + 1  # the postmaster plus a backend per load user at least
    server_cpu = server[(server["metric"] == "cpu_percent") & server["in_window"]]["value"]
    assert len(server_cpu) >= 1 and server_cpu.max() > 0

    # pg_stat_database: every read is a transaction, so xact_commit grows by at least the
    # operations measured over the whole sampling (which ends after the backends exited).
    commits = frame[(frame["source"] == "store") & (frame["metric"] == "xact_commit")].sort_values("time")
    assert commits["value"].is_monotonic_increasing
    assert commits["value"].iloc[-1] - commits["value"].iloc[0] >= all_row["ops"]
    assert {"numbackends", "blks_hit", "tup_fetched"} <= set(frame[frame["source"] == "store"]["metric"])

    resources = info["resources"]
    assert resources["load"]["processes"] == 3
    assert resources["load"]["cpu_percent_max"] >= resources["load"]["cpu_percent_mean"] > 0
    assert resources["server"]["process"].endswith(str(postmaster))
    assert resources["server"]["rss_bytes_max"] > 0
    window = resources["store"]["window"]
    assert window["xact_commit"]["kind"] == "counter" and window["xact_commit"]["delta"] > 0
    assert window["numbackends"]["kind"] == "gauge" and window["numbackends"]["max"] >= 2
    assert resources["sampler_cpu_percent"] < 5.0  # the sampler's own thread, over the load stage

    # The report draws it: a chart and the statistics table for this store.
    html = write_report(tmp_path / "results", "resources-postgres").read_text()
    section = html[html.index('id="resources"') :]
    assert 'id="resources-0-figure_1"' in section
    assert "CPU and memory over time of postgres" in section
    assert f"server: {psutil.Process(postmaster).name()} {postmaster}" in section
    assert ">xact_commit</td>" in section


def test_a_redis_run_counts_its_commands_in_info(tmp_path, store_server):
    target = store_server("redis")
    _, frame, info, all_row = short_run(tmp_path, "redis", target.url)

    check_load_rows(frame, processes=2)
    server = frame[frame["source"] == "server"]
    assert server["process"].iloc[0].startswith("redis-server")
    assert (server[server["metric"] == "rss_bytes"]["value"] > 0).all()
    # Each operation is at least one command; other clients of this server only add.
    window = info["resources"]["store"]["window"]
    assert window["total_commands_processed"]["delta"] >= all_row["ops"]
    assert window["connected_clients"]["max"] >= 2  # the load users and the sampler
    commands = frame[frame["metric"] == "total_commands_processed"].sort_values("time")["value"]
    assert commands.is_monotonic_increasing and commands.iloc[-1] > commands.iloc[0]


def connect(store: str, url: str):
    return get_store(store).connect(url, StoreSettings(namespace=namespace(), connect_timeout_s=5))


def test_postgres_stats_read_pg_stat_database(store_server):
    target = store_server("postgres")
    with connect("postgres", target.url) as conn:
        before = conn.stats()
        assert set(before) == {
            "numbackends",
            "xact_commit",
            "xact_rollback",
            "blks_read",
            "blks_hit",
            "tup_returned",
            "tup_fetched",
            "tup_inserted",
            "tup_updated",
            "tup_deleted",
        }
        assert before["numbackends"] >= 1  # this connection at least
        # Another backend commits 20 transactions and exits, which publishes its counts.
        with psycopg.connect(target.url, autocommit=True) as other:
            for _ in range(20):
                other.execute("SELECT 1")
        deadline = time.monotonic() + 5
        while (after := conn.stats())["xact_commit"] < before["xact_commit"] + 20:
            assert time.monotonic() < deadline, (before, after)
            time.sleep(0.2)
    assert set(type(conn).stats_counters) == set(before) - {"numbackends"}


def test_redis_stats_read_info(store_server):
    target = store_server("redis")
    with connect("redis", target.url) as conn:
        before = conn.stats()
        client = redis.Redis.from_url(target.url)
        for _ in range(25):
            client.ping()
        client.close()
        after = conn.stats()
    assert {
        "used_memory",
        "connected_clients",
        "instantaneous_ops_per_sec",
        "total_commands_processed",
        "keyspace_hits",
        "keyspace_misses",
    } <= set(before)
    assert after["total_commands_processed"] - before["total_commands_processed"] >= 25 + 1
    assert before["used_memory"] > 0 and before["connected_clients"] >= 1


def test_mongodb_stats_take_what_the_server_answers(store_server):
    target = store_server("mongodb")
    with connect("mongodb", target.url) as conn:
        stats = conn.stats()
        status = conn._db.command("serverStatus")
    if status.get("process") != "nx_27017":
        pytest.skip(f"written for nx-27017's answer; this server is {status.get('process')}")
    # nx-27017 answers connections and its resident memory in bytes, and no opcounters.
    assert not any(name.startswith("opcounters.") for name in stats)
    assert stats["connections.current"] >= 1
    rss = psutil.Process(status["pid"]).memory_info().rss
    assert stats["mem.resident_bytes"] == pytest.approx(rss, rel=0.2)


def test_a_store_without_statistics_still_has_its_local_server_sampled(tmp_path, store_server):
    target = store_server("mysql")
    _, frame, info, _ = short_run(tmp_path, "mysql", target.url)

    check_load_rows(frame, processes=2)
    listener, _ = find_listener(url_port(target.url))
    server = frame[frame["source"] == "server"]
    assert set(server["pid"]) == {listener.pid}
    assert set(server["metric"]) == {"cpu_percent", "rss_bytes", "processes"}
    assert not (frame["source"] == "store").any()
    assert info["resources"]["store"] == {"absent": "OptiStack reads no server statistics from mysql"}
    assert info["resources"]["server"]["process"] == f"{listener.name()} {listener.pid}"


def test_a_statistics_connection_that_dies_stops_only_that_source(store_server):
    target = store_server("postgres")
    lines: list[str] = []
    sampler = ResourceSampler(
        get_store("postgres"), target.url, StoreSettings(namespace=namespace()), log_line=lines.append
    )
    sampler.start()
    deadline = time.monotonic() + 10
    while not any(s.source == "store" for s in list(sampler.samples)):
        assert time.monotonic() < deadline, sampler.absent
        time.sleep(0.1)
    backend = sampler._conn._conn.info.backend_pid  # this sampler's own statistics backend
    with psycopg.connect(target.url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (backend,)).fetchone()[0]
    killed_ns = time.time_ns()
    time.sleep(2.5)
    samples = sampler.stop()

    assert sampler.absent["store"].startswith("the statistics query failed")
    assert lines == [f"resources: store not sampled: {sampler.absent['store']}"]  # logged once
    assert max(s.time_ns for s in samples if s.source == "store") < killed_ns
    # The server is still sampled after the statistics connection died.
    assert sum(1 for s in samples if s.source == "server" and s.time_ns > killed_ns) >= 2 * 3


def test_which_hosts_are_this_machine():
    assert is_local_host("127.0.0.1") and is_local_host("localhost") and is_local_host("::1")
    mine = next(a.address for addrs in psutil.net_if_addrs().values() for a in addrs if a.family == 2)
    assert is_local_host(mine)
    assert not is_local_host("192.0.2.7")  # TEST-NET-1: never a host's own address
    assert url_port("postgresql://u@h/db") == 5432 and url_port("redis://h:7000/0") == 7000
    assert url_port("dynamodb://h?region=x") is None


def test_a_remote_server_is_recorded_as_absent_with_the_reason():
    sampler = ResourceSampler(
        get_store("redis"),
        "redis://192.0.2.7:6379/0",
        StoreSettings(namespace=namespace(), connect_timeout_s=0.5),
    )
    sampler.start()
    time.sleep(0.2)
    sampler.stop()
    assert sampler.absent["server"].startswith("the server (192.0.2.7) is not on this host")
    assert sampler.absent["store"].startswith("cannot open a statistics connection")
