"""The `optistack` command (also `python -m workloads`).

Mistakes a user can fix print one message and exit 2; no traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from workloads.errors import OptiStackError


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optistack",
        description="Benchmark data stores with YCSB workloads driven by Locust.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="provision, seed, load, validate and write results for each store")
    run.add_argument(
        "--store",
        dest="stores",
        action="append",
        required=True,
        metavar="STORE",
        help="a store to benchmark (repeat for several): postgres, mysql, redis, mongodb, "
        "dynamodb, cassandra, cockroachdb",
    )
    run.add_argument("--workload", default="a", help="core workload a-f or a YAML file (default: a)")
    run.add_argument(
        "--records", dest="record_count", type=int, help="records to seed (default: the workload's)"
    )
    run.add_argument("--field-count", type=int, help="fields per record (default 10)")
    run.add_argument("--field-length", type=int, help="bytes per field (default 100)")
    run.add_argument(
        "--duration",
        dest="duration_s",
        type=float,
        help="measured seconds (default 30; with --operations an upper bound, default 86400)",
    )
    run.add_argument(
        "--repeats",
        type=int,
        help="repeat the measured phase N times; the summary gives the mean and 95%% CI (default 1)",
    )
    run.add_argument(
        "--operations",
        type=int,
        help="measure this many operations instead of a duration (YCSB operationcount)",
    )
    run.add_argument(
        "--warmup",
        dest="warmup_s",
        type=float,
        default=5.0,
        help="seconds run before measuring, excluded from results (default 5)",
    )
    run.add_argument(
        "--users",
        default="16",
        help="concurrent clients in total (default 16); a list such as 1,4,16,64 sweeps them",
    )
    run.add_argument("--spawn-rate", type=float, help="users started per second (default: all in 1 s)")
    run.add_argument(
        "--target-rate",
        help="total ops/s to hold (open loop, coordinated omission corrected); omit for closed loop; "
        "a list such as 500,1000,2000 sweeps them",
    )
    run.add_argument("--processes", type=int, help="load processes (default: one per core)")
    distributed = run.add_argument_group(
        "distributed load (Locust's distributed mode; see docs/distributed.md)",
        "--master and --expect-workers go together: the load runs on N remote `optistack worker` "
        "processes, none on this machine.",
    )
    distributed.add_argument(
        "--master",
        action="store_true",
        help="be the Locust master of remote workers (needs --expect-workers)",
    )
    distributed.add_argument(
        "--expect-workers", type=int, metavar="N", help="remote worker processes to wait for (needs --master)"
    )
    distributed.add_argument(
        "--master-bind-host", metavar="HOST", help="address the master listens on (default 0.0.0.0: all)"
    )
    distributed.add_argument(
        "--master-port",
        type=int,
        metavar="PORT",
        help="master port (default: $OPTISTACK_MASTER_PORT or 5557)",
    )
    distributed.add_argument(
        "--worker-wait",
        dest="worker_wait_s",
        type=float,
        metavar="S",
        help="seconds to wait for the workers before the store fails (default 60)",
    )
    run.add_argument("--run-id", help="run id (default: UTC time + random suffix); reusing one replaces it")
    run.add_argument("--results", help="results root (default: $OPTISTACK_RESULTS or ./results)")
    run.add_argument(
        "--url",
        dest="url_pairs",
        action="append",
        default=[],
        metavar="STORE=URL",
        help="store endpoint, e.g. postgres=postgresql://user@host/db (else $OPTISTACK_<STORE>_URL)",
    )
    run.add_argument("--seed", type=int, default=1, help="random seed for keys and values (default 1)")
    run.add_argument(
        "--keep",
        dest="teardown",
        action="store_false",
        help="keep the seeded data instead of dropping it after the run",
    )
    run.add_argument(
        "--insert-order",
        choices=["hashed", "ordered"],
        default="hashed",
        help="YCSB insertorder: hashed keys (default) or ordered keys",
    )
    run.add_argument(
        "--operation-timeout",
        dest="operation_timeout_s",
        type=float,
        default=10.0,
        help="seconds before one operation counts as failed (default 10)",
    )
    run.add_argument(
        "--connect-timeout",
        dest="connect_timeout_s",
        type=float,
        default=5.0,
        help="seconds to wait for a store to accept a connection (default 5)",
    )
    run.add_argument(
        "--namespace",
        default="optistack_usertable",
        help="table/collection/key prefix to create (must start with optistack_)",
    )
    run.add_argument("--no-report", action="store_true", help="do not write the HTML report")

    report = sub.add_parser("report", help="write the HTML report of a run and the reports index")
    report.add_argument("--results", help="results root (default: $OPTISTACK_RESULTS or ./results)")
    report.add_argument("--run-id", help="run to report (default: the newest)")

    stores = sub.add_parser("stores", help="list the stores and whether each configured endpoint answers")
    stores.add_argument("--url", dest="url_pairs", action="append", default=[], metavar="STORE=URL")

    worker = sub.add_parser(
        "worker",
        help="serve the load of `optistack run --master` runs as Locust worker(s)",
        description="Run Locust worker process(es) for a master started by `optistack run --master "
        "--expect-workers N`. The master sends the load configuration (store URL included); this "
        "machine needs OptiStack installed and network access to the store and the master.",
    )
    worker.add_argument("--master-host", required=True, help="host name or address of the master")
    worker.add_argument(
        "--master-port",
        type=int,
        metavar="PORT",
        help="master port (default: $OPTISTACK_MASTER_PORT or 5557)",
    )
    worker.add_argument("--processes", type=int, help="worker processes on this machine (default 1)")
    worker.add_argument(
        "--once", action="store_true", help="serve one run and exit (default: serve run after run)"
    )

    local = sub.add_parser("local", help="local servers that need no system install")
    local.add_argument("action", choices=["up", "down", "status"])
    local.add_argument(
        "--store",
        dest="stores",
        action="append",
        help="only these (default: postgres, redis, dynamodb, mongodb)",
    )
    local.add_argument(
        "--port",
        dest="port_pairs",
        action="append",
        default=[],
        metavar="STORE=PORT",
        help="listen on another port, e.g. --port redis=56380",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `optistack` console script."""
    args = _build_parser().parse_args(argv)
    # SIGTERM (a scheduler stopping us) unwinds like Ctrl-C, so cleanup code runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        commands = {"run": _run, "report": _report, "stores": _stores, "worker": _worker, "local": _local}
        return commands[args.command](args)
    except OptiStackError as error:
        print(f"optistack: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("optistack: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    from workloads import runner
    from workloads.config import parse_url_options

    _check_distributed(args)
    options = {
        k: v
        for k, v in vars(args).items()
        if k not in {"command", "url_pairs", "no_report", "master"} and v is not None
    }
    options["urls"] = parse_url_options(args.url_pairs)
    if args.operations is not None and args.duration_s is None:
        options["duration_s"] = 86_400.0
    _sweepable(options, "users", "sweep_users", int)
    _sweepable(options, "target_rate", "sweep_target_rates", float)
    from workloads.summary import print_summary

    failed = False
    for p in runner.plan_sweep(options, command=runner.command_line()):
        step = f" (sweep {p.sweep['parameter']} = {p.sweep['value']:g})" if p.sweep else ""
        print(
            f"run {p.run_id}{step}: workload {p.spec.name} ({p.spec.description or 'custom'}), "
            f"{p.spec.record_count:,} records, stores {', '.join(p.stores)}",
            flush=True,
        )
        dirs = runner.run(p, log=lambda line: print(line, flush=True))
        failed = print_summary(dirs) or failed
        if not args.no_report:
            _write_report(Path(p.results_root), p.run_id)
    return 1 if failed else 0


def _check_distributed(args: argparse.Namespace) -> None:
    """`--master` and `--expect-workers` go together; the master's settings need them."""
    if args.master and args.expect_workers is None:
        raise OptiStackError(
            "--master needs --expect-workers N: how many `optistack worker` processes will serve the load"
        )
    if args.expect_workers is not None and not args.master:
        raise OptiStackError(
            "--expect-workers needs --master: this run is then the master of N remote workers "
            "(without both, the load runs in local processes, see --processes)"
        )
    given = [
        flag
        for flag, value in (
            ("--master-bind-host", args.master_bind_host),
            ("--master-port", args.master_port),
            ("--worker-wait", args.worker_wait_s),
        )
        if value is not None
    ]
    if given and not args.master:
        raise OptiStackError(f"{', '.join(given)} only apply with --master --expect-workers N")


def _worker(args: argparse.Namespace) -> int:
    from workloads import distributed

    if args.master_port is not None and not 1 <= args.master_port <= 65_535:
        raise OptiStackError(f"--master-port {args.master_port} must be a port number (1-65535)")
    if args.processes is not None and not 1 <= args.processes <= 256:
        raise OptiStackError(f"--processes {args.processes} must be 1 to 256")
    port = distributed.master_port(args.master_port)
    return distributed.serve(
        args.master_host, port, args.processes, once=args.once, log=lambda line: print(line, flush=True)
    )


def _sweepable(options: dict, name: str, sweep_name: str, kind: type) -> None:
    """`--users 1,4,16` (a list) becomes a sweep; a single value stays a setting."""
    raw = options.get(name)
    if raw is None:
        return
    try:
        values = [kind(v) for v in str(raw).split(",") if v.strip()]
    except ValueError:
        flag = "--" + name.replace("_", "-")
        raise OptiStackError(
            f"{flag} {raw!r} must be a number or a comma-separated list of numbers"
        ) from None
    options[name] = values[0] if values else raw
    if len(values) > 1:
        options[sweep_name] = values


def _write_report(root: Path, run_id: str | None) -> None:
    from reports.render import write_report

    path = write_report(root, run_id)
    print(f"report: {path}")
    print(f"index:  {path.parent / 'index.html'}")


def _report(args: argparse.Namespace) -> int:
    from workloads.config import results_root

    _write_report(results_root(args.results), args.run_id)
    return 0


def _stores(args: argparse.Namespace) -> int:
    from workloads.config import parse_url_options, resolve_urls
    from workloads.stores import get_store, store_names
    from workloads.stores.base import StoreSettings, redact_url

    explicit = parse_url_options(args.url_pairs)
    for name in store_names():
        try:
            url = resolve_urls([name], explicit)[name]
        except OptiStackError:
            print(f"{name:<12} not configured")
            continue
        try:
            with get_store(name).connect(url, StoreSettings(connect_timeout_s=3)) as conn:
                state = f"answers: {conn.server_info()}"
        except OptiStackError as error:
            state = f"does not answer ({str(error).split(': ', 1)[-1][:120]})"
        print(f"{name:<12} {redact_url(url)}  {state}")
    return 0


def _local(args: argparse.Namespace) -> int:
    from workloads import local
    from workloads.config import state_dir

    directory = state_dir()
    if args.action == "up":
        ports = {}
        for pair in args.port_pairs:
            store, _, port = pair.partition("=")
            if not port.isdigit():
                raise OptiStackError(f"--port {pair!r} must look like --port redis=56380")
            ports[store] = int(port)
        servers = local.local_up(directory, args.stores, ports=ports or None)
        for store, server in servers.items():
            print(f"{store:<10} {server.url}  ({server.label})")
        print()
        print(local.format_env(servers))
    elif args.action == "down":
        local.local_down(directory, args.stores)
        print("local servers stopped")
    else:
        for store, status in local.local_status(directory).items():
            print(f"{store:<10} {status.get('url')}  {'running' if status.get('running') else 'stopped'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
