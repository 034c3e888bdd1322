"""`optistack local up|down|status` against real server processes.

Every test uses its own state dir and free, non-default ports, so it never touches a
developer's `./.optistack/local` servers or the system servers on the default ports,
and every server a test starts is stopped by `local_down` even when the test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import psutil
import psycopg
import pymongo
import pytest
import redis

from workloads import local
from workloads.errors import OptiStackError
from workloads.local import (
    LOCAL_STORES,
    STATE_FILE,
    LocalServer,
    format_env,
    local_down,
    local_status,
    local_up,
    local_urls,
    pgbench_path,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on, distinct from each other (all bound at once, then released)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def listener(port: int) -> str | None:
    """The command line of whatever listens on 127.0.0.1:`port`, or None.

    Read from the socket table, not by connecting: a connect() to a free port in the
    ephemeral range can pick that same port as its source and connect to itself
    (TCP simultaneous open), which once made a dead server look alive here.
    """
    for conn in psutil.net_connections(kind="tcp4"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            try:
                return " ".join(psutil.Process(conn.pid).cmdline()) if conn.pid else "(pid unknown)"
            except psutil.Error:
                return f"(pid {conn.pid}, gone)"
    return None


@contextlib.contextmanager
def state_dir() -> Iterator[Path]:
    """A fresh state dir that is always brought down and removed.

    Not pytest's tmp_path: that lives under /tmp/pytest-of-<user> (mode 0700), which
    PostgreSQL cannot enter when the tests run as root and it runs as `nobody`.
    """
    path = Path(tempfile.mkdtemp(prefix="optistack-local-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        try:
            local_down(path)
        finally:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def local_servers() -> Iterator[tuple[Path, dict[str, int], dict[str, LocalServer]]]:
    """All four local servers, started once for this module."""
    with state_dir() as path:
        ports = dict(zip(LOCAL_STORES, free_ports(len(LOCAL_STORES)), strict=True))
        servers = local_up(path, ports=ports)
        yield path, ports, servers


def test_up_starts_each_server_and_it_answers_a_real_client(local_servers) -> None:
    path, ports, servers = local_servers
    assert list(servers) == ["postgres", "redis", "dynamodb", "mongodb"]
    for store, server in servers.items():
        assert server.store == store
        assert server.port == ports[store]
        assert server.log.is_file() and server.log.is_relative_to(path)
        assert psutil.pid_exists(server.pid)

    with psycopg.connect(servers["postgres"].url, connect_timeout=5) as conn:
        version = conn.execute("SELECT version()").fetchone()[0]
    assert version.startswith("PostgreSQL 18")

    client = redis.Redis.from_url(servers["redis"].url, socket_timeout=5)
    try:
        assert client.ping() is True
        assert "valkey_version" in client.info("server")
    finally:
        client.close()

    dynamodb = boto3.client(
        "dynamodb",
        endpoint_url=f"http://127.0.0.1:{ports['dynamodb']}",
        region_name="us-east-1",
        aws_access_key_id="optistack-test",
        aws_secret_access_key="optistack-test",
    )
    assert dynamodb.list_tables()["TableNames"] == []

    mongo = pymongo.MongoClient(servers["mongodb"].url, serverSelectionTimeoutMS=5000)
    try:
        assert mongo.admin.command("ping")["ok"] == 1
    finally:
        mongo.close()


def test_urls_labels_and_state_file(local_servers) -> None:
    path, ports, servers = local_servers
    assert servers["postgres"].url == f"postgresql://postgres@127.0.0.1:{ports['postgres']}/postgres"
    assert servers["redis"].url == f"redis://127.0.0.1:{ports['redis']}/0"
    assert servers["dynamodb"].url == f"dynamodb://127.0.0.1:{ports['dynamodb']}?region=us-east-1"
    assert servers["mongodb"].url == f"mongodb://127.0.0.1:{ports['mongodb']}/optistack"
    assert servers["postgres"].label.startswith("PostgreSQL 18")
    assert "not MongoDB" in servers["mongodb"].label
    assert "DynamoDB-compatible" in servers["dynamodb"].label

    records = json.loads((path / STATE_FILE).read_text())
    assert set(records) == set(LOCAL_STORES)
    for store, record in records.items():
        assert {"url", "pid", "port", "label", "log"} <= set(record)
        assert LocalServer.from_json(store, record) == servers[store]


def test_up_again_reuses_the_running_servers(local_servers) -> None:
    path, ports, servers = local_servers
    pids = {store: server.pid for store, server in servers.items()}
    assert {s: srv.pid for s, srv in local_up(path, ports=ports).items()} == pids
    # Without the port overrides too: a running server is reused where it is.
    assert {s: srv.pid for s, srv in local_up(path).items()} == pids
    assert list(local_up(path, stores=["redis"])) == ["redis"]


def test_moving_a_running_server_to_another_port_is_refused(local_servers) -> None:
    path, ports, _ = local_servers
    with pytest.raises(OptiStackError, match=rf"already runs on port {ports['redis']}.*local down"):
        local_up(path, stores=["redis"], ports={"redis": ports["redis"] + 1})


def test_status_urls_and_env(local_servers) -> None:
    path, _, servers = local_servers
    status = local_status(path)
    assert set(status) == set(LOCAL_STORES)
    for store, info in status.items():
        assert info["running"] is True
        assert info["pid"] == servers[store].pid
        assert info["url"] == servers[store].url
    assert local_urls(path) == {store: server.url for store, server in servers.items()}

    env = format_env(servers)
    assert f"export OPTISTACK_POSTGRES_URL={servers['postgres'].url}\n" in env
    assert f"export OPTISTACK_DYNAMODB_URL='{servers['dynamodb'].url}'\n" in env  # `?` quoted
    assert env == format_env(local_urls(path))


def test_down_stops_every_server_and_closes_its_port(local_servers) -> None:
    path, ports, servers = local_servers
    procs = {store: psutil.Process(server.pid) for store, server in servers.items()}

    assert sorted(local_down(path)) == sorted(LOCAL_STORES)

    for store, port in ports.items():
        assert listener(port) is None, f"{store}: {port} still has a listener: {listener(port)}"
        proc = procs[store]
        assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE, f"{store} still runs"
    assert local_status(path) == {}
    assert local_urls(path) == {}
    assert not (path / STATE_FILE).exists()
    assert local_down(path) == []  # idempotent


def test_a_taken_port_is_refused_with_what_to_change(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(OptiStackError, match=rf"port {port} for the local redis server.*ports=") as error:
            local_up(tmp_path, stores=["redis"], ports={"redis": port})
    assert "--port redis=" in str(error.value)
    assert local_status(tmp_path) == {}


def test_servers_outlive_the_process_that_started_them(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    try:
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from workloads.local import local_up; "
                "local_up(sys.argv[1], stores=['redis'], ports={'redis': int(sys.argv[2])})",
                str(tmp_path),
                str(port),
            ],
            cwd=REPO,
            check=True,
            timeout=60,
        )
        assert local_status(tmp_path)["redis"]["running"] is True
        client = redis.Redis(port=port, socket_timeout=5)
        try:
            assert client.ping() is True
        finally:
            client.close()
    finally:
        local_down(tmp_path)
    assert listener(port) is None


def test_a_dead_server_is_started_again(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    try:
        first = local_up(tmp_path, stores=["redis"], ports={"redis": port})["redis"]
        psutil.Process(first.pid).send_signal(signal.SIGKILL)
        psutil.Process(first.pid).wait(5)
        assert local_status(tmp_path)["redis"]["running"] is False
        assert local_urls(tmp_path) == {}

        second = local_up(tmp_path, stores=["redis"], ports={"redis": port})["redis"]
        assert second.pid != first.pid
        assert local_status(tmp_path)["redis"]["running"] is True
    finally:
        local_down(tmp_path)


def test_a_postgres_that_cannot_start_is_reported_and_not_recorded() -> None:
    with state_dir() as path:
        (path / "postgres").mkdir()
        (path / "postgres" / "stray.txt").write_text("not a data dir")
        (port,) = free_ports(1)
        with pytest.raises(OptiStackError, match=r"(?s)could not start the local postgres server.*not empty"):
            local_up(path, stores=["postgres"], ports={"postgres": port})
        assert local_status(path) == {}


def test_a_server_that_exits_is_reported_with_its_log_tail(tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    (tmp_path / "redis" / "dump.rdb").write_bytes(b"not an RDB snapshot")
    (port,) = free_ports(1)
    try:
        with pytest.raises(
            OptiStackError,
            match=r"(?s)redis server exited.*last lines of .*redis\.log.*Fatal error loading the DB",
        ):
            local_up(tmp_path, stores=["redis"], ports={"redis": port})
        assert local_status(tmp_path) == {}
        assert listener(port) is None
        left = [
            q.pid
            for q in psutil.process_iter(["cmdline"])
            if str(tmp_path) in " ".join(q.info["cmdline"] or ())
        ]
        assert left == [], f"processes still running from {tmp_path}: {left}"
    finally:
        local_down(tmp_path)


# Listens, then its main thread exits while another thread keeps the process (and
# its socket) for 2 s more: what Valkey does when it exits on a fatal error.
MAIN_THREAD_EXITS_FIRST = """
import ctypes, os, socket, sys, threading, time
sock = socket.socket()
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen()
threading.Thread(target=lambda: (time.sleep(2), os._exit(1))).start()
print("listening", flush=True)
ctypes.CDLL(None).pthread_exit(None)
"""


@contextlib.contextmanager
def main_thread_exited(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A process listening on `port` whose main thread has exited: a zombie, yet listening."""
    proc = subprocess.Popen(
        [sys.executable, "-c", MAIN_THREAD_EXITS_FIRST, str(port)], stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"listening\n"
        while psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.01)
        assert listener(port) is not None
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_server_counted_as_exited_has_released_its_port(tmp_path: Path) -> None:
    # `up` must not report "exited" (and let the user retry on that port) while it listens.
    (port,) = free_ports(1)
    with main_thread_exited(port) as proc:
        local._CHILDREN[proc.pid] = proc
        try:
            started = psutil.Process(proc.pid).create_time()
            server = LocalServer(
                "redis", f"redis://127.0.0.1:{port}/0", proc.pid, port, "test", tmp_path / "log", started
            )
            assert local._process(server) is None
            assert listener(port) is None
            assert proc.returncode == 1
        finally:
            local._CHILDREN.pop(proc.pid, None)


def test_stopping_a_server_of_an_earlier_run_waits_until_its_port_is_free() -> None:
    # Not this process's child (`down` after another `up`): no waitpid, only its status.
    (port,) = free_ports(1)
    with main_thread_exited(port) as proc:
        assert local._wait_exit(psutil.Process(proc.pid), 10.0) is True
        assert listener(port) is None


def test_up_returns_once_valkey_has_loaded_its_snapshot(tmp_path: Path) -> None:
    # Valkey listens before it loads dump.rdb; a big one takes long enough to load that a
    # server counted ready when it accepts a connection still answers LOADING.
    (port,) = free_ports(1)
    keys = 1_000_000
    try:
        local_up(tmp_path, stores=["redis"], ports={"redis": port})
        client = redis.Redis(port=port, socket_timeout=30)
        for start in range(0, keys, 10_000):
            client.mset({f"k{n}": "v" for n in range(start, start + 10_000)})
        client.save()
        client.close()
        local_down(tmp_path)

        local_up(tmp_path, stores=["redis"], ports={"redis": port})
        # A bare PING: redis-py would retry a LOADING answer and hide it.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"PING\r\n")
            assert sock.recv(64) == b"+PONG\r\n"
        client = redis.Redis(port=port, socket_timeout=30)
        try:
            assert client.dbsize() == keys
        finally:
            client.close()
    finally:
        local_down(tmp_path)


def test_a_stale_mongodb_pid_file_does_not_block_a_start(tmp_path: Path) -> None:
    # After a kill -9, nx-27017 leaves its pid file behind; here it names a live
    # process that is not nx-27017 (this one), as a recycled pid would.
    (tmp_path / "mongodb").mkdir()
    (tmp_path / "mongodb" / "nx-27017.pid").write_text(str(os.getpid()))
    (port,) = free_ports(1)
    try:
        server = local_up(tmp_path, stores=["mongodb"], ports={"mongodb": port})["mongodb"]
        assert local_status(tmp_path)["mongodb"]["running"] is True
        assert server.pid != os.getpid()
    finally:
        local_down(tmp_path)


def test_unknown_stores_and_bad_ports_are_refused(tmp_path: Path) -> None:
    with pytest.raises(OptiStackError, match="local servers exist for: postgres, redis"):
        local_up(tmp_path, stores=["cassandra"])
    with pytest.raises(OptiStackError, match="from 1 to 65535"):
        local_up(tmp_path, ports={"redis": 70000})
    with pytest.raises(OptiStackError, match="both listen on port 50000"):
        local_up(tmp_path, ports={"redis": 50000, "mongodb": 50000})
    assert local_status(tmp_path) == {}


def test_pgbench_is_the_embedded_postgresql_18_one() -> None:
    version = subprocess.run(
        [str(pgbench_path()), "--version"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    assert version.startswith("pgbench (PostgreSQL) 18")
