"""Engine figures for docs/performance.md: seeding rates, and workload c beside the native tools.

    .venv/bin/python scripts/bench_engine.py [--records 100000] [--duration 10] [--skip-seeding]

1. Seeding: `records` YCSB records (10 x 100 B) bulk-loaded into each store reachable
   here, through the store module's `load()`, timed end to end, count verified.
2. Workload c (100% reads, zipfian) closed loop at 1 and 16 users, through
   `optistack run`, on PostgreSQL and Redis; then, on the same servers in the same
   session, `pgbench -S` and `redis-benchmark -t get` at the same concurrency.

Servers: the machine's PostgreSQL (a database `optistack_bench` is created for pgbench
and dropped after), Redis (db 9; only `key:*` written by redis-benchmark and OptiStack's
namespace are touched), MariaDB, plus a moto server and nx-27017 started here.
Prints a Markdown table per part.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workloads.keyspace import records as seed_records
from workloads.spec import CORE_WORKLOADS
from workloads.stores import get_store
from workloads.stores.base import StoreSettings

BIN = Path(sys.executable).parent
PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
MYSQL_URL = os.environ.get("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int) -> None:
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} never opened")


def start_stand_ins(tmp: Path) -> tuple[dict[str, str], list[subprocess.Popen]]:
    moto, nx = free_port(), free_port()
    procs = [
        subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(moto)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [
                str(BIN / "nx-27017"),
                "--db",
                "memory",
                "--host",
                "127.0.0.1",
                "-p",
                str(nx),
                "--log-file",
                str(tmp / "nx.log"),
                "--pid-file",
                str(tmp / "nx.pid"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    wait_port(moto)
    wait_port(nx)
    return {
        "dynamodb": f"dynamodb://127.0.0.1:{moto}?region=us-east-1",
        "mongodb": f"mongodb://127.0.0.1:{nx}/optistack_bench",
    }, procs


def seeding(records: int, urls: dict[str, str]) -> pd.DataFrame:
    spec = CORE_WORKLOADS["c"].with_overrides(record_count=records)
    rows = []
    for store, url in urls.items():
        settings = StoreSettings(namespace="optistack_bench_seed", operation_timeout_s=120)
        with get_store(store).connect(url, settings) as conn:
            server = str(conn.server_info())
            conn.provision()
            t0 = time.perf_counter()
            loaded = conn.load(seed_records(spec, 1))
            elapsed = time.perf_counter() - t0
            count = conn.count()
            conn.teardown()
        assert loaded == count == records, (store, loaded, count)
        rows.append(
            {
                "store": store,
                "server": server,
                "records": records,
                "seconds": round(elapsed, 2),
                "records_per_s": round(records / elapsed),
            }
        )
        print(f"seeded {store}: {records / elapsed:,.0f} records/s", flush=True)
    return pd.DataFrame(rows)


def optistack_c(store: str, url: str, users: int, duration: int, records: int, results: Path) -> dict:
    run_id = f"bench-{store}-{users}"
    processes = 1 if users == 1 else 2
    argv = [
        str(BIN / "optistack"),
        "run",
        "--store",
        store,
        "--url",
        f"{store}={url}",
        "--workload",
        "c",
        "--records",
        str(records),
        "--duration",
        str(duration),
        "--warmup",
        "3",
        "--users",
        str(users),
        "--processes",
        str(processes),
        "--results",
        str(results),
        "--run-id",
        run_id,
        "--namespace",
        "optistack_bench_c",
        "--no-report",
    ]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    folder = results / "runs" / f"run_id={run_id}" / f"store={store}"
    summary = pd.read_parquet(folder / "summary.parquet")
    row = summary[summary["operation"] == "ALL"].iloc[0]
    info = json.loads((folder / "run.json").read_text())
    cpu = max((p["cpu_percent_max"] for p in info["load"]["client_cpu"]), default=0.0)
    return {
        "ops_s": row["throughput_ops_s"],
        "p50_us": row["latency_p50_us"],
        "p99_us": row["latency_p99_us"],
        "client_cpu_peak": cpu,
    }


def pgbench(users: int, duration: int) -> dict:
    tool = shutil.which("pgbench")
    base = PG_URL.rsplit("/", 1)[0]
    subprocess.run(["psql", PG_URL, "-qc", "DROP DATABASE IF EXISTS optistack_bench"], check=True)
    subprocess.run(["psql", PG_URL, "-qc", "CREATE DATABASE optistack_bench"], check=True)
    try:
        db = f"{base}/optistack_bench"
        subprocess.run([tool, "-q", "-i", "-s", "1", db], check=True, capture_output=True)
        out = subprocess.run(
            [tool, "-S", "-n", "-c", str(users), "-j", str(min(users, 2)), "-T", str(duration), "-r", db],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        subprocess.run(["psql", PG_URL, "-qc", "DROP DATABASE IF EXISTS optistack_bench"], check=True)
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
    latency_ms = float(re.search(r"latency average = ([\d.]+) ms", out).group(1))
    return {"ops_s": tps, "mean_latency_us": latency_ms * 1000}


def redis_benchmark(users: int, records: int, duration: int) -> dict:
    host, port_db = REDIS_URL.removeprefix("redis://").split(":")
    port, db = port_db.split("/")
    common = [
        "redis-benchmark",
        "-h",
        host,
        "-p",
        port,
        "--dbnum",
        db,
        "-r",
        str(records),
        "-d",
        "1000",
        "-q",
    ]
    subprocess.run([*common, "-t", "set", "-n", str(records), "-c", "16"], check=True, capture_output=True)
    # About `duration` seconds of GETs: calibrate the request count from a short probe.
    probe = subprocess.run(
        [*common, "-t", "get", "-n", "20000", "-c", str(users), "--csv"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rate = float(probe.strip().splitlines()[-1].split(",")[1].strip('"'))
    out = subprocess.run(
        [*common, "-t", "get", "-n", str(int(rate * duration)), "-c", str(users), "--csv"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    fields = [f.strip('"') for f in out.strip().splitlines()[-1].split(",")]
    # csv columns: test, rps, avg_latency_ms, min, p50, p95, p99, max
    subprocess.run(
        f"redis-cli -h {host} -p {port} -n {db} --scan --pattern 'key:*' | "
        f"xargs -r -n 500 redis-cli -h {host} -p {port} -n {db} unlink > /dev/null",
        shell=True,
        check=True,
    )
    return {"ops_s": float(fields[1]), "p50_us": float(fields[4]) * 1000, "p99_us": float(fields[6]) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--skip-seeding", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="optistack-bench-"))
    stand_ins, procs = start_stand_ins(tmp)
    try:
        if not args.skip_seeding:
            urls = {
                "postgres": PG_URL,
                "mysql": MYSQL_URL,
                "redis": REDIS_URL,
                "cockroachdb": PG_URL.replace("postgresql://", "cockroachdb://"),
                **stand_ins,
            }
            print(seeding(args.records, urls).to_markdown(index=False))
        rows = []
        for users in (1, 16):
            pg = optistack_c("postgres", PG_URL, users, args.duration, args.records, tmp / "results")
            native = pgbench(users, args.duration)
            rows.append(
                {
                    "store": "postgres",
                    "users": users,
                    "optistack_ops_s": pg["ops_s"],
                    "optistack_p50_us": pg["p50_us"],
                    "optistack_p99_us": pg["p99_us"],
                    "client_cpu_peak_%": pg["client_cpu_peak"],
                    "native": "pgbench -S",
                    "native_ops_s": native["ops_s"],
                    "native_p50_us": None,
                    "native_p99_us": None,
                    "ratio": pg["ops_s"] / native["ops_s"],
                }
            )
            rd = optistack_c("redis", REDIS_URL, users, args.duration, args.records, tmp / "results")
            native = redis_benchmark(users, args.records, args.duration)
            rows.append(
                {
                    "store": "redis",
                    "users": users,
                    "optistack_ops_s": rd["ops_s"],
                    "optistack_p50_us": rd["p50_us"],
                    "optistack_p99_us": rd["p99_us"],
                    "client_cpu_peak_%": rd["client_cpu_peak"],
                    "native": "redis-benchmark -t get",
                    "native_ops_s": native["ops_s"],
                    "native_p50_us": native["p50_us"],
                    "native_p99_us": native["p99_us"],
                    "ratio": rd["ops_s"] / native["ops_s"],
                }
            )
            print(f"users={users} done", flush=True)
        print(pd.DataFrame(rows).round(2).to_markdown(index=False))
    finally:
        for proc in procs:
            proc.terminate()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
