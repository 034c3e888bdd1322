"""Glue between Airflow and the OptiStack engine, shared by the DAG files.

Wiring only: the trigger form, mapping its values onto `workloads.runner.RunOptions`,
finding store URLs, carrying a plan from task to task, and one task group per store.
Everything that measures, validates or renders lives in `workloads/` and `reports/`.

Secrets: a `RunPlan` holds store URLs, and URLs may hold passwords. What travels in
XCom is the plan with every URL redacted (`user:***@host`); each task looks its
store's URL up again (Connection `optistack_<store>`, else `OPTISTACK_<STORE>_URL`,
else a server of `optistack local up`) and puts it back into its own copy of the plan.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from airflow.sdk import Asset, Connection, Param, TriggerRule, get_current_context, task, task_group
from airflow.sdk.exceptions import AirflowNotFoundException
from airflow.sdk.log import mask_secret

from workloads.errors import OptiStackError
from workloads.spec import CORE_WORKLOADS
from workloads.stores import store_names

log = logging.getLogger("optistack")

# Consumers (a regression-detection DAG, a notifier) schedule on these.
RESULTS_ASSET = Asset("optistack://results/runs")  # one event per published store
REPORTS_ASSET = Asset("optistack://results/reports")  # one event per report task

CONNECTION_PREFIX = "optistack_"
NIGHTLY_MATRIX_ENV = "OPTISTACK_NIGHTLY_MATRIX"
DEFAULT_NIGHTLY_MATRIX = Path(__file__).resolve().parent.parent / "include" / "benchmarks" / "nightly.yaml"

STORE_LABELS = {
    "postgres": "PostgreSQL",
    "mysql": "MySQL / MariaDB",
    "redis": "Redis / Valkey",
    "mongodb": "MongoDB",
    "dynamodb": "DynamoDB",
    "cassandra": "Cassandra",
    "cockroachdb": "CockroachDB",
}
# Form values meaning "not set": the engine then picks (closed loop, one process per core).
ZERO_MEANS_UNSET = ("target_rate", "processes", "expect_workers")
NAMESPACE_MAX = 48  # characters, optistack_ included: Cassandra's keyspace limit, the shortest
# Form values meaning "no sweep".
EMPTY_MEANS_UNSET = ("sweep_users", "sweep_target_rates")
_RUN_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


# --- the trigger form ---------------------------------------------------------------
def workload_choices() -> dict[str, str]:
    """Workload names for the dropdown (a-f, then `include/workloads/*.yaml`), with labels."""
    from workloads.runner import WORKLOAD_DIRS

    choices = {name: f"{name}: {spec.description}" for name, spec in CORE_WORKLOADS.items()}
    for directory in WORKLOAD_DIRS:
        for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
            if path.stem in choices:
                continue
            try:
                description = (yaml.safe_load(path.read_text()) or {}).get("description") or "custom"
            except (OSError, yaml.YAMLError, AttributeError):
                description = "this file does not parse: the plan task will say why"
            choices[path.stem] = f"{path.stem}: {description}"
    return choices


def benchmark_params() -> dict[str, Param]:
    """The trigger form of `optistack_benchmark`. Names are `RunOptions` field names."""
    stores = sorted(
        store_names(), key=lambda s: (list(STORE_LABELS).index(s) if s in STORE_LABELS else 99, s)
    )
    workloads = workload_choices()
    return {
        "stores": Param(
            ["postgres", "redis"],
            type="array",
            items={"type": "string", "enum": stores},
            # The form renders an array with `examples` as a multi-select; `items.enum`
            # makes the API and the CLI refuse other names too.
            examples=stores,
            values_display={s: STORE_LABELS.get(s, s) for s in stores},
            uniqueItems=True,
            minItems=1,
            title="Stores",
            description="Data stores to benchmark, one after the other. Each needs an Airflow "
            "Connection optistack_<store> (or OPTISTACK_<STORE>_URL on the workers).",
        ),
        "workload": Param(
            "a",
            type="string",
            enum=list(workloads),
            values_display=workloads,
            title="Workload",
            description="A YCSB core workload (a-f) or a custom one from include/workloads/.",
        ),
        "record_count": Param(
            10_000,
            type="integer",
            minimum=1,
            maximum=1_000_000_000,
            title="Records",
            description="Records seeded into each store before the load (YCSB recordcount).",
        ),
        "duration_s": Param(
            30,
            type="number",
            minimum=1,
            maximum=86_400,
            title="Measured duration (s)",
            description="Seconds of load that are measured, after the warm-up.",
        ),
        "users": Param(
            16,
            type="integer",
            minimum=1,
            maximum=10_000,
            title="Users",
            description="Concurrent clients in total, spread over the load processes.",
        ),
        "target_rate": Param(
            0,
            type="number",
            minimum=0,
            maximum=10_000_000,
            title="Target rate (ops/s)",
            description="Total operations per second to hold, open loop and corrected for "
            "coordinated omission. 0 = closed loop: every user goes as fast as it can.",
        ),
        "processes": Param(
            0,
            type="integer",
            minimum=0,
            maximum=256,
            title="Load processes",
            description="Locust load processes. 0 = one per CPU core of the worker (never more than users).",
        ),
        "warmup_s": Param(
            5,
            type="number",
            minimum=0,
            maximum=3_600,
            title="Warm-up (s)",
            description="Seconds run before measuring; excluded from the results.",
        ),
        "field_count": Param(
            10,
            type="integer",
            minimum=1,
            maximum=1_000,
            title="Fields per record",
            description="Fields in each record (YCSB fieldcount); overrides the workload's.",
            section="Data shape",
        ),
        "field_length": Param(
            100,
            type="integer",
            minimum=1,
            maximum=1_000_000,
            title="Bytes per field",
            description="Length of each field value in bytes (YCSB fieldlength); overrides the workload's.",
            section="Data shape",
        ),
        "teardown": Param(
            True,
            type="boolean",
            title="Drop the data afterwards",
            description="Drop the seeded table/collection after the run (also after a failure). "
            "Off keeps it for inspection.",
            section="Data shape",
        ),
        "repeats": Param(
            1,
            type="integer",
            minimum=1,
            maximum=100,
            title="Repeats",
            description="Run the measured phase this many times on the same data; the summary and report "
            "give the mean and a 95% confidence interval for throughput and p99.",
        ),
        "namespace": Param(
            "optistack_usertable",
            type="string",
            pattern=f"^optistack_[A-Za-z0-9_]{{1,{NAMESPACE_MAX - len('optistack_')}}}$",
            title="Namespace",
            description="Table/collection/keyspace the run creates and drops (optistack_*). "
            "Give concurrent runs on the same servers different namespaces. The steps of a sweep "
            "each use <namespace>_<step number>.",
            section="Namespace, seed and timeouts",
        ),
        "seed": Param(
            1,
            type="integer",
            minimum=0,
            title="Random seed",
            description="Seed of the key and value generators: the same seed replays the same operations.",
            section="Namespace, seed and timeouts",
        ),
        "insert_order": Param(
            "hashed",
            type="string",
            enum=["hashed", "ordered"],
            values_display={"hashed": "hashed (YCSB default)", "ordered": "ordered"},
            title="Insert order",
            description="YCSB insertorder: hashed keys spread inserts, ordered keys append.",
            section="Namespace, seed and timeouts",
        ),
        "operation_timeout_s": Param(
            10,
            type="number",
            exclusiveMinimum=0,
            maximum=600,
            title="Operation timeout (s)",
            description="An operation slower than this counts as an error.",
            section="Namespace, seed and timeouts",
        ),
        "connect_timeout_s": Param(
            5,
            type="number",
            exclusiveMinimum=0,
            maximum=120,
            title="Connect timeout (s)",
            description="How long to wait for a store to accept a connection.",
            section="Namespace, seed and timeouts",
        ),
        "sweep_users": Param(
            [],
            type="array",
            items={"type": "integer", "minimum": 1, "maximum": 10_000},
            maxItems=20,
            uniqueItems=True,
            title="Sweep users",
            description="A JSON list such as [1, 4, 16, 64]: one complete run per value instead of "
            "the Users setting, and the report draws p99 against throughput per store (the "
            "latency-throughput curve). Empty = no sweep. Not together with a target-rate sweep.",
            section="Sweep",
        ),
        "sweep_target_rates": Param(
            [],
            type="array",
            items={"type": "number", "exclusiveMinimum": 0, "maximum": 10_000_000},
            maxItems=20,
            uniqueItems=True,
            title="Sweep target rates (ops/s)",
            description="A JSON list such as [500, 1000, 2000]: one complete open-loop run per rate "
            "instead of the Target rate setting, drawn as a latency-throughput curve. Empty = no sweep.",
            section="Sweep",
        ),
        "expect_workers": Param(
            0,
            type="integer",
            minimum=0,
            maximum=256,
            title="Remote load workers",
            description="0 = the load runs in local processes on the Airflow worker. N = Locust's "
            "distributed mode: the load task is the master (port $OPTISTACK_MASTER_PORT, default 5557) "
            "and waits up to 60 s for N `optistack worker --master-host <this worker>` processes.",
            section="Distributed load",
        ),
    }


def param_defaults() -> dict[str, Any]:
    """The form's default values, by name."""
    return {name: param.value for name, param in benchmark_params().items()}


# --- params -> run options -----------------------------------------------------------
def options_from_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Map form values (or a conf, or a matrix entry) onto `RunOptions` fields.

    Refuses names the form does not have: a conf from the API or CLI can carry any key,
    and a misspelt one (`record_cont`) must not be silently ignored.
    """
    known = benchmark_params()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise OptiStackError(
            f"the run settings are not valid:\n  unknown setting(s) {', '.join(unknown)}; "
            f"known settings: {', '.join(known)}"
        )
    options = dict(params)
    for name in ZERO_MEANS_UNSET:
        if options.get(name) == 0:
            options[name] = None
    for name in EMPTY_MEANS_UNSET:
        if options.get(name) in ([], ()):
            options[name] = None
    if isinstance(options.get("stores"), tuple):
        options["stores"] = list(options["stores"])
    return options


def engine_run_id(airflow_run_id: str) -> str:
    """The Airflow run id made into a valid OptiStack run id (same input, same output).

    `manual__2026-12-04T20:15:00+00:00` becomes `manual__2026-12-04T20-15-00-00-00`, so a
    retried or cleared run writes over its own results, never beside them.
    """
    run_id = _RUN_ID_CHARS.sub("-", airflow_run_id).strip("-._") or "run"
    if len(run_id) > 100:  # keep it unique when it has to be cut
        digest = hashlib.sha256(airflow_run_id.encode()).hexdigest()[:8]
        run_id = f"{run_id[:91].rstrip('-._')}-{digest}"
    return run_id


def nightly_run_id(when: dt.datetime, index: int) -> str:
    """`nightly-<UTC date and time>-<entry index>`: entry N is comparable night to night."""
    return f"nightly-{when.astimezone(dt.UTC):%Y%m%dT%H%MZ}-{index}"


# --- store URLs ------------------------------------------------------------------------
def connection_url(store: str) -> str | None:
    """The URL of Airflow Connection `optistack_<store>`, or None when there is none.

    The Connection's type is the URL's scheme. A type the store does not take (the UI
    offers only the installed providers' types, e.g. "Generic") becomes the store's own
    scheme, so host, port, login, password, schema and extra are all that matter.
    """
    from workloads.stores import get_store

    try:
        conn = Connection.get(f"{CONNECTION_PREFIX}{store}")
    except AirflowNotFoundException:
        return None
    parts = urlsplit(conn.get_uri())
    schemes = get_store(store).url_schemes
    if parts.scheme not in schemes:
        parts = parts._replace(scheme=schemes[0])
    # get_uri() percent-encodes the host, which breaks Cassandra's host1,host2 list.
    userinfo, at, hostport = parts.netloc.rpartition("@")
    hostport = re.sub("%2c", ",", hostport, flags=re.IGNORECASE)
    return parts._replace(netloc=f"{userinfo}{at}{hostport}").geturl()


def store_url(store: str) -> str:
    """A store's URL: Connection, else OPTISTACK_<STORE>_URL, else `optistack local up`."""
    from workloads.config import resolve_urls

    explicit = connection_url(store)
    url = resolve_urls([store], {store: explicit} if explicit else {})[store]
    _mask(url)
    return url


def _url_outside_airflow(store: str) -> bool:
    """Whether OPTISTACK_<STORE>_URL or a local server gives the store a URL."""
    from workloads.config import resolve_urls

    try:
        resolve_urls([store])
    except OptiStackError:
        return False
    return True


def _mask(url: str) -> None:
    """Have Airflow mask the URL's password wherever it would be logged."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return
    if password:
        mask_secret(password)


# --- planning ---------------------------------------------------------------------------
def _redacted(plan: Any) -> dict[str, Any]:
    """The plan as JSON for XCom, with every URL redacted."""
    from workloads.stores.base import redact_url

    safe = plan.model_copy(
        update={
            "urls": {store: redact_url(url) for store, url in plan.urls.items()},
            "options": plan.options.model_copy(update={"urls": {}}),
        }
    )
    return safe.model_dump(mode="json")


def plan_runs(settings: Mapping[str, Any], run_id: str, command: str) -> list[dict[str, Any]]:
    """Validate one run completely (settings, workload, URLs, results folder): its redacted plans.

    One plan, or one per step of a sweep (`<run id>.u<users>`, `<run id>.r<rate>`).
    """
    from workloads import runner

    options = runner.parse_options({**options_from_params(settings), "run_id": run_id})
    urls = {store: url for store in options.stores if (url := connection_url(store))}
    missing = [store for store in options.stores if store not in urls and not _url_outside_airflow(store)]
    if missing:
        raise OptiStackError(
            f"no URL for {', '.join(missing)}: add the Airflow Connection "
            f"{', '.join(CONNECTION_PREFIX + s for s in missing)} (its URI is the store's URL), or set "
            f"{', '.join(f'OPTISTACK_{s.upper()}_URL' for s in missing)} on the workers"
        )
    plans = runner.plan_sweep(options.model_copy(update={"urls": urls}), command=command)
    for plan in plans:
        for url in plan.urls.values():
            _mask(url)
    return [_redacted(plan) for plan in plans]


def own_namespaces(plans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give each plan of one DAG run its own namespace where two would share one on a store.

    The steps of a sweep, or nightly entries on the same store, would otherwise create,
    seed and drop the same table: Airflow runs the mapped store groups in its own order,
    not one plan after the other, so one plan could seed over or drop another's data.
    Plan N of the DAG run then uses `<namespace>_<N>` (the namespace is not part of what
    is compared night to night). Plans that share no store keep theirs.
    """
    owners = Counter((store, plan["options"]["namespace"]) for plan in plans for store in plan["stores"])
    shared = {key for key, count in owners.items() if count > 1}
    if not shared:
        return plans
    out = []
    for index, plan in enumerate(plans):
        namespace = plan["options"]["namespace"]
        if not any((store, namespace) in shared for store in plan["stores"]):
            out.append(plan)
            continue
        own = f"{namespace}_{index}"
        if len(own) > NAMESPACE_MAX:
            raise OptiStackError(
                f"namespace {namespace!r} is too long to give each of the {len(plans)} runs of this DAG "
                f"run its own ({own!r} has {len(own)} characters, at most {NAMESPACE_MAX}): shorten it "
                f"to {NAMESPACE_MAX - len(own) + len(namespace)} characters"
            )
        out.append({**plan, "options": {**plan["options"], "namespace": own}})
    stores = sorted({store for store, _ in shared})
    log.info(
        "runs of this DAG run share %s: each uses its own namespace (%s)",
        ", ".join(stores),
        ", ".join(f"{p['run_id']}: {p['options']['namespace']}" for p in out),
    )
    return out


def step_label(plan: Mapping[str, Any]) -> str:
    """`users=4 ` for a step of a users sweep, `rate=500 ` of a rate sweep, else nothing."""
    sweep = plan.get("sweep")
    if not sweep:
        return ""
    name = "users" if sweep["parameter"] == "users" else "rate"
    return f"{name}={sweep['value']:g} "


def store_runs(plans: Iterable[dict[str, Any]], label_prefix: str = "") -> list[dict[str, Any]]:
    """One item per (plan, store): the keyword arguments of each mapped `store` group."""
    return [
        {"store": store, "plan": plan, "label": f"{label_prefix}{store}"}
        for plan in plans
        for store in plan["stores"]
    ]


def plan_benchmark(params: Mapping[str, Any], airflow_run_id: str, dag_id: str) -> list[dict[str, Any]]:
    """The `plan` task of `optistack_benchmark`: validate the form/conf again, at run time."""
    run_id = engine_run_id(airflow_run_id)
    try:
        plans = own_namespaces(
            plan_runs(params, run_id, command=f"airflow dag {dag_id}, run {airflow_run_id}")
        )
    except OptiStackError as error:
        log.error("refused, nothing was provisioned: %s", error)
        raise
    for plan in plans:
        log.info(
            "run %s: workload %s, %s records, stores %s%s; results under %s",
            plan["run_id"],
            plan["spec"]["name"],
            f"{plan['spec']['record_count']:,}",
            ", ".join(plan["stores"]),
            f", sweep step {step_label(plan).strip()}" if plan.get("sweep") else "",
            plan["results_root"],
        )
    return [item for plan in plans for item in store_runs([plan], step_label(plan))]


def matrix_path() -> Path:
    """The nightly matrix: `$OPTISTACK_NIGHTLY_MATRIX`, else include/benchmarks/nightly.yaml."""
    return Path(os.environ.get(NIGHTLY_MATRIX_ENV) or DEFAULT_NIGHTLY_MATRIX)


def load_matrix(path: Path | None = None) -> list[dict[str, Any]]:
    """The `runs:` entries of a matrix file (each a mapping of form settings)."""
    path = path or matrix_path()
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise OptiStackError(f"cannot read the nightly matrix {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise OptiStackError(f"the nightly matrix {path} is not valid YAML: {error}") from None
    entries = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise OptiStackError(f"the nightly matrix {path} needs a non-empty list under `runs:`")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise OptiStackError(f"entry {index} of {path} must be a mapping such as {{stores: [postgres]}}")
    return entries


def plan_nightly(when: dt.datetime, airflow_run_id: str, dag_id: str) -> list[dict[str, Any]]:
    """The `plan` task of `optistack_nightly`: every matrix entry validated before any runs."""
    path = matrix_path()
    defaults = param_defaults()
    plans, problems = [], []
    for index, entry in enumerate(load_matrix(path)):
        run_id = nightly_run_id(when, index)
        try:
            steps = plan_runs({**defaults, **entry}, run_id, f"airflow dag {dag_id}, run {airflow_run_id}")
            plans += [(index, plan) for plan in steps]
        except OptiStackError as error:
            problems.append(f"entry {index}: {error}")
    if not problems:
        try:
            isolated = own_namespaces([plan for _, plan in plans])
        except OptiStackError as error:
            problems.append(str(error))
        else:
            plans = [(index, plan) for (index, _), plan in zip(plans, isolated, strict=True)]
    if problems:
        message = f"the nightly matrix {path} is not valid, nothing was run:\n" + "\n".join(problems)
        log.error("%s", message)
        raise OptiStackError(message)
    for _, plan in plans:
        log.info(
            "run %s: workload %s, stores %s", plan["run_id"], plan["spec"]["name"], ", ".join(plan["stores"])
        )
    return [item for i, plan in plans for item in store_runs([plan], f"{i}: {step_label(plan)}")]


# --- one stage of one store ----------------------------------------------------------------
def hydrate(plan: Mapping[str, Any], store: str) -> Any:
    """The XCom'd plan with this store's real URL put back (looked up again, not passed)."""
    from workloads.runner import RunPlan
    from workloads.stores.base import redact_url

    p = RunPlan.model_validate(plan)
    url = store_url(store)
    if redact_url(url) != p.urls.get(store):
        raise OptiStackError(
            f"the URL of {store} is now {redact_url(url)}, but the run was planned with "
            f"{p.urls.get(store)}: the connection changed during the run; trigger a new run"
        )
    return p.model_copy(update={"urls": {store: url}})


def run_stage(store: str, plan: Mapping[str, Any], stage: str, label: str | None = None) -> Any:
    """Run one engine stage for one store, its progress lines going to the task log.

    `publish` returns what it published (no URL) and tells the results Asset about it.
    """
    from workloads import runner

    context = get_current_context()
    context["optistack_label"] = label or store  # names the mapped task instance in the UI
    result = runner.run_stage(hydrate(plan, store), store, stage, log=log.info)
    if stage != "publish":
        return None
    info = json.loads((Path(result) / "run.json").read_text())
    summary = {
        "run_id": plan["run_id"],
        "store": store,
        "status": info.get("status"),
        "error": info.get("error"),
        "path": str(result),
    }
    context["outlet_events"][RESULTS_ASSET].extra = summary
    return summary


# --- the report ------------------------------------------------------------------------------
def store_problems(results_root: str, run_id: str, stores: Iterable[str]) -> list[str]:
    """Why each store of a run did not succeed: failed, not validated, or never published."""
    from reports.history import load_run

    published = load_run(results_root, run_id).stores
    problems = []
    for store in stores:
        results = published.get(store)
        if results is None:
            problems.append(f"{run_id} {store}: nothing was published (see the store's publish task)")
        elif results.status == "failed":
            problems.append(f"{run_id} {store}: failed: {results.error or 'no reason recorded'}")
        elif results.validation is not None and results.validation.get("success") is False:
            problems.append(f"{run_id} {store}: its results failed validation (see validation.json)")
    return problems


def write_reports(store_runs_: list[dict[str, Any]] | None) -> list[str]:
    """The `report` task: an HTML report per run, then the index; fails if any store did.

    Runs after every store group, whatever happened to it. The reports are written
    first, so a failed store is in the report with its reason before the task fails
    (which marks the DAG run failed).
    """
    from reports.render import write_index, write_report

    if not store_runs_:
        message = "nothing to report: the plan task refused this run (its log says why), so no store was provisioned"
        log.error("%s", message)
        raise OptiStackError(message)
    plans = list({item["plan"]["run_id"]: item["plan"] for item in store_runs_}.values())
    paths, problems = [], []
    for plan in plans:
        try:
            path = write_report(plan["results_root"], plan["run_id"], update_index=False)
        except OptiStackError as error:
            problems.append(f"{plan['run_id']}: no report: {error}")
            continue
        log.info("report of run %s: %s", plan["run_id"], path)
        paths.append(str(path))
        problems += store_problems(plan["results_root"], plan["run_id"], plan["stores"])
    for root in dict.fromkeys(plan["results_root"] for plan in plans):
        log.info("reports index: %s", write_index(root))
    get_current_context()["outlet_events"][REPORTS_ASSET].extra = {
        "run_ids": [plan["run_id"] for plan in plans],
        "reports": paths,
        "failed": problems,
    }
    if problems:
        message = (
            f"written: {', '.join(paths) or 'no report'}; but not every store succeeded:\n  "
            + "\n  ".join(problems)
        )
        log.error("%s", message)
        raise OptiStackError(message)
    return paths


REGRESSION_NOTIFIER_ENV = "OPTISTACK_REGRESSION_NOTIFIER"


def detect_regressions(store_runs_: list[dict[str, Any]] | None, fail_on_regression: bool) -> dict[str, Any]:
    """The nightly `regressions` task: tonight's runs against their earlier nights.

    Writes the trend report (regressions at the top) and the index, logs every finding,
    calls the notifier named by `$OPTISTACK_REGRESSION_NOTIFIER` (`module:function`,
    given the flagged findings as dicts) when something regressed, and fails the task on
    a regression when `fail_on_regression` is set, so Airflow's alerting and
    `on_failure_callback` fire.
    """
    import dataclasses
    import importlib

    from reports.regression import detect_from_results, has_regressions, summary_text
    from reports.render import write_index
    from reports.trend import write_trend_report

    if not store_runs_:
        raise OptiStackError("nothing to judge: the plan task refused this run (its log says why)")
    plans = list({item["plan"]["run_id"]: item["plan"] for item in store_runs_}.values())
    root = plans[0]["results_root"]
    findings = detect_from_results(root, [plan["run_id"] for plan in plans])
    log.info("regression check:\n%s", summary_text(findings))
    trend = write_trend_report(root)
    log.info("trend report: %s; index: %s", trend, write_index(root))
    regressed = has_regressions(findings)
    notifier = os.environ.get(REGRESSION_NOTIFIER_ENV)
    if regressed and notifier:
        module, _, function = notifier.partition(":")
        flagged = [dataclasses.asdict(f) for f in findings if f.flagged]
        getattr(importlib.import_module(module), function)(flagged)
    if regressed and fail_on_regression:
        raise OptiStackError("regressions against earlier nights:\n" + summary_text(findings))
    return {"regressed": regressed, "trend": str(trend), "findings": len(findings)}


# --- one store, stage by stage ------------------------------------------------------------
# weight_rule "upstream": a stage outranks the stages before it, so once provision of one
# (plan, store) has run, its seed goes next, not the provision of the next one. Airflow's
# default ("downstream") runs a mapped group breadth first: every provision, then every
# seed, ... and two plans on one store and namespace (a sweep, nightly entries) then seed
# over each other and measure data the other one will drop. The scheduler orders ready
# tasks by priority, then map index, and max_active_tasks=1 runs one at a time. Not strict:
# a stage that becomes ready while another finishes can miss a scheduling round, so
# `own_namespaces` is what keeps plans' data apart; this keeps the groups in order.
_MAPPED = {"map_index_template": "{{ optistack_label }}", "weight_rule": "upstream"}


@task_group(group_id="store")
def store_benchmark(store: str, plan: dict[str, Any], label: str) -> None:
    """provision -> seed -> run -> validate -> publish for one store; publish runs regardless."""

    @task(**_MAPPED)
    def provision(store: str, plan: dict[str, Any], label: str) -> None:
        run_stage(store, plan, "provision", label)

    @task(**_MAPPED)
    def seed(store: str, plan: dict[str, Any], label: str) -> None:
        run_stage(store, plan, "seed", label)

    @task(**_MAPPED, retries=0)  # a retried load would measure a different warm state
    def run(store: str, plan: dict[str, Any], label: str) -> None:
        run_stage(store, plan, "load", label)

    @task(**_MAPPED)
    def validate(store: str, plan: dict[str, Any], label: str) -> None:
        run_stage(store, plan, "validate", label)

    @task(**_MAPPED, trigger_rule=TriggerRule.ALL_DONE, outlets=[RESULTS_ASSET])
    def publish(store: str, plan: dict[str, Any], label: str) -> dict[str, Any]:
        return run_stage(store, plan, "publish", label)

    args = {"store": store, "plan": plan, "label": label}
    provision(**args) >> seed(**args) >> run(**args) >> validate(**args) >> publish(**args)
