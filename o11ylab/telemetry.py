"""OpenTelemetry providers, exporters and their life cycle, for one kernel process.

One ``Telemetry`` object per process (``get_telemetry()``). It builds the resource, the trace,
metric and log providers and every exporter from ``Settings`` exactly once, because the
OpenTelemetry API lets a process set its global providers only once. Loading the extension
*attaches* the parts that can come and go (the Prometheus endpoint, the logging bridge, the
background flusher); unloading detaches them and flushes. When the user already installed
their own global providers, o11ylab adds its in-memory processors to them (if they are SDK
providers) and leaves their exporters alone.

Export is always batched with a short timeout, so a dead or hanging collector costs a cell
nothing: flushing after a traced cell only wakes a background thread. Every exporter is
wrapped to count what it delivered and what it failed to deliver; ``status()`` shows both.
"""

from __future__ import annotations

import atexit
import ipaddress
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlparse

from opentelemetry import _logs as otel_logs
from opentelemetry import metrics, trace
from opentelemetry._logs._internal import ProxyLoggerProvider
from opentelemetry.context import Context, get_current
from opentelemetry.metrics._internal import _ProxyMeterProvider
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.view import View

from . import semconv
from ._files import private_folder, write_private
from ._version import __version__
from .config import Settings, load_settings
from .enrichment import Enrichers, set_ended_attributes
from .otlpjson import JsonLinesWriter

__all__ = [
    "CellRollup",
    "SpanBuffer",
    "Telemetry",
    "get_telemetry",
    "peek_telemetry",
    "set_ended_attributes",
]

_log = logging.getLogger("o11ylab")


def _warn(message: str) -> None:
    print(f"o11ylab: {message}", file=sys.stderr)


def safe_url(url: str) -> str:
    """An endpoint for display: scheme, host, port and path; never user info or a query."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    if ":" in host:  # IPv6: the brackets are part of the URL
        host = f"[{host}]"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{host}{port}{parsed.path}"


def is_loopback(host: str) -> bool:
    """Whether a bind address is this machine's loopback (``localhost``, 127.x, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_loopback_host_header(value: str) -> bool:
    """Whether a Host header names this machine's loopback: 127.0.0.1, localhost or [::1],
    any port. An empty one (HTTP/1.0) passes: browsers always send a Host."""
    value = value.strip().lower()
    if not value:
        return True
    if value.startswith("["):
        host = value[1 : value.find("]")] if "]" in value else value
    else:
        host = value.rsplit(":", 1)[0] if value.count(":") == 1 else value
    return host in ("127.0.0.1", "localhost", "::1")


def _metrics_server(host: str, port: int) -> Any:
    """prometheus_client's /metrics server, in a thread; on a loopback bind it answers only
    requests addressed to 127.0.0.1, localhost or [::1] (a page's script reaching the port
    under its own name, DNS rebinding, gets a 403)."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import REGISTRY, make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer

    metrics_app = make_wsgi_app(REGISTRY)
    loopback = is_loopback(host)

    def app(scope: dict[str, Any], start_response: Any) -> Any:  # scope: the WSGI environ
        if loopback and not is_loopback_host_header(scope.get("HTTP_HOST", "")):
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"This /metrics answers only 127.0.0.1, localhost or [::1].\n"]
        return metrics_app(scope, start_response)

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # a scrape every few seconds would fill the kernel's stderr

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    server = make_server(host.strip("[]"), port, app, Server, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, name="o11ylab-metrics", daemon=True).start()
    return server


# --- processors ---------------------------------------------------------------------------


class SpanBuffer(SpanProcessor):
    """The most recent ended spans, bounded, for ``%o11y trace`` and the DataFrame view.

    ``sinks`` are the open ``o11ylab.testing.capture_spans()`` lists; each gets every span.
    """

    def __init__(self, maxlen: int) -> None:
        self.spans: deque[ReadableSpan] = deque(maxlen=maxlen)
        self.sinks: list[list[ReadableSpan]] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)
        for sink in self.sinks:
            sink.append(span)

    def snapshot(self) -> list[ReadableSpan]:
        return list(self.spans)


class Rollup:
    """What ran under one cell span: counts and sums of its GenAI operation spans."""

    __slots__ = ("cell_span_id", "errors", "members", "spans", "sums")

    def __init__(self, cell_span_id: int) -> None:
        self.cell_span_id = cell_span_id
        self.spans = 0
        self.errors = 0
        self.sums: dict[str, float] = {}
        self.members: set[int] = {cell_span_id}

    def add(self, span: ReadableSpan) -> None:
        self.spans += 1
        if span.status.status_code is trace.StatusCode.ERROR:
            self.errors += 1
        attributes = span.attributes or {}
        # A span whose usage a GenAI span below it already carries (LangChain's over the
        # openai SDK's, when two instrumentations both record it) is counted once, below.
        if attributes.get(
            semconv.GEN_AI_OPERATION_NAME
        ) in semconv.ROLLUP_OPERATIONS and not attributes.get(semconv.USAGE_COUNTED_BELOW):
            for source, _target in semconv.ROLLUP_SUMS:
                value = attributes.get(source)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.sums[source] = self.sums.get(source, 0) + value


class CellRollup(SpanProcessor):
    """Tracks which spans nest under an open cell span, across threads, and rolls them up.

    Membership is decided at span start from the parent's span id, so it costs one dict
    lookup per span and works under a shared trace (``o11ylab run`` puts every cell of a
    notebook in one trace, so trace ids cannot tell cells apart).
    """

    def __init__(self) -> None:
        self._member_of: dict[int, Rollup] = {}
        self._lock = threading.Lock()

    def open(self, cell_span_id: int) -> Rollup:
        rollup = Rollup(cell_span_id)
        with self._lock:
            self._member_of[cell_span_id] = rollup
        return rollup

    def close(self, rollup: Rollup) -> None:
        with self._lock:
            for span_id in rollup.members:
                if self._member_of.get(span_id) is rollup:
                    del self._member_of[span_id]

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        parent = span.parent
        if parent is None or not self._member_of:
            return
        rollup = self._member_of.get(parent.span_id)
        if rollup is not None:
            with self._lock:
                rollup.members.add(span.context.span_id)
                self._member_of[span.context.span_id] = rollup

    def on_end(self, span: ReadableSpan) -> None:
        if not self._member_of or span.context is None:
            return
        rollup = self._member_of.get(span.context.span_id)
        if rollup is not None and span.context.span_id != rollup.cell_span_id:
            rollup.add(span)


class LogTap(LogRecordProcessor):
    """Hands every log record to the open ``capture_logs()`` lists."""

    def __init__(self) -> None:
        self.sinks: list[list[Any]] = []

    def on_emit(self, log_record: Any) -> None:
        for sink in self.sinks:
            sink.append(log_record)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


# --- exporters that count ---------------------------------------------------------------------


class ExportCounts:
    """Items handed to one exporter, delivered and lost; shown by ``%o11y status``."""

    def __init__(self, name: str, target: str, warn: bool = True) -> None:
        self.name = name
        self.target = target
        self.exported = 0
        self.failed = 0
        self._warned = not warn  # the file writer explains its own failures
        self.dropped: Callable[[], int] = lambda: 0  # never reached the exporter (queue full)

    @property
    def lost(self) -> int:
        return self.failed + self.dropped()

    def record(self, ok: bool, count: int, why: str = "") -> None:
        if ok:
            self.exported += count
            return
        self.failed += count
        if not self._warned:
            self._warned = True
            _warn(
                f"{self.name} export to {self.target} failed{': ' + why if why else ''}; "
                "lost items are counted in %o11y status. Cells are not slowed."
            )


class CountingSpanExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, counts: ExportCounts) -> None:
        self.inner = inner
        self.counts = counts
        self.taken = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.taken += len(spans)  # the SDK runs one export at a time (its export lock)
        try:
            result = self.inner.export(spans)
        except Exception as exc:  # noqa: BLE001 - an exporter must never take the worker thread down
            self.counts.record(False, len(spans), type(exc).__name__)
            return SpanExportResult.FAILURE
        self.counts.record(result is SpanExportResult.SUCCESS, len(spans))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """A ``BatchSpanProcessor`` that knows how many spans its full queue dropped.

    When spans end faster than they can be exported (a tight loop of small spans), the SDK
    drops them with one log line. Counting each drop as it happens would race with the export
    thread emptying the queue, so the count comes from totals: spans handed to the queue, less
    those still in it, less those the exporter took. The SDK moves spans from the queue to the
    exporter only under its export lock, so the totals agree whenever that lock is free; while
    an export runs, the last count stands.
    """

    def __init__(self, exporter: CountingSpanExporter, **options: Any) -> None:
        super().__init__(exporter, **options)
        self._exporter = exporter
        self._handed = 0
        self._handing = threading.Lock()
        self._dropped = 0
        exporter.counts.dropped = self.dropped

    def on_end(self, span: ReadableSpan) -> None:
        if not (span.context and span.context.trace_flags.sampled):
            return
        if self._batch_processor._shutdown:  # the SDK queues nothing after shutdown
            return
        super().on_end(span)
        with self._handing:  # counted after queueing: a read in between counts short, not over
            self._handed += 1

    def dropped(self) -> int:
        batch = self._batch_processor
        lock = batch._export_lock  # the SDK's; see the class docstring
        if lock.acquire(blocking=False):
            try:
                queued = len(batch._queue)
                self._dropped = max(0, self._handed - queued - self._exporter.taken)
            finally:
                lock.release()
        return self._dropped


class CountingLogExporter(LogRecordExporter):
    def __init__(self, inner: LogRecordExporter, counts: ExportCounts) -> None:
        self.inner = inner
        self.counts = counts

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        try:
            result = self.inner.export(batch)
        except Exception as exc:  # noqa: BLE001 - an exporter must never take the worker thread down
            self.counts.record(False, len(batch), type(exc).__name__)
            return LogRecordExportResult.FAILURE
        self.counts.record(result is LogRecordExportResult.SUCCESS, len(batch))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class CountingMetricExporter(MetricExporter):
    def __init__(self, inner: MetricExporter, counts: ExportCounts) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self.inner = inner
        self.counts = counts

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception as exc:  # noqa: BLE001 - an exporter must never take the worker thread down
            self.counts.record(False, 1, type(exc).__name__)
            return MetricExportResult.FAILURE
        self.counts.record(result is MetricExportResult.SUCCESS, 1)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


# --- the local OTLP-JSON file exporters -----------------------------------------------------------


class FileSpanExporter(SpanExporter):
    def __init__(self, writer: JsonLinesWriter) -> None:
        self.writer = writer

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        ok = self.writer.write(encode_spans(spans))
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE


class FileLogExporter(LogRecordExporter):
    def __init__(self, writer: JsonLinesWriter) -> None:
        self.writer = writer

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs

        ok = self.writer.write(encode_logs(batch))
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class FileMetricExporter(MetricExporter):
    def __init__(self, writer: JsonLinesWriter) -> None:
        super().__init__()
        self.writer = writer

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

        ok = self.writer.write(encode_metrics(metrics_data))
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


# --- logging bridge ---------------------------------------------------------------------------


class OtelLogHandler(logging.Handler):
    """Python ``logging`` records to OTel logs, with the active trace and span ids."""

    _SEVERITY: ClassVar[dict[int, tuple[int, str]]] = {
        logging.DEBUG: (5, "DEBUG"),
        logging.INFO: (9, "INFO"),
        logging.WARNING: (13, "WARN"),
        logging.ERROR: (17, "ERROR"),
        logging.CRITICAL: (21, "FATAL"),
    }

    def __init__(self, provider: otel_logs.LoggerProvider, level: int) -> None:
        super().__init__(level)
        self._provider = provider
        self._loggers: dict[str, otel_logs.Logger] = {}

    def emit(self, record: logging.LogRecord) -> None:
        # The SDK and our own warnings would otherwise feed back into the exporters.
        if record.name.startswith(("opentelemetry", "o11ylab.internal")):
            return
        try:
            logger = self._loggers.get(record.name)
            if logger is None:
                logger = self._loggers[record.name] = self._provider.get_logger(record.name)
            number, text = self._SEVERITY.get(record.levelno, (9, record.levelname))
            attributes: dict[str, Any] = {
                "code.file.path": record.pathname,
                "code.function.name": record.funcName,
                "code.line.number": record.lineno,
                "logger.name": record.name,
            }
            if record.exc_info and record.exc_info[0] is not None:
                attributes["exception.type"] = record.exc_info[0].__name__
                attributes["exception.message"] = str(record.exc_info[1])
            logger.emit(
                timestamp=int(record.created * 1e9),
                context=get_current(),
                severity_number=otel_logs.SeverityNumber(number),
                severity_text=text,
                body=record.getMessage(),
                attributes=attributes,
            )
        except Exception:  # noqa: BLE001 - logging's own contract: handleError, never raise
            self.handleError(record)


def _correlating_factory(
    previous: Callable[..., logging.LogRecord],
) -> Callable[..., logging.LogRecord]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.otelTraceID = format(context.trace_id, "032x")
            record.otelSpanID = format(context.span_id, "016x")
        else:
            record.otelTraceID = "0"
            record.otelSpanID = "0"
        return record

    factory.o11ylab_previous = previous  # type: ignore[attr-defined]
    return factory


# --- the per-process telemetry ------------------------------------------------------------------


class Telemetry:
    """Providers, exporters and attachable parts for this process. See the module docstring."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.run_dir = settings.run_dir or settings.runs_dir / (
            time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
        )
        self.instance_id = str(uuid.uuid4())
        self.buffer = SpanBuffer(settings.buffer_spans)
        self.rollups = CellRollup()
        self.enrichers = Enrichers()  # cost, GPU/CPU attribution: o11ylab.enrichment
        self.log_tap = LogTap()
        self.counts: list[ExportCounts] = []
        self.notes: list[str] = []  # one-line facts for %o11y status
        self.owns_tracer_provider = False
        self.owns_meter_provider = False
        self.owns_logger_provider = False
        self._span_processors: list[BatchSpanProcessor] = []
        self._log_processors: list[BatchLogRecordProcessor] = []
        self._metric_readers: list[MetricReader] = []
        self.memory_reader: InMemoryMetricReader | None = None
        self._prometheus_server: Any = None
        self.prometheus_url: str | None = None
        self._log_handler: OtelLogHandler | None = None
        self._root_level: int | None = None
        self._flush_wanted = threading.Event()
        self._flusher: threading.Thread | None = None
        self._attached = False
        self._shut_down = False
        self._build()

    # -- construction, once per process ----------------------------------------------------------

    def resource(self) -> Resource:
        attributes: dict[str, Any] = {
            "service.version": __version__,
            "service.instance.id": self.instance_id,
            "host.name": socket.gethostname(),
            "process.pid": os.getpid(),
            "process.runtime.name": sys.implementation.name,
            "process.runtime.version": ".".join(map(str, sys.version_info[:3])),
            "telemetry.distro.name": "o11ylab",
            "telemetry.distro.version": __version__,
        }
        env_resource = OTELResourceDetector().detect()
        if "service.name" not in env_resource.attributes:
            attributes["service.name"] = semconv.SERVICE_NAME_DEFAULT
        if self.settings.notebook_path:
            attributes[semconv.NOTEBOOK_PATH] = self.settings.notebook_path
        kernel_id = _kernel_id()
        if kernel_id:
            attributes[semconv.KERNEL_ID] = kernel_id
        # Environment variables win over our defaults, as the OTel spec asks.
        return Resource.create(attributes).merge(env_resource)

    def _counted(self, name: str, target: str) -> ExportCounts:
        counts = ExportCounts(name, target, warn=not name.startswith("file"))
        self.counts.append(counts)
        return counts

    def _otlp_target(self, signal: str) -> str:
        env = os.environ
        specific = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT", "").strip()
        if specific:
            return safe_url(specific)
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        protocol = self.settings.otlp_protocol[signal]
        return safe_url(base) + ("" if protocol == "grpc" else f"/v1/{signal}")

    def _otlp_exporter(self, signal: str) -> Any:
        timeout = self.settings.export_timeout_s
        if self.settings.otlp_protocol[signal] == "grpc":
            if signal == "traces":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

                return OTLPSpanExporter(timeout=timeout)
            if signal == "metrics":
                from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                    OTLPMetricExporter,
                )

                return OTLPMetricExporter(timeout=timeout)
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

            return OTLPLogExporter(timeout=timeout)
        if signal == "traces":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HTTPSpanExporter,
            )

            return HTTPSpanExporter(timeout=timeout)
        if signal == "metrics":
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter as HTTPMetricExporter,
            )

            return HTTPMetricExporter(timeout=timeout)
        from opentelemetry.exporter.otlp.proto.http._log_exporter import (
            OTLPLogExporter as HTTPLogExporter,
        )

        return HTTPLogExporter(timeout=timeout)

    def _span_processor(self, exporter: SpanExporter, counts: ExportCounts) -> BatchSpanProcessor:
        processor = CountingBatchSpanProcessor(
            CountingSpanExporter(exporter, counts),
            schedule_delay_millis=1000,
            export_timeout_millis=int(self.settings.export_timeout_s * 1000),
        )
        self._span_processors.append(processor)
        return processor

    def _build(self) -> None:
        settings = self.settings
        resource = self.resource()
        pid = os.getpid()

        current = trace.get_tracer_provider()
        if isinstance(current, trace.ProxyTracerProvider):
            provider = TracerProvider(resource=resource, shutdown_on_exit=False)
            provider.add_span_processor(self.enrichers)
            if settings.trace_file:
                writer = JsonLinesWriter(self.run_dir / f"traces.{pid}.jsonl")
                counts = self._counted("file traces", str(writer.path))
                provider.add_span_processor(self._span_processor(FileSpanExporter(writer), counts))
            if "traces" in settings.otlp_signals:
                counts = self._counted("OTLP traces", self._otlp_target("traces"))
                exporter = self._otlp_exporter("traces")
                provider.add_span_processor(self._span_processor(exporter, counts))
            trace.set_tracer_provider(provider)
            self.owns_tracer_provider = True
            current = provider
        else:
            self.notes.append("using the tracer provider you set; its exporters are yours")
        if hasattr(current, "add_span_processor"):
            if not self.owns_tracer_provider:
                current.add_span_processor(self.enrichers)  # after the user's exporters, sadly
            current.add_span_processor(self.rollups)
            current.add_span_processor(self.buffer)
        else:
            self.notes.append("your tracer provider is not an SDK one: %o11y trace is empty")

        if isinstance(metrics.get_meter_provider(), _ProxyMeterProvider):
            interval = settings.metric_interval_ms
            readers: list[MetricReader] = []
            self.memory_reader = InMemoryMetricReader()
            readers.append(self.memory_reader)
            if settings.trace_file:
                writer = JsonLinesWriter(self.run_dir / f"metrics.{pid}.jsonl")
                counts = self._counted("file metrics", str(writer.path))
                readers.append(
                    PeriodicExportingMetricReader(
                        CountingMetricExporter(FileMetricExporter(writer), counts),
                        export_interval_millis=interval,
                        export_timeout_millis=settings.export_timeout_s * 1000,
                    )
                )
            if "metrics" in settings.otlp_signals:
                counts = self._counted("OTLP metrics", self._otlp_target("metrics"))
                readers.append(
                    PeriodicExportingMetricReader(
                        CountingMetricExporter(self._otlp_exporter("metrics"), counts),
                        export_interval_millis=interval,
                        export_timeout_millis=settings.export_timeout_s * 1000,
                    )
                )
            # Always there (it costs nothing until scraped), so prometheus_text() works in a
            # process that serves /metrics its own way; the HTTP server is what the port decides.
            from opentelemetry.exporter.prometheus import PrometheusMetricReader

            readers.append(PrometheusMetricReader())
            self._metric_readers = readers
            metrics.set_meter_provider(
                MeterProvider(
                    resource=resource,
                    metric_readers=readers,
                    views=_views(),
                    shutdown_on_exit=False,
                )
            )
            self.owns_meter_provider = True
        else:
            self.notes.append("using the meter provider you set; /metrics is not served")

        if isinstance(otel_logs.get_logger_provider(), ProxyLoggerProvider):
            logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
            if settings.trace_file:
                writer = JsonLinesWriter(self.run_dir / f"logs.{pid}.jsonl")
                counts = self._counted("file logs", str(writer.path))
                self._add_log_processor(logger_provider, FileLogExporter(writer), counts)
            if "logs" in settings.otlp_signals:
                counts = self._counted("OTLP logs", self._otlp_target("logs"))
                self._add_log_processor(logger_provider, self._otlp_exporter("logs"), counts)
            otel_logs.set_logger_provider(logger_provider)
            self.owns_logger_provider = True
        current_logs = otel_logs.get_logger_provider()
        if hasattr(current_logs, "add_log_record_processor"):
            current_logs.add_log_record_processor(self.log_tap)

        self.tracer = trace.get_tracer(semconv.SCOPE, __version__)
        self.meter = metrics.get_meter(semconv.SCOPE, __version__)
        self._cell_duration = self.meter.create_histogram(
            semconv.METRIC_CELL_DURATION, unit="s", description="Duration of traced cells."
        )
        self._cells = self.meter.create_counter(
            semconv.METRIC_CELLS, unit="{cell}", description="Traced cells run, by status."
        )
        atexit.register(self.shutdown)

    _OK: ClassVar[dict[str, str]] = {semconv.STATUS: "ok"}
    _ERROR: ClassVar[dict[str, str]] = {semconv.STATUS: "error"}

    def record_cell(self, duration_s: float, failed: bool) -> None:
        attributes = self._ERROR if failed else self._OK
        self._cell_duration.record(duration_s, attributes)
        self._cells.add(1, attributes)

    def _add_log_processor(
        self, provider: LoggerProvider, exporter: LogRecordExporter, counts: ExportCounts
    ) -> None:
        processor = BatchLogRecordProcessor(
            CountingLogExporter(exporter, counts),
            schedule_delay_millis=1000,
            export_timeout_millis=int(self.settings.export_timeout_s * 1000),
        )
        provider.add_log_record_processor(processor)
        self._log_processors.append(processor)

    # -- attach / detach: what %load_ext and %unload_ext switch -------------------------------------

    def attach(self) -> None:
        if self._attached:
            return
        self._attached = True
        self._start_prometheus()
        self._attach_logging()
        self._flusher = threading.Thread(target=self._flush_loop, name="o11ylab-flush", daemon=True)
        self._flusher.start()

    def detach(self) -> None:
        if not self._attached:
            return
        self._attached = False
        self._detach_logging()
        self._stop_prometheus()
        self._flusher = None  # the running one sees it is retired and exits; no need to wait
        self._flush_wanted.set()
        self.flush()

    def _start_prometheus(self) -> None:
        if not self.settings.prometheus_port or not self.owns_meter_provider:
            return
        host, port = self.settings.prometheus_host, self.settings.prometheus_port
        try:
            server = _metrics_server(host, port)
        except OSError as exc:
            self.prometheus_url = None
            self.notes.append(f"/metrics not served: {host}:{port} {exc.strerror or exc}")
            _warn(
                f"/metrics not served: port {port} on {host} is taken ({exc.strerror or exc}). "
                "Set O11YLAB_PROMETHEUS_PORT to a free port; everything else works."
            )
            return
        self._prometheus_server = server
        self.prometheus_url = f"http://{host}:{server.server_port}/metrics"

    def _stop_prometheus(self) -> None:
        server, self._prometheus_server = self._prometheus_server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        self.prometheus_url = None

    def _attach_logging(self) -> None:
        logging.setLogRecordFactory(_correlating_factory(logging.getLogRecordFactory()))
        if not self.owns_logger_provider:
            return
        level = logging.getLevelName(self.settings.log_level)
        self._log_handler = OtelLogHandler(otel_logs.get_logger_provider(), level)
        root = logging.getLogger()
        root.addHandler(self._log_handler)
        if root.level > level or root.level == logging.NOTSET:
            self._root_level = root.level
            root.setLevel(level)

    def _detach_logging(self) -> None:
        factory = logging.getLogRecordFactory()
        previous = getattr(factory, "o11ylab_previous", None)
        if previous is not None:
            logging.setLogRecordFactory(previous)
        root = logging.getLogger()
        if self._log_handler is not None:
            root.removeHandler(self._log_handler)
            self._log_handler = None
        if self._root_level is not None:
            root.setLevel(self._root_level)
            self._root_level = None

    # -- flushing -------------------------------------------------------------------------------

    def request_flush(self) -> None:
        """Ask the background flusher to export now; returns at once."""
        self._flush_wanted.set()

    def _flush_loop(self) -> None:
        me = threading.current_thread()
        while True:
            self._flush_wanted.wait()
            if self._flusher is not me:
                return
            # Cells that follow each other within 50 ms share one export.
            time.sleep(0.05)
            self._flush_wanted.clear()
            if self._flusher is not me:
                return
            self.flush()

    def flush(self) -> None:
        """Export everything queued now; all exporters at once, bounded by the export timeout."""
        if self._shut_down:
            return
        processors: list[BatchSpanProcessor | BatchLogRecordProcessor] = [
            *self._span_processors,
            *self._log_processors,
        ]
        self._in_parallel([p.force_flush for p in processors])

    def _in_parallel(self, calls: list[Callable[[], Any]]) -> None:
        # One slow destination must not hold up the others, and none may hold up the kernel
        # for longer than one export timeout (plus a little for the local file).
        if not calls:
            return
        threads = [
            threading.Thread(target=call, name="o11ylab-export", daemon=True) for call in calls
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + self.settings.export_timeout_s + 0.5
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def flush_metrics(self) -> None:
        for reader in self._metric_readers:
            if isinstance(reader, PeriodicExportingMetricReader):
                reader.force_flush(timeout_millis=self.settings.export_timeout_s * 1000)

    def shutdown(self) -> None:
        """Flush and close every exporter within one export timeout; runs at interpreter exit."""
        if self._shut_down:
            return
        self._attached = False
        self._detach_logging()
        self._stop_prometheus()
        self._flusher = None
        self._flush_wanted.set()  # the flusher sees it is retired and exits
        processors: list[BatchSpanProcessor | BatchLogRecordProcessor] = [
            *self._span_processors,
            *self._log_processors,
        ]
        calls: list[Callable[[], Any]] = [p.shutdown for p in processors]
        provider = metrics.get_meter_provider()
        if self.owns_meter_provider and isinstance(provider, MeterProvider):
            timeout_ms = int(self.settings.export_timeout_s * 1000)
            calls.append(lambda: provider.shutdown(timeout_millis=timeout_ms))
        self._in_parallel(calls)
        self._shut_down = True
        stranded = self.queued()  # still queued when the deadline passed: lost too
        lost = self.lost() + stranded
        if lost:
            _warn(f"{lost} telemetry items could not be exported (see the warnings above).")
        self._write_report(stranded)

    def _write_report(self, stranded: int) -> None:
        """Leave this process's export counts in the run folder, for `o11ylab run`'s summary."""
        if not self.settings.trace_file:
            return
        report = {
            "pid": os.getpid(),
            "notebook": self.settings.notebook_path,
            "exporters": self.status()["exporters"],
            "stranded": stranded,
        }
        try:
            private_folder(self.run_dir)
            write_private(self.run_dir / f"exports.{os.getpid()}.json", json.dumps(report))
        except OSError:
            pass  # the file exporter already said the folder is unusable

    # -- reporting ------------------------------------------------------------------------------

    def prometheus_text(self) -> bytes:
        """This process's metrics in the Prometheus text format, as /metrics serves them."""
        if not self.owns_meter_provider:
            return b"# o11ylab: another meter provider was installed first; no metrics here\n"
        from prometheus_client import REGISTRY, generate_latest

        return bytes(generate_latest(REGISTRY))

    def lost(self) -> int:
        return sum(c.lost for c in self.counts)

    def queued(self) -> int:
        total = 0
        for processor in [*self._span_processors, *self._log_processors]:
            inner = getattr(processor, "_batch_processor", None)
            total += len(getattr(inner, "_queue", ()))
        return total

    def status(self) -> dict[str, Any]:
        """What is configured and what happened; no header, key or token ever appears here."""
        return {
            "service": dict(trace.get_tracer_provider().resource.attributes).get(  # type: ignore[attr-defined]
                "service.name", "?"
            )
            if self.owns_tracer_provider
            else "(your provider)",
            "run_dir": str(self.run_dir) if self.settings.trace_file else None,
            "otlp": {signal: self._otlp_target(signal) for signal in self.settings.otlp_signals},
            "prometheus": self.prometheus_url,
            "exporters": [
                {"name": c.name, "target": c.target, "exported": c.exported, "failed": c.lost}
                for c in self.counts
            ],
            "queued": self.queued(),
            "buffered_spans": len(self.buffer.spans),
            "content_capture": self.settings.capture_content.value,
            "instrumentation": _instrumentation_rows(),
            "openai_default": _openai_default(),
            "prices": _price_data(),
            "notes": list(self.notes),
        }


def _instrumentation_rows() -> list[dict[str, str]]:
    from . import instrumentation

    return instrumentation.status()


def _openai_default() -> str | None:
    from . import local_openai

    url = local_openai.active_url()
    if url is None:
        return None
    return (
        f"OPENAI_BASE_URL={url} (o11ylab's local endpoint, started on the first call; "
        "set OPENAI_API_KEY or OPENAI_BASE_URL before %load_ext to use another)"
    )


def _price_data() -> str | None:
    from . import pricing

    version = getattr(pricing, "data_version", None)
    try:
        return version() if version is not None else None
    except Exception as exc:  # noqa: BLE001 - a broken override file: status still answers
        return f"unavailable ({type(exc).__name__}: {exc})"


def _views() -> list[View]:
    from opentelemetry.sdk.metrics import Histogram
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

    # Second-based histograms get buckets that suit both a 2 ms vector query and a 2 min
    # generation (the SDK's default buckets are meant for milliseconds).
    seconds = [
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1,
        2.5,
        5,
        10,
        30,
        60,
        120,
        300,
    ]
    return [
        View(
            instrument_type=Histogram,
            instrument_unit="s",
            aggregation=ExplicitBucketHistogramAggregation(seconds),
        )
    ]


def _kernel_id() -> str | None:
    try:
        from ipykernel.connect import get_connection_file

        name = Path(get_connection_file()).stem
    except Exception:  # noqa: BLE001 - outside a kernel there is no connection file
        return None
    return name.removeprefix("kernel-") or None


_TELEMETRY: Telemetry | None = None
_LOCK = threading.Lock()


def get_telemetry(settings: Settings | None = None) -> Telemetry:
    """The process's telemetry, built on first use from ``settings`` (default: the environment)."""
    global _TELEMETRY
    if _TELEMETRY is None:
        with _LOCK:
            if _TELEMETRY is None:
                _TELEMETRY = Telemetry(settings or load_settings())
    return _TELEMETRY


def peek_telemetry() -> Telemetry | None:
    """The process's telemetry if something already started it, without starting it."""
    return _TELEMETRY
