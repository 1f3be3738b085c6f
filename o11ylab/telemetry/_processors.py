"""Span and log processors that keep things in memory: the recent-span buffer, the cell
roll-ups and the tap that ``o11ylab.testing.capture_logs()`` reads."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LogRecordProcessor
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from .. import semconv
from .._compat import raw_attributes

__all__ = ["CellRollup", "LogTap", "Rollup", "SpanBuffer"]


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
        attributes = raw_attributes(span)
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
    """Hands every log record to its sinks: the explorer's memory of recent records
    (``traceview.remember_logs``) and ``o11ylab.testing.capture_logs()``'s lists."""

    def __init__(self) -> None:
        self.sinks: list[list[Any]] = []

    def on_emit(self, log_record: Any) -> None:
        for sink in self.sinks:
            sink.append(log_record)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
