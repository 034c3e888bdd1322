"""OpenTelemetry for OptiStack: spans per store run and stage, metrics per measured second.

One place sets OpenTelemetry up, once per process, on first use:

- `OTEL_EXPORTER_OTLP_ENDPOINT` set: a `TracerProvider` with a `BatchSpanProcessor` and an
  OTLP/HTTP span exporter, and a `MeterProvider` with a `PeriodicExportingMetricReader` and an
  OTLP/HTTP metric exporter, under the resource `service.name=optistack` (unless
  `OTEL_SERVICE_NAME` says otherwise). The exporters read the standard `OTEL_EXPORTER_OTLP_*`
  variables themselves (headers, per-signal endpoints, timeouts, temporality).
- unset: nothing is configured. Spans and metrics go to the OpenTelemetry API's no-op
  tracer and meter, and no exporter package is imported.

The providers are held here, not registered as OpenTelemetry's global providers: the
global ones can be set only once per process, and tests must be able to put in-memory
exporters in and take them out again (`install()` / `reset()`). The spans still use the
API's context, so a store run's span is the parent of the stage spans started inside it.

Only the runner process uses this module: the load process (Locust) never touches
OpenTelemetry, and nothing here runs per operation. The metrics are fed once per measured
second from the load process's `live` lines (`record_second`).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, Status, StatusCode

INSTRUMENTATION = "optistack"
ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
# How long the end of a stage may wait for its spans and metrics to leave: a collector that
# is down must not hold an Airflow task for the exporter's full retry schedule.
FLUSH_TIMEOUT_MS = 5_000
# The exporters' own per-export deadline (retries included) unless OTEL_EXPORTER_OTLP_TIMEOUT
# sets one: the SDK's 10 s made each flush against a stopped collector take about 20 s here.
DEFAULT_EXPORT_TIMEOUT_S = 3.0
# Metrics are per second of the measured window; a 60 s default export interval would show
# a short benchmark as one or two points.
DEFAULT_METRIC_EXPORT_INTERVAL_MS = 5_000


@dataclass
class Telemetry:
    """The providers this process exports with (None: the API's no-op ones) and the
    instruments made from them."""

    tracer_provider: Any = None  # opentelemetry.sdk.trace.TracerProvider | None
    meter_provider: Any = None  # opentelemetry.sdk.metrics.MeterProvider | None
    tracer: trace.Tracer = field(init=False)
    meter: metrics.Meter = field(init=False)

    def __post_init__(self) -> None:
        tracer_provider = self.tracer_provider or trace.NoOpTracerProvider()
        meter_provider = self.meter_provider or metrics.NoOpMeterProvider()
        version = _version()
        self.tracer = tracer_provider.get_tracer(INSTRUMENTATION, version)
        self.meter = meter_provider.get_meter(INSTRUMENTATION, version)
        # No units on purpose: a collector's Prometheus exporter would append them to the
        # names (`optistack_latency_p99_us_microseconds`); the names already carry `_us`.
        self.operations = self.meter.create_counter(
            "optistack.operations", description="Operations completed in the measured window"
        )
        self.errors = self.meter.create_counter(
            "optistack.errors", description="Operations failed in the measured window"
        )
        self.latency_p50_us = self.meter.create_gauge(
            "optistack.latency.p50_us", description="Median service time of the last measured second, in µs"
        )
        self.latency_p99_us = self.meter.create_gauge(
            "optistack.latency.p99_us", description="p99 service time of the last measured second, in µs"
        )

    def flush(self) -> None:
        """Send what is buffered now: short-lived processes (Airflow tasks) would drop it."""
        for provider in (self.tracer_provider, self.meter_provider):
            if provider is not None:
                provider.force_flush(FLUSH_TIMEOUT_MS)


_current: Telemetry | None = None
# How many OptiStack spans are open in this context: the outermost one flushes. Not the
# OTel context's current span: a host process (Airflow's own tracing) may have put one there.
_open_spans: contextvars.ContextVar[int] = contextvars.ContextVar("optistack_open_spans", default=0)


def get() -> Telemetry:
    """This process's telemetry, configured from the environment on first use."""
    global _current
    if _current is None:
        _current = from_environment()
    return _current


def install(tracer_provider: Any = None, meter_provider: Any = None) -> Telemetry:
    """Use these providers from now on (tests: in-memory exporters); returns the telemetry."""
    global _current
    _current = Telemetry(tracer_provider, meter_provider)
    return _current


def reset() -> None:
    """Forget the current providers; the next `get()` reads the environment again."""
    global _current
    _current = None


def from_environment(environ: Mapping[str, str] | None = None) -> Telemetry:
    """OTLP exporters when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, else nothing at all."""
    environ = os.environ if environ is None else environ
    if not environ.get(ENDPOINT_ENV, "").strip():
        return Telemetry()
    # Imported only here: without an endpoint no exporter (nor requests/protobuf) is loaded.
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {"service.version": _version() or "unknown", "host.name": socket.gethostname()}
    if not environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = "optistack"
    resource = Resource.create(attributes)  # also merges OTEL_RESOURCE_ATTRIBUTES
    tracer_provider = TracerProvider(resource=resource)
    timeout = None if environ.get("OTEL_EXPORTER_OTLP_TIMEOUT") else DEFAULT_EXPORT_TIMEOUT_S
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(timeout=timeout)))
    interval = float(environ.get("OTEL_METRIC_EXPORT_INTERVAL") or DEFAULT_METRIC_EXPORT_INTERVAL_MS)
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(timeout=timeout), export_interval_millis=interval
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    return Telemetry(tracer_provider, meter_provider)


def _version() -> str | None:
    try:
        return metadata.version("optistack")
    except metadata.PackageNotFoundError:
        return None


def run_attributes(run_id: str, store: str, workload: str, record_count: int, users: int) -> dict[str, Any]:
    """The attributes every OptiStack span carries."""
    return {
        "optistack.run_id": run_id,
        "optistack.store": store,
        "optistack.workload": workload,
        "optistack.record_count": record_count,
        "optistack.users": users,
    }


@contextlib.contextmanager
def span(name: str, attributes: Mapping[str, Any], redact: Any = str) -> Iterator[Span]:
    """A span around a block; on an exception its status is ERROR with `redact(error)`.

    `redact` turns the exception into a message that is safe to export (no password): the
    SDK's own exception recording would export the raw message and traceback, so it is
    off. The exception is re-raised. The outermost span of the process flushes at its end.
    """
    telemetry = get()
    depth = _open_spans.set(_open_spans.get() + 1)
    try:
        with telemetry.tracer.start_as_current_span(
            name, attributes=dict(attributes), record_exception=False, set_status_on_exception=False
        ) as current:
            try:
                yield current
            except BaseException as error:
                message = redact(error)
                mark_error(current, message)
                current.add_event(
                    "exception", {"exception.type": type(error).__name__, "exception.message": message}
                )
                raise
    finally:
        _open_spans.reset(depth)
        if _open_spans.get() == 0:
            telemetry.flush()


def mark_error(current: Span, message: str) -> None:
    """Set a span's status to ERROR with an already redacted message."""
    current.set_status(Status(StatusCode.ERROR, message))


def record_second(attributes: Mapping[str, str], operations: Mapping[str, Mapping[str, Any]]) -> None:
    """Metrics for one finished second of the measured window.

    `operations` maps each operation (and `ALL`) to that second's `ops`, `errors`,
    `latency_p50_us` and `latency_p99_us`. The counters count real operations only, so a
    sum over the `operation` attribute is the total; the latency gauges are set for `ALL`
    too, the exact merged percentile that no sum of per-operation gauges could give.
    """
    telemetry = get()
    for operation, row in operations.items():
        attrs = {**attributes, "operation": operation}
        if operation != "ALL":
            telemetry.operations.add(int(row.get("ops") or 0), attrs)
            telemetry.errors.add(int(row.get("errors") or 0), attrs)
        if row.get("latency_p50_us") is not None:
            telemetry.latency_p50_us.set(float(row["latency_p50_us"]), attrs)
        if row.get("latency_p99_us") is not None:
            telemetry.latency_p99_us.set(float(row["latency_p99_us"]), attrs)
