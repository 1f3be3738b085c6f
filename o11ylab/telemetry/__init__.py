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

The modules, one job each: ``_processors`` (the span buffer, cell roll-ups, the log tap),
``_counting`` (exporters and batch processors that count), ``_otlpjson`` (the run files'
format, written and read), ``_file_export`` (the run files' writer and exporters),
``_logging`` (the ``logging`` bridge), ``_http`` (the ``/metrics`` server and loopback checks)
and ``_lifecycle`` (``Telemetry`` itself).
"""

from __future__ import annotations

from ..enrichment import set_ended_attributes
from ._counting import (
    CountingBatchSpanProcessor,
    CountingLogExporter,
    CountingMetricExporter,
    CountingSpanExporter,
    ExportCounts,
)
from ._file_export import FileLogExporter, FileMetricExporter, FileSpanExporter, JsonLinesWriter
from ._http import is_loopback, is_loopback_host_header, safe_url
from ._lifecycle import Telemetry, get_telemetry, peek_telemetry
from ._logging import OtelLogHandler
from ._processors import CellRollup, LogTap, Rollup, SpanBuffer

__all__ = [
    "CellRollup",
    "CountingBatchSpanProcessor",
    "CountingLogExporter",
    "CountingMetricExporter",
    "CountingSpanExporter",
    "ExportCounts",
    "FileLogExporter",
    "FileMetricExporter",
    "FileSpanExporter",
    "JsonLinesWriter",
    "LogTap",
    "OtelLogHandler",
    "Rollup",
    "SpanBuffer",
    "Telemetry",
    "get_telemetry",
    "is_loopback",
    "is_loopback_host_header",
    "peek_telemetry",
    "safe_url",
    "set_ended_attributes",
]
