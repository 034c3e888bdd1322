"""OpenTelemetry spans and metrics of real runs, live.json while they go, and OTLP export.

The runs are real (Redis, a namespace of these tests' own, a results folder per test); the
telemetry goes to the SDK's in-memory exporters, installed with `telemetry.install`. The
OTLP tests send to a small HTTP receiver in the test (no collector) and decode what it got
with the OTLP protobuf classes.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tests.conftest import free_port
from workloads import runner, telemetry
from workloads.live import read_live
from workloads.results import LIVE_FILE, staging_dir, store_dir

NAMESPACE = "optistack_otel_test"
STAGES = ["provision", "seed", "load", "validate", "publish"]
SECRET = "0telSecr3tPw"
PROGRESS = re.compile(r"^\[redis\]\s+\d+s (warm-up|measuring)(: [\d,]+ ops/s  p99 .+  errors \d+)?$")


@pytest.fixture
def otel() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    """In-memory exporters in place of whatever the environment would configure."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry.install(tracer_provider, meter_provider)
    yield spans, reader
    telemetry.reset()
    tracer_provider.shutdown()
    meter_provider.shutdown()


def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    found = []
    for resource_metrics in data.resource_metrics if data else []:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == name:
                    found += list(metric.data.data_points)
    return found


def test_a_real_run_has_store_and_stage_spans_metrics_per_second_and_live_json(
    tmp_path: Path, store_server, otel
) -> None:
    redis = store_server("redis")
    spans, reader = otel
    run_id = f"otel-{secrets.token_hex(3)}"
    results = tmp_path / "results"
    p = runner.plan(
        {
            "stores": ["redis"], "workload": "a", "record_count": 300, "duration_s": 5, "warmup_s": 0.5,
            "users": 2, "processes": 2, "run_id": run_id, "results": str(results),
            "urls": {"redis": redis.url}, "namespace": NAMESPACE,
        }
    )  # fmt: skip
    log: list[str] = []
    snapshots: list[dict[str, Any]] = []

    def record(line: str) -> None:
        log.append(line)
        if PROGRESS.match(line):  # the load is running: its live.json is staged by now
            snapshots.append(read_live(results, run_id))

    [published] = runner.run(p, log=record)

    # -- spans: one per store run, one per stage inside it, all with the run's attributes
    finished = spans.get_finished_spans()
    by_name = {s.name: s for s in finished}
    assert sorted(by_name) == sorted(["optistack store", *(f"optistack {stage}" for stage in STAGES)])
    store_span = by_name["optistack store"]
    expected = {
        "optistack.run_id": run_id, "optistack.store": "redis", "optistack.workload": "a",
        "optistack.record_count": 300, "optistack.users": 2,
    }  # fmt: skip
    assert dict(store_span.attributes) == expected
    assert store_span.parent is None
    for stage in STAGES:
        span = by_name[f"optistack {stage}"]
        assert dict(span.attributes) == {**expected, "optistack.stage": stage}
        assert span.parent.span_id == store_span.context.span_id
        assert span.context.trace_id == store_span.context.trace_id
        assert span.status.status_code == StatusCode.UNSET
        assert store_span.start_time <= span.start_time <= span.end_time <= store_span.end_time
    starts = [by_name[f"optistack {stage}"].start_time for stage in STAGES]
    assert starts == sorted(starts)

    # -- metrics: the counters add up the measured seconds exactly
    summary = pd.read_parquet(published / "summary.parquet").set_index("operation")
    series = pd.read_parquet(published / "timeseries.parquet")
    info = json.loads((published / "run.json").read_text())
    attributes = {"store": "redis", "workload": "a", "run_id": run_id}
    operations = points(reader, "optistack.operations")
    assert {p.attributes["operation"] for p in operations} == {"READ", "UPDATE"}
    for point in operations:
        assert dict(point.attributes) == {**attributes, "operation": point.attributes["operation"]}
        op_series = series[series["operation"] == point.attributes["operation"]]
        assert point.value == op_series["ops"].sum() > 0
    # Every per-second row went out as a live line; an operation that outlived the
    # shipping lag is in the summary but in no second's row (late_samples).
    assert sum(p.value for p in operations) + info["load"]["late_samples"] == summary.loc["ALL", "ops"]
    errors = points(reader, "optistack.errors")
    assert sum(p.value for p in errors) == series[series["operation"] != "ALL"]["errors"].sum()
    for name in ("optistack.latency.p50_us", "optistack.latency.p99_us"):
        gauges = points(reader, name)
        assert {p.attributes["operation"] for p in gauges} == {"READ", "UPDATE", "ALL"}, name
        assert all(p.value > 0 and p.attributes["run_id"] == run_id for p in gauges), name
    p50 = {p.attributes["operation"]: p.value for p in points(reader, "optistack.latency.p50_us")}
    p99 = {p.attributes["operation"]: p.value for p in points(reader, "optistack.latency.p99_us")}
    assert all(p50[op] <= p99[op] for op in p50)

    # -- the task log: the periodic progress line, never a live line
    assert any(PROGRESS.match(line) and "measuring" in line for line in log), log
    assert any(
        line == f"[redis] load finished: {summary.loc['ALL', 'ops']:,} operations measured" for line in log
    )
    assert not any(line.startswith("live") or '"second"' in line for line in log)

    # -- live.json while the load ran; removed when the store was published
    assert snapshots and all(s is not None for s in snapshots)
    live = snapshots[-1]["redis"]
    assert (live["run_id"], live["store"], live["stage"], live["workload"]) == (run_id, "redis", "load", "a")
    assert live["phase"] in ("warm-up", "measuring")
    if live["latest"] is not None:
        assert set(live["latest"]["operations"]) <= {"READ", "UPDATE", "ALL"}
        assert live["totals"]["ALL"]["ops"] <= summary.loc["ALL", "ops"]
    assert not (published / LIVE_FILE).exists()
    assert not staging_dir(results, run_id, "redis").exists()
    assert read_live(results, run_id) is None


def test_a_failed_stage_sets_error_status_without_the_password(tmp_path: Path, otel) -> None:
    spans, _ = otel
    port = free_port()  # nothing listens there
    p = runner.plan(
        {
            "stores": ["redis"], "record_count": 10, "duration_s": 1, "run_id": "otel-fail",
            "results": str(tmp_path / "results"), "urls": {"redis": f"redis://:{SECRET}@127.0.0.1:{port}/1"},
            "namespace": NAMESPACE, "connect_timeout_s": 2,
        }
    )  # fmt: skip

    runner.run(p, log=lambda line: None)

    by_name = {s.name: s for s in spans.get_finished_spans()}
    assert sorted(by_name) == ["optistack provision", "optistack publish", "optistack store"]
    provision, store = by_name["optistack provision"], by_name["optistack store"]
    assert provision.status.status_code == StatusCode.ERROR
    assert store.status.status_code == StatusCode.ERROR
    assert store.status.description.startswith("provision: ")
    assert by_name["optistack publish"].status.status_code == StatusCode.UNSET
    [event] = provision.events
    assert event.name == "exception" and event.attributes["exception.type"] == "OptiStackError"
    exported = json.dumps([json.loads(s.to_json()) for s in by_name.values()])
    assert str(port) in exported  # the error names the server it could not reach...
    assert SECRET not in exported  # ...but never its password
    info = json.loads((store_dir(p.root, "otel-fail", "redis") / "run.json").read_text())
    assert info["status"] == "failed"


def test_without_an_endpoint_nothing_is_configured_and_no_exporter_is_imported(tmp_path: Path) -> None:
    code = """
import sys
from workloads import runner, telemetry
t = telemetry.get()
with telemetry.span("optistack store", {"optistack.store": "redis"}) as span:
    telemetry.record_second({"store": "redis"}, {"READ": {"ops": 5, "errors": 0, "latency_p50_us": 1.0}})
print(t.tracer_provider, t.meter_provider, span.is_recording(),
      sorted(m for m in sys.modules if m.startswith("opentelemetry.exporter")))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "None", "False", "[]"]


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[ThreadingHTTPServer]:
    """An OTLP/HTTP endpoint that keeps every request it gets."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def from_env() -> Iterator[None]:
    telemetry.reset()
    yield
    current = telemetry.get()
    for provider in (current.tracer_provider, current.meter_provider):
        if provider is not None:
            provider.shutdown()
    telemetry.reset()


def test_with_an_endpoint_spans_and_metrics_go_out_over_otlp(monkeypatch, receiver, from_env) -> None:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.server_port}")
    attributes = telemetry.run_attributes("otlp-1", "redis", "a", 100, 4)

    with (
        telemetry.span("optistack store", attributes),
        telemetry.span("optistack load", {**attributes, "optistack.stage": "load"}),
    ):
        telemetry.record_second(
            {"store": "redis", "workload": "a", "run_id": "otlp-1"},
            {
                "READ": {"ops": 40, "errors": 1, "latency_p50_us": 210.0, "latency_p99_us": 900.0},
                "ALL": {"ops": 40, "errors": 1, "latency_p50_us": 210.0, "latency_p99_us": 900.0},
            },
        )
    # The outermost span flushed both providers when it ended: nothing to wait for.

    traces = [
        ExportTraceServiceRequest.FromString(b) for path, b in receiver.received if path == "/v1/traces"
    ]
    exported = [
        (span, resource) for t in traces for resource in t.resource_spans
        for scope in resource.scope_spans for span in scope.spans
    ]  # fmt: skip
    assert sorted(span.name for span, _ in exported) == ["optistack load", "optistack store"]
    for span, resource in exported:
        resource_attributes = {a.key: a.value.string_value for a in resource.resource.attributes}
        assert resource_attributes["service.name"] == "optistack"
        assert {a.key: a.value.string_value for a in span.attributes}["optistack.run_id"] == "otlp-1"
    metrics_requests = [
        ExportMetricsServiceRequest.FromString(b) for path, b in receiver.received if path == "/v1/metrics"
    ]
    metrics = {
        m.name: m for r in metrics_requests for rm in r.resource_metrics for sm in rm.scope_metrics
        for m in sm.metrics
    }  # fmt: skip
    assert set(metrics) == {
        "optistack.operations", "optistack.errors", "optistack.latency.p50_us", "optistack.latency.p99_us"
    }  # fmt: skip
    [ops] = metrics["optistack.operations"].sum.data_points
    assert ops.as_int == 40
    assert {a.key: a.value.string_value for a in ops.attributes} == {
        "store": "redis", "workload": "a", "run_id": "otlp-1", "operation": "READ"
    }  # fmt: skip
    p99 = {
        next(a.value.string_value for a in point.attributes if a.key == "operation"): point.as_double
        for point in metrics["optistack.latency.p99_us"].gauge.data_points
    }
    assert p99 == {"READ": 900.0, "ALL": 900.0}


def test_a_collector_that_is_down_does_not_hold_the_run(monkeypatch, from_env) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TIMEOUT", raising=False)  # OptiStack's default deadline

    t0 = time.monotonic()
    with telemetry.span("optistack store", {"optistack.store": "redis"}):
        telemetry.record_second({"store": "redis"}, {"READ": {"ops": 1, "errors": 0}})
    elapsed = time.monotonic() - t0

    assert telemetry.get().tracer_provider is not None  # configured, and the export failed
    # Both providers' flushes are bounded; without the exporters' shorter deadline this
    # took about 20 s (the SDK's 10 s, retries included, per signal).
    assert elapsed < 2 * telemetry.FLUSH_TIMEOUT_MS / 1000
