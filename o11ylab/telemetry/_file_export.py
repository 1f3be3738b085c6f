"""The local run files: one atomic append per export batch, the file exporters, and the
batch processors that feed them without ever dropping.

Each process writes its own file per signal (``traces.<pid>.jsonl``) in the run folder, in
the OTLP-JSON lines format of ``_otlpjson``.

The SDK's batch processors drop what does not fit their queue (2,048 items): right for a
remote collector, which may be slow or gone, but the run file is the record of what a cell
did. A burst of 20,000 spans in one cell lost 14,880 of them that way. ``LocalBatcher`` queues
at most ``max_queue`` items too, but when the queue is full the thread that ends the span
writes a batch itself (backpressure) instead of dropping: memory stays bounded by the queue
and the file gets every span. A disk is fast and local, so the producer waits for a write,
never for a network.
"""

from __future__ import annotations

import copy
import os
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from google.protobuf.message import Message
from opentelemetry.context import (
    _SUPPRESS_INSTRUMENTATION_KEY,
    Context,
    attach,
    detach,
    set_value,
)
from opentelemetry.sdk._logs import LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .._files import PRIVATE_FILE, private_folder
from ._otlpjson import encode_spans_line, to_json_line

__all__ = [
    "FileLogExporter",
    "FileMetricExporter",
    "FileSpanExporter",
    "JsonLinesWriter",
    "LocalBatcher",
    "LocalLogRecordProcessor",
    "LocalSpanProcessor",
]

T = TypeVar("T")


class JsonLinesWriter:
    """Appends whole lines to one file; a failing disk is reported once and counted, not raised.

    "Once" is per folder: the traces, metrics and logs files of a run share one warning.
    """

    _warned_folders: ClassVar[set[Path]] = set()

    def __init__(self, path: Path) -> None:
        self.path = path
        self.failures = 0
        self._lock = threading.Lock()

    def write(self, message: Message | bytes) -> bool:
        """Append one export request: a protobuf message, or a line already encoded."""
        data = message if isinstance(message, bytes) else to_json_line(message)
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
        ok = self.writer.write(encode_spans_line(spans))  # straight to JSON: see _otlpjson
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


# --- batching that never drops ----------------------------------------------------------------


class LocalBatcher(Generic[T]):
    """Items in batches to a local exporter, written in the background, never dropped.

    A worker thread writes what waits every ``delay_s``, or as soon as a batch is full. When
    ``max_queue`` items wait (they come faster than the worker writes), ``add`` writes a batch
    in the caller's thread before it returns: the queue never holds more than ``max_queue``
    plus one item per producing thread.
    """

    def __init__(
        self,
        export: Callable[[list[T]], object],
        name: str,
        max_queue: int = 2048,
        batch: int = 512,
        delay_s: float = 1.0,
    ) -> None:
        self._export = export
        self._max_queue = max_queue
        self._batch = batch
        self._delay_s = delay_s
        self._items: list[T] = []
        self._lock = threading.Lock()  # guards _items
        self._writing = threading.Lock()  # one export at a time: the exporters are not reentrant
        self._wake = threading.Event()
        self._closed = False
        self._local = threading.local()  # .exporting: this thread is inside an export
        self._name = name
        self._start_worker()
        # A forked child (multiprocessing's fork start method) has none of the parent's
        # threads and may inherit a held lock: it starts afresh, and the parent writes what
        # was queued before the fork.
        reinit = weakref.WeakMethod(self._after_fork)
        os.register_at_fork(after_in_child=lambda: (method := reinit()) and method())

    def _start_worker(self) -> None:
        self._worker = threading.Thread(
            target=self._work, name=f"o11ylab-{self._name}", daemon=True
        )
        self._worker.start()

    def _after_fork(self) -> None:
        self._items = []
        self._lock = threading.Lock()
        self._writing = threading.Lock()
        self._wake = threading.Event()
        self._local = threading.local()
        if not self._closed:
            self._start_worker()

    def add(self, item: T) -> None:
        with self._lock:
            if self._closed:
                return  # after shutdown, as the SDK's processors do
            self._items.append(item)
            waiting = len(self._items)
        if waiting >= self._max_queue and not getattr(self._local, "exporting", False):
            self._write(until=self._max_queue - self._batch)  # backpressure, not a drop
        elif waiting >= self._batch:
            self._wake.set()

    def queued(self) -> int:
        return len(self._items)

    def _work(self) -> None:
        while not self._closed:
            self._wake.wait(self._delay_s)
            self._wake.clear()
            if not self._closed:
                self._write(until=0)

    def _write(self, until: int) -> None:
        with self._writing:
            while True:
                with self._lock:
                    if len(self._items) <= until or not self._items:
                        return
                    batch = self._items[: self._batch]
                    del self._items[: self._batch]
                # The exporter's own work (a failed write's warning) must not make telemetry.
                token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
                self._local.exporting = True  # a span ended inside the export only queues
                try:
                    self._export(batch)
                except Exception:  # noqa: BLE001 - the counting exporter counted it
                    pass
                finally:
                    self._local.exporting = False
                    detach(token)

    def flush(self) -> bool:
        self._write(until=0)
        return True

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
        self._wake.set()
        self._write(until=0)


class LocalSpanProcessor(SpanProcessor):
    """Ended spans to a local exporter through a ``LocalBatcher``: none dropped."""

    def __init__(self, exporter: SpanExporter, **options: Any) -> None:
        self.exporter = exporter
        self._batcher: LocalBatcher[ReadableSpan] = LocalBatcher(
            exporter.export, "file-spans", **options
        )

    def on_end(self, span: ReadableSpan) -> None:
        if span.context and span.context.trace_flags.sampled:
            self._batcher.add(span)

    def queued(self) -> int:
        return self._batcher.queued()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._batcher.flush()

    def shutdown(self) -> None:
        self._batcher.shutdown()
        self.exporter.shutdown()


class LocalLogRecordProcessor(LogRecordProcessor):
    """Log records to a local exporter through a ``LocalBatcher``: none dropped."""

    def __init__(self, exporter: LogRecordExporter, **options: Any) -> None:
        self.exporter = exporter
        self._batcher: LocalBatcher[ReadableLogRecord] = LocalBatcher(
            exporter.export, "file-logs", **options
        )

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        # As the SDK's BatchLogRecordProcessor does: a readable copy that holds no context.
        record = copy.copy(log_record.log_record)
        record.context = Context()
        self._batcher.add(
            ReadableLogRecord(
                log_record=record,
                resource=log_record.resource or Resource.create({}),
                instrumentation_scope=log_record.instrumentation_scope,
                limits=log_record.limits,
            )
        )

    def queued(self) -> int:
        return self._batcher.queued()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._batcher.flush()

    def shutdown(self) -> None:
        self._batcher.shutdown()
        self.exporter.shutdown()
