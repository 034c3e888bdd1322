"""Faults caused for real, not mocked: a store server killed mid-run, a store that never
answers, an operation that hangs, a load process killed. See docs/reliability.md.

Every test drives `optistack run` as a user does and reads back what it published. The
servers a test harms are its own: a private Valkey started on a free port in the test's
tmp dir (`workloads.local`), or a table of its own namespace on the machine's
PostgreSQL. Processes are found by parent pid (psutil), never by name: other people run
Locust on this machine too. Whatever happens, every process a test started or saw
descend from its CLI is stopped when the test ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
import psutil
import psycopg
import pyarrow.parquet as pq
import pytest

from workloads.local import LocalServer
from workloads.stores.base import redact_url

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SECRET = "Rel1abilityPw"
CONNECT_TIMEOUT_S = 2.0
MEASURING = r"^\[{store}\]\s+\d+s measuring"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def namespace() -> str:
    return f"optistack_rel_{uuid.uuid4().hex[:8]}"


class Cli:
    """`optistack run ...` in its own session; its output lines kept with their arrival time.

    A watcher thread records every process that descends from the CLI (the Locust master
    and its workers), so `stop()` can end even workers that a killed master orphaned.
    """

    def __init__(self, *args: str) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workloads", "run", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=REPO,
            start_new_session=True,
        )
        self.lines: list[tuple[float, str]] = []
        self.seen: dict[int, psutil.Process] = {}
        self._changed = threading.Condition()
        self._done = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._reader.start()
        self._watcher.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self._changed.notify_all()
        with self._changed:
            self._done.set()
            self._changed.notify_all()

    def _watch(self) -> None:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.proc.pid)
            self.seen[root.pid] = root
            while not self._done.is_set():
                self.snapshot(root)
                time.sleep(0.2)

    def snapshot(self, root: psutil.Process | None = None) -> None:
        with contextlib.suppress(psutil.Error):
            for child in (root or psutil.Process(self.proc.pid)).children(recursive=True):
                self.seen.setdefault(child.pid, child)

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def wait_for(self, pattern: str, timeout: float) -> float:
        """The arrival time of the first output line matching `pattern`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for at, line in self.lines:
                    if regex.search(line):
                        return at
                left = deadline - time.monotonic()
                if left <= 0 or self._done.is_set():
                    raise AssertionError(f"no line matching {pattern!r} after {timeout:g}s:\n{self.text}")
                self._changed.wait(min(left, 0.5))

    def line_time(self, pattern: str) -> float | None:
        regex = re.compile(pattern)
        return next((at for at, line in self.lines if regex.search(line)), None)

    def wait(self, timeout: float) -> int | None:
        """The CLI's exit code, or None if it still runs after `timeout` seconds."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._reader.join(10)
        return code

    def locust_master(self) -> psutil.Process:
        self.snapshot()
        masters = [p for p in psutil.Process(self.proc.pid).children() if "locust" in " ".join(p.cmdline())]
        assert len(masters) == 1, masters
        return masters[0]

    def alive(self) -> list[psutil.Process]:
        """Processes seen descending from the CLI (or the CLI itself) that still run."""
        return running(self.seen.values())

    def stop(self) -> None:
        """End the CLI and everything seen below it, wherever it was reparented to."""
        self.snapshot()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        for proc in self.alive():
            with contextlib.suppress(psutil.Error):
                proc.kill()
        self.proc.wait(10)
        psutil.wait_procs(list(self.seen.values()), timeout=10)
        self._reader.join(10)


@contextlib.contextmanager
def cli(*args: str) -> Iterator[Cli]:
    run = Cli(*args)
    try:
        yield run
    finally:
        run.stop()


def kill_server(server: LocalServer) -> None:
    proc = psutil.Process(server.pid)
    assert abs(proc.create_time() - server.started_at) < 1  # the server we started, not a recycled pid
    proc.kill()
    proc.wait(10)


def running(procs: Iterable[psutil.Process]) -> list[psutil.Process]:
    """Those of `procs` still alive (a zombie or a recycled pid does not count)."""
    alive = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
    return alive


def store_folder(results: Path, run_id: str, store: str) -> Path:
    return results / "runs" / f"run_id={run_id}" / f"store={store}"


def run_info(results: Path, run_id: str, store: str) -> dict:
    return json.loads((store_folder(results, run_id, store) / "run.json").read_text())


def hidden_entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


def assert_nothing_half_written(results: Path) -> None:
    """Every visible file under runs/ is complete; only dot-names may be work in progress."""
    for path in (results / "runs").rglob("*"):
        if any(part.startswith(".") for part in path.relative_to(results).parts) or not path.is_file():
            continue
        if path.suffix == ".parquet":
            pq.read_metadata(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
    for folder in (results / "runs").glob("run_id=*/store=*"):
        assert (folder / "run.json").is_file(), f"{folder} was published without run.json"


def load_args(results: Path, run_id: str, *extra: str) -> list[str]:
    return [
        "--workload", "a", "--records", "1000", "--users", "4", "--warmup", "0",
        "--connect-timeout", str(CONNECT_TIMEOUT_S), "--results", str(results), "--run-id", run_id,
        "--namespace", namespace(), "--no-report", *extra,
    ]  # fmt: skip


# --- 1. a store dies mid-run -----------------------------------------------------------
def test_a_store_killed_mid_run_is_published_degraded_and_the_other_store_is_unaffected(
    tmp_path: Path, store_server, valkey: LocalServer
) -> None:
    postgres = store_server("postgres")
    results = tmp_path / "results"
    duration = 8
    args = load_args(
        results, "dies", "--duration", str(duration), "--processes", "2", "--operation-timeout", "2"
    )
    with cli(
        "--store", "redis", "--store", "postgres", *args,
        "--url", f"redis={valkey.url}", "--url", f"postgres={postgres.url}",
    ) as run:  # fmt: skip
        run.wait_for(MEASURING.format(store="redis"), timeout=90)
        kill_server(valkey)
        assert run.wait(240) is not None, run.text

    redis_dir = store_folder(results, "dies", "redis")
    info = run_info(results, "dies", "redis")
    assert info["status"] == "degraded", (info["status"], info["error"], run.text)
    assert info["error"] is None
    assert info["load"]["ops"] > 0 and info["load"]["errors"] > 0

    # errors counted per operation and error type, with an example message
    errors = pd.read_parquet(redis_dir / "errors.parquet")
    counted = {(row.operation, row.error_type): row.count for row in errors.itertuples()}
    assert ("CONNECT", "OptiStackError") in counted  # reconnecting to the dead server
    assert {op for op, _ in counted} & {"READ", "UPDATE"}  # operations in flight when it died
    assert {et for op, et in counted if op != "CONNECT"} <= {"ConnectionError", "TimeoutError"}
    assert errors["example"].str.len().gt(0).all(), errors
    summary = pd.read_parquet(redis_dir / "summary.parquet").set_index("operation")
    assert summary.loc["ALL", "errors"] == errors["count"].sum()
    assert summary.loc["ALL", "duration_s"] == pytest.approx(duration)

    # the time series keeps what was measured before the kill, and shows the errors after it
    series = pd.read_parquet(redis_dir / "timeseries.parquet")
    total = series[series["operation"] == "ALL"].set_index("second").sort_index()
    assert list(total.index) == list(range(duration))
    first_error = total.index[total["errors"] > 0][0]
    assert first_error >= 1 and (total.loc[: first_error - 1, "ops"] > 0).all(), total
    after = total.loc[first_error + 1 :]
    # Users retry the connection a second apart, so a one-second bucket can fall between
    # two attempts; no two seconds in a row go without one.
    assert len(after) >= 2 and (after["ops"] == 0).all(), total
    assert (after["errors"].rolling(2).sum().iloc[1:] > 0).all(), total

    validation = json.loads((redis_dir / "validation.json").read_text())
    assert validation["success"] is False
    outcome = {r["name"]: r["success"] for r in validation["results"]}
    assert outcome["error_ratio"] is False

    # the other store of the run: untouched
    other = run_info(results, "dies", "postgres")
    assert other["status"] == "ok" and other["load"]["errors"] == 0, other
    assert json.loads((store_folder(results, "dies", "postgres") / "validation.json").read_text())["success"]
    assert hidden_entries(results / "runs") == []
    assert_nothing_half_written(results)


# --- 2. a store unreachable at the start -----------------------------------------------
@contextlib.contextmanager
def blackhole(kind: str) -> Iterator[int]:
    """A local port that never answers.

    `syn-dropped`: listening with a full accept queue (backlog 0, one connection parked),
    so the kernel drops every further SYN: connecting hangs as to a firewalled host.
    `silent`: TCP connections are accepted by the kernel, but nothing is ever said.
    """
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(socket.socket())
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        address = server.getsockname()
        if kind == "syn-dropped":
            for _ in range(2):
                filler = stack.enter_context(socket.socket())
                filler.setblocking(False)
                filler.connect_ex(address)
            time.sleep(0.2)
            with pytest.raises(TimeoutError), socket.create_connection(address, timeout=0.5):
                pass  # the hole is real: a SYN gets no answer
        yield address[1]


UNREACHABLE = [
    pytest.param("redis", "syn-dropped", id="redis-syn-dropped"),
    pytest.param("postgres", "syn-dropped", id="postgres-syn-dropped"),
    pytest.param(
        "redis",
        "silent",
        id="redis-silent",
    ),
    pytest.param("postgres", "silent", id="postgres-silent"),
]


@pytest.mark.parametrize(("store", "kind"), UNREACHABLE)
def test_a_store_that_never_answers_fails_within_the_connect_timeout(
    tmp_path: Path, store: str, kind: str
) -> None:
    results = tmp_path / "results"
    with blackhole(kind) as port:
        url = (
            f"redis://:{SECRET}@127.0.0.1:{port}/0"
            if store == "redis"
            else f"postgresql://postgres:{SECRET}@127.0.0.1:{port}/postgres"
        )
        with cli(
            "--store", store, "--url", f"{store}={url}", *load_args(results, "hole", "--duration", "1"),
        ) as run:  # fmt: skip
            begun = run.wait_for(r"^run hole:", timeout=60)  # planned; nothing connected yet
            code = run.wait(CONNECT_TIMEOUT_S + 8)
            elapsed = time.monotonic() - begun
    assert code == 1, f"still running {elapsed:.0f}s after the run began:\n{run.text}"
    assert elapsed < CONNECT_TIMEOUT_S + 5, elapsed
    where = redact_url(url)
    assert f"[{store}] FAILED in provision: cannot connect to {store} at {where}" in run.text, run.text
    info = run_info(results, "hole", store)
    assert info["status"] == "failed" and info["error"].startswith(
        f"provision: cannot connect to {store} at {where}"
    )
    assert SECRET not in run.text
    assert all(SECRET.encode() not in p.read_bytes() for p in results.rglob("*") if p.is_file())


# --- 3. a hung operation ---------------------------------------------------------------
def test_hung_operations_are_cut_off_counted_and_do_not_stretch_the_run(tmp_path: Path, store_server) -> None:
    """The test holds an ACCESS EXCLUSIVE lock on the run's own table from the measured
    window until after its end: every operation hangs; `--operation-timeout 1` ends each."""
    postgres = store_server("postgres")
    results = tmp_path / "results"
    duration = 8
    ns = namespace()
    args = load_args(
        results, "hung", "--duration", str(duration), "--processes", "1", "--operation-timeout", "1"
    )
    args[args.index("--namespace") + 1] = ns
    with (
        psycopg.connect(postgres.url, autocommit=True, connect_timeout=5) as locker,
        cli("--store", "postgres", "--url", f"postgres={postgres.url}", *args) as run,
    ):
        measuring = run.wait_for(MEASURING.format(store="postgres"), timeout=90)
        locker.execute("SET lock_timeout = '5s'")
        with locker.transaction():
            locker.execute(f"LOCK TABLE {ns} IN ACCESS EXCLUSIVE MODE")
            locked = time.monotonic()
            finished = run.wait_for(r"^\[postgres\] load finished", timeout=duration + 30)
            held_until = time.monotonic()
        code = run.wait(180)
        wall = time.monotonic() - run.started
    assert code is not None, run.text
    # The measured window ends `duration` s after it began, and it had begun by the first
    # "measuring" line: the load ended on time although every operation still hung.
    assert finished - measuring < duration + 5, run.text
    assert held_until >= finished > locked
    assert wall < 150

    folder = store_folder(results, "hung", "postgres")
    info = run_info(results, "hung", "postgres")
    assert info["status"] == "degraded", (info, run.text)
    errors = pd.read_parquet(folder / "errors.parquet")
    assert set(errors["error_type"]) == {"QueryCanceled"}, errors
    assert set(errors["operation"]) <= {"READ", "UPDATE"}
    assert errors["example"].str.contains("statement timeout").all(), errors
    summary = pd.read_parquet(folder / "summary.parquet").set_index("operation")
    assert summary.loc["ALL", "errors"] == errors["count"].sum() > 0
    # a cut-off operation is an error, never a latency: none took much over the timeout
    assert summary.loc["ALL", "latency_max_us"] < 1_000_000
    series = pd.read_parquet(folder / "timeseries.parquet")
    total = series[series["operation"] == "ALL"].set_index("second").sort_index()
    first_error = total.index[total["errors"] > 0][0]
    assert (total.loc[first_error + 1 :, "ops"] == 0).all(), total


# --- 4. a load process killed ----------------------------------------------------------
def test_a_killed_load_master_fails_the_store_promptly_and_a_rerun_replaces_it(
    tmp_path: Path, valkey: LocalServer
) -> None:
    results = tmp_path / "results"
    args = ["--store", "redis", "--url", f"redis={valkey.url}"]
    bound = 15  # seconds from the kill to the CLI's exit
    with cli(*args, *load_args(results, "crash", "--duration", "8", "--processes", "2")) as run:
        run.wait_for(MEASURING.format(store="redis"), timeout=90)
        master = run.locust_master()
        workers = master.children()
        assert len(workers) == 2, workers
        master.kill()
        killed = time.monotonic()
        code = run.wait(bound)
        took = time.monotonic() - killed
        orphans = running(workers)
    crashed = run_info(results, "crash", "redis") if code is not None else None
    assert_nothing_half_written(results)  # also when the CLI itself had to be killed

    with cli(*args, *load_args(results, "crash", "--duration", "1", "--processes", "1")) as rerun:
        assert rerun.wait(180) == 0, rerun.text
    info = run_info(results, "crash", "redis")
    assert info["status"] == "ok", info
    assert [p.name for p in (results / "runs").iterdir()] == ["run_id=crash"]
    assert [p.name for p in (results / "runs" / "run_id=crash").iterdir()] == ["store=redis"]
    assert_nothing_half_written(results)

    assert code == 1, f"the CLI still ran {took:.0f}s after its Locust master was killed:\n{run.text}"
    assert took < bound
    assert orphans == [], "workers of the killed master outlived the run"
    assert "the load process was killed by signal 9" in run.text
    assert crashed["status"] == "failed"
    assert crashed["error"].startswith("load: redis: the load process ended without results"), crashed


def kill_one_of_two_workers(
    results: Path, valkey: LocalServer, run_id: str, wait_s: float, *extra: str
) -> tuple[Cli, int | None, float, list[psutil.Process]]:
    """Run redis with 2 load processes, SIGKILL one once measuring; the CLI's exit code,
    the seconds from the kill to its exit, and the processes it left behind."""
    with cli(
        "--store", "redis", "--url", f"redis={valkey.url}",
        *load_args(results, run_id, "--processes", "2", *extra),
    ) as run:  # fmt: skip
        run.wait_for(MEASURING.format(store="redis"), timeout=90)
        workers = run.locust_master().children()
        assert len(workers) == 2, workers
        workers[0].kill()
        killed = time.monotonic()
        code = run.wait(wait_s)
        took = time.monotonic() - killed
        leftovers = [p for p in run.alive() if p.pid != run.proc.pid]
    return run, code, took, leftovers


def test_a_killed_load_worker_does_not_pass_as_a_complete_run(tmp_path: Path, valkey: LocalServer) -> None:
    results = tmp_path / "results"
    run, code, _, leftovers = kill_one_of_two_workers(results, valkey, "worker", 180, "--duration", "8")
    assert code is not None, run.text
    assert leftovers == []
    info = run_info(results, "worker", "redis")
    assert info["status"] in {"failed", "degraded"}, (info["status"], info.get("load"))
    assert "load process" in (info["error"] or ""), info["error"]
    assert_nothing_half_written(results)


def test_an_operations_run_whose_worker_died_ends_without_waiting_for_its_share(
    tmp_path: Path, valkey: LocalServer
) -> None:
    # --operations without --duration may run for a day: the window closes when every
    # process has done its share, which a dead one never does. The master gives up on it
    # once it has missed its heartbeats for LOST_WORKER_GRACE_S.
    results = tmp_path / "results"
    run, code, took, leftovers = kill_one_of_two_workers(
        results, valkey, "lost", 90, "--operations", "100000000"
    )
    assert code == 1, run.text
    assert took < 60, f"the run went on {took:.0f}s after its worker died"
    assert leftovers == []
    assert "lost (no heartbeat for 10s)" in run.text
    info = run_info(results, "lost", "redis")
    assert info["status"] == "failed", info
    assert "1 of 2 load processes died" in info["error"], info["error"]
    summary = pd.read_parquet(store_folder(results, "lost", "redis") / "summary.parquet")
    assert summary.set_index("operation").loc["ALL", "ops"] > 0  # what was measured is kept
    assert_nothing_half_written(results)
