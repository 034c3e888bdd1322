"""CPU and memory of the load processes and the store's server, plus the store's own counters.

`ResourceSampler` is a thread in the runner process. `runner.stage_load` starts it before
the first load process and stops it after the last one has ended; once a second it records

- `load`: every process that descends from the runner and appeared after the sampler
  started (the Locust master and its workers), each on its own: CPU (% of one core) and
  RSS bytes;
- `server`: when the store URL's host is this machine, the process listening on the URL's
  port and all its descendants, summed (PostgreSQL forks one backend per connection):
  CPU, RSS and the number of processes in the tree;
- `store`: the server's own statistics through `Store.stats()` on a connection of its own.

Sampling never disturbs or fails the measurement: a source that cannot be sampled is
recorded once as absent with the reason (`absent`), and a source whose sampling raises is
logged once and not sampled again. See docs/resources.md.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import psutil

from workloads.stores.base import Store, StoreSettings, redact_text

log = logging.getLogger(__name__)

SOURCES = ("load", "server", "store")
COLUMNS = ["run_id", "store", "time", "offset_s", "in_window", "source", "process", "pid", "metric", "value"]

# Ports a URL without one connects to, by scheme (what each driver assumes).
DEFAULT_PORTS = {
    "postgresql": 5432,
    "postgres": 5432,
    "cockroachdb": 26257,
    "mysql": 3306,
    "redis": 6379,
    "rediss": 6379,
    "mongodb": 27017,
}

# The stats connection answers within this, or the sample is dropped (and sampling stops).
STATS_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Sample:
    """One measured value: when, from which source and process, what, how much."""

    time_ns: int
    source: str
    process: str
    pid: int | None
    metric: str
    value: float


def local_addresses() -> set[str]:
    """Every IP address of this host's interfaces."""
    addresses = set()
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family in (socket.AF_INET, socket.AF_INET6):
                addresses.add(entry.address.split("%", 1)[0])  # drop an IPv6 zone id
    return addresses


def is_local_host(host: str) -> bool:
    """Whether `host` (name or address) is this machine: loopback or one of its addresses."""
    try:
        resolved = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    mine = local_addresses()
    return any(ipaddress.ip_address(a.split("%", 1)[0]).is_loopback or a in mine for a in resolved)


def url_port(url: str) -> int | None:
    """The URL's port, or the scheme's default port; None when neither is known."""
    parts = urlsplit(url)
    return parts.port or DEFAULT_PORTS.get(parts.scheme)


def find_listener(port: int) -> tuple[psutil.Process | None, str | None]:
    """The process listening on TCP `port` on this host, or None and the reason why not."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return None, "listing this host's sockets is not permitted (run as root to sample the server)"
    listeners = [
        c for c in connections if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
    ]
    if not listeners:
        return None, f"no process listens on port {port} of this host"
    pids = {c.pid for c in listeners if c.pid}
    if not pids:
        return None, f"the process listening on port {port} is not visible to this user (run as root)"
    proc = psutil.Process(min(pids))
    if proc.name() in ("docker-proxy", "rootlessport", "slirp4netns"):
        # The port is forwarded into a container: the forwarder is not the server.
        return None, f"port {port} is forwarded by {proc.name()} into a container; its server is not sampled"
    return proc, None


class _CpuMeter:
    """CPU % of one core per process, from its cumulative CPU time between two readings.

    A process seen for the first time counts from its creation, except on the sampler's
    first tick (it may have been running for long: there is no interval yet). A process
    that exits between two readings loses its last partial interval.
    """

    # Shorter intervals than this make a jittery percentage (CPU times tick at 10 ms).
    MIN_INTERVAL_S = 0.2

    def __init__(self) -> None:
        self.seen: dict[int, tuple[float, float, float]] = {}  # pid -> (created, cpu s, read at)

    def percent(self, proc: psutil.Process, cpu_s: float, read_s: float, first_tick: bool) -> float | None:
        created = proc.create_time()
        previous = self.seen.get(proc.pid)
        if previous is not None and previous[0] == created:
            used, since = cpu_s - previous[1], previous[2]
        elif not first_tick:
            used, since = cpu_s, created
        else:
            self.seen[proc.pid] = (created, cpu_s, read_s)
            return None
        if read_s - since < self.MIN_INTERVAL_S:
            if previous is None:
                self.seen[proc.pid] = (created, cpu_s, read_s)
            return None
        self.seen[proc.pid] = (created, cpu_s, read_s)
        return max(0.0, used / (read_s - since) * 100.0)


class ResourceSampler:
    """Samples load processes, the store's server and the store's statistics every `interval_s`.

    `start()` returns at once (server discovery and the stats connection happen in the
    thread); `stop()` takes a last sample and returns every sample. Neither raises.
    """

    def __init__(
        self,
        store_cls: type[Store],
        url: str,
        settings: StoreSettings,
        interval_s: float = 1.0,
        log_line: Callable[[str], None] = print,
    ) -> None:
        self.store_cls = store_cls
        self.url = url
        self.settings = StoreSettings(
            namespace=settings.namespace,
            field_count=settings.field_count,
            connect_timeout_s=min(settings.connect_timeout_s, STATS_TIMEOUT_S),
            operation_timeout_s=STATS_TIMEOUT_S,
        )
        self.interval_s = interval_s
        self.log = log_line
        self.samples: list[Sample] = []
        self.absent: dict[str, str] = {}  # source -> why it was not (or no longer) sampled
        self.server_name: str | None = None
        self.stats_counters: frozenset[str] = frozenset(getattr(store_cls, "stats_counters", frozenset()))
        self.started_ns = 0
        self.sampler_cpu_s = 0.0
        self.ticks = 0
        self._me = psutil.Process()
        self._before: set[int] = set()
        self._server: psutil.Process | None = None
        self._conn: Store | None = None
        self._load_cpu = _CpuMeter()
        self._server_cpu = _CpuMeter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        """Start sampling in a daemon thread."""
        self.started_ns = time.time_ns()
        with contextlib.suppress(psutil.Error):
            # Processes that exist already (a test's own servers, say) are not load processes.
            self._before = {p.pid for p in self._me.children(recursive=True)}
        self._thread = threading.Thread(target=self._run, name="optistack-resources", daemon=True)
        self._thread.start()

    def stop(self) -> list[Sample]:
        """Stop sampling (after one last sample) and return every sample taken."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * STATS_TIMEOUT_S + self.interval_s)
            if self._thread.is_alive():
                self._fail(
                    "store", "the sampler did not stop in time (a statistics query or DNS lookup hung)"
                )
        with self._lock:
            return list(self.samples)

    def _run(self) -> None:
        cpu0 = time.thread_time()
        try:
            self._discover()
            next_at = time.monotonic()
            while True:
                self._tick()
                if self._stop.is_set():
                    break
                next_at += self.interval_s
                # Stay on the 1 s grid; after a slow tick, skip rather than bunch samples up.
                while next_at <= time.monotonic():
                    next_at += self.interval_s
                self._stop.wait(next_at - time.monotonic())
        except Exception as error:  # nothing here may ever reach the measurement
            log.exception("resource sampling stopped")
            self._fail("load", f"sampling stopped: {type(error).__name__}: {error}")
        finally:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
            self.sampler_cpu_s = time.thread_time() - cpu0

    def _fail(self, source: str, reason: str) -> None:
        """Record once that a source is not (or no longer) sampled, and why."""
        reason = redact_text(reason, self.url)
        if source not in self.absent:
            self.absent[source] = reason
            self.log(f"resources: {source} not sampled: {reason}")
        if source == "server":
            self._server = None
        elif source == "store" and self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                conn.close()

    # -- discovery ---------------------------------------------------------
    def _discover(self) -> None:
        self._discover_server()
        self._connect_stats()

    def _discover_server(self) -> None:
        host = urlsplit(self.url).hostname or ""
        port = url_port(self.url)
        if not is_local_host(host):
            self._fail(
                "server", f"the server ({host}) is not on this host; only its own statistics are sampled"
            )
            return
        if port is None:
            self._fail("server", "the URL names no port and its scheme has no known default")
            return
        try:
            proc, reason = find_listener(port)
        except psutil.Error as error:
            proc, reason = None, f"{type(error).__name__}: {error}"
        if proc is None:
            self._fail("server", reason or "not found")
            return
        self._server = proc
        with contextlib.suppress(psutil.Error):
            self.server_name = f"{proc.name()} {proc.pid}"

    def _connect_stats(self) -> None:
        if self.store_cls.stats is Store.stats:
            self._fail("store", f"OptiStack reads no server statistics from {self.store_cls.name}")
            return
        try:
            self._conn = self.store_cls.connect(self.url, self.settings)
        except Exception as error:
            self._fail("store", f"cannot open a statistics connection: {error}")

    # -- sampling ----------------------------------------------------------
    def _tick(self) -> None:
        now_ns = time.time_ns()
        first = self.ticks == 0
        batch: list[Sample] = []
        self._sample_load(now_ns, first, batch)
        if self._server is not None:
            try:
                self._sample_server(now_ns, first, batch)
            except psutil.NoSuchProcess:
                self._fail("server", "the server process ended during the run")
            except Exception as error:
                self._fail("server", f"sampling failed: {type(error).__name__}: {error}")
        if self._conn is not None:
            try:
                stats = self._conn.stats() or {}
            except Exception as error:
                self._fail("store", f"the statistics query failed: {type(error).__name__}: {error}")
            else:
                batch += [Sample(now_ns, "store", "", None, k, float(v)) for k, v in stats.items()]
        with self._lock:
            self.samples += batch
            self.ticks += 1

    def _read(self, proc: psutil.Process, meter: _CpuMeter, first: bool) -> tuple[float | None, int]:
        """(CPU % of one core or None, RSS bytes) of one process."""
        with proc.oneshot():
            times = proc.cpu_times()
            read_s = time.time()
            rss = proc.memory_info().rss
            return meter.percent(proc, times.user + times.system, read_s, first), rss

    def _sample_load(self, now_ns: int, first: bool, batch: list[Sample]) -> None:
        try:
            children = self._me.children(recursive=True)
        except psutil.Error:
            return
        server = self._server.pid if self._server is not None else None
        for proc in children:
            # Processes that were there before the load are not load (a server a test
            # started, say); neither is a server this process started.
            if proc.pid in self._before or proc.pid == server:
                continue
            try:
                role = "master" if proc.ppid() == self._me.pid else "worker"
                cpu, rss = self._read(proc, self._load_cpu, first)
            except psutil.Error:
                continue  # ended between listing and reading: it has nothing more to say
            label = f"{role} {proc.pid}"
            if cpu is not None:
                batch.append(Sample(now_ns, "load", label, proc.pid, "cpu_percent", cpu))
            batch.append(Sample(now_ns, "load", label, proc.pid, "rss_bytes", float(rss)))

    def _sample_server(self, now_ns: int, first: bool, batch: list[Sample]) -> None:
        root = self._server
        assert root is not None
        if not root.is_running():
            raise psutil.NoSuchProcess(root.pid)
        cpu_total, rss_total, counted, timed = 0.0, 0, 0, 0
        for proc in [root, *root.children(recursive=True)]:
            try:
                cpu, rss = self._read(proc, self._server_cpu, first)
            except psutil.NoSuchProcess:
                continue  # a backend that just ended
            counted += 1
            rss_total += rss
            if cpu is not None:
                cpu_total += cpu
                timed += 1
        label = self.server_name or str(root.pid)
        # No CPU figure without an interval behind it (the first tick, or a last one right
        # after the previous); a backend younger than that is left out of the sum.
        if timed:
            batch.append(Sample(now_ns, "server", label, root.pid, "cpu_percent", cpu_total))
        batch.append(Sample(now_ns, "server", label, root.pid, "rss_bytes", float(rss_total)))
        batch.append(Sample(now_ns, "server", label, root.pid, "processes", float(counted)))

    # -- results -----------------------------------------------------------
    def frame(self, run_id: str, store: str, windows: list[tuple[int, int]]) -> pd.DataFrame:
        """The samples as resources.parquet rows (docs/results.md), `in_window` from `windows` (ns)."""
        with self._lock:
            samples = list(self.samples)
        rows = [
            {
                "run_id": run_id,
                "store": store,
                "time": s.time_ns,
                "offset_s": (s.time_ns - self.started_ns) / 1e9,
                "in_window": any(start <= s.time_ns <= end for start, end in windows),
                "source": s.source,
                "process": s.process,
                "pid": s.pid,
                "metric": s.metric,
                "value": s.value,
            }
            for s in samples
        ]
        frame = pd.DataFrame(rows, columns=COLUMNS)
        frame["time"] = pd.to_datetime(frame["time"].astype("int64"), unit="ns", utc=True)
        frame["offset_s"] = frame["offset_s"].astype("float64")
        frame["in_window"] = frame["in_window"].astype(bool)
        frame["pid"] = frame["pid"].astype("Int64")
        frame["value"] = frame["value"].astype("float64")
        return frame

    def summary(self, frame: pd.DataFrame, windows: list[tuple[int, int]]) -> dict[str, Any]:
        """The compact run.json record: per source, CPU and memory over the measured window,
        and the store statistics' change (counters) or range (gauges) over it."""
        elapsed_s = max(1e-9, (time.time_ns() - self.started_ns) / 1e9)
        out: dict[str, Any] = {
            "interval_s": self.interval_s,
            "samples": self.ticks,
            "sampler_cpu_s": round(self.sampler_cpu_s, 4),
            "sampler_cpu_percent": round(self.sampler_cpu_s / elapsed_s * 100.0, 3),
        }
        measured = frame[frame["in_window"]] if frame["in_window"].any() else frame
        for source in ("load", "server"):
            if source in self.absent and not (frame["source"] == source).any():
                out[source] = {"absent": self.absent[source]}
                continue
            rows = measured[measured["source"] == source]
            # Per tick, the processes add up: a master and two workers at 50% are 150%.
            cpu = rows[rows["metric"] == "cpu_percent"].groupby("time")["value"].sum()
            rss = rows[rows["metric"] == "rss_bytes"].groupby("time")["value"].sum()
            entry: dict[str, Any] = {
                "processes": int(rows["pid"].nunique()) if source == "load" else None,
                "cpu_percent_mean": round(float(cpu.mean()), 1) if len(cpu) else None,
                "cpu_percent_max": round(float(cpu.max()), 1) if len(cpu) else None,
                "rss_bytes_max": int(rss.max()) if len(rss) else None,
            }
            if source == "server":
                entry["process"] = self.server_name
                entry.pop("processes")
                tree = rows[rows["metric"] == "processes"]["value"]
                entry["tree_processes_max"] = int(tree.max()) if len(tree) else None
                if source in self.absent:
                    entry["stopped"] = self.absent[source]
            out[source] = entry
        out["store"] = self._store_summary(frame, windows)
        return out

    def _store_summary(self, frame: pd.DataFrame, windows: list[tuple[int, int]]) -> dict[str, Any]:
        rows = frame[frame["source"] == "store"]
        if rows.empty:
            return {"absent": self.absent.get("store", "no statistics were sampled")}
        entry: dict[str, Any] = {"metrics": sorted(rows["metric"].unique())}
        if self.absent.get("store"):
            entry["stopped"] = self.absent["store"]
        window: dict[str, Any] = {}
        times = rows["time"].astype("int64")
        for metric, group in rows.assign(ns=times).groupby("metric"):
            group = group.sort_values("ns")
            if metric in self.stats_counters:
                # Between the samples that bracket each window: the window's whole change, plus
                # at most one interval on either side.
                delta, seconds = 0.0, 0.0
                for start, end in windows:
                    before = group[group["ns"] <= start]
                    after = group[group["ns"] >= end]
                    if before.empty or after.empty:
                        continue
                    delta += float(after["value"].iloc[0] - before["value"].iloc[-1])
                    seconds += (after["ns"].iloc[0] - before["ns"].iloc[-1]) / 1e9
                if seconds > 0:
                    window[metric] = {"kind": "counter", "delta": delta, "per_s": round(delta / seconds, 2)}
            else:
                inside = group[group["in_window"]]["value"]
                if len(inside):
                    window[metric] = {
                        "kind": "gauge",
                        "min": float(inside.min()),
                        "mean": round(float(inside.mean()), 2),
                        "max": float(inside.max()),
                    }
        entry["window"] = window
        return entry
