"""The per-process ``Telemetry``: providers and exporters built once, the parts ``%load_ext``
attaches and detaches, flushing, shutdown and the status report."""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from opentelemetry import _logs as otel_logs
from opentelemetry import metrics, trace
from opentelemetry._logs._internal import ProxyLoggerProvider
from opentelemetry.metrics._internal import _ProxyMeterProvider
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk._logs.export import LogRecordExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.view import View

from .. import semconv
from .._compat import share_metric_storage
from .._files import private_folder, write_private
from .._version import __version__
from ..config import Settings, load_settings, load_telemetry
from ..enrichment import Enrichers
from ._counting import (
    CountingBatchLogRecordProcessor,
    CountingBatchSpanProcessor,
    CountingLogExporter,
    CountingMetricExporter,
    CountingSpanExporter,
    ExportCounts,
    warn,
)
from ._deferred import DeferredHistogram
from ._file_export import (
    FileLogExporter,
    FileMetricExporter,
    FileSpanExporter,
    JsonLinesWriter,
    LocalLogRecordProcessor,
    LocalSpanProcessor,
)
from ._http import metrics_server, safe_url
from ._logging import OtelLogHandler, correlating_factory
from ._processors import CellRollup, LogTap, SpanBuffer

__all__ = ["Telemetry", "get_telemetry", "peek_telemetry"]


class _Exporting(Protocol):
    """A span or log processor that exports (local or remote), as ``Telemetry`` drives it."""

    def force_flush(self, timeout_millis: int = 30000) -> bool: ...

    def shutdown(self) -> None: ...

    def queued(self) -> int: ...


class Telemetry:
    """Providers, exporters and attachable parts for this process. See the module docstring."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.extras = load_telemetry()
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
        # Span and log processors that export: flushed together, shut down together.
        self._exporting: list[_Exporting] = []
        self._metric_readers: list[MetricReader] = []
        self._shared_readers: list[MetricReader] = []  # not on the provider: shut down here
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
        specific = self.extras.otlp_signal_endpoints.get(signal)
        if specific:
            return safe_url(specific)
        base = self.extras.otlp_endpoint
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

    def _span_processor(self, exporter: SpanExporter, counts: ExportCounts) -> SpanProcessor:
        processor: SpanProcessor
        if isinstance(exporter, FileSpanExporter):
            # The run file never drops: see LocalBatcher.
            processor = LocalSpanProcessor(CountingSpanExporter(exporter, counts))
        else:
            processor = CountingBatchSpanProcessor(
                CountingSpanExporter(exporter, counts),
                schedule_delay_millis=1000,
                export_timeout_millis=int(self.settings.export_timeout_s * 1000),
            )
        self._exporting.append(processor)
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
            # The in-memory reader is the one storage that aggregates every measurement; the run
            # file's and the Prometheus readers collect from it (share_metric_storage), as all
            # three want cumulative points. One storage per reader made each point cost ~11 µs
            # more per extra reader (issue 13). The OTLP reader keeps its own: its temporality
            # is the user's choice (OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE).
            self.memory_reader = InMemoryMetricReader()
            registered: list[MetricReader] = [self.memory_reader]
            shared: list[MetricReader] = []
            if settings.trace_file:
                writer = JsonLinesWriter(self.run_dir / f"metrics.{pid}.jsonl")
                counts = self._counted("file metrics", str(writer.path))
                shared.append(
                    PeriodicExportingMetricReader(
                        CountingMetricExporter(FileMetricExporter(writer), counts),
                        export_interval_millis=interval,
                        export_timeout_millis=settings.export_timeout_s * 1000,
                    )
                )
            if "metrics" in settings.otlp_signals:
                counts = self._counted("OTLP metrics", self._otlp_target("metrics"))
                registered.append(
                    PeriodicExportingMetricReader(
                        CountingMetricExporter(self._otlp_exporter("metrics"), counts),
                        export_interval_millis=interval,
                        export_timeout_millis=settings.export_timeout_s * 1000,
                    )
                )
            # Always there (reading the shared storage, it costs nothing until scraped), so
            # prometheus_text() works in a process that serves /metrics its own way; the HTTP
            # server is what the port decides.
            from opentelemetry.exporter.prometheus import PrometheusMetricReader

            shared.append(PrometheusMetricReader())
            self._metric_readers = registered + shared
            self._shared_readers = shared
            metrics.set_meter_provider(
                MeterProvider(
                    resource=resource,
                    metric_readers=registered,
                    views=_views(),
                    shutdown_on_exit=False,
                )
            )
            for reader in shared:
                share_metric_storage(self.memory_reader, reader)
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
        # Queued per cell and recorded when metrics are read (see _deferred): a record in
        # post_run_cell cost 10-25 µs of a traced cell's ~120.
        self._cell_duration = DeferredHistogram(
            self.meter,
            semconv.METRIC_CELL_DURATION,
            unit="s",
            description="Duration of traced cells.",
        )
        atexit.register(self.shutdown)

    _OK: ClassVar[dict[str, str]] = {semconv.STATUS: "ok"}
    _ERROR: ClassVar[dict[str, str]] = {semconv.STATUS: "error"}

    def record_cell(self, duration_s: float, failed: bool) -> None:
        attributes = self._ERROR if failed else self._OK
        # One histogram, no separate counter: its count is the number of cells by status
        # (o11ylab_cell_duration_seconds_count), as HTTP's request.duration is its request
        # count; the counter repeated it for 12 µs of process CPU a cell.
        self._cell_duration.record(duration_s, attributes)

    def _add_log_processor(
        self, provider: LoggerProvider, exporter: LogRecordExporter, counts: ExportCounts
    ) -> None:
        processor: LogRecordProcessor
        if isinstance(exporter, FileLogExporter):
            processor = LocalLogRecordProcessor(CountingLogExporter(exporter, counts))
        else:
            processor = CountingBatchLogRecordProcessor(
                CountingLogExporter(exporter, counts),
                schedule_delay_millis=1000,
                export_timeout_millis=int(self.settings.export_timeout_s * 1000),
            )
        provider.add_log_record_processor(processor)
        self._exporting.append(processor)

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
            server = metrics_server(host, port)
        except OSError as exc:
            self.prometheus_url = None
            self.notes.append(f"/metrics not served: {host}:{port} {exc.strerror or exc}")
            warn(
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
        logging.setLogRecordFactory(correlating_factory(logging.getLogRecordFactory()))
        if not self.owns_logger_provider:
            return
        level = logging.getLevelName(self.settings.log_level)
        library_level = logging.getLevelName(self.extras.library_log_level)
        root = logging.getLogger()
        lowest = min(level, library_level)
        lowered = root.level > lowest or root.level == logging.NOTSET
        # What a library logger showed before: records below the root's old level were never
        # made, so the handler may keep them unmade (see OtelLogHandler).
        quiet_below = min(root.level, library_level) if lowered and root.level else None
        self._log_handler = OtelLogHandler(
            otel_logs.get_logger_provider(), level, library_level, quiet_below
        )
        root.addHandler(self._log_handler)
        if lowered:
            self._root_level = root.level
            root.setLevel(lowest)

    def _detach_logging(self) -> None:
        factory = logging.getLogRecordFactory()
        previous = getattr(factory, "o11ylab_previous", None)
        if previous is not None:
            logging.setLogRecordFactory(previous)
        root = logging.getLogger()
        if self._log_handler is not None:
            root.removeHandler(self._log_handler)
            self._log_handler.restore_library_levels()
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
        self._in_parallel([p.force_flush for p in self._exporting])

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
        calls: list[Callable[[], Any]] = [p.shutdown for p in self._exporting]
        provider = metrics.get_meter_provider()
        if self.owns_meter_provider and isinstance(provider, MeterProvider):
            timeout_ms = int(self.settings.export_timeout_s * 1000)
            shared = list(self._shared_readers)

            def close_metrics() -> None:
                # The shared readers' last export reads the provider's storage: before it closes.
                for reader in shared:
                    try:
                        reader.shutdown(timeout_millis=timeout_ms)
                    except Exception:  # noqa: BLE001 - one reader failing must not stop the rest
                        pass
                provider.shutdown(timeout_millis=timeout_ms)

            calls.append(close_metrics)
        self._in_parallel(calls)
        self._shut_down = True
        stranded = self.queued()  # still queued when the deadline passed: lost too
        lost = self.lost() + stranded
        if lost:
            warn(f"{lost} telemetry items could not be exported (see the warnings above).")
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
        return sum(p.queued() for p in self._exporting)

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
                {
                    "name": c.name,
                    "target": c.target,
                    "exported": c.exported,
                    "failed": c.lost,  # the run summary adds these up as lost
                    "dropped": c.dropped(),  # of them, never exported: a full queue
                }
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
    from .. import instrumentation

    return instrumentation.status()


def _openai_default() -> str | None:
    from .. import local_openai

    url = local_openai.active_url()
    if url is None:
        return None
    return (
        f"OPENAI_BASE_URL={url} (o11ylab's local endpoint, started on the first call; "
        "set OPENAI_API_KEY or OPENAI_BASE_URL before %load_ext to use another)"
    )


def _price_data() -> str | None:
    from .. import pricing

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
