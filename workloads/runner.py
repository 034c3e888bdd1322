"""A benchmark run: plan, then per store provision -> seed -> load -> results -> publish.

`plan()` validates every input before anything connects. Each stage is a function of
(plan, store) whose state lives in the store's staging folder, so the CLI can run the
stages back to back and an Airflow task can run each one in its own process. A failed
stage still publishes what was measured, with `status: failed` and the reason.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from queue import Empty, Queue
from typing import Any, Literal

import psutil
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from workloads import telemetry
from workloads.config import resolve_urls, results_root
from workloads.distributed import (
    DEFAULT_BIND_HOST,
    DEFAULT_WORKER_WAIT_S,
    master_argv,
    master_port,
    missing_workers_message,
)
from workloads.driver import LoadConfig
from workloads.errors import OptiStackError
from workloads.keyspace import records as seed_records
from workloads.live import LIVE_PREFIX, LiveFeed, parse_line
from workloads.resources import ResourceSampler
from workloads.results import (
    errors_frame,
    merge_loads,
    publish,
    repeats_frame,
    slowest_frame,
    staging_dir,
    store_dir,
    summary_frame,
    timeseries_frame,
    with_confidence,
    write_json,
    write_parquet,
)
from workloads.spec import WorkloadSpec, load_workload
from workloads.stores import get_store, store_names
from workloads.stores.base import DEFAULT_NAMESPACE, StoreSettings, check_url, redact_text, redact_url

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
DRIVER_PACKAGES = {
    "postgres": "psycopg",
    "cockroachdb": "psycopg",
    "mysql": "PyMySQL",
    "redis": "redis",
    "mongodb": "pymongo",
    "dynamodb": "boto3",
    "cassandra": "cassandra-driver",
}
Log = Callable[[str], None]

# A load process busier than this (mean % of one core over the measured window) is
# taken to be the bottleneck: Python's GIL caps it at one core.
CLIENT_SATURATION_PERCENT = 90.0

# Where the Airflow form and `--workload NAME` find YAML workloads by name.
WORKLOAD_DIRS = [Path(__file__).resolve().parent.parent / "include" / "workloads"]


class RunOptions(BaseModel):
    """What a user asks for. Field names are the CLI's and the DAG's parameter names."""

    model_config = ConfigDict(extra="forbid")

    stores: list[str] = Field(min_length=1)
    workload: str = "a"
    record_count: int | None = Field(None, ge=1)
    field_count: int | None = Field(None, ge=1)
    field_length: int | None = Field(None, ge=1)
    duration_s: float = Field(30.0, gt=0, le=86_400)
    operations: int | None = Field(None, ge=1, le=10_000_000_000)
    repeats: int = Field(1, ge=1, le=100)
    sweep_users: list[int] | None = None
    sweep_target_rates: list[float] | None = None
    warmup_s: float = Field(5.0, ge=0, le=3_600)
    users: int = Field(16, ge=1, le=10_000)
    spawn_rate: float | None = Field(None, gt=0)
    target_rate: float | None = Field(None, gt=0, le=10_000_000)
    processes: int | None = Field(None, ge=1, le=256)
    # Locust's distributed mode: this many remote workers (`optistack worker`) are the load
    # processes, and no local one is forked. The master listens on master_bind_host:master_port
    # (port default: $OPTISTACK_MASTER_PORT, else 5557) and waits at most worker_wait_s for them.
    expect_workers: int | None = Field(None, ge=1, le=256)
    master_bind_host: str = DEFAULT_BIND_HOST
    master_port: int | None = Field(None, ge=1, le=65_535)
    worker_wait_s: float = Field(DEFAULT_WORKER_WAIT_S, gt=0, le=3_600)
    run_id: str | None = None
    results: str | None = None
    urls: dict[str, str] = Field(default_factory=dict)
    seed: int = Field(1, ge=0)
    teardown: bool = True
    namespace: str = DEFAULT_NAMESPACE
    insert_order: Literal["hashed", "ordered"] = "hashed"
    operation_timeout_s: float = Field(10.0, gt=0, le=600)
    connect_timeout_s: float = Field(5.0, gt=0, le=120)

    @field_validator("stores")
    @classmethod
    def _known_unique_stores(cls, stores: list[str]) -> list[str]:
        known = store_names()
        for store in stores:
            if store not in known:
                raise ValueError(f"unknown store {store!r}; known stores: {', '.join(known)}")
        duplicates = sorted({s for s in stores if stores.count(s) > 1})
        if duplicates:
            raise ValueError(f"store {', '.join(duplicates)} is listed twice; list each store once")
        return stores

    @field_validator("sweep_users", "sweep_target_rates")
    @classmethod
    def _sane_sweep(cls, values: list[float] | None) -> list[float] | None:
        if values is None:
            return None
        if not 2 <= len(values) <= 20:
            raise ValueError("a sweep needs 2 to 20 values, such as users 1,4,16,64")
        if any(v <= 0 for v in values) or len(set(values)) != len(values):
            raise ValueError(f"sweep values must be positive and distinct, got {values}")
        return values

    @field_validator("run_id")
    @classmethod
    def _safe_run_id(cls, run_id: str | None) -> str | None:
        if run_id is not None and not RUN_ID_PATTERN.match(run_id):
            raise ValueError(
                "run id must be 1-100 letters, digits, '.', '_' or '-' and start with a letter or digit"
            )
        return run_id


class RunPlan(BaseModel):
    """A validated run: everything resolved, nothing connected yet. JSON-serialisable,
    so Airflow tasks can hand it to each other."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    stores: list[str]
    urls: dict[str, str]
    spec: WorkloadSpec
    options: RunOptions
    results_root: str
    processes: int
    spawn_rate: float
    command: str = ""
    sweep: dict[str, Any] | None = None

    @property
    def root(self) -> Path:
        return Path(self.results_root)

    def load_config(self, store: str, output_path: Path) -> LoadConfig:
        """The configuration the load process of `store` gets."""
        o = self.options
        return LoadConfig(
            store=store,
            url=self.urls[store],
            namespace=o.namespace,
            spec=self.spec,
            seed=o.seed,
            users=o.users,
            processes=self.processes,
            target_rate=o.target_rate,
            warmup_s=o.warmup_s,
            duration_s=o.duration_s,
            operations=o.operations,
            output_path=str(output_path),
            operation_timeout_s=o.operation_timeout_s,
            connect_timeout_s=o.connect_timeout_s,
            insert_order=o.insert_order,
        )

    def settings(self) -> StoreSettings:
        """Store settings for the runner's own (seeding) connection."""
        return StoreSettings(
            namespace=self.options.namespace,
            field_count=self.spec.field_count,
            connect_timeout_s=self.options.connect_timeout_s,
            # Seeding batches are large: allow them more than one operation's time.
            operation_timeout_s=max(60.0, self.options.operation_timeout_s),
        )


FLAG_NAMES = {
    "stores": "--store",
    "record_count": "--records",
    "duration_s": "--duration",
    "warmup_s": "--warmup",
    "users": "--users",
    "spawn_rate": "--spawn-rate",
    "target_rate": "--target-rate",
    "processes": "--processes",
    "expect_workers": "--expect-workers",
    "master_bind_host": "--master-bind-host",
    "master_port": "--master-port",
    "worker_wait_s": "--worker-wait",
    "run_id": "--run-id",
    "operations": "--operations",
    "repeats": "--repeats",
    "field_count": "--field-count",
    "field_length": "--field-length",
    "seed": "--seed",
    "operation_timeout_s": "--operation-timeout",
    "connect_timeout_s": "--connect-timeout",
}


def parse_options(data: dict[str, Any]) -> RunOptions:
    """Validate raw options (CLI flags or a DAG conf) with messages naming the setting."""
    try:
        return RunOptions.model_validate(data)
    except ValidationError as error:
        lines = []
        for item in error.errors():
            name = str(item["loc"][0]) if item["loc"] else "options"
            label = f"{name} ({FLAG_NAMES[name]})" if name in FLAG_NAMES else name
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                message = f"unknown setting; known settings: {', '.join(RunOptions.model_fields)}"
            lines.append(f"  {label}: {message} (got {item.get('input')!r})")
        raise OptiStackError("the run settings are not valid:\n" + "\n".join(lines)) from None


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus a short random suffix."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def plan(options: RunOptions | dict[str, Any], command: str = "") -> RunPlan:
    """Validate everything a run needs before anything connects or is provisioned."""
    if isinstance(options, dict):
        options = parse_options(options)
    spec = load_workload(options.workload, WORKLOAD_DIRS).with_overrides(
        record_count=options.record_count, field_count=options.field_count, field_length=options.field_length
    )
    StoreSettings(namespace=options.namespace)  # refuses a namespace that is not optistack_*
    unknown_urls = sorted(set(options.urls) - set(store_names()))
    if unknown_urls:
        raise OptiStackError(
            f"--url names unknown store {', '.join(unknown_urls)}; known: {', '.join(store_names())}"
        )
    urls = resolve_urls(options.stores, options.urls)
    for store, url in urls.items():
        check_url(get_store(store), url)
    root = results_root(options.results)
    _check_writable(root)
    if options.expect_workers:
        processes = _remote_processes(options)
    else:
        processes = options.processes or os.cpu_count() or 1
        # A load process with no user (or no operation to run) would only add noise.
        processes = min(processes, options.users, options.operations or processes)
    return RunPlan(
        run_id=options.run_id or new_run_id(),
        stores=options.stores,
        urls=urls,
        spec=spec,
        options=options,
        results_root=str(root),
        processes=processes,
        spawn_rate=options.spawn_rate or float(options.users),
        command=command,
    )


def _remote_processes(options: RunOptions) -> int:
    """The load processes of a distributed run: exactly its remote workers.

    Each worker partitions the keys by its Locust worker index (0..N-1, given out by the
    master in connection order), so the count cannot be trimmed as for local processes.
    """
    workers = options.expect_workers
    problems = []
    if options.processes is not None and options.processes != workers:
        problems.append(
            f"--processes {options.processes} with --expect-workers {workers}: the remote workers are the "
            "load processes; drop --processes (start more worker processes with `optistack worker --processes`)"
        )
    if options.users < workers:
        problems.append(
            f"--users {options.users} is fewer than --expect-workers {workers}: give each worker a user"
        )
    if options.operations is not None and options.operations < workers:
        problems.append(f"--operations {options.operations} is fewer than --expect-workers {workers}")
    if not options.master_bind_host.strip():
        problems.append("--master-bind-host is empty: give an address of this host, or 0.0.0.0 for all")
    if problems:
        raise OptiStackError("the distributed run settings are not valid:\n  " + "\n  ".join(problems))
    master_port(options.master_port)  # refuses a malformed $OPTISTACK_MASTER_PORT before any work
    return workers


def plan_sweep(options: RunOptions | dict[str, Any], command: str = "") -> list[RunPlan]:
    """One plan per sweep step (`sweep_users` or `sweep_target_rates`), else one plan.

    Each step is a complete run of its own, `<run id>.u<users>` or `<run id>.r<rate>`,
    whose run.json says which sweep it belongs to; the report draws the steps as a
    latency-throughput curve per store.
    """
    if isinstance(options, dict):
        options = parse_options(options)
    if options.sweep_users and options.sweep_target_rates:
        raise OptiStackError("sweep either users or target rates, not both")
    if not (options.sweep_users or options.sweep_target_rates):
        return [plan(options, command)]
    base = options.run_id or new_run_id()
    parameter, values = (
        ("users", options.sweep_users) if options.sweep_users else ("target_rate", options.sweep_target_rates)
    )
    plans = []
    for value in values:
        suffix = f"u{value}" if parameter == "users" else f"r{value:g}"
        step = options.model_copy(
            update={
                parameter: value,
                "run_id": f"{base}.{suffix}",
                "sweep_users": None,
                "sweep_target_rates": None,
            }
        )
        p = plan(step, command)
        sweep = {"id": base, "parameter": parameter, "value": value, "values": list(values)}
        plans.append(p.model_copy(update={"sweep": sweep}))
    return plans


def _check_writable(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-probe-{secrets.token_hex(4)}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise OptiStackError(
            f"results folder {root} is not writable ({error.strerror}): choose another with --results "
            "or OPTISTACK_RESULTS"
        ) from None


# --- run.json, kept in the staging folder between stages -------------------------------
def _run_info_path(p: RunPlan, store: str) -> Path:
    return staging_dir(p.root, p.run_id, store) / "run.json"


def read_run_info(p: RunPlan, store: str) -> dict[str, Any]:
    """The store's run.json as staged so far."""
    path = _run_info_path(p, store)
    return json.loads(path.read_text()) if path.exists() else {}


def _update_run_info(p: RunPlan, store: str, /, **changes: Any) -> dict[str, Any]:
    info = read_run_info(p, store)
    info.update(changes)
    write_json(_run_info_path(p, store), info)
    return info


def _versions(store: str) -> dict[str, Any]:
    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    driver = DRIVER_PACKAGES.get(store)
    return {
        "optistack": version("optistack"),
        "python": platform.python_version(),
        "locust": version("locust"),
        "hdrhistogram": version("hdrhistogram"),
        "driver": {driver: version(driver)} if driver else {},
    }


def _host() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
    }


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# --- stages -------------------------------------------------------------------------
def stage_provision(p: RunPlan, store: str, log: Log = print) -> dict[str, Any]:
    """Start the store's record: connect, ask the server who it is, create the namespace."""
    staging = staging_dir(p.root, p.run_id, store)
    if staging.exists():
        import shutil

        shutil.rmtree(staging)  # a retried task starts its store over
    o = p.options
    _update_run_info(
        p,
        store,
        run_id=p.run_id,
        store=store,
        status="running",
        error=None,
        stage="provision",
        started_at=_now(),
        finished_at=None,
        url=redact_url(p.urls[store]),
        server=None,
        workload=p.spec.model_dump(),
        settings={
            "users": o.users,
            "processes": p.processes,
            "expect_workers": o.expect_workers,
            "duration_s": o.duration_s,
            "operations": o.operations,
            "repeats": o.repeats,
            "warmup_s": o.warmup_s,
            "target_rate": o.target_rate,
            "spawn_rate": p.spawn_rate,
            "seed": o.seed,
            "operation_timeout_s": o.operation_timeout_s,
            "insert_order": o.insert_order,
            "namespace": o.namespace,
            "teardown": o.teardown,
        },
        versions=_versions(store),
        host=_host(),
        command=p.command,
        sweep=p.sweep,
    )
    with get_store(store).connect(p.urls[store], p.settings()) as conn:
        info = conn.server_info()
        log(f"[{store}] connected to {info} at {redact_url(p.urls[store])}")
        conn.provision()
    log(f"[{store}] provisioned {o.namespace}")
    return _update_run_info(p, store, server={"product": info.product, "version": info.version})


def stage_seed(p: RunPlan, store: str, log: Log = print) -> dict[str, Any]:
    """Bulk-load `record_count` records and verify the count."""
    _update_run_info(p, store, stage="seed")
    records = p.spec.record_count
    log(f"[{store}] seeding {records:,} records ({p.spec.field_count} x {p.spec.field_length} B)")
    with get_store(store).connect(p.urls[store], p.settings()) as conn:
        t0 = time.perf_counter()
        loaded = conn.load(seed_records(p.spec, p.options.seed, insert_order=p.options.insert_order))
        elapsed = time.perf_counter() - t0
        count = conn.count()
    rate = loaded / elapsed if elapsed > 0 else 0.0
    log(f"[{store}] seeded {loaded:,} records in {elapsed:.1f}s ({rate:,.0f} records/s); count {count:,}")
    seed = {
        "records": records,
        "loaded": loaded,
        "count": count,
        "duration_s": round(elapsed, 3),
        "records_per_s": round(rate, 1),
    }
    _update_run_info(p, store, seed=seed)
    if count != records:
        raise OptiStackError(
            f"{store} holds {count:,} records after seeding {records:,}: is another process writing to "
            f"{p.options.namespace}?"
        )
    return seed


def stage_load(p: RunPlan, store: str, log: Log = print) -> dict[str, Any]:
    """Run the measured phase (`repeats` times) and return the merged load output."""
    _update_run_info(p, store, stage="load")
    sampler = ResourceSampler(get_store(store), p.urls[store], p.settings(), log_line=log)
    sampler.start()
    loads = []
    try:
        for repeat in range(p.options.repeats):
            if p.options.repeats > 1:
                log(f"[{store}] repeat {repeat + 1} of {p.options.repeats}")
            loads.append(_load_once(p, store, repeat, log))
    finally:
        # Also after a failed load: what was sampled up to the failure is kept.
        _write_resources(p, store, sampler, loads, log)
    return merge_loads(loads)


def _write_resources(p: RunPlan, store: str, sampler: ResourceSampler, loads: list[dict], log: Log) -> None:
    """Stop the sampler; write resources.parquet and run.json `resources`. Never raises."""
    try:
        sampler.stop()
        windows = [(load["window"]["start_ns"], load["window"]["end_ns"]) for load in loads]
        frame = sampler.frame(p.run_id, store, windows)
        write_parquet(staging_dir(p.root, p.run_id, store) / "resources.parquet", frame)
        _update_run_info(p, store, resources=sampler.summary(frame, windows))
    except Exception as error:  # resource figures are extras: never fail a measured load
        log(
            f"[{store}] resources not recorded: {type(error).__name__}: {redact_text(str(error), p.urls[store])}"
        )


def _load_once(p: RunPlan, store: str, repeat: int, log: Log) -> dict[str, Any]:
    """One measured phase in a separate Locust process."""
    staging = staging_dir(p.root, p.run_id, store)
    output = staging / f"load-output-{repeat}.json"
    config = p.load_config(store, output)
    o = p.options
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(Path(__file__).with_name("loadgen.py")),
        "--headless",
        "-u",
        str(o.users),
        "-r",
        str(p.spawn_rate),
        "--loglevel",
        "WARNING",
        "--only-summary",
        "--skip-log-setup",
    ]
    if o.expect_workers:
        port = master_port(o.master_port)
        argv += master_argv(o.expect_workers, o.master_bind_host, port, o.worker_wait_s)
        where = f"{o.expect_workers} remote workers (master on {o.master_bind_host}:{port})"
    else:
        argv += [
            "--processes",
            str(p.processes),
            # Its own port on loopback: runs in parallel (Airflow maps stores over tasks)
            # must not fight over Locust's default 5557 on every interface.
            "--master-bind-host",
            "127.0.0.1",
            "--master-bind-port",
            str(port := _free_port()),
            "--master-port",
            str(port),
        ]
        where = f"{p.processes} processes"
    # The configuration (with the store URL) travels in the environment, not argv, so the
    # process list never shows a password; Locust forwards it to remote workers itself,
    # in its spawn message over the master's (unencrypted) socket: see docs/distributed.md.
    env = {**os.environ, "OPTISTACK_LOAD_CONFIG": config.model_dump_json(), "PYTHONUNBUFFERED": "1"}
    log(
        f"[{store}] load: {o.users} users in {where}, {o.warmup_s:g}s warm-up + "
        f"{o.duration_s:g}s measured"
        + (f", target {o.target_rate:g} ops/s" if o.target_rate else ", closed loop")
    )
    budget = o.warmup_s + o.duration_s + 120 + o.users / p.spawn_rate
    if o.expect_workers:
        budget += o.worker_wait_s
    live = LiveFeed(p.root, p.run_id, store, p.spec.name, repeat)  # live.json and OTel metrics
    lines = _stream(argv, env, budget, log, p.urls[store], live)
    if not output.exists() and o.expect_workers:
        message = missing_workers_message(
            store, lines, o.expect_workers, o.master_bind_host, port, o.worker_wait_s
        )
        if message:
            raise OptiStackError(message)
    if not output.exists():
        tail = "\n".join(lines[-15:])
        raise OptiStackError(f"{store}: the load process ended without results. Its last output:\n{tail}")
    load = json.loads(output.read_text())
    output.unlink()
    return load


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stream(
    argv: list[str],
    env: dict[str, str],
    budget_s: float,
    log: Log,
    url: str,
    on_live: Callable[[dict[str, Any]], None] | None = None,
) -> list[str]:
    """Run the load process, passing its progress lines on; kill it past its time budget.

    Its `live {json}` lines (one per finished second) go to `on_live`, not to the log.

    The load process (a Locust master and its forked workers) gets its own process
    group, and leaves with this function whatever happens: a killed or interrupted
    runner never leaves load running behind it. A master that dies first takes its
    workers with it: they would hold the output pipe open until their own 60 s
    heartbeat timeout.
    """
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True, start_new_session=True
    )
    deadline = time.monotonic() + budget_s
    lines: list[str] = []
    assert proc.stdout is not None
    try:
        for line in _lines(proc.stdout, proc, deadline):
            line = redact_text(line.rstrip(), url)
            if line.startswith(LIVE_PREFIX):
                if on_live is not None and (data := parse_line(line)) is not None:
                    on_live(data)
                continue
            lines.append(line)
            if line.startswith("progress "):
                log(line.removeprefix("progress "))
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise OptiStackError(
            f"the load process ran past its time budget of {budget_s:.0f}s and was stopped"
        ) from None
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        with contextlib.suppress(ProcessLookupError):  # workers the master left behind
            os.killpg(proc.pid, signal.SIGKILL)
    if proc.returncode not in (0, None) and proc.returncode < 0:
        log(f"the load process was killed by signal {-proc.returncode}")
    return lines


# After the master exits, how long its workers may still write before they are stopped.
ORPHAN_GRACE_S = 2.0


def _lines(stream: Any, proc: subprocess.Popen, deadline: float) -> Iterator[str]:
    """The output's lines until it ends, the deadline passes, or the master has exited
    (ORPHAN_GRACE_S earlier) while its workers still hold the pipe open.

    A thread reads, so the deadline and the master's exit are checked even while the
    load process prints nothing.
    """
    queue: Queue[str | None] = Queue()

    def pump() -> None:
        for line in iter(stream.readline, ""):
            queue.put(line)
        queue.put(None)

    threading.Thread(target=pump, name="load-output", daemon=True).start()
    exited_at = None
    while time.monotonic() < deadline:
        try:
            line = queue.get(timeout=0.5)
        except Empty:
            if proc.poll() is None:
                continue
            exited_at = exited_at or time.monotonic()
            if time.monotonic() - exited_at > ORPHAN_GRACE_S:
                return
            continue
        if line is None:
            return
        yield line


def stage_results(p: RunPlan, store: str, load: dict[str, Any], log: Log = print) -> dict[str, Any]:
    """Turn the load output into summary/timeseries/errors/slowest Parquet files."""
    staging = staging_dir(p.root, p.run_id, store)
    o = p.options
    identity = {"run_id": p.run_id, "store": store, "workload": p.spec.name}
    columns = {**identity, "users": o.users, "processes": p.processes, "target_rate": o.target_rate}
    summary = summary_frame(load, columns)
    repeats = repeats_frame(load["repeat_loads"], columns)
    summary = with_confidence(summary, repeats)
    write_parquet(staging / "summary.parquet", summary)
    write_parquet(staging / "repeats.parquet", repeats)
    write_parquet(staging / "timeseries.parquet", timeseries_frame(load, identity))
    write_parquet(staging / "errors.parquet", errors_frame(load, identity))
    write_parquet(staging / "slowest.parquet", slowest_frame(load, identity))
    all_row = summary[summary["operation"] == "ALL"].iloc[0]
    cpu = [
        {
            "process": i,
            "cpu_percent_max": max(s, default=0.0),
            "cpu_percent_mean": sum(s) / len(s) if s else 0.0,
        }
        for i, s in enumerate(load.get("process_cpu", []))
    ]
    status = "degraded" if all_row["errors"] > 0 else "ok"
    lost = int(load.get("lost_processes", 0))
    saturated = [c["process"] for c in cpu if c["cpu_percent_mean"] >= CLIENT_SATURATION_PERCENT]
    saturation = None
    if saturated:
        saturation = (
            f"load process {', '.join(map(str, saturated))} used >= {CLIENT_SATURATION_PERCENT:.0f}% of a core "
            "on average: the load generator, not the store, may limit these figures; add --processes "
            "or load machines (Locust workers) before comparing stores"
        )
        log(f"[{store}] WARNING: client-bound: {saturation}")
    info = _update_run_info(
        p,
        store,
        status=status,
        stage="results",
        load={
            "measured_s": load["window"]["duration_s"],
            "ops": int(all_row["ops"]),
            "errors": int(all_row["errors"]),
            "processes": p.processes,
            "client_cpu": cpu,
            "client_saturated": bool(saturated),
            "client_saturation": saturation,
            "late_samples": load.get("late_samples", 0),
            "lost_processes": lost,
            # Each load process's (Locust worker index's) share; its `histogram` (service
            # time, all operations) lets anyone check the totals are their exact sum.
            "per_process": load.get("per_process", []),
        },
    )
    if lost:
        # The files are kept (and published), but the figures miss that process's load
        # and its unreported seconds: never let them pass as a complete run.
        raise OptiStackError(
            f"{lost} of {p.processes} load processes died before the measured window ended; the results "
            "cover only part of the planned load and are incomplete"
        )
    return info


def stage_validate(p: RunPlan, store: str, log: Log = print, thresholds: Any = None) -> Any:
    """Check the staged results with Great Expectations; store validation.json beside them.

    Returns the report; a failed expectation does not raise here (see `run_stage`).
    """
    from workloads.validate import Thresholds, validate_run

    _update_run_info(p, store, stage="validate")
    staging = staging_dir(p.root, p.run_id, store)
    report = validate_run(staging, p.spec, p.spec.record_count, thresholds or Thresholds())
    report.write(staging)
    log(
        f"[{store}] validation {'passed' if report.success else 'FAILED'}: "
        f"{sum(r.success for r in report.results)}/{len(report.results)} expectations met"
    )
    return report


def stage_teardown(p: RunPlan, store: str, log: Log = print) -> None:
    """Drop the namespace if the run asked for it (default)."""
    if not p.options.teardown:
        return
    with get_store(store).connect(p.urls[store], p.settings()) as conn:
        conn.teardown()
    log(f"[{store}] dropped {p.options.namespace}")


def stage_publish(p: RunPlan, store: str, log: Log = print) -> Path:
    """Tear down (when asked and provisioned), finish run.json, move the folder into place.

    Runs whatever happened before it: a store whose stage failed is published with
    `status: failed` and the reason, so the report can say so.
    """
    info = read_run_info(p, store)
    if not info:  # nothing was staged: provisioning never started
        _update_run_info(
            p,
            store,
            run_id=p.run_id,
            store=store,
            status="failed",
            error=f"{store} never started",
            url=redact_url(p.urls[store]),
        )
        info = read_run_info(p, store)
    if info.get("server") is not None:
        try:
            stage_teardown(p, store, log)
        except Exception as error:  # a dead server cannot be cleaned; say so and go on
            log(f"[{store}] teardown failed: {redact_text(str(error), p.urls[store])}")
    status = info.get("status")
    if status == "running":  # a stage died without recording why (e.g. the task was killed)
        status = "failed"
        info["error"] = info.get("error") or f"{info.get('stage')}: stopped before finishing"
    _update_run_info(p, store, status=status, error=info.get("error"), stage="published", finished_at=_now())
    path = publish(p.root, p.run_id, store)
    log(f"[{store}] results in {path}")
    return path


def mark_failed(p: RunPlan, store: str, error: BaseException, log: Log = print) -> str:
    """Record in the staged run.json that the current stage failed, and why."""
    message = redact_text(str(error), p.urls.get(store, ""))
    if not isinstance(error, OptiStackError):
        message = f"{type(error).__name__}: {message}"
    stage = read_run_info(p, store).get("stage", "setup")
    _update_run_info(p, store, status="failed", error=f"{stage}: {message}")
    log(f"[{store}] FAILED in {stage}: {message}")
    return message


STAGES = ("provision", "seed", "load", "validate", "publish")


def _run_stage(p: RunPlan, store: str, stage: str, log: Log = print) -> Any:
    """Run one named stage (what one Airflow task does).

    A stage that fails is recorded in run.json and re-raised; a validation whose
    expectations fail raises `OptiStackError` naming each one, after storing the report.
    `publish` never fails because an earlier stage did.
    """
    if stage == "publish":
        return stage_publish(p, store, log)
    try:
        if stage == "provision":
            return stage_provision(p, store, log)
        if stage == "seed":
            return stage_seed(p, store, log)
        if stage == "load":
            return stage_results(p, store, stage_load(p, store, log), log)
        if stage == "validate":
            report = stage_validate(p, store, log)
        else:
            raise OptiStackError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    except Exception as error:
        mark_failed(p, store, error, log)
        raise
    if not report.success:
        raise OptiStackError(report.summary_message())
    return report


def run_stage(p: RunPlan, store: str, stage: str, log: Log = print) -> Any:
    """Run one named stage (what one Airflow task does), as an OpenTelemetry span.

    The span is `optistack <stage>`, a child of the store's span when `run_store` runs the
    stage; a failure sets its status to ERROR (message redacted) and is re-raised, as
    `_run_stage` describes.
    """
    attributes = {**_span_attributes(p, store), "optistack.stage": stage}
    with telemetry.span(f"optistack {stage}", attributes, redact=_redactor(p, store)):
        return _run_stage(p, store, stage, log)


def _span_attributes(p: RunPlan, store: str) -> dict[str, Any]:
    return telemetry.run_attributes(p.run_id, store, p.spec.name, p.spec.record_count, p.options.users)


def _redactor(p: RunPlan, store: str) -> Callable[[BaseException], str]:
    return lambda error: redact_text(str(error), p.urls.get(store, ""))


def run_store(p: RunPlan, store: str, log: Log = print) -> Path:
    """Every stage for one store; a failure is recorded and published, never raised.

    One OpenTelemetry span (`optistack store`) covers them all; its status is ERROR when a
    stage failed.
    """
    with telemetry.span("optistack store", _span_attributes(p, store), redact=_redactor(p, store)) as span:
        for stage in STAGES[:-1]:
            try:
                run_stage(p, store, stage, log)
            except Exception as error:  # one store's failure must not stop the others
                telemetry.mark_error(span, f"{stage}: {_redactor(p, store)(error)}")
                if stage != "validate":
                    break
                log(f"[{store}] {error}")
        return run_stage(p, store, "publish", log)


def run(p: RunPlan, log: Log = print) -> list[Path]:
    """Run every store of the plan in turn (one at a time: they share this machine)."""
    return [run_store(p, store, log) for store in p.stores]


def published_dirs(p: RunPlan) -> list[Path]:
    """The published store folders of a plan."""
    return [store_dir(p.root, p.run_id, s) for s in p.stores]


def command_line() -> str:
    """This process's command line, for run.json (passwords in URLs redacted)."""

    def safe(arg: str) -> str:
        if "://" not in arg:
            return arg
        head, sep, tail = arg.partition("=")
        if sep and "://" in tail and "://" not in head:  # --url store=URL
            return head + sep + redact_url(tail)
        return redact_url(arg)

    return " ".join(shlex.quote(safe(a)) for a in sys.argv)
