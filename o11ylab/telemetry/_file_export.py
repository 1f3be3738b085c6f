"""The local run files: one atomic append per export batch, and the file exporters.

Each process writes its own file per signal (``traces.<pid>.jsonl``) in the run folder, in
the OTLP-JSON lines format of ``_otlpjson``.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from google.protobuf.message import Message
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .._files import PRIVATE_FILE, private_folder
from ._otlpjson import to_json_line

__all__ = ["FileLogExporter", "FileMetricExporter", "FileSpanExporter", "JsonLinesWriter"]


class JsonLinesWriter:
    """Appends whole lines to one file; a failing disk is reported once and counted, not raised.

    "Once" is per folder: the traces, metrics and logs files of a run share one warning.
    """

    _warned_folders: ClassVar[set[Path]] = set()

    def __init__(self, path: Path) -> None:
        self.path = path
        self.failures = 0
        self._lock = threading.Lock()

    def write(self, message: Message) -> bool:
        data = to_json_line(message)
        with self._lock:
            try:
                private_folder(self.path.parent)
                # One os.write of the whole line on an O_APPEND descriptor: a full disk leaves
                # at worst a truncated last line, never a corrupt earlier one. 0600: with content
                # capture on, the lines hold prompts and completions.
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE)
                try:
                    written = os.write(fd, data)
                finally:
                    os.close(fd)
                if written != len(data):
                    raise OSError(f"short write ({written} of {len(data)} bytes)")
                return True
            except OSError as exc:
                self.failures += 1
                if self.path.parent not in self._warned_folders:
                    self._warned_folders.add(self.path.parent)
                    print(
                        f"o11ylab: cannot write telemetry to {self.path} ({exc.strerror or exc}); "
                        "the other exporters keep working. Free space or set O11YLAB_RUNS_DIR.",
                        file=sys.stderr,
                    )
                return False


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
