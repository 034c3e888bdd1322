"""Locust's distributed mode: a run's load phase on remote workers (`optistack worker`).

The master is the load process `optistack run --master --expect-workers N` starts, as in
a local run, but it forks no workers of its own: it listens on `master_bind_host:port`
and waits (bounded) for N Locust workers. `optistack worker --master-host HOST` starts
them: `python -m locust -f workloads/loadgen.py --worker`, one or `--processes` of them,
again after every run unless `--once`. Each worker receives the load configuration
(store URL included) from the master in Locust's spawn message: Locust forwards every
custom argument (`--optistack-config`) to its workers.

Nothing here imports Locust: this module runs in the `optistack` process, and Locust
monkey-patches the interpreter with gevent on import.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from workloads.errors import OptiStackError

DEFAULT_MASTER_PORT = 5557  # Locust's own default
MASTER_PORT_ENV = "OPTISTACK_MASTER_PORT"
DEFAULT_BIND_HOST = "0.0.0.0"
DEFAULT_WORKER_WAIT_S = 60.0
LOCUSTFILE = Path(__file__).with_name("loadgen.py")

# Lines the load process prints for the runner (see loadgen.py).
ERROR_PREFIX = "optistack-error: "
CONNECTED = re.compile(r"load worker (\d+) of (\d+) connected")
GAVE_UP = "Gave up waiting for workers"  # Locust's master (main.py) logs this, then exits

# Between two runs a looping worker waits this long before it connects again, so a
# master that refuses it (or a worker that fails at once) does not spin the CPU.
RESTART_PAUSE_S = 1.0


def master_port(explicit: int | None = None) -> int:
    """The master's port: `--master-port`, else `$OPTISTACK_MASTER_PORT`, else 5557."""
    if explicit is not None:
        return explicit
    raw = os.environ.get(MASTER_PORT_ENV, "").strip()
    if not raw:
        return DEFAULT_MASTER_PORT
    if not raw.isdigit() or not 1 <= int(raw) <= 65_535:
        raise OptiStackError(f"{MASTER_PORT_ENV}={raw!r} must be a port number (1-65535), e.g. 5557")
    return int(raw)


def master_argv(expect_workers: int, bind_host: str, port: int, wait_s: float) -> list[str]:
    """Locust options of a master that serves `expect_workers` remote workers."""
    return [
        "--master",
        "--expect-workers",
        str(expect_workers),
        # Without a bound, a master whose workers never come waits for ever (Locust takes whole seconds).
        "--expect-workers-max-wait",
        str(math.ceil(wait_s)),
        "--master-bind-host",
        bind_host,
        "--master-bind-port",
        str(port),
    ]


def advertised_host(bind_host: str) -> str:
    """The name workers should connect to: the bind address, or this host's name."""
    return socket.gethostname() if bind_host in ("0.0.0.0", "::", "*", "") else bind_host


def missing_workers_message(
    store: str, lines: list[str], expect_workers: int, bind_host: str, port: int, wait_s: float
) -> str | None:
    """Why a master ended without results, when its workers are to blame; else None."""
    for line in lines:
        if line.startswith(ERROR_PREFIX):
            return f"{store}: {line.removeprefix(ERROR_PREFIX)}"
    if not any(GAVE_UP in line for line in lines):
        return None
    connected = max((int(m.group(1)) for line in lines if (m := CONNECTED.search(line))), default=0)
    return (
        f"{store}: only {connected} of {expect_workers} Locust workers connected to the master on "
        f"{bind_host}:{port} within {wait_s:g}s (--worker-wait). Start `optistack worker --master-host "
        f"{advertised_host(bind_host)} --master-port {port}` on the load machines ({expect_workers} worker "
        f"processes in total, `--processes N` starts N on one machine), and let them reach TCP port {port} "
        "of this host"
    )


def worker_argv(master_host: str, port: int, processes: int | None) -> list[str]:
    """The command line of one `optistack worker` round: Locust worker process(es)."""
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--worker",
        "--master-host",
        master_host,
        "--master-port",
        str(port),
        "--loglevel",
        "WARNING",
    ]
    if processes and processes > 1:
        argv += ["--processes", str(processes)]
    return argv


def serve(
    master_host: str,
    port: int,
    processes: int | None = None,
    once: bool = False,
    log: Callable[[str], None] = print,
) -> int:
    """Run Locust worker process(es) for a master; again after each run unless `once`.

    A Locust worker exits when its master quits (after every run), so serving several
    runs means starting it again. Returns the exit code of the last round.
    """
    if not master_host.strip():
        raise OptiStackError("--master-host must name the machine that runs `optistack run --master`")
    count = processes or 1
    rounds = 0
    while True:
        rounds += 1
        log(f"worker: {count} Locust worker process(es) for the master at {master_host}:{port}")
        code = _run_round(worker_argv(master_host, port, processes))
        log(f"worker: round {rounds} ended (exit code {code})")
        if once:
            return code
        time.sleep(RESTART_PAUSE_S)


def _run_round(argv: list[str]) -> int:
    """One Locust worker run in its own process group, never left behind when we exit."""
    # No store URL in this environment: the worker must get its configuration from the master.
    env = {k: v for k, v in os.environ.items() if k != "OPTISTACK_LOAD_CONFIG"}
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(argv, env=env, start_new_session=True)
    try:
        return proc.wait()
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
