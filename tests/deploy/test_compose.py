"""docker-compose.yml, checked without a Docker engine (none runs where these tests run).

`compose_problems()` reads the compose file the way Compose does (YAML merge keys,
`${VAR:-default}` interpolation with an empty environment, bind sources relative to the
file) and lists every broken cross-reference: images without a pinned tag, `depends_on`
targets and conditions, health checks, volumes, every URL's host and port, the
`optistack_<store>` Connections, the Airflow wiring, the scalable Locust worker and the
observability configs. Each kind of check is shown to fail on a deliberately broken copy.

The Connections are also put through Airflow itself: a subprocess sets them as
`AIRFLOW_CONN_*` exactly as the compose file does and turns each into a store URL with
`dags/optistack_common.connection_url`, which the store module must accept.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from workloads.stores import cassandra as cassandra_store
from workloads.stores import get_store, store_names
from workloads.stores.base import StoreSettings, check_url

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = "docker-compose.yml"
DOCS_PAGE = "docs/docker-compose.md"
CONNECTION_ENV = "AIRFLOW_CONN_OPTISTACK_"

# The image each store's service must run (repository, without tag).
STORE_IMAGES = {
    "postgres": {"postgres"},
    "mysql": {"mysql", "mariadb"},
    "redis": {"redis", "valkey/valkey"},
    "mongodb": {"mongo"},
    "dynamodb": {"amazon/dynamodb-local"},
    "cassandra": {"cassandra"},
    "cockroachdb": {"cockroachdb/cockroach"},
}
# Ports the stock images listen on: an `expose:` entry must be one of them.
IMAGE_PORTS = {
    "postgres": {"5432"},
    "mysql": {"3306", "33060"},
    "redis": {"6379"},
    "mongo": {"27017"},
    "amazon/dynamodb-local": {"8000"},
    "cassandra": {"9042", "7000", "7199"},
    "cockroachdb/cockroach": {"26257", "8080"},
    "prom/prometheus": {"9090"},
    "grafana/grafana": {"3000"},
}
# Airflow components (service -> command), as in Airflow's own docker-compose.yaml.
AIRFLOW_COMPONENTS = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
}
AIRFLOW_INIT = "airflow-init"
LOCUST_WORKER = "locust-worker"
OBSERVABILITY = "observability"
# Services that may have no health check, and why.
NO_HEALTHCHECK = {
    LOCUST_WORKER: "scaled to any number; nothing waits on it",
    "otel-collector": "the collector image has no shell or HTTP client to probe with",
}
METRICS = (
    "optistack_operations_total",
    "optistack_errors_total",
    "optistack_latency_p99_us",
    "optistack_latency_p50_us",
)
METRIC_LABELS = ("store", "operation", "run_id")
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
PINNED_TAG = re.compile(r"^v?\d+\.\d+\.\d+([.-][A-Za-z0-9.]+)?$")
# Products whose releases are numbered major.minor (PostgreSQL 16.6 is a release, not a series).
TWO_PART_RELEASES = {"postgres"}
PINNED_TWO_PART_TAG = re.compile(r"^\d+\.\d+([.-][A-Za-z0-9.]+)?$")
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


# --- reading the file as Compose does --------------------------------------------------------
def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution (`$$`, `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`)."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        operator, default = match.group(2), match.group(3) or ""
        if operator == ":-":
            return env.get(name) or default
        if operator == "-":
            return env.get(name, default)
        return env.get(name, "")

    return _VARIABLE.sub(substitute, value)


def load_compose(root: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose file under `root`, merge keys resolved and variables substituted."""
    return interpolate(yaml.safe_load((root / COMPOSE_FILE).read_text()), env or {})


def image_ref(image: str) -> tuple[str, str | None]:
    """(repository, tag) of an image reference; the tag is None when there is none."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = name.rsplit(":", 1)
        return repo.removeprefix("docker.io/").removeprefix("library/"), tag
    return name.removeprefix("docker.io/").removeprefix("library/"), None


def command_text(command: Any) -> str:
    return " ".join(command) if isinstance(command, list) else str(command or "")


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def listening_ports(service: dict[str, Any]) -> set[str]:
    """Container ports a service declares: `expose` and the container side of `ports`."""
    ports = {str(port).split("/")[0] for port in service.get("expose") or []}
    for mapping in service.get("ports") or []:
        if isinstance(mapping, dict):
            ports.add(str(mapping["target"]))
        else:
            ports.add(str(mapping).split("/")[0].rsplit(":", 1)[-1])
    return ports


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume entry (short syntax)."""
    result = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            result.append((str(entry.get("source", "")), str(entry["target"])))
        else:
            source, target = str(entry).split(":")[:2]
            result.append((source, target))
    return result


def host_path(root: Path, service: dict[str, Any], container_path: str) -> Path | None:
    """The file of the compose folder that a container path is bind-mounted from, if any."""
    for source, target in mounts(service):
        if not source.startswith((".", "/")):
            continue
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return (root / source).resolve() / container_path[len(target) :].lstrip("/")
    return None


def url_host_port(url: str) -> tuple[str | None, str | None]:
    parts = urlsplit(url)
    return parts.hostname, (str(parts.port) if parts.port else None)


# --- the checks ------------------------------------------------------------------------------
def compose_problems(root: Path, env: dict[str, str] | None = None) -> list[str]:
    """Every broken cross-reference of `root/docker-compose.yml` (empty when there is none)."""
    compose = load_compose(root, env)
    services: dict[str, dict[str, Any]] = compose.get("services") or {}
    problems: list[str] = []
    checks: list[Callable[[Path, dict, dict, list[str]], None]] = [
        _check_images,
        _check_depends_on,
        _check_healthchecks,
        _check_volumes,
        _check_urls,
        _check_exposed_ports,
        _check_airflow,
        _check_connections,
        _check_locust_worker,
        _check_observability,
    ]
    for check in checks:
        check(root, compose, services, problems)
    return problems


def _check_images(root: Path, compose: dict, services: dict, problems: list[str]) -> None:
    for name, service in services.items():
        image = service.get("image")
        if not image:
            problems.append(f"{name}: no image (a built service needs a tagged image name too)")
            continue
        repo, tag = image_ref(image)
        pattern = PINNED_TWO_PART_TAG if repo in TWO_PART_RELEASES else PINNED_TAG
        if tag is None or not pattern.match(tag):
            problems.append(f"{name}: image {image} has no pinned release tag")
        build = service.get("build")
        if build is not None:
            context = root / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = context / (
                "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            )
            if not dockerfile.is_file():
                problems.append(f"{name}: builds from {dockerfile.relative_to(root)}, which does not exist")
                continue
            for line in dockerfile.read_text().splitlines():
                if line.strip().upper().startswith("FROM "):
                    base = line.split()[1]
                    _, base_tag = image_ref(base)
                    if base_tag is None or not PINNED_TAG.match(base_tag.split("-")[0]):
                        problems.append(f"{name}: {dockerfile.name} starts FROM {base}, not a pinned version")


def _check_depends_on(root: Path, compose: dict, services: dict, problems: list[str]) -> None:
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {target: {"condition": "service_started"} for target in depends}
        for target, spec in depends.items():
            if target not in services:
                problems.append(f"{name}: depends_on {target}, which is no service")
                continue
            condition = (spec or {}).get("condition", "service_started")
            if condition not in CONDITIONS:
                problems.append(f"{name}: depends_on {target} with unknown condition {condition}")
            if condition == "service_healthy" and not services[target].get("healthcheck"):
                problems.append(f"{name}: waits for {target} to be healthy, but {target} has no healthcheck")
            if (
                condition == "service_completed_successfully"
                and services[target].get("restart", "no") != "no"
            ):
                problems.append(f"{name}: waits for {target} to complete, but {target} restarts")
            if services[target].get("profiles") and not service.get("profiles"):
                problems.append(
                    f"{name}: depends_on {target}, which runs only with profile(s) "
                    f"{services[target]['profiles']}: a plain `docker compose up` would fail"
                )


def _check_healthchecks(root: Path, compose: dict, services: dict, problems: list[str]) -> None:
    for name in NO_HEALTHCHECK:
        if name not in services:
            problems.append(f"NO_HEALTHCHECK names {name}, which is no service")
    for name, service in services.items():
        check = service.get("healthcheck")
        if check is None:
            if name not in NO_HEALTHCHECK and service.get("restart", "no") != "no":
                problems.append(f"{name}: no healthcheck")
            continue
        test = check.get("test")
        if isinstance(test, str):
            test = ["CMD-SHELL", test]
        if check.get("disable") or not test or test[0] not in ("CMD", "CMD-SHELL") or len(test) < 2:
            problems.append(f"{name}: healthcheck test {test!r} is not a command")


def _check_volumes(root: Path, compose: dict, services: dict, problems: list[str]) -> None:
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, service in services.items():
        for source, _target in mounts(service):
            if source.startswith((".", "/")):
                if not (root / source).exists():
                    problems.append(f"{name}: mounts {source}, which does not exist")
            elif source:
                used.add(source)
                if source not in declared:
                    problems.append(f"{name}: mounts volume {source}, which is not declared under volumes:")
    for volume in sorted(declared - used):
        problems.append(f"volume {volume} is declared but no service mounts it")


def _check_urls(root: Path, compose: dict, services: dict, problems: list[str]) -> None:
    """Every URL in an environment names a service that listens on the URL's port."""
    for name, service in services.items():
        for key, value in environment(service).items():
            if "://" not in value:
                continue
            host, port = url_host_port(value)
            if host in (None, "localhost", "127.0.0.1"):
                continue
            problems.extend(_target_problems(f"{name}: {key}", host, port, services, service))


def _target_problems(
    where: str, host: str, port: str | None, services: dict, client: dict | None = None
) -> list[str]:
    if host not in services:
        return [f"{where} points at host {host}, which is no service"]
    if port is None:
        return [f"{where} names no port for {host}: write it out"]
    if port not in listening_ports(services[host]):
        return [
            f"{where} uses port {port} of {host}, which declares {sorted(listening_ports(services[host]))}"
        ]
    if client is not None and services[host].get("profiles") and not client.get("profiles"):
        return [f"{where} points at {host}, which runs only with profile(s) {services[host]['profiles']}"]
    return []


def _check_exposed_ports(root: Path, compose: dict, services: dict, problems: list[str]) -> None:
    """A declared port is one the image really listens on."""
    for name, service in services.items():
        repo, _ = image_ref(service.get("image") or "")
        known = IMAGE_PORTS.get(repo)
        if known is None:
            continue
        for port in sorted(listening_ports(service) - known):
            problems.append(f"{name}: declares port {port}, but {repo} listens on {sorted(known)}")


def _airflow_services(services: dict) -> dict[str, dict]:
    return {n: s for n, s in services.items() if "AIRFLOW__CORE__EXECUTOR" in environment(s)}


def _check_airflow(root: Path, compose: dict, services: dict, problems: list[str]) -> None:
    airflow = _airflow_services(services)
    for name, command in AIRFLOW_COMPONENTS.items():
        if name not in airflow:
            problems.append(f"Airflow component {name} ({command}) is missing")
        elif command_text(airflow[name].get("command")) != command:
            problems.append(f"{name}: runs {command_text(airflow[name].get('command'))!r}, not {command!r}")
    if AIRFLOW_INIT not in airflow:
        problems.append(f"{AIRFLOW_INIT} is missing")
    elif airflow[AIRFLOW_INIT].get("restart", "no") != "no":
        problems.append(f"{AIRFLOW_INIT}: a one-shot service must not restart")
    secrets = {environment(s).get("AIRFLOW__API_AUTH__JWT_SECRET") for s in airflow.values()}
    if len(secrets) != 1 or not next(iter(secrets)):
        problems.append("the Airflow services do not share one AIRFLOW__API_AUTH__JWT_SECRET")
    for name, service in airflow.items():
        env = environment(service)
        if env["AIRFLOW__CORE__EXECUTOR"] != "CeleryExecutor":
            problems.append(f"{name}: executor {env['AIRFLOW__CORE__EXECUTOR']}, not CeleryExecutor")
        if not env.get("AIRFLOW__CORE__AUTH_MANAGER"):
            problems.append(f"{name}: no AIRFLOW__CORE__AUTH_MANAGER")
        api = env.get("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "")
        if url_host_port(api)[0] != "airflow-apiserver" or not urlsplit(api).path.startswith("/execution"):
            problems.append(
                f"{name}: AIRFLOW__CORE__EXECUTION_API_SERVER_URL {api!r} is not the api-server's"
            )
        for url_key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL"):
            if url_key not in env:
                problems.append(f"{name}: no {url_key}")
        if name != AIRFLOW_INIT:
            condition = ((service.get("depends_on") or {}).get(AIRFLOW_INIT) or {}).get("condition")
            if condition != "service_completed_successfully":
                problems.append(f"{name}: does not wait for {AIRFLOW_INIT} to complete successfully")


def connection_urls(services: dict) -> dict[str, str]:
    """Store -> the Connection URI the Airflow worker gets from the compose file."""
    env = environment(services.get("airflow-worker") or {})
    return {
        key[len(CONNECTION_ENV) :].lower(): value
        for key, value in env.items()
        if key.startswith(CONNECTION_ENV)
    }


def _check_connections(root: Path, compose: dict, services: dict, problems: list[str]) -> None:
    airflow = _airflow_services(services)
    worker = services.get("airflow-worker") or {}
    metadata_hosts = {
        url_host_port(environment(worker).get(key, ""))[0]
        for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL")
    }
    urls = connection_urls(services)
    for store in store_names():
        if store not in STORE_IMAGES:
            problems.append(f"store {store} has no entry in STORE_IMAGES: say which image serves it")
            continue
        key = f"{CONNECTION_ENV}{store.upper()}"
        for name, service in airflow.items():
            if environment(service).get(key) != urls.get(store):
                problems.append(f"{name}: {key} differs from the airflow-worker's (or is missing)")
        if store not in urls:
            problems.append(f"no Connection for {store}: set {key} on the Airflow services")
            continue
        host, port = url_host_port(urls[store])
        target = _target_problems(key, host, port, services)
        problems.extend(target)
        if target:
            continue
        if host in metadata_hosts:
            problems.append(f"{key} points at {host}, Airflow's own metadata database or broker")
        repo, _ = image_ref(services[host].get("image") or "")
        if repo not in STORE_IMAGES[store]:
            problems.append(
                f"{key} points at {host}, which runs {repo}, not {' or '.join(STORE_IMAGES[store])}"
            )
        if not services[host].get("healthcheck"):
            problems.append(f"{host}: the {store} store has no healthcheck")
        condition = ((worker.get("depends_on") or {}).get(host) or {}).get("condition")
        if condition != "service_healthy":
            problems.append(f"airflow-worker does not wait for {host} ({store}) to be healthy")
    if "cassandra" in urls:
        # No init script creates the keyspace: provision must be allowed to (optistack* names only).
        keyspace = urlsplit(urls["cassandra"]).path.strip("/") or cassandra_store.DEFAULT_KEYSPACE
        if not keyspace.startswith(cassandra_store.KEYSPACE_PREFIX):
            problems.append(
                f"the cassandra keyspace {keyspace} is not one provision creates "
                f"(it must start with {cassandra_store.KEYSPACE_PREFIX})"
            )


def _check_locust_worker(root: Path, compose: dict, services: dict, problems: list[str]) -> None:
    worker = services.get(LOCUST_WORKER)
    if worker is None:
        problems.append(f"{LOCUST_WORKER} is missing")
        return
    if "container_name" in worker or worker.get("ports"):
        problems.append(f"{LOCUST_WORKER}: a container_name or host ports stop `--scale {LOCUST_WORKER}=N`")
    command = worker.get("command") or []
    command = command.split() if isinstance(command, str) else command
    options = dict(itertools.pairwise(command))
    host, port = options.get("--master-host"), options.get("--master-port")
    if "worker" not in command or not host or not port:
        problems.append(
            f"{LOCUST_WORKER}: command {command!r} is not `optistack worker --master-host H --master-port P`"
        )
        return
    problems.extend(_target_problems(f"{LOCUST_WORKER}: --master-host", host, port, services))
    master_env = environment(services.get(host) or {})
    if (master_env.get("OPTISTACK_MASTER_HOST"), master_env.get("OPTISTACK_MASTER_PORT")) != (host, port):
        problems.append(
            f"{host}: OPTISTACK_MASTER_HOST/PORT {master_env.get('OPTISTACK_MASTER_HOST')}:"
            f"{master_env.get('OPTISTACK_MASTER_PORT')} differ from the workers' {host}:{port}"
        )
    if host not in (worker.get("depends_on") or {}):
        problems.append(f"{LOCUST_WORKER}: does not depend on its master {host}")
    if worker.get("image") != (services.get("airflow-worker") or {}).get("image"):
        problems.append(f"{LOCUST_WORKER}: runs another image than airflow-worker")


def _yaml_file(path: Path | None, what: str, problems: list[str]) -> Any:
    if path is None or not path.is_file():
        problems.append(f"{what}: no such file mounted ({path})")
        return None
    return yaml.safe_load(path.read_text())


def _check_observability(root: Path, compose: dict, services: dict, problems: list[str]) -> None:
    wanted = ("otel-collector", "prometheus", "grafana")
    for name in wanted:
        if name not in services:
            problems.append(f"observability service {name} is missing")
        elif OBSERVABILITY not in (services[name].get("profiles") or []):
            problems.append(f"{name}: not in the {OBSERVABILITY} profile")
    if any(name not in services for name in wanted):
        return
    collector, prometheus, grafana = (services[name] for name in wanted)

    # The collector: OTLP in, Prometheus out, on the ports the service declares.
    config_arg = next(
        (a.split("=", 1)[1] for a in collector.get("command") or [] if a.startswith("--config=")), ""
    )
    config = _yaml_file(host_path(root, collector, config_arg), "otel-collector --config", problems) or {}
    pipeline = ((config.get("service") or {}).get("pipelines") or {}).get("metrics") or {}
    if "otlp" not in pipeline.get("receivers", []) or "prometheus" not in pipeline.get("exporters", []):
        problems.append("otel-collector: the metrics pipeline does not run otlp -> prometheus")
    protocols = ((config.get("receivers") or {}).get("otlp") or {}).get("protocols") or {}
    endpoints = {p: (spec or {}).get("endpoint", "") for p, spec in protocols.items()}
    exporter_endpoint = ((config.get("exporters") or {}).get("prometheus") or {}).get("endpoint", "")
    for what, endpoint in [*endpoints.items(), ("prometheus exporter", exporter_endpoint)]:
        if endpoint.rsplit(":", 1)[-1] not in listening_ports(collector):
            problems.append(
                f"otel-collector: {what} listens on {endpoint!r}, a port the service does not declare"
            )
    # What docs/docker-compose.md tells users to set with the profile: the collector's OTLP/HTTP.
    guide = root / DOCS_PAGE
    documented = re.findall(
        r"OTEL_EXPORTER_OTLP_ENDPOINT=([^\s`'\"]+)", guide.read_text() if guide.is_file() else ""
    )
    if not documented:
        problems.append(f"{DOCS_PAGE} does not say which OTEL_EXPORTER_OTLP_ENDPOINT to set")
    http_port = endpoints.get("http", "").rsplit(":", 1)[-1]
    for endpoint in documented:
        if url_host_port(endpoint) != ("otel-collector", http_port):
            problems.append(
                f"{DOCS_PAGE}: OTEL_EXPORTER_OTLP_ENDPOINT={endpoint} is not the collector's OTLP/HTTP"
            )

    # Prometheus scrapes the collector's exporter.
    config_arg = next(
        (a.split("=", 1)[1] for a in prometheus.get("command") or [] if a.startswith("--config.file=")), ""
    )
    prom = _yaml_file(host_path(root, prometheus, config_arg), "prometheus --config.file", problems) or {}
    targets = [
        target
        for job in prom.get("scrape_configs") or []
        for static in job.get("static_configs") or []
        for target in static.get("targets") or []
    ]
    if not targets:
        problems.append("prometheus: scrapes nothing")
    for target in targets:
        host, _, port = target.partition(":")
        problems.extend(_target_problems(f"prometheus target {target}", host, port or None, services))
        if host == "otel-collector" and port != exporter_endpoint.rsplit(":", 1)[-1]:
            problems.append(f"prometheus scrapes {target}, not the collector's exporter {exporter_endpoint}")
    if "otel-collector" not in {t.partition(":")[0] for t in targets}:
        problems.append("prometheus does not scrape otel-collector")

    # Grafana: provisioned data source and dashboards, from the mounted folders.
    provisioning = host_path(root, grafana, "/etc/grafana/provisioning")
    if provisioning is None or not provisioning.is_dir():
        problems.append("grafana: nothing mounted at /etc/grafana/provisioning")
        return
    uids = set()
    for path in sorted((provisioning / "datasources").glob("*.y*ml")):
        for source in (yaml.safe_load(path.read_text()) or {}).get("datasources") or []:
            uids.add(source.get("uid"))
            host, port = url_host_port(source.get("url", ""))
            problems.extend(
                _target_problems(f"grafana data source {source.get('name')}", host, port, services)
            )
    dashboards = []
    for path in sorted((provisioning / "dashboards").glob("*.y*ml")):
        for provider in (yaml.safe_load(path.read_text()) or {}).get("providers") or []:
            folder = host_path(root, grafana, (provider.get("options") or {}).get("path", ""))
            if folder is None or not folder.is_dir():
                problems.append(
                    f"grafana: dashboard provider {provider.get('name')} reads a path nothing is mounted at"
                )
                continue
            dashboards += sorted(folder.glob("*.json"))
    if not dashboards:
        problems.append("grafana: no dashboard JSON is provisioned")
    for path in dashboards:
        try:
            dashboard = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            problems.append(f"{path.name}: not JSON ({error})")
            continue
        problems.extend(_dashboard_problems(path.name, dashboard, uids))
    home = environment(grafana).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home and not (host_path(root, grafana, home) or Path("/nonexistent")).is_file():
        problems.append(f"grafana: home dashboard {home} is not a mounted file")


def _dashboard_problems(name: str, dashboard: dict, uids: set) -> list[str]:
    problems = []
    exprs = []
    for panel in dashboard.get("panels") or []:
        for target in [panel, *(panel.get("targets") or [])]:
            source = target.get("datasource")
            if isinstance(source, dict) and source.get("uid") not in uids:
                problems.append(
                    f"{name}: panel {panel.get('title')!r} uses data source {source.get('uid')!r}, not provisioned"
                )
        exprs += [target.get("expr", "") for target in panel.get("targets") or []]
    for metric in METRICS:
        if not any(re.search(rf"\b{metric}\b", expr) for expr in exprs):
            problems.append(f"{name}: no panel shows {metric}")
    variables = {v.get("name") for v in (dashboard.get("templating") or {}).get("list") or []}
    for label in METRIC_LABELS:
        if label not in variables:
            problems.append(f"{name}: no dashboard variable for the label {label}")
        if not all(f'{label}=~"${label}"' in expr for expr in exprs):
            problems.append(f"{name}: not every query filters on {label}")
    return problems


# --- tests -------------------------------------------------------------------------------------
def test_the_compose_file_has_no_broken_reference() -> None:
    assert compose_problems(REPO) == []


def test_every_store_has_a_connection_and_a_service() -> None:
    services = load_compose(REPO)["services"]
    urls = connection_urls(services)
    assert sorted(urls) == store_names()
    assert {url_host_port(url)[0] for url in urls.values()} <= set(services)


@pytest.fixture
def broken(tmp_path: Path) -> Callable[[Callable[[dict], None]], list[str]]:
    """Problems of a copy of the compose setup after `mutate(compose_dict)` edited its YAML."""
    for name in (COMPOSE_FILE, "Dockerfile"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "include", tmp_path / "include")
    (tmp_path / "docs").mkdir()
    shutil.copy(REPO / DOCS_PAGE, tmp_path / DOCS_PAGE)

    def run(mutate: Callable[[dict], None]) -> list[str]:
        # Merge keys resolved; through JSON so no two services share one (anchored) mapping.
        data = json.loads(json.dumps(yaml.safe_load((REPO / COMPOSE_FILE).read_text())))
        mutate(data)
        (tmp_path / COMPOSE_FILE).write_text(yaml.safe_dump(data, sort_keys=False))
        return compose_problems(tmp_path)

    run.root = tmp_path  # type: ignore[attr-defined]
    return run


def _svc(data: dict, name: str) -> dict:
    return data["services"][name]


def _set_env(name: str, key: str, value: str) -> Callable[[dict], None]:
    return lambda d: _svc(d, name)["environment"].__setitem__(key, value)


MUTATIONS: list[tuple[str, Callable[[dict], None], str]] = [
    ("unchanged copy", lambda d: None, ""),
    (
        "latest tag",
        lambda d: _svc(d, "mongodb").__setitem__("image", "mongo:latest"),
        "mongodb: image mongo:latest",
    ),
    ("untagged image", lambda d: _svc(d, "redis").__setitem__("image", "redis"), "redis: image redis has no"),
    (
        "floating tag",
        lambda d: _svc(d, "postgres").__setitem__("image", "postgres:16"),
        "postgres: image postgres:16",
    ),
    (
        "unknown dependency",
        lambda d: _svc(d, "grafana")["depends_on"].__setitem__(
            "prometheus-x", {"condition": "service_started"}
        ),
        "grafana: depends_on prometheus-x, which is no service",
    ),
    (
        "store without healthcheck",
        lambda d: _svc(d, "cassandra").pop("healthcheck"),
        "airflow-worker: waits for cassandra to be healthy, but cassandra has no healthcheck",
    ),
    (
        "healthcheck that is no command",
        lambda d: _svc(d, "mysql")["healthcheck"].__setitem__("test", ["NONE"]),
        "mysql: healthcheck test ['NONE'] is not a command",
    ),
    (
        "core service needs a profile service",
        lambda d: _svc(d, "airflow-scheduler")["depends_on"].__setitem__(
            "grafana", {"condition": "service_started"}
        ),
        "airflow-scheduler: depends_on grafana, which runs only with profile",
    ),
    (
        "undeclared volume",
        lambda d: _svc(d, "mongodb").__setitem__("volumes", ["mongo-data-typo:/data/db"]),
        "mongodb: mounts volume mongo-data-typo, which is not declared",
    ),
    (
        "missing bind source",
        lambda d: _svc(d, "prometheus")["volumes"].__setitem__(
            0, "./include/nope.yml:/etc/prometheus/prometheus.yml:ro"
        ),
        "prometheus: mounts ./include/nope.yml, which does not exist",
    ),
    (
        "wrong connection port",
        _set_env(
            "airflow-worker",
            "AIRFLOW_CONN_OPTISTACK_POSTGRES",
            "postgresql://optistack:x@postgres:5433/optistack",
        ),
        "uses port 5433 of postgres",
    ),
    (
        "connection to an unknown host",
        _set_env("airflow-worker", "AIRFLOW_CONN_OPTISTACK_MONGODB", "mongodb://mongo:27017/optistack"),
        "points at host mongo, which is no service",
    ),
    (
        "connection to the metadata database",
        _set_env(
            "airflow-worker",
            "AIRFLOW_CONN_OPTISTACK_POSTGRES",
            "postgresql://airflow:airflow@airflow-postgres:5432/airflow",
        ),
        "AIRFLOW_CONN_OPTISTACK_POSTGRES points at airflow-postgres, Airflow's own metadata database",
    ),
    (
        "connection to the wrong store's service",
        _set_env(
            "airflow-worker",
            "AIRFLOW_CONN_OPTISTACK_COCKROACHDB",
            "cockroachdb://root@postgres:5432/defaultdb",
        ),
        "points at postgres, which runs postgres, not cockroachdb/cockroach",
    ),
    (
        "missing connection",
        lambda d: [
            _svc(d, n)["environment"].pop("AIRFLOW_CONN_OPTISTACK_DYNAMODB", None) for n in AIRFLOW_COMPONENTS
        ],
        "no Connection for dynamodb",
    ),
    (
        "cassandra keyspace provision will not create",
        _set_env(
            "airflow-worker",
            "AIRFLOW_CONN_OPTISTACK_CASSANDRA",
            "cassandra://cassandra:9042/bench?replication_factor=1",
        ),
        "the cassandra keyspace bench is not one provision creates",
    ),
    (
        "one JWT secret per service",
        _set_env("airflow-triggerer", "AIRFLOW__API_AUTH__JWT_SECRET", "another"),
        "do not share one AIRFLOW__API_AUTH__JWT_SECRET",
    ),
    (
        "not Celery",
        _set_env("airflow-worker", "AIRFLOW__CORE__EXECUTOR", "LocalExecutor"),
        "airflow-worker: executor LocalExecutor",
    ),
    (
        "execution API elsewhere",
        _set_env(
            "airflow-worker",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
            "http://airflow-scheduler:8080/execution/",
        ),
        "uses port 8080 of airflow-scheduler",
    ),
    (
        "no dag processor",
        lambda d: d["services"].pop("airflow-dag-processor"),
        "Airflow component airflow-dag-processor (dag-processor) is missing",
    ),
    (
        "component not waiting for init",
        lambda d: _svc(d, "airflow-triggerer")["depends_on"].pop("airflow-init"),
        "airflow-triggerer: does not wait for airflow-init",
    ),
    (
        "worker not waiting for a store",
        lambda d: _svc(d, "airflow-worker")["depends_on"].pop("cockroachdb"),
        "airflow-worker does not wait for cockroachdb",
    ),
    (
        "unscalable locust worker",
        lambda d: _svc(d, LOCUST_WORKER).__setitem__("ports", ["5557:5557"]),
        "stop `--scale locust-worker=N`",
    ),
    (
        "container name on the locust worker",
        lambda d: _svc(d, LOCUST_WORKER).__setitem__("container_name", "locust"),
        "stop `--scale locust-worker=N`",
    ),
    (
        "locust master port not exposed",
        lambda d: _svc(d, LOCUST_WORKER)["command"].__setitem__(-1, "5558"),
        "--master-host uses port 5558 of airflow-worker",
    ),
    (
        "master port variable out of step",
        _set_env("airflow-worker", "OPTISTACK_MASTER_PORT", "6000"),
        "OPTISTACK_MASTER_HOST/PORT airflow-worker:6000 differ",
    ),
    (
        "expose of a port the image does not use",
        lambda d: _svc(d, "redis").__setitem__("expose", ["6380"]),
        "redis: declares port 6380, but redis listens on",
    ),
    (
        "observability outside its profile",
        lambda d: _svc(d, "grafana").pop("profiles"),
        "grafana: not in the observability profile",
    ),
    (
        "grafana without provisioning",
        lambda d: _svc(d, "grafana").__setitem__("volumes", ["grafana-data:/var/lib/grafana"]),
        "grafana: nothing mounted at /etc/grafana/provisioning",
    ),
    (
        "grafana dashboards mounted elsewhere",
        lambda d: _svc(d, "grafana")["volumes"].__setitem__(
            1, "./include/observability/grafana/dashboards:/srv/dashboards:ro"
        ),
        "dashboard provider optistack reads a path nothing is mounted at",
    ),
    (
        "collector exporter port not declared",
        lambda d: _svc(d, "otel-collector").__setitem__("expose", ["4317", "4318"]),
        "otel-collector: prometheus exporter listens on '0.0.0.0:8889'",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [(m, e) for _, m, e in MUTATIONS], ids=[i for i, _, _ in MUTATIONS]
)
def test_a_broken_compose_file_is_rejected(broken, mutate: Callable[[dict], None], expected: str) -> None:
    problems = broken(mutate)
    if not expected:
        assert problems == []  # the round trip through safe_dump alone breaks nothing
    else:
        assert any(expected in p for p in problems), problems


def test_broken_side_configs_are_rejected(broken) -> None:
    root: Path = broken.root
    observability = root / "include" / "observability"
    prometheus = observability / "prometheus.yml"
    prometheus.write_text(prometheus.read_text().replace("otel-collector:8889", "otel-collector:4318"))
    dashboard = observability / "grafana" / "dashboards" / "optistack.json"
    dashboard.write_text(dashboard.read_text().replace("optistack_latency_p50_us", "optistack_latency_p50"))
    datasource = observability / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
    datasource.write_text(datasource.read_text().replace("prometheus:9090", "prometheus:9091"))
    problems = broken(lambda d: None)
    assert any("prometheus scrapes otel-collector:4318, not the collector's exporter" in p for p in problems)
    assert any("optistack.json: no panel shows optistack_latency_p50_us" in p for p in problems)
    assert any("grafana data source Prometheus uses port 9091 of prometheus" in p for p in problems)
    guide = root / DOCS_PAGE
    guide.write_text(guide.read_text().replace("=http://otel-collector:4318", "=http://otel-collector:4317"))
    problems = broken(lambda d: None)
    assert any(
        "OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector:4317 is not the collector's" in p for p in problems
    )
    dashboard.write_text("{not json")
    assert any("optistack.json: not JSON" in p for p in broken(lambda d: None))


def test_an_unpinned_base_image_is_rejected(broken) -> None:
    dockerfile: Path = broken.root / "Dockerfile"
    dockerfile.write_text(re.sub(r"(?m)^FROM \S+", "FROM apache/airflow:latest", dockerfile.read_text()))
    assert any("Dockerfile starts FROM apache/airflow:latest" in p for p in broken(lambda d: None))


def test_interpolation_follows_compose() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert (
        interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} ${UNSET} $$HOME $SET", env)
        == "x d  d  $HOME x"
    )
    worker = load_compose(REPO, {"OPTISTACK_STORE_PASSWORD": "s3cret"})["services"]["airflow-worker"]
    assert "optistack:s3cret@postgres:5432" in environment(worker)["AIRFLOW_CONN_OPTISTACK_POSTGRES"]
    assert environment(worker)["OTEL_EXPORTER_OTLP_ENDPOINT"] == ""  # no export without the profile


def test_airflow_turns_each_connection_into_a_url_the_store_accepts(tmp_path: Path) -> None:
    """`connection_url` (the DAGs' own lookup) in a fresh Airflow process, on the compose env."""
    services = load_compose(REPO)["services"]
    urls = connection_urls(services)
    script = (
        "import json, sys\n"
        "from optistack_common import connection_url\n"
        "print(json.dumps({s: connection_url(s) for s in sys.argv[1:]}))\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "OPTISTACK_"))},
        **{f"{CONNECTION_ENV}{store.upper()}": url for store, url in urls.items()},
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "dags")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", script, *sorted(urls)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    resolved = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(resolved) == store_names()
    for store, url in resolved.items():
        assert url, f"Airflow found no Connection for {store}"
        parts = check_url(get_store(store), url)  # raises OptiStackError when the store refuses it
        original = urlsplit(urls[store])
        assert (parts.hostname, parts.port) == (original.hostname, original.port), (store, url)
        assert parse_qs(parts.query) == parse_qs(original.query), (store, url)  # options survive
        # Stores with URL options parse them before connecting (names and values): no server needed.
        instance = get_store(store)(url, StoreSettings())
        if hasattr(instance, "_parse"):
            instance._parse()  # raises OptiStackError on an unknown option or a bad value
        assert _target_problems(store, parts.hostname, str(parts.port), services) == []


def compose_cli() -> tuple[list[str], bool] | None:
    """A Compose command line and whether it knows the top-level `name:`, or None without one.

    The `docker compose` plugin (Compose v2) is preferred; the Python `docker-compose` 1.29
    (Debian's package) still validates the file against its Compose-spec schema, but predates
    the top-level `name:`.
    """
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"], True
    legacy = shutil.which("docker-compose")
    return ([legacy], False) if legacy else None


def compose_config(
    cli: tuple[list[str], bool], text: str, tmp_path: Path, profile: list[str]
) -> subprocess.CompletedProcess:
    """`<compose> config --quiet` on `text` as if it were the repository's compose file."""
    command, knows_name = cli
    if not knows_name:
        text = re.sub(r"(?m)^name: .*\n", "", text)
    path = tmp_path / COMPOSE_FILE
    path.write_text(text)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPTISTACK_", "AIRFLOW", "OTEL_", "GRAFANA_"))
    }
    return subprocess.run(
        [*command, "-f", str(path), "--project-directory", str(REPO), *profile, "config", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )


def test_compose_itself_accepts_the_file(tmp_path: Path) -> None:
    """Compose's own parser and schema, where a Compose CLI is installed (no Docker engine needed)."""
    cli = compose_cli()
    if cli is None:
        pytest.skip("neither the docker compose plugin nor docker-compose is installed here")
    text = (REPO / COMPOSE_FILE).read_text()
    for profile in ([], ["--profile", OBSERVABILITY]):
        done = compose_config(cli, text, tmp_path, profile)
        assert done.returncode == 0, done.stderr
    # The same command refuses a misspelt key, so its success above means something.
    typo = text.replace("    healthcheck:\n", "    healthchek:\n", 1)
    assert typo != text
    refused = compose_config(cli, typo, tmp_path, [])
    assert refused.returncode != 0 and "healthchek" in refused.stderr, refused.stderr
