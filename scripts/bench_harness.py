"""Harness cost: OptiStack's client CPU per operation and throughput beside a bare driver loop
and the stores' native C benchmark tools, on the same servers, at the same operation and
concurrency. `make bench` runs it; it prints figures (Markdown tables), it is not a test.

    .venv/bin/python scripts/bench_harness.py [--stores postgres,redis,mysql] [--users 1,16]
        [--duration 10] [--warmup 2] [--records 10000] [--repeat 1] [--modes ...] [--json FILE]

The operation is YCSB workload c (100% reads of whole 10 x 100 B records, zipfian keys,
OptiStack's key chooser) against `records` seeded records. For each store and each user
count, one mode after the other:

  bare       a plain Python loop over the store module, blocking sockets:
             `store.read(key_name(chooser.next_key_index()))`; 1 user = 1 thread in 1
             process; N users = N threads over the same number of processes OptiStack uses.
  gevent     the same loop in a gevent-monkey-patched process (greenlets instead of threads):
             what cooperative sockets cost by themselves.
  driver     OptiStack's own `WorkloadDriver.step` (operation chooser, key chooser, timing,
             `Recorder.measure` into HdrHistograms, the cooperative yield) under gevent,
             without Locust.
  optistack  `optistack run --workload c --users U --processes P --warmup W --duration D`,
             through the runner's own stages (provision, seed, load, results, publish), so
             the exact measured window is known; throughput and p50 from summary.parquet.
  native     pgbench -S (simple and prepared protocol; own database `optistack_bench`),
             redis-benchmark GET and HGETALL of 10 x 100 B hashes (own prepopulated keys
             `optistack_bench_native:*`), sysbench oltp_point_select (table test.sbtest1).

Client CPU per operation is user + system CPU time of the client processes over the
measured window divided by the operations measured in it:
  bare/gevent/driver  getrusage(RUSAGE_SELF) of each load process at the window's edges;
  optistack           psutil cpu_times() of the Locust master and every worker, sampled
                      from outside every 50 ms and interpolated at the window's wall-clock
                      edges (the window comes from the load process's own output);
  native              the tool's rusage from wait4() for its whole run / its operations.
The load average is recorded before and after every measurement: the machine may be shared.

Servers (override with BENCH_POSTGRES_URL, BENCH_REDIS_URL, BENCH_MYSQL_URL):
PostgreSQL postgresql://postgres@127.0.0.1:5432/postgres, Redis redis://127.0.0.1:6379/9,
MariaDB/MySQL mysql://root@127.0.0.1:3306/test. Only objects this script creates are
touched: the namespace `optistack_bench_harness`, the database `optistack_bench` (with a
marker comment), Redis keys `optistack_bench_native:*` it wrote, and sysbench's
`sbtest1` (refused if it already exists), all removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

URLS = {
    "postgres": os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    "redis": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9"),
    "mysql": os.environ.get("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
}
NAMESPACE = "optistack_bench_harness"
SEED = 1
PG_BENCH_DB = "optistack_bench"
PG_MARKER = "created by optistack scripts/bench_harness.py"
REDIS_NATIVE_PREFIX = "optistack_bench_native"
SYSBENCH_TABLE = "sbtest1"
SAMPLE_EVERY_S = 0.05
ALL_MODES = ("bare", "gevent", "driver", "optistack", "native")
INSTALL_HINTS = {
    "pgbench": "apt-get install -y postgresql-client (Debian/Ubuntu; brew install libpq on macOS)",
    "redis-benchmark": "apt-get install -y redis-tools (Debian/Ubuntu; brew install redis on macOS)",
    "sysbench": "apt-get install -y sysbench (Debian/Ubuntu; brew install sysbench on macOS)",
}


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries only the tables."""
    print(message, file=sys.stderr, flush=True)


def load1() -> float:
    return os.getloadavg()[0]


def processes_for(users: int) -> int:
    """Load processes OptiStack gets here: one user -> 1, else 2 (one per core on this 2-core box)."""
    return 1 if users == 1 else min(2, users)


def workload_spec(records: int) -> Any:
    from workloads.spec import CORE_WORKLOADS

    return CORE_WORKLOADS["c"].with_overrides(record_count=records)


# ==================================================================================
# Load processes of the bare / gevent / driver modes (this script re-run with --child)
# ==================================================================================
def child_main(raw: str) -> None:
    """One load process: `users` threads (or greenlets) reading until the window ends.

    Prints one JSON line: operations started inside [start, end), the process's CPU
    time over the window and an encoded latency histogram of those operations.
    """
    job = json.loads(raw)
    if job["gevent"]:
        from gevent import monkey

        monkey.patch_all()  # as Locust does on import, before the drivers open sockets
    import resource

    from workloads.keyspace import KeyChooser, key_name
    from workloads.recorder import Recorder, encode, merge_encoded, new_histogram
    from workloads.stores import get_store
    from workloads.stores.base import StoreSettings

    spec = workload_spec(job["records"])
    start_ns = end_ns = 0  # time.monotonic_ns() window, the same in every process: set by the parent
    users, index, count = job["users"], job["process_index"], job["process_count"]
    settings = StoreSettings(namespace=NAMESPACE, field_count=spec.field_count)
    results: list[tuple[int, list[int]]] = []
    errors: list[str] = []
    sleep = time.sleep  # gevent's when patched

    if job["mode"] == "driver":
        import gevent

        from workloads.driver import LoadConfig, WorkloadDriver

        config = LoadConfig(
            store=job["store"],
            url=job["url"],
            namespace=NAMESPACE,
            spec=spec,
            seed=SEED,
            users=users * count,
            processes=count,
            warmup_s=job["warmup_s"],
            duration_s=job["duration_s"],
            output_path="",
        )
        recorder = Recorder()
        drivers = [
            WorkloadDriver(config, recorder, process_index=index, sleep=gevent.sleep) for _ in range(users)
        ]
        for driver in drivers:
            driver.start_user()

        def user(number: int) -> None:
            step, driver = drivers[number].step, drivers[number]
            while time.monotonic_ns() < end_ns:
                step()
            driver.stop_user()

    else:
        stores = [get_store(job["store"]).connect(job["url"], settings) for _ in range(users)]
        choosers = [
            KeyChooser(spec, SEED, process_index=index * users + n, process_count=count * users)
            for n in range(users)
        ]

        def user(number: int) -> None:
            read, draw = stores[number].read, choosers[number].next_key_index
            clock = time.monotonic_ns
            latencies: list[int] = []
            ops = 0
            try:
                while True:
                    key = key_name(draw())
                    t0 = clock()
                    if t0 >= end_ns:
                        break
                    if read(key) is None:
                        raise LookupError(f"record {key} not found: is the namespace seeded?")
                    if t0 >= start_ns:
                        ops += 1
                        latencies.append(clock() - t0)
            except Exception as error:  # reported to the parent, which fails loudly
                errors.append(f"{type(error).__name__}: {error}")
            results.append((ops, latencies))
            stores[number].close()

    # Every user is connected: tell the parent, and get the window (warm-up starts now).
    print("ready", flush=True)
    start_ns, end_ns = json.loads(sys.stdin.readline())
    if job["mode"] == "driver":
        offset = time.time_ns() - time.monotonic_ns()
        recorder.set_window(start_ns + offset, end_ns + offset)
    threads = [threading.Thread(target=user, args=(n,), daemon=True) for n in range(users)]
    for thread in threads:
        thread.start()
    sleep(max(0.0, (start_ns - time.monotonic_ns()) / 1e9))
    before = resource.getrusage(resource.RUSAGE_SELF)
    sleep(max(0.0, (end_ns - time.monotonic_ns()) / 1e9))
    after = resource.getrusage(resource.RUSAGE_SELF)
    for thread in threads:
        thread.join()

    if job["mode"] == "driver":
        shipment = recorder.drain(time.time_ns(), final=True)
        texts = [t for second in shipment["seconds"].values() for t in second["service"].values()]
        histogram = merge_encoded(texts)
        ops = histogram.get_total_count()
        failed = sum(n for _, _, n in shipment.get("error_counts", []))
        if failed:
            errors.append(f"{failed} operations failed: {shipment.get('error_examples')}")
    else:
        histogram = new_histogram()
        for _, latencies in results:
            for ns in latencies:
                histogram.record_value(max(1, ns // 1000))
        ops = sum(n for n, _ in results)
    print(
        json.dumps(
            {
                "ops": ops,
                "user_s": after.ru_utime - before.ru_utime,
                "sys_s": after.ru_stime - before.ru_stime,
                "histogram": encode(histogram),
                "errors": errors,
            }
        ),
        flush=True,
    )


def run_children(mode: str, store: str, users: int, duration: float, warmup: float, records: int) -> dict:
    """Start the load processes of a bare/gevent/driver measurement and combine their figures."""
    from workloads.recorder import merge_encoded

    count = processes_for(users)
    per_process = [users // count + (1 if i < users % count else 0) for i in range(count)]
    procs = []
    for index, n in enumerate(per_process):
        job = {
            "mode": mode,
            "gevent": mode in ("gevent", "driver"),
            "store": store,
            "url": URLS[store],
            "users": n,
            "process_index": index,
            "process_count": count,
            "warmup_s": warmup,
            "duration_s": duration,
            "records": records,
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, "--child", json.dumps(job)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
        )
    outputs = []
    try:
        for proc in procs:  # each connects its users first (a dead server fails here)
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a {mode} load process for {store} failed before it was ready")
        start_ns = time.monotonic_ns() + int(warmup * 1e9)
        window = json.dumps([start_ns, start_ns + int(duration * 1e9)])
        for proc in procs:
            proc.stdin.write(window + "\n")
            proc.stdin.flush()
        for proc in procs:
            out, _ = proc.communicate(timeout=warmup + duration + 60)
            if proc.returncode != 0:
                raise RuntimeError(f"{mode} load process for {store} exited with {proc.returncode}")
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    problems = [e for o in outputs for e in o["errors"]]
    if problems:
        raise RuntimeError(f"{mode} on {store}: {problems[:3]}")
    ops = sum(o["ops"] for o in outputs)
    if ops == 0:
        raise RuntimeError(f"{mode} on {store} measured no operation")
    histogram = merge_encoded(o["histogram"] for o in outputs)
    return {
        "ops": ops,
        "seconds": duration,
        "user_s": sum(o["user_s"] for o in outputs),
        "sys_s": sum(o["sys_s"] for o in outputs),
        "p50_us": float(histogram.get_value_at_percentile(50)) if ops else None,
        "processes": count,
    }


# ==================================================================================
# OptiStack itself
# ==================================================================================
class CpuSampler(threading.Thread):
    """Samples CPU times of this process's descendants (the Locust master and workers)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        import psutil

        self.psutil = psutil
        self.me = psutil.Process()
        self.samples: dict[int, list[tuple[int, float, float]]] = {}
        self.roles: dict[int, str] = {}
        self.known: dict[int, Any] = {}
        self.halt = threading.Event()

    def _discover(self) -> None:
        for proc in self.me.children(recursive=True):
            if proc.pid in self.known:
                continue
            try:
                if "locust" not in " ".join(proc.cmdline()):
                    continue
                self.roles[proc.pid] = "master" if proc.ppid() == self.me.pid else "worker"
            except self.psutil.Error:
                continue
            self.known[proc.pid] = proc

    def run(self) -> None:
        tick = 0
        while not self.halt.is_set():
            if tick % 10 == 0:
                self._discover()
            tick += 1
            for pid, proc in list(self.known.items()):
                try:
                    times = proc.cpu_times()
                except self.psutil.Error:
                    del self.known[pid]
                    continue
                self.samples.setdefault(pid, []).append((time.time_ns(), times.user, times.system))
            self.halt.wait(SAMPLE_EVERY_S)

    def cpu_between(self, start_ns: int, end_ns: int) -> dict[str, tuple[float, float]]:
        """(user, system) seconds per role used inside [start_ns, end_ns], interpolated."""
        totals: dict[str, tuple[float, float]] = {}
        for pid, samples in self.samples.items():
            if not samples or samples[0][0] > start_ns or samples[-1][0] < end_ns:
                raise RuntimeError(f"CPU samples of process {pid} do not cover the measured window")
            u0, s0 = _interpolate(samples, start_ns)
            u1, s1 = _interpolate(samples, end_ns)
            user, system = totals.get(self.roles[pid], (0.0, 0.0))
            totals[self.roles[pid]] = (user + u1 - u0, system + s1 - s0)
        return totals


def _interpolate(samples: list[tuple[int, float, float]], t: int) -> tuple[float, float]:
    for (ta, ua, sa), (tb, ub, sb) in itertools.pairwise(samples):
        if ta <= t <= tb:
            f = (t - ta) / (tb - ta) if tb > ta else 0.0
            return ua + f * (ub - ua), sa + f * (sb - sa)
    raise ValueError("time outside the samples")


def run_optistack(
    store: str, users: int, duration: float, warmup: float, records: int, results: Path, run_id: str
) -> dict:
    """`optistack run --store X --workload c ...` through the runner's stages, CPU sampled from outside."""
    import pandas as pd

    from workloads import runner

    processes = processes_for(users)
    options = {
        "stores": [store],
        "workload": "c",
        "record_count": records,
        "duration_s": duration,
        "warmup_s": warmup,
        "users": users,
        "processes": processes,
        "results": str(results),
        "run_id": run_id,
        "urls": {store: URLS[store]},
        "namespace": NAMESPACE,
        "seed": SEED,
        "teardown": False,  # the bare loops read the same records afterwards
    }
    command = (
        f"optistack run --store {store} --workload c --records {records} --duration {duration:g} "
        f"--warmup {warmup:g} --users {users} --processes {processes} --namespace {NAMESPACE} --keep"
    )
    plan = runner.plan(options, command=command)
    quiet = lambda line: None  # noqa: E731
    runner.run_stage(plan, store, "provision", quiet)
    runner.run_stage(plan, store, "seed", quiet)
    sampler = CpuSampler()
    sampler.start()
    try:
        load = runner.stage_load(plan, store, quiet)
    finally:
        sampler.halt.set()
        sampler.join()
    runner.stage_results(plan, store, load, quiet)
    folder = runner.stage_publish(plan, store, quiet)
    summary = pd.read_parquet(folder / "summary.parquet")
    row = summary[summary["operation"] == "ALL"].iloc[0]
    if row["errors"]:
        raise RuntimeError(f"optistack on {store}: {row['errors']} operations failed")
    window = load["window"]
    cpu = sampler.cpu_between(window["start_ns"], window["end_ns"])
    workers = [r for r in sampler.roles.values() if r == "worker"]
    if len(workers) != processes:
        raise RuntimeError(f"expected {processes} Locust workers, sampled {len(workers)}")
    info = json.loads((folder / "run.json").read_text())
    self_reported = (
        sum(p["cpu_percent_mean"] for p in info["load"]["client_cpu"]) / 100 * window["duration_s"]
    )
    worker_u, worker_s = cpu.get("worker", (0.0, 0.0))
    master_u, master_s = cpu.get("master", (0.0, 0.0))
    return {
        "ops": int(row["ops"]),
        "seconds": float(row["duration_s"]),
        "user_s": worker_u + master_u,
        "sys_s": worker_s + master_s,
        "worker_cpu_s": worker_u + worker_s,
        "master_cpu_s": master_u + master_s,
        "self_reported_worker_cpu_s": self_reported,
        "p50_us": float(row["latency_p50_us"]),
        "processes": processes,
        "command": command,
    }


# ==================================================================================
# Native tools
# ==================================================================================
def run_tool(argv: list[str], timeout: float, env: dict[str, str] | None = None) -> tuple[str, float, float]:
    """Run a tool; return its output and its own (user, system) CPU seconds from wait4()."""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:2])} failed ({proc.returncode}):\n{text[-2000:]}")
    return text, usage.ru_utime, usage.ru_stime


def tool(name: str) -> str | None:
    """Path of a native tool, or None after saying how to install it."""
    if name == "pgbench":  # Debian's /usr/bin/pgbench is a Perl wrapper: measure the real binary
        real = sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"))
        if real:
            return str(real[-1])
    path = shutil.which(name)
    if path is None:
        log(f"  {name} is not installed, so its native row is skipped. Install it: {INSTALL_HINTS[name]}")
    return path


class PgNative:
    """pgbench -S against its own database, created (with a marker comment) and dropped here."""

    def __init__(self, records: int) -> None:
        self.binary = tool("pgbench")
        parts = urlsplit(URLS["postgres"])
        self.db_url = parts._replace(path=f"/{PG_BENCH_DB}").geturl()

    def _admin(self, sql: str) -> list[tuple]:
        """Run one statement on the server's maintenance database; rows of a SELECT."""
        import psycopg

        with psycopg.connect(URLS["postgres"], autocommit=True) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def _marker(self) -> str | None:
        """The comment on the bench database ("" without one), or None when it does not exist."""
        rows = self._admin(
            "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database "
            f"WHERE datname = '{PG_BENCH_DB}'"
        )
        return rows[0][0] if rows else None

    def setup(self) -> None:
        if not self.binary:
            return
        marker = self._marker()
        if marker is not None and marker != PG_MARKER:
            raise RuntimeError(
                f"database {PG_BENCH_DB} exists and was not created by this script (no marker comment); "
                "drop it yourself if it is a leftover (scripts/bench_engine.py uses the same name)"
            )
        if marker is not None:
            self._admin(f"DROP DATABASE {PG_BENCH_DB}")
        self._admin(f"CREATE DATABASE {PG_BENCH_DB}")
        self._admin(f"COMMENT ON DATABASE {PG_BENCH_DB} IS '{PG_MARKER}'")
        run_tool([self.binary, "-i", "-q", "-s", "1", self.db_url], timeout=300)

    def cleanup(self) -> None:
        if self.binary and self._marker() == PG_MARKER:
            self._admin(f"DROP DATABASE {PG_BENCH_DB}")

    def run(self, users: int, duration: float) -> list[dict]:
        if not self.binary:
            return []
        rows = []
        for protocol in ("simple", "prepared"):
            with tempfile.TemporaryDirectory() as logs:
                argv = [
                    self.binary,
                    "-S",
                    "-n",
                    "-M",
                    protocol,
                    "-c",
                    str(users),
                    "-j",
                    str(min(users, 2)),
                    "-T",
                    str(int(duration)),
                    "-l",
                    "--sampling-rate",
                    "0.05",
                    "--log-prefix",
                    f"{logs}/tx",
                    self.db_url,
                ]
                out, user_s, sys_s = run_tool(argv, timeout=duration + 120)
                latencies = sorted(
                    int(line.split()[2]) for f in Path(logs).iterdir() for line in f.read_text().splitlines()
                )
            ops = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))
            tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
            rows.append(
                {
                    "mode": f"native: pgbench -S -M {protocol}",
                    "ops": ops,
                    "seconds": ops / tps,
                    "user_s": user_s,
                    "sys_s": sys_s,
                    "p50_us": float(statistics.median(latencies)) if latencies else None,
                }
            )
        return rows


class RedisNative:
    """redis-benchmark GET (1000 B strings) and HGETALL (10 x 100 B hashes) of keys written here."""

    def __init__(self, records: int) -> None:
        self.binary = tool("redis-benchmark")
        self.records = records
        parts = urlsplit(URLS["redis"])
        self.host, self.port = parts.hostname, parts.port or 6379
        self.db = parts.path.lstrip("/") or "0"
        self.password = unquote(parts.password) if parts.password else None
        self.written: list[str] = []

    def _client(self) -> Any:
        import redis

        return redis.Redis.from_url(URLS["redis"])

    def _key(self, kind: str, index: int) -> str:
        return f"{REDIS_NATIVE_PREFIX}:{kind}:{index:012d}"  # redis-benchmark's __rand_int__ is 12 digits

    def setup(self) -> None:
        if not self.binary:
            return
        from workloads.keyspace import records as seed_records

        client = self._client()
        spec = workload_spec(self.records)
        pipe = client.pipeline(transaction=False)
        for index, (_, values) in enumerate(seed_records(spec, SEED)):
            for kind in ("h", "s"):
                self.written.append(self._key(kind, index))
            pipe.hset(self._key("h", index), mapping=values)
            pipe.set(self._key("s", index), "".join(values.values()))
            if index % 1000 == 999:
                pipe.execute()
        pipe.execute()
        client.close()

    def cleanup(self) -> None:
        if not self.written:
            return
        client = self._client()
        for i in range(0, len(self.written), 1000):
            client.unlink(*self.written[i : i + 1000])
        client.close()
        self.written = []

    def _bench(self, users: int, requests: int, command: list[str]) -> tuple[dict, float, float]:
        argv = [
            self.binary,
            "-h",
            self.host,
            "-p",
            str(self.port),
            "--dbnum",
            self.db,
            "-c",
            str(users),
            "-n",
            str(requests),
            "-r",
            str(self.records),
            "--csv",
            *command,
        ]
        env = {**os.environ, "REDISCLI_AUTH": self.password} if self.password else None
        out, user_s, sys_s = run_tool(argv, timeout=600, env=env)
        fields = [f.strip('"') for f in out.strip().splitlines()[-1].split('","')]
        # test, rps, avg_latency_ms, min_latency_ms, p50_latency_ms, p95, p99, max
        return {"rps": float(fields[1]), "p50_us": float(fields[4]) * 1000}, user_s, sys_s

    def run(self, users: int, duration: float) -> list[dict]:
        if not self.binary:
            return []
        rows = []
        for label, command in (
            ("GET (= -t get)", ["GET", f"{REDIS_NATIVE_PREFIX}:s:__rand_int__"]),
            ("HGETALL", ["HGETALL", f"{REDIS_NATIVE_PREFIX}:h:__rand_int__"]),
        ):
            probe, _, _ = self._bench(users, 5000, command)  # size the run to about `duration` seconds
            requests = max(10_000, int(probe["rps"] * duration))
            result, user_s, sys_s = self._bench(users, requests, command)
            rows.append(
                {
                    "mode": f"native: redis-benchmark {label}",
                    "ops": requests,
                    "seconds": requests / result["rps"],
                    "user_s": user_s,
                    "sys_s": sys_s,
                    "p50_us": result["p50_us"],
                }
            )
        return rows


class MysqlNative:
    """sysbench oltp_point_select on table test.sbtest1 (prepared here, cleaned up after)."""

    def __init__(self, records: int) -> None:
        self.binary = tool("sysbench")
        self.records = records
        parts = urlsplit(URLS["mysql"])
        self.common = [
            "oltp_point_select",
            "--db-driver=mysql",
            f"--mysql-host={parts.hostname}",
            f"--mysql-port={parts.port or 3306}",
            f"--mysql-user={unquote(parts.username or 'root')}",
            f"--mysql-db={unquote(parts.path.lstrip('/'))}",
            "--tables=1",
            f"--table-size={records}",
        ]
        if parts.password:
            self.common.append(f"--mysql-password={unquote(parts.password)}")
        self.prepared = False

    def setup(self) -> None:
        if not self.binary:
            return
        from workloads.stores import get_store
        from workloads.stores.base import StoreSettings

        with get_store("mysql").connect(URLS["mysql"], StoreSettings()) as conn:
            conn._cur.execute("SHOW TABLES LIKE %s", (SYSBENCH_TABLE,))
            if conn._cur.fetchone():
                raise RuntimeError(
                    f"table {SYSBENCH_TABLE} already exists in the MariaDB/MySQL database: not created by "
                    "this script, so it is left alone. Drop it yourself if it is a leftover."
                )
        self.prepared = True
        run_tool([self.binary, *self.common, "prepare"], timeout=600)

    def cleanup(self) -> None:
        if self.prepared:
            run_tool([self.binary, *self.common, "cleanup"], timeout=120)
            self.prepared = False

    def run(self, users: int, duration: float) -> list[dict]:
        if not self.binary:
            return []
        out, user_s, sys_s = run_tool(
            [
                self.binary,
                *self.common,
                f"--threads={users}",
                f"--time={int(duration)}",
                "--percentile=50",
                "run",
            ],
            timeout=duration + 120,
        )
        ops = int(re.search(r"read:\s+(\d+)", out).group(1))
        seconds = float(re.search(r"total time:\s+([\d.]+)s", out).group(1))
        p50 = re.search(r"50th percentile:\s+([\d.]+)", out)
        return [
            {
                "mode": "native: sysbench oltp_point_select",
                "ops": ops,
                "seconds": seconds,
                "user_s": user_s,
                "sys_s": sys_s,
                "p50_us": float(p50.group(1)) * 1000 if p50 else None,
            }
        ]


NATIVE = {"postgres": PgNative, "redis": RedisNative, "mysql": MysqlNative}


# ==================================================================================
# Python per-operation costs without a server
# ==================================================================================
def python_costs(records: int, n: int = 100_000) -> list[dict]:
    """CPU per call of the pieces of OptiStack's hot path, no network involved."""
    from workloads.driver import LoadConfig, WorkloadDriver
    from workloads.keyspace import KeyChooser, key_name
    from workloads.recorder import Recorder
    from workloads.stores import register
    from workloads.stores.base import ScanOrder, ServerInfo, Store

    record = {f"field{i}": "x" * 100 for i in range(10)}

    @register
    class NullStore(Store):
        """Answers every read at once: what remains is OptiStack's own per-operation work."""

        name = "bench_null"
        scan_order = ScanOrder.KEY
        url_schemes = ("null",)
        example_url = "null://here"

        def _open(self) -> None:
            pass

        def close(self) -> None:
            pass

        def server_info(self) -> ServerInfo:
            return ServerInfo("null", "0")

        def provision(self) -> None:
            pass

        def teardown(self) -> None:
            pass

        def load(self, records: Any) -> int:
            return 0

        def count(self) -> int:
            return 0

        def read(self, key: str, fields: Any = None) -> dict:
            return record

        def scan(self, start_key: str, count: int, fields: Any = None) -> list:
            return []

        def update(self, key: str, values: Any) -> None:
            pass

        def insert(self, key: str, values: Any) -> None:
            pass

        def delete(self, key: str) -> None:
            pass

    spec = workload_spec(records)

    def cpu_per_call(body: Any) -> float:
        body(1000)
        t0 = time.process_time()
        body(n)
        return (time.process_time() - t0) / n * 1e6

    chooser = KeyChooser(spec, SEED)

    def keys(count: int) -> None:
        draw = chooser.next_key_index
        for _ in range(count):
            key_name(draw())

    recorder = Recorder()
    recorder.set_window(time.time_ns() - 10**9, time.time_ns() + 10**12)

    def measure(count: int) -> None:
        m, clock = recorder.measure, time.time_ns
        for _ in range(count):
            m("READ", clock(), 150, None, None, "user123")

    def clocks(count: int) -> None:
        wall, perf = time.time_ns, time.perf_counter_ns
        for _ in range(count):
            wall(), perf(), perf()

    config = LoadConfig(
        store="bench_null",
        url="null://here",
        namespace=NAMESPACE,
        spec=spec,
        seed=SEED,
        users=1,
        processes=1,
        warmup_s=0,
        duration_s=1,
        output_path="",
    )
    driver = WorkloadDriver(config, recorder, sleep=lambda s: None)
    driver.start_user()

    def step(count: int) -> None:
        s = driver.step
        for _ in range(count):
            s()

    return [
        {
            "piece": "key choice: KeyChooser.next_key_index + key_name (also in the bare loop)",
            "us": cpu_per_call(keys),
        },
        {
            "piece": "Recorder.measure (HdrHistogram record_value, slowest-50 check)",
            "us": cpu_per_call(measure),
        },
        {"piece": "clock reads in step: time_ns + 2 x perf_counter_ns", "us": cpu_per_call(clocks)},
        {
            "piece": "WorkloadDriver.step, store answering at once (all of the above + dispatch)",
            "us": cpu_per_call(step),
        },
    ]


# ==================================================================================
# Orchestration and tables
# ==================================================================================
def finish_row(row: dict, store: str, users: int, before: float) -> dict:
    ops, seconds = row["ops"], row["seconds"]
    if not ops or not seconds:
        raise RuntimeError(f"{row['mode']} measured no operation")
    out = {
        "store": store,
        "users": users,
        **row,
        "ops_s": ops / seconds,
        "cpu_us_op": (row["user_s"] + row["sys_s"]) / ops * 1e6,
        "sys_us_op": row["sys_s"] / ops * 1e6,
        "load_before": before,
        "load_after": load1(),
    }
    log(
        f"  {store} {users}u {out['mode']}: {out['ops_s']:,.0f} ops/s, {out['cpu_us_op']:.1f} us CPU/op, "
        f"p50 {out['p50_us']} us, load {before:.2f}->{out['load_after']:.2f}"
    )
    return out


FAILURES: list[str] = []


def measure_mode(
    mode: str, store: str, users: int, rep: int, args: argparse.Namespace, results: Path, native: Any
) -> list[dict]:
    """One measurement of one mode: its table rows (native tools may give several)."""
    before = load1()
    if mode in ("bare", "gevent", "driver"):
        row = run_children(mode, store, users, args.duration, args.warmup, args.records)
        return [finish_row({"mode": mode, **row}, store, users, before)]
    if mode == "optistack":
        run_id = f"harness-{store}-{users}u-{rep}"
        row = run_optistack(store, users, args.duration, args.warmup, args.records, results, run_id)
        return [finish_row({"mode": mode, **row}, store, users, before)]
    rows = []
    for row in native.run(users, args.duration) if native is not None else []:
        rows.append(finish_row(row, store, users, before))
        before = load1()
    return rows


def measure_store(store: str, args: argparse.Namespace, results: Path) -> list[dict]:
    from workloads.keyspace import records as seed_records
    from workloads.stores import get_store
    from workloads.stores.base import StoreSettings

    rows: list[dict] = []
    spec = workload_spec(args.records)
    settings = StoreSettings(namespace=NAMESPACE, field_count=spec.field_count, operation_timeout_s=120)
    native = NATIVE[store](args.records) if "native" in args.modes else None
    with get_store(store).connect(URLS[store], settings) as conn:
        server = str(conn.server_info())
        log(f"{store}: {server}; seeding {args.records:,} records into {NAMESPACE}")
        conn.provision()
        conn.load(seed_records(spec, SEED))
    try:
        if native is not None:
            native.setup()
        for users in args.users:
            for rep in range(args.repeat):
                for mode in args.modes:
                    try:
                        measured = measure_mode(mode, store, users, rep, args, results, native)
                    except Exception as error:  # one failed mode must not lose the others' figures
                        FAILURES.append(f"{store} {users}u {mode} (repetition {rep + 1}): {error}")
                        log(f"  FAILED {FAILURES[-1]}")
                        continue
                    rows += [{**row, "server": server, "rep": rep} for row in measured]
    finally:
        if native is not None:
            native.cleanup()
        with get_store(store).connect(URLS[store], settings) as conn:
            conn.teardown()
    return rows


MODE_ORDER = {"bare": 0, "gevent": 1, "driver": 2, "optistack": 3}


def median_rows(rows: list[dict]) -> list[dict]:
    """One row per (store, users, mode): the median of each figure over the repetitions."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["store"], row["users"], row["mode"]), []).append(row)
    out = []
    for (store, users, mode), group in groups.items():

        def med(key: str, group: list[dict] = group) -> float | None:
            values = [r[key] for r in group if r.get(key) is not None]
            return statistics.median(values) if values else None

        out.append(
            {
                "store": store,
                "users": users,
                "mode": mode,
                "n": len(group),
                "ops_s": med("ops_s"),
                "cpu_us_op": med("cpu_us_op"),
                "sys_us_op": med("sys_us_op"),
                "p50_us": med("p50_us"),
                "ops_s_range": (min(r["ops_s"] for r in group), max(r["ops_s"] for r in group)),
                "cpu_range": (min(r["cpu_us_op"] for r in group), max(r["cpu_us_op"] for r in group)),
                "load": (min(r["load_before"] for r in group), max(r["load_after"] for r in group)),
            }
        )
    return sorted(
        out, key=lambda r: (list(URLS).index(r["store"]), r["users"], MODE_ORDER.get(r["mode"], 9), r["mode"])
    )


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def main_table(medians: list[dict], repeat: int) -> str:
    lines = [
        "| store | users | mode | ops/s | client CPU µs/op (sys) | p50 µs | load 1m |",
        "| --- | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for r in medians:
        spread = ""
        if repeat > 1:
            lo, hi = r["ops_s_range"]
            clo, chi = r["cpu_range"]
            spread = f" [{lo:,.0f}-{hi:,.0f}]"
            cpu_spread = f" [{clo:.0f}-{chi:.0f}]"
        else:
            cpu_spread = ""
        lines.append(
            f"| {r['store']} | {r['users']} | {r['mode']} | {fmt(r['ops_s'], 0)}{spread} | "
            f"{fmt(r['cpu_us_op'])}{cpu_spread} ({fmt(r['sys_us_op'])}) | {fmt(r['p50_us'], 0)} | "
            f"{r['load'][0]:.2f}-{r['load'][1]:.2f} |"
        )
    return "\n".join(lines)


def paired_ratio(rows: list[dict], store: str, users: int, a: str, b: str, key: str) -> tuple | None:
    """Median (and range) over repetitions of a[key] / b[key], each repetition paired with itself.

    Modes of one repetition run back to back, so pairing them cancels slow changes in the
    machine's load better than a ratio of medians would.
    """

    def by_rep(mode: str) -> dict:
        return {r["rep"]: r for r in rows if (r["store"], r["users"], r["mode"]) == (store, users, mode)}

    num, den = by_rep(a), by_rep(b)
    ratios = [num[k][key] / den[k][key] for k in sorted(num.keys() & den.keys())]
    return (statistics.median(ratios), min(ratios), max(ratios)) if ratios else None


def ratio_cell(ratio: tuple | None, target: str = "") -> str:
    if ratio is None:
        return "-"
    median, low, high = ratio
    spread = f" [{low:.2f}-{high:.2f}]" if high > low else ""
    if target.startswith("<="):
        return f"{median:.2f}{spread} {'met' if median <= float(target[2:]) else 'MISSED'}"
    if target.startswith(">="):
        return f"{median:.2f}{spread} {'met' if median >= float(target[2:]) else 'MISSED'}"
    return f"{median:.2f}{spread}"


def ratio_table(rows: list[dict]) -> str:
    lines = [
        "| store | users | OptiStack CPU/op ÷ bare (target ≤ 1.25) | OptiStack ops/s ÷ bare (target ≥ 0.90 at 1 user) "
        "| OptiStack CPU/op ÷ gevent loop | OptiStack ops/s ÷ native | OptiStack CPU/op ÷ native | native used |",
        "| --- | ---: | --- | --- | --- | --- | --- | --- |",
    ]
    pairs = sorted({(r["store"], r["users"]) for r in rows}, key=lambda k: (list(URLS).index(k[0]), k[1]))
    for store, users in pairs:
        modes = {r["mode"] for r in rows if (r["store"], r["users"]) == (store, users)}
        if "optistack" not in modes:
            continue
        # The native run doing the same work as OptiStack's read: prepared pgbench, HGETALL, sysbench.
        natives = sorted(m for m in modes if m.startswith("native"))
        native = next(
            (m for m in natives if "prepared" in m or "HGETALL" in m), natives[0] if natives else None
        )
        cells = [
            store,
            str(users),
            ratio_cell(paired_ratio(rows, store, users, "optistack", "bare", "cpu_us_op"), "<=1.25"),
            ratio_cell(
                paired_ratio(rows, store, users, "optistack", "bare", "ops_s"), ">=0.90" if users == 1 else ""
            ),
            ratio_cell(paired_ratio(rows, store, users, "optistack", "gevent", "cpu_us_op")),
        ]
        if native:
            cells += [
                ratio_cell(paired_ratio(rows, store, users, "optistack", native, "ops_s")),
                ratio_cell(paired_ratio(rows, store, users, "optistack", native, "cpu_us_op")),
                native.removeprefix("native: "),
            ]
        else:
            cells += ["-", "-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def decomposition_table(rows: list[dict]) -> str:
    """Where OptiStack's extra client CPU per operation goes, step by step from the bare loop
    (median over repetitions of the paired differences)."""
    steps = ("bare", "gevent", "driver", "optistack")
    lines = [
        "| store | users | bare µs/op | + gevent sockets | + WorkloadDriver.step & Recorder "
        "| + Locust worker & master | = OptiStack µs/op | of which master |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    pairs = sorted({(r["store"], r["users"]) for r in rows}, key=lambda k: (list(URLS).index(k[0]), k[1]))
    for store, users in pairs:
        reps: dict[int, dict[str, dict]] = {}
        for r in rows:
            if (r["store"], r["users"]) == (store, users) and r["mode"] in steps:
                reps.setdefault(r["rep"], {})[r["mode"]] = r
        complete = [modes for modes in reps.values() if len(modes) == len(steps)]
        if not complete:
            continue

        def med(values: list[float]) -> float:
            return statistics.median(values)

        cpu = [[m[s]["cpu_us_op"] for s in steps] for m in complete]
        master = med([m["optistack"]["master_cpu_s"] / m["optistack"]["ops"] * 1e6 for m in complete])
        cells = [f"{med([c[0] for c in cpu]):.1f}"]
        cells += [f"{med([c[i] - c[i - 1] for c in cpu]):+.1f}" for i in range(1, len(steps))]
        cells += [f"{med([c[-1] for c in cpu]):.1f}", f"{master:.1f}"]
        lines.append(f"| {store} | {users} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child_main(sys.argv[2])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--stores", default="postgres,redis,mysql", help="comma-separated (default: all three)"
    )
    parser.add_argument("--users", default="1,16", help="comma-separated user counts (default: 1,16)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per mode (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per mode (default 2)")
    parser.add_argument("--records", type=int, default=10_000, help="records seeded (default 10000)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="repetitions, interleaved; medians shown (default 1)"
    )
    parser.add_argument(
        "--modes", default=",".join(ALL_MODES), help=f"comma-separated subset of {','.join(ALL_MODES)}"
    )
    parser.add_argument("--json", help="also write every measurement to this JSON file")
    parser.add_argument("--from-json", help="print the tables of a file written by --json; measure nothing")
    args = parser.parse_args()
    args.stores = [s for s in args.stores.split(",") if s]
    args.users = [int(u) for u in args.users.split(",") if u]
    args.modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(args.stores) - set(URLS)) + sorted(set(args.modes) - set(ALL_MODES))
    if unknown:
        parser.error(f"unknown store or mode: {', '.join(unknown)}")

    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        render(saved["rows"], saved["costs"], saved["meta"], saved.get("failures", []))
        return
    started = dt.datetime.now(dt.UTC)
    log(f"bench_harness: {started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load {os.getloadavg()}")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="optistack-harness-") as tmp:
        for store in args.stores:
            rows += measure_store(store, args, Path(tmp) / "results")
    costs = python_costs(args.records)
    meta = {
        "started": f"{started:%Y-%m-%d %H:%M}",
        "finished": f"{dt.datetime.now(dt.UTC):%H:%M}",
        "host": f"{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "cores": os.cpu_count(),
        "records": args.records,
        "warmup": args.warmup,
        "duration": args.duration,
        "repeat": args.repeat,
    }
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"meta": meta, "rows": rows, "costs": costs, "failures": FAILURES}, indent=1, default=str
            )
        )
    render(rows, costs, meta, FAILURES)


def render(rows: list[dict], costs: list[dict], meta: dict, failures: list[str]) -> None:
    """Print the Markdown report of a set of measurements."""
    servers = sorted({f"{r['store']}: {r['server']}" for r in rows})
    print(f"## Harness cost, {meta['started']}-{meta['finished']} UTC\n")
    print(f"Host: {meta['host']}; {'; '.join(servers)}.")
    print(
        f"Workload c (100% reads, zipfian), {meta['records']:,} records of 10 x 100 B, warm-up "
        f"{meta['warmup']:g}s, {meta['duration']:g}s measured per mode, {meta['repeat']} repetition(s), "
        "interleaved (medians; [min-max] when more than one). Load 1m: lowest before - highest after "
        "the measurements of the row.\n"
    )
    busiest = max((r["load_after"] for r in rows), default=0.0)
    if busiest > meta["cores"]:
        print(
            f"**Warning: the 1-minute load average reached {busiest:.2f} on {meta['cores']} cores during "
            "these measurements: other work competed for the CPUs, which lowers throughput and inflates "
            "CPU per operation (caches, context switches). Re-run when `uptime` shows a quiet machine.**\n"
        )
    print(main_table(median_rows(rows), meta["repeat"]))
    print("\n### Ratios and targets (medians of per-repetition ratios)\n")
    print(ratio_table(rows))
    print("\n### Where OptiStack's extra client CPU goes (µs/op, medians of per-repetition differences)\n")
    print(decomposition_table(rows))
    print("\n### Python per-operation costs without a server (CPU µs per call)\n")
    print("| piece | µs |\n| --- | ---: |")
    for c in costs:
        print(f"| {c['piece']} | {c['us']:.2f} |")
    if failures:
        print("\nFailed measurements (left out of the tables):\n")
        for failure in failures:
            print(f"- {failure}")
    commands = sorted({r["command"] for r in rows if r.get("command")})
    if commands:
        print("\nOptiStack runs, as CLI commands (run in-process through the runner's stages):")
        for command in commands:
            print(f"    {command}")


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
