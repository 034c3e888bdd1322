"""The Locust side of a run: the locustfile that `python -m locust -f` loads.

Only the load process imports this module (Locust monkey-patches the interpreter with
gevent on import). It extends Locust through its published seams only:

- `init_command_line_parser`: the `--optistack-config` argument (JSON). Locust forwards
  custom arguments to every worker, local (`--processes`) or remote (`--worker`).
- `test_start` on the master: fixes the measured window (warm-up excluded) in wall-clock
  time and broadcasts it to the workers, and schedules the stop.
- `report_to_master` / `worker_report`: workers ship finished seconds of encoded
  HdrHistograms every few seconds; the master merges them exactly.
- a custom `optistack_final` message sent from each worker's `test_stop`: the rest of
  its data. Locust delivers it before the worker's `client_stopped`, and the master's
  `stop()` waits for every `client_stopped`, so nothing measured is lost at the end.
- `test_stop` on the master: writes the merged result file and quits.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import gevent
import psutil
from locust import User, constant, events, task
from locust.runners import MasterRunner, WorkerRunner

from workloads.driver import LoadConfig, WorkloadDriver, process_workload
from workloads.recorder import Aggregator, Recorder, encode, latency_stats, new_histogram

PROGRESS_INTERVAL_S = 5.0
LIVE_INTERVAL_S = 1.0


class _State:
    config: LoadConfig | None = None
    recorder: Recorder | None = None
    aggregator: Aggregator | None = None
    window: tuple[int, int] | None = None
    cpu_samples: list[float] = []
    process_cpu: dict[str, list[float]] = {}
    started_wall: float = 0.0
    written: bool = False
    expected_processes: int = 1
    done: dict[str, int] = {}
    per_process: dict[str, dict[str, Any]] = {}  # node id -> its own ops histogram and errors
    workers: set[str] = set()  # node ids of the workers that connected to this master
    users_started: int = 0  # worker: users whose on_start (connect) has finished
    started_by_node: dict[str, int] = {}  # master: the same, per worker
    spawned: bool = False  # master: Locust's spawning_complete has fired


STATE = _State()


def _preload() -> None:
    """Import the store's module and driver now, in the Locust parent before it forks
    its workers: importing boto3 or cassandra-driver takes about a second, which would
    otherwise stall each worker's event loop as its first user starts."""
    raw = os.environ.get("OPTISTACK_LOAD_CONFIG")
    if raw:
        from workloads.stores import get_store

        get_store(json.loads(raw)["store"])


_preload()


def _config(environment: Any) -> LoadConfig:
    if STATE.config is None:
        raw = getattr(environment.parsed_options, "optistack_config", "") or os.environ.get(
            "OPTISTACK_LOAD_CONFIG", ""
        )
        if not raw:
            raise RuntimeError("the load process needs --optistack-config (the runner passes it)")
        STATE.config = LoadConfig.model_validate_json(raw)
    return STATE.config


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--optistack-config",
        default="",
        env_var="OPTISTACK_LOAD_CONFIG",
        help="OptiStack load configuration (JSON); the runner sets it",
    )


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        expected = (
            runner.environment.parsed_options.expect_workers if runner.environment.parsed_options else 1
        )
        STATE.aggregator = Aggregator(expected_processes=expected or 1)
        STATE.expected_processes = expected or 1
        _MASTER["runner"] = runner
        runner.register_message("optistack_final", _on_final)
        runner.register_message("optistack_done", _on_done)
        runner.register_message("optistack_users_started", _on_users_started)
    elif isinstance(runner, WorkerRunner):
        runner.register_message("optistack_window", _on_window)


@events.test_start.add_listener
def _preload_on_worker(environment: Any, **_: Any) -> None:
    """A remote worker learns its store only from the master's spawn message, which
    fires test_start before the first user spawns: import the store's module now, as
    `_preload` does for forked workers, so no user's start stalls the event loop."""
    if isinstance(environment.runner, WorkerRunner):
        from workloads.stores import get_store

        get_store(_config(environment).store)


@events.worker_connect.add_listener
def _on_worker_connect(client_id: str, **_: Any) -> None:
    """Say which workers came, and refuse one too many.

    Workers partition the keys by their index, 0..N-1 in connection order; an extra
    worker (or one replacing a lost one) would get index N and insert keys that belong
    to worker 0, and Locust would hand it users of the others.
    """
    runner = _MASTER.get("runner")
    if runner is None:
        return
    if client_id in STATE.workers:  # Locust repeats client_ready until the worker has its ack
        return
    STATE.workers.add(client_id)
    store = _config(runner.environment).store
    connected = len(STATE.workers)
    index = runner.get_worker_index(client_id)
    if connected > STATE.expected_processes or index >= STATE.expected_processes:
        print(
            f"optistack-error: a load worker too many connected ({client_id}, index {index}; "
            f"{STATE.expected_processes} expected): stop the extra `optistack worker` processes "
            "or raise --expect-workers, and run again",
            flush=True,
        )
        STATE.written = True  # no results: the runner reports the line above instead
        gevent.spawn_later(0.5, _abort, runner)
        return
    if not getattr(runner.environment.parsed_options, "processes", None):  # remote, not forked here
        print(
            f"progress [{store}] load worker {connected} of {STATE.expected_processes} connected", flush=True
        )


def _abort(runner: MasterRunner) -> None:
    """Send every worker home, then end this master. After a quit, Locust's headless
    start loop would go on waiting for workers until --expect-workers-max-wait."""
    runner.quit()
    gevent.sleep(1.0)  # let the quit messages leave
    os._exit(3)


# --- master -----------------------------------------------------------------------
@events.test_start.add_listener
def _on_test_start(environment: Any, **_: Any) -> None:
    runner = environment.runner
    config = _config(environment)
    if isinstance(runner, MasterRunner):
        STATE.started_wall = time.time()
        gevent.spawn(_progress, config)
    elif isinstance(runner, WorkerRunner):
        if STATE.recorder is None:
            # The window message can arrive before the spawn message that fires test_start.
            STATE.recorder = Recorder()
        gevent.spawn(_sample_cpu)


@events.spawning_complete.add_listener
def _on_spawning_complete(user_count: int, **_: Any) -> None:
    """Every user greenlet exists; the window opens once they have all connected."""
    runner = _MASTER.get("runner")
    if runner is None or STATE.window is not None:
        return
    STATE.spawned = True
    config = _config(runner.environment)
    # A user whose on_start never ends (a driver that ignores its connect timeout) must
    # not hold the run for ever: past this bound the window opens without it.
    gevent.spawn_later(config.connect_timeout_s + USERS_CONNECT_GRACE_S, _open_window, runner, True)
    _open_window(runner)


def _on_users_started(environment: Any, msg: Any, **_: Any) -> None:
    """A worker's count of users that have finished connecting (on_start)."""
    STATE.started_by_node[msg.node_id] = msg.data["count"]
    runner = _MASTER.get("runner")
    if runner is not None:
        _open_window(runner)


def _open_window(runner: MasterRunner, timed_out: bool = False) -> None:
    """Warm-up starts now, the measured window after it: once every user has connected.

    Not at test start, nor at Locust's spawning_complete, which fires when the user
    greenlets exist but before their on_start has connected them: the first measured
    second would then hold fewer users than planned (with --warmup 0 it held 108-158 of
    200 scheduled operations).
    """
    if STATE.window is not None or not STATE.spawned:
        return
    config = _config(runner.environment)
    started = sum(STATE.started_by_node.values())
    if started < config.users and not timed_out:
        return
    if started < config.users:
        print(
            f"progress [{config.store}] only {started} of {config.users} users finished connecting within "
            f"{config.connect_timeout_s + USERS_CONNECT_GRACE_S:g}s; measuring without waiting for the rest",
            flush=True,
        )
    start = time.time_ns() + int(config.warmup_s * 1e9)
    end = start + int(config.duration_s * 1e9)
    STATE.window = (start, end)
    # With --operations the window closes when the last counted operation ends;
    # the duration is then only an upper bound.
    runner.send_message("optistack_window", {"start": start, "end": end})
    gevent.spawn(_stop_at, runner, end)
    if config.operations is not None:
        gevent.spawn(_watch_for_lost_workers, runner)


# Seconds past the connect timeout that the window waits for users still in on_start.
USERS_CONNECT_GRACE_S = 5.0

_MASTER: dict[str, MasterRunner] = {}

# How long a worker may miss its heartbeats before an `--operations` run gives up on it.
# Locust marks a worker missing after 3 s without one; a busy machine can stall a worker
# that long and it heals, so the run waits a while longer before it ends.
LOST_WORKER_GRACE_S = 10.0


def _watch_for_lost_workers(runner: MasterRunner) -> None:
    """End an `--operations` run whose worker died before finishing its share.

    The window of such a run closes only when every process has sent `optistack_done`;
    a dead worker never will, and the run would last until `--duration` (a day by
    default). It ends now instead, with the operations measured so far: the lost
    process is counted in the output (`lost_processes`) and the runner fails the store.
    """
    missing_since: dict[str, float] = {}
    while True:
        gevent.sleep(1.0)
        now = time.monotonic()
        missing = {node.id for node in runner.clients.missing if node.id not in STATE.done}
        missing_since = {node: missing_since.get(node, now) for node in missing}
        lost = [node for node, since in missing_since.items() if now - since >= LOST_WORKER_GRACE_S]
        if lost and STATE.window is not None:
            print(
                f"progress [{_config(runner.environment).store}] load worker {', '.join(lost)} lost "
                f"(no heartbeat for {LOST_WORKER_GRACE_S:g}s): its share of --operations cannot "
                "finish; ending the run with what was measured",
                flush=True,
            )
            STATE.window = (STATE.window[0], time.time_ns())
            runner.stop()
            return


def _stop_at(runner: MasterRunner, end_ns: int) -> None:
    # A little past the window's end so operations started just before it finish.
    gevent.sleep(max(0.0, (end_ns - time.time_ns()) / 1e9) + 0.25)
    runner.stop()


def _progress(config: LoadConfig) -> None:
    """For the task log, a `progress` line every few seconds: elapsed, ops/s, p99 and errors
    of the last finished second. For the runner, a `live {json}` line per finished second.

    A live line carries one second's merged rows (`Aggregator.rows`: ops, errors, p50, p99,
    max per operation and `ALL`), so it costs nothing per operation. While no new second
    has finished (starting, warm-up, the 3 s shipping lag) a line with `"second": null`
    says the phase once a second. A `test_stop` listener, added after the one that writes
    the output, prints the seconds that finished at the very end and a `finished` line:
    the live lines then hold every row of the time series.
    """
    printed = 0  # how many of the aggregator's rows are already out as live lines
    finished = False

    def elapsed() -> float:
        return round(time.time() - STATE.started_wall, 3)

    def live(data: dict[str, Any]) -> None:
        print("live " + json.dumps(data, separators=(",", ":")), flush=True)

    def live_seconds(phase: str) -> int:
        nonlocal printed
        if STATE.aggregator is None:
            return 0
        rows = STATE.aggregator.rows
        new, printed = rows[printed:], len(rows)
        seconds: dict[int, dict[str, Any]] = {}  # rows come second by second, ALL last
        for row in new:
            seconds.setdefault(row["second"], {})[row["operation"]] = {
                key: row[key]
                for key in ("ops", "errors", "latency_p50_us", "latency_p99_us", "latency_max_us")
            }
        for second, operations in seconds.items():
            live({"second": second, "phase": phase, "elapsed_s": elapsed(), "operations": operations})
        return len(seconds)

    def on_stop(**_: Any) -> None:
        nonlocal finished
        if finished or not STATE.written:
            return
        finished = True
        live_seconds("finished")
        live({"second": None, "phase": "finished", "elapsed_s": elapsed()})

    events.test_stop.add_listener(on_stop)
    last_progress = time.monotonic()
    while not finished:
        gevent.sleep(LIVE_INTERVAL_S)
        if finished:
            return
        if STATE.window is None:
            phase = "starting"
        else:
            phase = "warm-up" if time.time_ns() < STATE.window[0] else "measuring"
        if not live_seconds(phase):
            live({"second": None, "phase": phase, "elapsed_s": elapsed()})
        if time.monotonic() - last_progress < PROGRESS_INTERVAL_S:
            continue
        last_progress = time.monotonic()
        if STATE.aggregator is None or STATE.window is None:
            continue
        rows = STATE.aggregator.latest_seconds(1)
        if rows:
            row = rows[-1]
            p99 = f"{row['latency_p99_us']:,.0f} us" if row["latency_p99_us"] is not None else "-"
            line = (
                f"[{config.store}] {elapsed():5.0f}s {phase}: {row['ops']:,} ops/s  p99 {p99}  "
                f"errors {row['errors']}"
            )
        else:
            line = f"[{config.store}] {elapsed():5.0f}s {phase}"
        print(f"progress {line}", flush=True)


def _on_done(environment: Any, msg: Any, **_: Any) -> None:
    """A worker started and finished its share of `--operations`."""
    STATE.done[msg.node_id] = msg.data["last_end_ns"]
    if len(STATE.done) >= STATE.expected_processes and STATE.window is not None:
        STATE.window = (STATE.window[0], max(STATE.done.values()))
        gevent.spawn(environment.runner.stop)


def _on_final(environment: Any, msg: Any, **_: Any) -> None:
    data = msg.data
    STATE.aggregator.add(msg.node_id, data["shipment"])
    _count_process(msg.node_id, data["shipment"])
    STATE.process_cpu[msg.node_id] = data["cpu"]


@events.worker_report.add_listener
def _on_worker_report(client_id: str, data: dict[str, Any]) -> None:
    shipment = data.get("optistack")
    if shipment is not None and STATE.aggregator is not None:
        STATE.aggregator.add(client_id, shipment)
        _count_process(client_id, shipment)


def _count_process(node_id: str, shipment: dict[str, Any]) -> None:
    """Keep each process's own figures beside the merged ones: its operations in one
    service-time histogram (every operation type) and its error count."""
    entry = STATE.per_process.setdefault(node_id, {"service": new_histogram(), "errors": 0})
    for data in shipment["seconds"].values():
        for text in data["service"].values():
            entry["service"].decode_and_add(text)
        entry["errors"] += sum(data["errors"].values())


def _per_process() -> list[dict[str, Any]]:
    runner = _MASTER.get("runner")
    rows = []
    for node_id, entry in STATE.per_process.items():
        histogram = entry["service"]
        stats = latency_stats(histogram)
        rows.append(
            {
                "process": runner.get_worker_index(node_id) if runner is not None else 0,
                "ops": histogram.get_total_count(),
                "errors": entry["errors"],
                "latency_p50_us": stats["latency_p50_us"],
                "latency_p99_us": stats["latency_p99_us"],
                "histogram": encode(histogram),
            }
        )
    return sorted(rows, key=lambda row: row["process"])


@events.test_stop.add_listener
def _on_test_stop(environment: Any, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        if STATE.recorder is not None:
            shipment = STATE.recorder.drain(time.time_ns(), final=True)
            runner.send_message(
                "optistack_final",
                {"shipment": shipment, "cpu": STATE.cpu_samples, "index": runner.worker_index},
            )
        return
    if not isinstance(runner, MasterRunner) or STATE.aggregator is None or STATE.written:
        return
    STATE.written = True
    _write_output(_config(environment))
    gevent.spawn_later(0.1, runner.quit)


def _write_output(config: LoadConfig) -> None:
    aggregator = STATE.aggregator
    aggregator.finish_all()
    start, end = STATE.window or (0, 0)
    totals = {}
    for op, total in aggregator.totals.items():
        totals[op] = {
            "service": encode(total.service),
            "intended": encode(total.intended) if total.intended.get_total_count() else None,
            "errors": total.errors,
            "error_types": {et: n for (o, et), n in aggregator.error_counts.items() if o == op},
        }
    output = {
        "window": {"start_ns": start, "end_ns": end, "duration_s": (end - start) / 1e9},
        "totals": totals,
        "rows": aggregator.rows,
        "error_examples": [[op, et, msg] for (op, et), msg in aggregator.error_examples.items()],
        "slowest": aggregator.slowest,
        "late_samples": aggregator.late_samples,
        "process_cpu": list(STATE.process_cpu.values()),
        # Workers whose final data never came (killed, crashed): their share is missing.
        "lost_processes": max(0, STATE.expected_processes - len(STATE.process_cpu)),
        "per_process": _per_process(),
    }
    tmp = f"{config.output_path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(output, fh)
    os.replace(tmp, config.output_path)
    all_ops = sum(r["ops"] for r in aggregator.rows if r["operation"] == "ALL")
    print(f"progress [{config.store}] load finished: {all_ops:,} operations measured", flush=True)


# --- worker -----------------------------------------------------------------------
def _on_window(environment: Any, msg: Any, **_: Any) -> None:
    if STATE.recorder is None:
        STATE.recorder = Recorder()
    STATE.recorder.set_window(msg.data["start"], msg.data["end"])


@events.report_to_master.add_listener
def _on_report(client_id: str, data: dict[str, Any]) -> None:
    if STATE.recorder is not None:
        data["optistack"] = STATE.recorder.drain(time.time_ns())


def _sample_cpu() -> None:
    """Once a second, the CPU this process used, in % of one core: near 100 means the
    load generator, not the store, limits the throughput."""
    process = psutil.Process()
    process.cpu_percent()  # the first reading only sets the baseline
    while True:
        gevent.sleep(1.0)
        window = STATE.recorder.window_start_ns if STATE.recorder else None
        if window is not None and time.time_ns() >= window:
            STATE.cpu_samples.append(process.cpu_percent())
        else:
            process.cpu_percent()


class OptiStackUser(User):
    """One YCSB client thread: one store connection, one operation at a time.

    Closed loop: the next operation starts as soon as the previous one ends. Target
    rate: each user keeps its own schedule at `target_rate / users` ops/s and records
    latency both from the actual and from the intended start (wrk2's approach).
    """

    wait_time = constant(0)

    def on_start(self) -> None:
        config = _config(self.environment)
        runner = self.environment.runner
        index = runner.worker_index if isinstance(runner, WorkerRunner) else 0
        if STATE.recorder is None:
            STATE.recorder = Recorder()
        budget = process_workload(config, max(index, 0)).budget
        if budget is not None and budget.on_done is None and isinstance(runner, WorkerRunner):
            budget.on_done = lambda last_end_ns: runner.send_message(
                "optistack_done", {"last_end_ns": last_end_ns}
            )
        self.driver = WorkloadDriver(config, STATE.recorder, process_index=max(index, 0), sleep=gevent.sleep)
        try:
            self.driver.start_user()
        finally:  # connected or not (a failed connect is counted and retried): this user runs
            STATE.users_started += 1
            if isinstance(runner, WorkerRunner):
                runner.send_message("optistack_users_started", {"count": STATE.users_started})

    def stop(self, force: bool = False) -> bool:
        """Let the operation in flight finish before Locust kills this user.

        It started inside the measured window: killing it would drop exactly the
        slowest operations, and a stall across the end of the window would vanish
        from the results. The store's operation timeout bounds the wait.
        """
        driver = getattr(self, "driver", None)
        if driver is not None:
            driver.stopping = True
            deadline = time.monotonic() + driver.config.operation_timeout_s + 1.0
            while driver.in_flight and time.monotonic() < deadline:
                gevent.sleep(0.005)
        return super().stop(force)

    def on_stop(self) -> None:
        driver = getattr(self, "driver", None)
        if driver is not None:
            driver.stop_user()

    @task
    def operations(self) -> None:
        # One task that never returns: Locust's per-task scheduling would cost more
        # client CPU than a fast store's operation. Stopping kills the greenlet.
        step = self.driver.step
        while True:
            step()
