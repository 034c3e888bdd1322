"""One YCSB client: chooses the next operation, runs it against a store, measures it.

This is what a Locust user does on every iteration, kept free of Locust so the harness
cost benchmark can run the very same code without it. The data flows one way:
spec -> generators -> store -> recorder.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict

from workloads.errors import OptiStackError
from workloads.generators import OperationChooser, ValueGenerator, derive_rng
from workloads.keyspace import KeyChooser, ScanLengthChooser, key_name
from workloads.recorder import Recorder
from workloads.spec import WorkloadSpec
from workloads.stores import get_store
from workloads.stores.base import DEFAULT_NAMESPACE, Store, StoreSettings, redact_text

# Consecutive failures after which a user drops its connection and reconnects: drivers
# differ in whether a broken connection heals itself, and a killed server must not
# leave every later operation failing on a dead socket.
RECONNECT_AFTER_ERRORS = 3
ERROR_BACKOFF_S = 0.05
YIELD_EVERY = 64  # operations between forced cooperative yields (see `WorkloadDriver.step`)
TIMER_RESOLUTION_NS = 1_000_000  # gevent (libev, epoll) sleeps in whole milliseconds


class LoadConfig(BaseModel):
    """Everything a load process needs, passed as JSON on its command line."""

    model_config = ConfigDict(frozen=True)

    store: str
    url: str
    namespace: str = DEFAULT_NAMESPACE
    spec: WorkloadSpec
    seed: int
    users: int
    processes: int
    target_rate: float | None = None
    warmup_s: float
    duration_s: float
    operations: int | None = None
    output_path: str
    operation_timeout_s: float = 10.0
    connect_timeout_s: float = 5.0
    insert_order: Literal["hashed", "ordered"] = "hashed"

    def store_settings(self) -> StoreSettings:
        """The settings each user's store connection gets."""
        return StoreSettings(
            namespace=self.namespace,
            field_count=self.spec.field_count,
            connect_timeout_s=self.connect_timeout_s,
            operation_timeout_s=self.operation_timeout_s,
        )


class OperationBudget:
    """`--operations`: how many measured operations this process still starts.

    An operation counts when it starts inside the measured window. When the last one
    has finished, `on_done` gets the wall-clock time it ended, which closes the window.
    """

    def __init__(self, total: int) -> None:
        self.left = total
        self.in_flight = 0
        self.last_end_ns = 0
        self.done = total == 0
        self.on_done: Callable[[int], None] | None = None

    def take(self) -> bool:
        """Claim one operation; False once the budget is spent."""
        if self.left <= 0:
            return False
        self.left -= 1
        self.in_flight += 1
        return True

    def release(self, end_ns: int) -> None:
        """One claimed operation finished (successfully or not)."""
        self.in_flight -= 1
        self.last_end_ns = max(self.last_end_ns, end_ns)
        if self.left == 0 and self.in_flight == 0 and not self.done:
            self.done = True
            if self.on_done is not None:
                self.on_done(self.last_end_ns)


class ProcessWorkload:
    """Generators shared by every user of one load process (greenlets never preempt
    each other inside these calls, so sharing needs no locks)."""

    def __init__(self, config: LoadConfig, process_index: int) -> None:
        spec = config.spec
        seed = config.seed
        self.spec = spec
        self.insert_order = config.insert_order
        self.operations = OperationChooser(spec.operations, derive_rng(seed, "ops", process_index))
        expected = (
            int(config.target_rate * (config.warmup_s + config.duration_s)) if config.target_rate else None
        )
        self.keys = KeyChooser(
            spec,
            seed,
            process_index=process_index,
            process_count=config.processes,
            expected_operations=expected,
        )
        self.values = ValueGenerator(
            spec.field_count,
            spec.field_length,
            derive_rng(seed, "values", process_index),
            read_all_fields=spec.read_all_fields,
            write_all_fields=spec.write_all_fields,
        )
        self.scan_lengths = ScanLengthChooser.from_spec(spec, derive_rng(seed, "scans", process_index))
        self.rng = derive_rng(seed, "schedule", process_index)
        self.budget = None
        if config.operations is not None:
            share, extra = divmod(config.operations, config.processes)
            self.budget = OperationBudget(share + (1 if process_index < extra else 0))

    def key(self, index: int) -> str:
        return key_name(index, self.insert_order)


_PROCESS_WORKLOAD: ProcessWorkload | None = None


def process_workload(config: LoadConfig, process_index: int) -> ProcessWorkload:
    """The one `ProcessWorkload` of this process (created on first use)."""
    global _PROCESS_WORKLOAD
    if _PROCESS_WORKLOAD is None:
        _PROCESS_WORKLOAD = ProcessWorkload(config, process_index)
    return _PROCESS_WORKLOAD


class WorkloadDriver:
    """Runs one user's operations: closed loop, or on an intended schedule."""

    def __init__(
        self, config: LoadConfig, recorder: Recorder, process_index: int = 0, sleep=time.sleep
    ) -> None:
        self.config = config
        self.recorder = recorder
        self.workload = process_workload(config, process_index)
        self.store_cls = get_store(config.store)
        self.store: Store | None = None
        self.sleep = sleep
        self.consecutive_errors = 0
        self.steps = 0
        self.interval_ns = int(config.users / config.target_rate * 1e9) if config.target_rate else 0
        self.next_intended_ns = 0
        self.in_flight = False  # an operation is running against the store
        self.stopping = False  # the run is ending: start no new operation

    # -- connection ------------------------------------------------------------
    def start_user(self) -> None:
        """Connect; a failure is counted as a CONNECT error and retried by `step`."""
        self._connect()
        if self.interval_ns:
            # The schedule starts once connected (as YCSB throttles only after init): the
            # time to import the driver and connect is not an operation's latency.
            # Spread users over one interval so a target rate starts smooth, not in bursts.
            offset = int(self.workload.rng.random() * self.interval_ns)
            self.next_intended_ns = time.perf_counter_ns() + offset

    def _connect(self) -> bool:
        start_wall, t0 = time.time_ns(), time.perf_counter_ns()
        try:
            self.store = self.store_cls.connect(self.config.url, self.config.store_settings())
            return True
        except OptiStackError as error:
            self.store = None
            self._record_error("CONNECT", start_wall, t0, error)
            self.sleep(min(1.0, self.config.connect_timeout_s))
            return False

    def stop_user(self) -> None:
        """Close the connection."""
        if self.store is not None:
            try:
                self.store.close()
            finally:
                self.store = None

    # -- the hot path ------------------------------------------------------------
    def step(self) -> None:
        """Run and measure one operation chosen from the mix."""
        workload = self.workload
        op = workload.operations.next()
        intended = 0
        if self.interval_ns:
            intended = self.next_intended_ns
            self.next_intended_ns += self.interval_ns
            wait_ns = intended - time.perf_counter_ns()
            if wait_ns > TIMER_RESOLUTION_NS:
                # gevent's timers (libev on epoll) round every sleep up to a whole
                # millisecond: sleep until within one of the intended start, not past it.
                self.sleep((wait_ns - TIMER_RESOLUTION_NS) / 1e9)
        elif self.steps % YIELD_EVERY == 0:
            # A fast store can answer before the socket ever blocks; yield now and then
            # so Locust's heartbeats and reports keep running.
            self.sleep(0)
        self.steps += 1
        if self.stopping:  # see OptiStackUser.stop: the user is killed while it waits here
            self.sleep(1.0)
            return
        if self.store is None and not self._connect():
            return
        name, key = op.upper(), ""
        start_wall = time.time_ns()
        budget = workload.budget
        counted = False
        window_start = self.recorder.window_start_ns
        if budget is not None and window_start is not None and start_wall >= window_start:
            counted = budget.take()
            if not counted:  # this process has started all its operations
                self.sleep(0.5)
                return
        t0 = time.perf_counter_ns()
        self.in_flight = True
        try:
            key = self._execute(op)
        except Exception as error:  # every driver has its own hierarchy: count by type
            self._record_error(name, start_wall, t0, error, key, intended)
        else:
            t1 = time.perf_counter_ns()
            self.consecutive_errors = 0
            self.recorder.measure(
                name,
                start_wall,
                (t1 - t0) // 1000,
                # an operation started (< 1 ms) before its intended start is charged its service time
                (t1 - min(intended, t0)) // 1000 if intended else None,
                None,
                key,
            )
        finally:
            self.in_flight = False
        if counted:
            budget.release(time.time_ns())

    def _execute(self, op: str) -> str:
        workload = self.workload
        store = self.store
        values = workload.values
        if op == "read":
            key = workload.key(workload.keys.next_key_index())
            if store.read(key, values.fields_to_read()) is None:
                raise RecordNotFound(key)
        elif op == "update":
            key = workload.key(workload.keys.next_key_index())
            store.update(key, values.update_values())
        elif op == "insert":
            index = workload.keys.next_insert_index()
            key = workload.key(index)
            try:
                store.insert(key, values.values())
            except Exception:
                workload.keys.acknowledge_insert(index, succeeded=False)
                raise
            workload.keys.acknowledge_insert(index)
        elif op == "scan":
            key = workload.key(workload.keys.next_key_index())
            store.scan(key, workload.scan_lengths.next(), values.fields_to_read())
        elif op == "read_modify_write":
            key = workload.key(workload.keys.next_key_index())
            if store.read(key, values.fields_to_read()) is None:
                raise RecordNotFound(key)
            store.update(key, values.update_values())
        elif op == "delete":
            key = workload.key(workload.keys.next_key_index())
            store.delete(key)
        else:  # pragma: no cover - the spec validates operation names
            raise ValueError(op)
        return key

    def _record_error(
        self, name: str, start_wall: int, t0: int, error: BaseException, key: str = "", intended: int = 0
    ) -> None:
        t1 = time.perf_counter_ns()
        error_type = type(error).__name__
        self.recorder.error_example(name, error_type, redact_text(str(error), self.config.url))
        self.recorder.measure(
            name,
            start_wall,
            (t1 - t0) // 1000,
            (t1 - intended) // 1000 if intended else None,
            error_type,
            key,
        )
        self.consecutive_errors += 1
        if self.consecutive_errors >= RECONNECT_AFTER_ERRORS and name != "CONNECT":
            self.stop_user_quietly()
        self.sleep(ERROR_BACKOFF_S)

    def stop_user_quietly(self) -> None:
        """Drop a connection that keeps failing; the next step reconnects."""
        try:
            self.stop_user()
        except Exception:  # the connection is already broken; closing it may fail too
            self.store = None


class RecordNotFound(Exception):
    """A read found no record (YCSB's NOT_FOUND status): counted as an error."""
