"""Where store endpoints and the results root come from, outside Airflow.

Precedence for a store's URL: `--url store=URL` on the command line, then the
environment variable `OPTISTACK_<STORE>_URL`, then a server started by
`optistack local up` (its state file), and otherwise an error that says all three.
Airflow resolves Connections itself and passes URLs in explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from workloads.errors import OptiStackError

DEFAULT_RESULTS = "results"
DEFAULT_STATE_DIR = Path(".optistack") / "local"


def results_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The results root: `--results`, else `OPTISTACK_RESULTS`, else `./results`."""
    return Path(explicit or os.environ.get("OPTISTACK_RESULTS") or DEFAULT_RESULTS).resolve()


def state_dir() -> Path:
    """Folder of `optistack local` servers (`OPTISTACK_HOME`/local, default ./.optistack/local)."""
    home = os.environ.get("OPTISTACK_HOME")
    return (Path(home) / "local") if home else DEFAULT_STATE_DIR.resolve()


def env_var(store: str) -> str:
    """The environment variable that holds a store's URL."""
    return f"OPTISTACK_{store.upper()}_URL"


def parse_url_options(pairs: Iterable[str]) -> dict[str, str]:
    """Parse repeated `--url store=URL` options."""
    urls: dict[str, str] = {}
    for pair in pairs:
        store, sep, url = pair.partition("=")
        if not sep or not store.strip() or not url.strip():
            raise OptiStackError(
                f"--url {pair.split(':', 1)[0]!r}... must look like --url postgres=postgresql://host/db"
            )
        urls[store.strip()] = url.strip()
    return urls


def _local_urls() -> dict[str, str]:
    from workloads.local import local_urls  # only servers that are running now

    return local_urls(state_dir())


def resolve_urls(stores: Iterable[str], explicit: Mapping[str, str] | None = None) -> dict[str, str]:
    """A URL for every store, or one error listing each store that has none."""
    explicit = dict(explicit or {})
    local = None
    urls: dict[str, str] = {}
    missing = []
    for store in stores:
        url = explicit.get(store) or os.environ.get(env_var(store))
        if not url:
            local = _local_urls() if local is None else local
            url = local.get(store)
        if url:
            urls[store] = url
        else:
            missing.append(store)
    if missing:
        hints = "; ".join(f"--url {s}=URL or {env_var(s)}" for s in missing)
        raise OptiStackError(
            f"no URL for {', '.join(missing)}: set {hints}, or start local servers with `optistack local up`"
        )
    return urls
