"""What OptiStack's latency figures mean, shown against real servers through `optistack run`.

Each test runs the CLI as a user would (a separate Locust load process, HdrHistograms
merged across processes, Parquet read back) and disturbs the real server from the
outside in a way whose effect on the figures is known in advance:

- a PostgreSQL table lock held for 1 s at a time (a server stall): in target-rate mode
  the latency from the intended start must show it, the service time must not, and the
  achieved rate must stay on target (coordinated omission corrected); in closed-loop
  mode only the few operations that were blocked see it (coordinated omission);
- a row-level security policy that makes every read sleep 50 ms on the server: the
  recorded p50 must move by those 50 ms and match what an independent plain client
  measures at the same time (fidelity);
- Redis reads well under a millisecond: the figures must have microsecond resolution.

See docs/measurement.md for what the two latency figures mean and when to read which.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pandas as pd
import psycopg
import pytest

from tests.conftest import optistack
from workloads.recorder import decode

pytestmark = pytest.mark.slow

PERCENTILES = ("p50", "p90", "p95", "p99", "p999")
STALL_S = 1.0  # how long each lock is held
# When, in seconds after the measured window (8 s) opens. The window's start is estimated
# as "every user reads" + warm-up, but it really opens 0-2.5 s earlier: Locust reports
# the users spawned while they still import the driver and connect, which takes seconds
# on a busy machine. So the stalls start 0.5-3 s and 3.5-6 s into the window, and end
# before it does.
STALL_OFFSETS_S = (0.5, 3.5)


def run_and_read(results: Path, store: str, *args: str) -> tuple[pd.Series, pd.DataFrame, str]:
    """`optistack run` one store; return its summary ALL row, its timeseries and its output."""
    proc = optistack(
        "run", "--store", store, "--results", str(results), "--run-id", "m", "--no-report", *args
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    folder = results / "runs" / "run_id=m" / f"store={store}"
    summary = pd.read_parquet(folder / "summary.parquet")
    series = pd.read_parquet(folder / "timeseries.parquet")
    return summary[summary["operation"] == "ALL"].iloc[0], series[series["operation"] == "ALL"], out


def figures(row: pd.Series) -> str:
    """The latency figures of a summary row, for failure messages and the docs."""
    parts = [
        f"throughput {row['throughput_ops_s']:.1f} ops/s",
        f"ops {row['ops']}",
        f"errors {row['errors']}",
    ]
    for prefix in ("latency", "intended_latency"):
        values = [row[f"{prefix}_{p}_us"] for p in (*PERCENTILES, "max")]
        if all(pd.isna(v) for v in values):
            parts.append(f"{prefix}: null")
        else:
            parts.append(f"{prefix} p50/p90/p95/p99/p999/max us: " + "/".join(f"{v:.0f}" for v in values))
    return "; ".join(parts)


def namespace() -> str:
    return f"optistack_meas_{secrets.token_hex(4)}"


def read_sql_pattern(ns: str) -> str:
    """How the benchmark's prepared read statement shows in pg_stat_activity.query."""
    return f'%FROM "{ns}" WHERE ycsb_key = %'


def wait_for_readers(
    url: str, ns: str, users: int, timeout_s: float = 120.0, user: str | None = None
) -> None:
    """Block until `users` sessions run the benchmark's reads on `ns`: the load process
    has spawned every user, so its warm-up has begun (the measured window follows it)."""
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            readers = conn.execute(
                "SELECT count(DISTINCT pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
                " AND application_name = 'optistack' AND query LIKE %s"
                " AND (%s::text IS NULL OR usename = %s::text)",
                (read_sql_pattern(ns), user, user),
            ).fetchone()[0]
            if readers >= users:
                return
            time.sleep(0.02)
    raise TimeoutError(f"{users} benchmark readers on {ns} never showed up in pg_stat_activity")


@dataclass
class Staller:
    """A background thread that stalls the benchmark table with ACCESS EXCLUSIVE locks.

    It waits until every load user reads, estimates the window start as that moment
    plus the warm-up, then at each offset holds `LOCK TABLE ... IN ACCESS EXCLUSIVE MODE`
    for `hold_s` in a transaction on its own connection: every read queues behind it.
    """

    url: str
    ns: str
    users: int
    warmup_s: float
    offsets_s: tuple[float, ...] = STALL_OFFSETS_S
    hold_s: float = STALL_S
    held_s: list[float] = field(default_factory=list)
    error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Staller:
        self._thread = threading.Thread(target=self._run, name="staller", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)

    def _run(self) -> None:
        try:
            wait_for_readers(self.url, self.ns, self.users)
            window_start = time.monotonic() + self.warmup_s
            with psycopg.connect(self.url, autocommit=True) as conn:
                for offset in self.offsets_s:
                    if self._stop.wait(max(0.0, window_start + offset - time.monotonic())):
                        return
                    with conn.transaction():
                        conn.execute("SET LOCAL lock_timeout = '5s'")
                        conn.execute(f'LOCK TABLE "{self.ns}" IN ACCESS EXCLUSIVE MODE')
                        locked = time.monotonic()
                        time.sleep(self.hold_s)
                    self.held_s.append(time.monotonic() - locked)
        except BaseException as error:  # reported by the test, not lost in the thread
            self.error = error

    def check(self) -> None:
        assert self.error is None, f"the staller failed: {self.error!r}"
        assert len(self.held_s) == len(self.offsets_s), f"locks held: {self.held_s}"
        assert all(h >= self.hold_s for h in self.held_s), self.held_s


@pytest.fixture
def postgres_url(store_server) -> str:
    return store_server("postgres").url


def stalled_run(tmp_path: Path, url: str, *mode: str) -> tuple[pd.Series, pd.DataFrame, Staller]:
    """Workload c (100% reads) on PostgreSQL for 8 s while the table is locked twice for 1 s."""
    ns = namespace()
    users, warmup = 4, 3.0  # longer than the ~2.5 s users may take to connect when busy
    with Staller(url, ns, users, warmup) as staller:
        row, series, _ = run_and_read(
            tmp_path / "results",
            "postgres",
            "--workload",
            "c",
            "--records",
            "2000",
            "--users",
            str(users),
            "--processes",
            "2",
            "--duration",
            "8",
            "--warmup",
            str(warmup),
            "--namespace",
            ns,
            "--url",
            f"postgres={url}",
            *mode,
        )
    staller.check()
    return row, series, staller


def test_target_rate_charges_a_server_stall_to_every_operation_that_waited_for_it(
    tmp_path: Path, postgres_url: str
) -> None:
    """Coordinated omission, for real: 200 ops/s from 4 users (one operation every 20 ms
    each) while the table is locked for 1 s twice. Each lock blocks the one read every
    user has in flight; the ~50 reads per user that were due during the lock run late,
    back to back, as soon as it is released (no user sleeps while behind schedule). So:

    - service time (actual start to end) is small for all but the 4 blocked reads per
      stall: p50 and p99 stay at a few milliseconds;
    - latency from the intended start charges the wait to each of the ~400 late reads,
      spread evenly from 0 to 1 s: about a quarter of all reads, so p90 and p99 are
      hundreds of milliseconds;
    - the achieved rate stays on target, because the backlog is worked off.

    Were intended latency not recorded (or equal to the service time), the intended p99
    would be a few milliseconds like the service p99, and this test would fail.
    """
    row, _, staller = stalled_run(tmp_path, postgres_url, "--target-rate", "200")
    seen = figures(row)
    print(seen, f"locks held {staller.held_s}")
    assert row["errors"] == 0, seen
    assert row["target_rate"] == 200
    # The stall happened and the blocked reads' service time shows it.
    assert row["latency_max_us"] >= 800_000, seen
    # The service time of a typical read is unaffected...
    assert row["latency_p50_us"] < 20_000, seen
    # ...while the latency a caller saw, from when the read was due, carries the stall.
    assert row["intended_latency_p99_us"] >= 300_000, seen
    assert row["intended_latency_p90_us"] >= 100_000, seen
    assert row["intended_latency_p99_us"] >= 10 * row["latency_p99_us"], seen
    # From the intended start is never shorter than from the actual start.
    for p in (*PERCENTILES, "max"):
        assert row[f"intended_latency_{p}_us"] >= row[f"latency_{p}_us"], (p, seen)
    # The open loop holds its rate: the backlog after each stall is worked off.
    assert row["throughput_ops_s"] == pytest.approx(200, rel=0.15), seen


def test_closed_loop_hides_the_same_stall_in_its_percentiles(tmp_path: Path, postgres_url: str) -> None:
    """The same stalls without a target rate: each user simply waits, so only the one read
    per user in flight during a lock is slow (8 of thousands). The service time's maximum
    shows the stall (overall and in the second each stall began), its percentiles do not,
    and there is no intended start, so the intended-latency columns are null. This is the
    coordinated omission that target-rate mode corrects (see the test above)."""
    row, series, staller = stalled_run(tmp_path, postgres_url)
    seen = figures(row)
    per_second = series.sort_values("second")["ops"].tolist()
    per_second_max = series.sort_values("second")["latency_max_us"].tolist()
    print(seen, f"ops per second {per_second}", f"max per second {per_second_max}")
    print(f"locks held {staller.held_s}")
    assert row["errors"] == 0, seen
    assert pd.isna(row["target_rate"])
    for p in (*PERCENTILES, "max", "mean"):
        assert pd.isna(row[f"intended_latency_{p}_us"]), (p, seen)
    # The blocked reads' service time contains the whole wait for the lock...
    assert row["latency_max_us"] >= 800_000, seen
    # ...but they are too few (8 of thousands) to move p99: closed-loop percentiles hide
    # a stall. (p99.9 hides it too when the machine is quiet enough for >8,000 reads.)
    assert row["ops"] >= 2000, seen
    assert row["latency_p99_us"] < 100_000, seen
    # Per second, it shows as the maximum of the second each blocked read started in
    # (throughput dips too, but on a shared machine it swings 2x by itself).
    stalled_seconds = series[series["latency_max_us"] >= 800_000]["second"].tolist()
    assert len(per_second) == 8
    assert len(stalled_seconds) >= len(STALL_OFFSETS_S), (stalled_seconds, per_second)


@pytest.fixture
def delay_role(postgres_url: str) -> Iterator[tuple[str, str]]:
    """A login role (and its own schema, where its tables go) that is not a superuser, so
    row-level security applies to it. Dropped, with everything in it, afterwards."""
    role = namespace()
    password = secrets.token_hex(8)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        admin.execute(f"CREATE SCHEMA AUTHORIZATION {role}")
    parts = urlsplit(postgres_url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{role}:{quote(password)}@{host}" + (f":{parts.port}" if parts.port else "")
    try:
        yield role, urlunsplit(parts._replace(netloc=netloc))
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
            )
            admin.execute(f"DROP SCHEMA IF EXISTS {role} CASCADE")
            admin.execute(f"DROP ROLE IF EXISTS {role}")


DELAY_MS = 50
REFERENCE_READS = 50  # ~2.5 s, inside the 5-s window


def reference_p50_us(url: str, table: str, keys: list[str], fields: int) -> float:
    """The p50 a plain blocking psycopg client measures for the benchmark's own read
    statement: no gevent, no Locust, no recorder, just `perf_counter_ns` around it."""
    columns = ", ".join(f'"field{i}"' for i in range(fields))
    sql = f"SELECT {columns} FROM {table} WHERE ycsb_key = %s"
    samples = []
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.cursor()
        for i in range(REFERENCE_READS):
            t0 = time.perf_counter_ns()
            assert cur.execute(sql, (keys[i % len(keys)],), prepare=True).fetchone() is not None
            samples.append((time.perf_counter_ns() - t0) / 1000)
    samples = sorted(samples[3:])  # the first reads prepare the statement
    return samples[len(samples) // 2]


def test_a_known_server_side_delay_is_recorded_as_an_independent_client_sees_it(
    tmp_path: Path, postgres_url: str, delay_role: tuple[str, str]
) -> None:
    """Latency fidelity, through `optistack run` and the unmodified PostgreSQL store.

    Closed-loop runs of workload c (1 user) as a dedicated non-superuser role:

    1. baseline: the benchmark's reads as they are;
    2. delayed: once the load user reads (during warm-up), a row-level security policy
       `USING (pg_sleep(0.050) IS NOT NULL)` is put on the benchmark table. The reads
       go by primary key, so the server evaluates the policy once per read, on the row
       it found (EXPLAIN: Index Scan, Filter: pg_sleep(...)): every read the benchmark
       sends now takes 50 ms longer *on the server*, with the same statement, the same
       connection settings and the same client code path. During that run's measured
       window a plain blocking psycopg client times the very same statement on the same
       table with `perf_counter_ns`: the independent reference, under the same load.

    - The delayed run's minimum is at least 50 ms: the policy covered the whole
      measured window (pg_sleep never sleeps less than asked).
    - Its p50 is within 5% of 50 ms + the baseline p50.
    - Its p50 is within 1 ms of the reference client's p50.

    Why 50 ms and not 5: no client sees *exactly* the server's sleep added. pg_sleep
    overshoots (~0.15 ms) and both processes wake from idle after it; on this shared
    2-core machine a plain psycopg client sees a 5-ms sleep cost 5.5-5.7 ms, and a 20-ms
    one 0.5-1.1 ms more than asked, load-dependent: 5% of 5 ms + baseline, and up to
    5.3% of 20 ms + baseline. Against 50 ms that is at most ~2%, so the 5% bound tests
    the recorder, not the machine's scheduler; the 1-ms bound against the independent
    client keeps the check tight in absolute terms. Sub-millisecond resolution is
    tested on Redis below.

    A recorder that lost resolution, mis-scaled units, counted time that is not the
    operation's (client scheduling, merging) or missed part of it fails one of these.
    """
    role, url = delay_role
    records, fields, warmup = 1000, 10, 3.0  # users may take ~2.5 s to connect when busy
    common = [
        *("--workload", "c", "--records", str(records), "--field-count", str(fields), "--users", "1"),
        *("--processes", "1", "--duration", "5", "--warmup", str(warmup), "--url", f"postgres={url}"),
    ]
    ns = namespace()
    table = f'{role}."{ns}"'
    base, _, _ = run_and_read(tmp_path / "base", "postgres", *common, "--namespace", ns)

    failures: list[BaseException] = []
    reference: list[float] = []

    def delay_and_measure() -> None:
        try:
            wait_for_readers(postgres_url, ns, 1, user=role)
            with psycopg.connect(postgres_url, autocommit=True) as admin:
                admin.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY")
                admin.execute(
                    f"CREATE POLICY delay ON {table} USING (pg_sleep({DELAY_MS / 1000}) IS NOT NULL)"
                )
                # a superuser bypasses the policy: fetching keys costs no delay
                keys = [k for (k,) in admin.execute(f"SELECT ycsb_key FROM {table} LIMIT 200")]
            time.sleep(warmup)  # into the measured window (5 s)
            reference.append(reference_p50_us(url, table, keys, fields))
        except BaseException as error:  # reported by the test, not lost in the thread
            failures.append(error)

    measurer = threading.Thread(target=delay_and_measure, daemon=True)
    measurer.start()
    delayed, _, _ = run_and_read(tmp_path / "delayed", "postgres", *common, "--namespace", ns)
    measurer.join(60)
    assert not failures, failures
    added = delayed["latency_p50_us"] - base["latency_p50_us"]
    print("baseline", figures(base))
    print("delayed ", figures(delayed))
    print(f"reference client p50 {reference[0]:.0f} us; delayed p50 - baseline p50 = {added:.0f} us")

    assert base["errors"] == delayed["errors"] == 0
    assert delayed["ops"] >= 60, figures(delayed)  # ~19 reads/s for 5 s
    assert delayed["latency_min_us"] >= DELAY_MS * 1000, figures(delayed)
    assert abs(delayed["latency_p50_us"] - reference[0]) <= 1000, (reference, figures(delayed))
    expected = DELAY_MS * 1000 + base["latency_p50_us"]
    assert delayed["latency_p50_us"] == pytest.approx(expected, rel=0.05), (expected, figures(delayed))


def test_redis_reads_are_measured_in_microseconds(tmp_path: Path, store_server) -> None:
    """A Redis GET on localhost takes a fraction of a millisecond. Locust's own figures
    would round it to 0 or 1 ms; OptiStack's HdrHistograms keep microseconds."""
    parts = urlsplit(store_server("redis").url)
    url = urlunsplit(parts._replace(path="/8"))  # the database set aside for these tests
    summary_row, _, _ = run_and_read(
        tmp_path / "results",
        "redis",
        "--workload",
        "c",
        "--records",
        "1000",
        "--users",
        "1",
        "--processes",
        "1",
        "--duration",
        "5",
        "--warmup",
        "1",
        "--namespace",
        namespace(),
        "--url",
        f"redis={url}",
    )
    seen = figures(summary_row)
    print(seen)
    p50, p90, p99 = (summary_row[f"latency_{p}_us"] for p in ("p50", "p90", "p99"))
    assert summary_row["errors"] == 0 and summary_row["ops"] >= 1000, seen
    assert p50 < 1000, seen
    assert p50 % 1000 != 0, seen
    assert p50 < p90 <= p99, seen
    assert len({p50, p90, p99}) >= 2, seen
    # The stored histogram itself: many distinct microsecond values below 1 ms.
    histogram = decode(summary_row["histogram"])
    below_1ms = [v.value_iterated_to for v in histogram.get_recorded_iterator() if v.value_iterated_to < 1000]
    assert len(below_1ms) >= 50, below_1ms
    assert histogram.get_total_count() == summary_row["ops"]


def test_the_window_opens_once_every_user_has_connected(tmp_path: Path, postgres_url: str) -> None:
    # With no warm-up, the first measured second must already hold every user: the window
    # opens when all users have finished on_start (connected), not when Locust has merely
    # spawned their greenlets. Before, that second held 187-189 of 200 operations on a
    # quiet machine and 108-158 on a busy one.
    rate = 200
    row, series, out = run_and_read(
        tmp_path / "results", "postgres",
        "--url", f"postgres={postgres_url}", "--namespace", f"optistack_window_{secrets.token_hex(3)}",
        "--workload", "a", "--records", "1000", "--users", "8", "--processes", "2",
        "--warmup", "0", "--duration", "3", "--target-rate", str(rate),
    )  # fmt: skip
    per_second = series.set_index("second")["ops"].sort_index()
    assert list(per_second.index) == [0, 1, 2], out
    assert per_second.loc[0] >= 0.97 * rate, (per_second.to_dict(), out)
    assert row["errors"] == 0, figures(row)
