"""Test helpers for your own tests (and ours): capture what o11ylab records.

    from o11ylab.testing import capture_spans

    def test_embeds_under_one_span():
        with capture_spans() as spans:
            my_pipeline("question")
        assert [s.name for s in spans] == ["embeddings all-MiniLM-L6-v2", "rag"]

The helpers read the providers already in place: the process's global ones (which
``%load_ext o11ylab``, ``o11ylab.init()`` or your own set-up installed), or the ones you pass.
They install nothing themselves; with no SDK provider set they say so. Each captures only
what happens inside its ``with`` block.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

from .errors import O11yLabError

__all__ = ["MetricsCapture", "capture_logs", "capture_metrics", "capture_spans", "span_tree"]

_SET_UP_FIRST = (
    "call o11ylab.init() (or %load_ext o11ylab) first, set your own SDK provider, or pass one"
)


class _SpanTap(SpanProcessor):
    """Hands every ended span to the open ``capture_spans()`` lists of one provider.

    Added once per provider, after the processors already there, so captured spans carry what
    o11ylab's enrichers add (cost, energy), as the exporters see them.
    """

    def __init__(self) -> None:
        self.sinks: list[list[Any]] = []

    def on_end(self, span: ReadableSpan) -> None:
        for sink in self.sinks:
            sink.append(span)


_TAPS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_TAPS_LOCK = threading.Lock()


def _tap(provider: Any, add: str, make: Any) -> Any:
    with _TAPS_LOCK:
        tap = _TAPS.get(provider)
        if tap is None:
            tap = _TAPS[provider] = make()
            getattr(provider, add)(tap)
        return tap


@contextlib.contextmanager
def _tapped(tap: Any) -> Iterator[list[Any]]:
    sink: list[Any] = []
    tap.sinks.append(sink)
    try:
        yield sink
    finally:
        tap.sinks.remove(sink)


def capture_spans(
    tracer_provider: TracerProvider | None = None,
) -> contextlib.AbstractContextManager[list[ReadableSpan]]:
    """Spans that end inside the block, in the order they end.

    ``tracer_provider``: an SDK ``TracerProvider`` (default: the global one).
    """
    provider = tracer_provider or trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        raise O11yLabError(f"capture_spans() needs an SDK TracerProvider: {_SET_UP_FIRST}.")
    return _tapped(_tap(provider, "add_span_processor", _SpanTap))


def capture_logs(logger_provider: Any = None) -> contextlib.AbstractContextManager[list[Any]]:
    """OTel log records emitted inside the block (``record.log_record.body`` and friends).

    ``logger_provider``: an SDK ``LoggerProvider`` (default: the global one).
    """
    from opentelemetry import _logs
    from opentelemetry.sdk._logs import LoggerProvider

    from .telemetry import LogTap

    provider = logger_provider or _logs.get_logger_provider()
    if not isinstance(provider, LoggerProvider):
        raise O11yLabError(f"capture_logs() needs an SDK LoggerProvider: {_SET_UP_FIRST}.")
    return _tapped(_tap(provider, "add_log_record_processor", LogTap))


def _reader(reader: Any) -> Any:
    if reader is not None:
        return reader
    from .telemetry import peek_telemetry

    telemetry = peek_telemetry()
    if telemetry is None or telemetry.memory_reader is None:
        raise O11yLabError(
            "capture_metrics() reads o11ylab's own meter provider: call o11ylab.init() (or "
            "%load_ext o11ylab) first, or pass the InMemoryMetricReader of your own provider."
        )
    return telemetry.memory_reader


def _points(reader: Any) -> dict[tuple[str, frozenset[tuple[str, Any]]], tuple[float, int]]:
    out: dict[tuple[str, frozenset[tuple[str, Any]]], tuple[float, int]] = {}
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    key = (metric.name, frozenset((point.attributes or {}).items()))
                    if hasattr(point, "count"):
                        out[key] = (float(point.sum), int(point.count))
                    else:
                        out[key] = (float(point.value), 1)
    return out


class MetricsCapture:
    """Metric changes since the block began (sums of counters, sums and counts of histograms)."""

    def __init__(self, reader: Any = None) -> None:
        self._reader = _reader(reader)
        self._before = _points(self._reader)

    def _delta(self, name: str, attributes: dict[str, Any]) -> tuple[float, int]:
        total, count = 0.0, 0
        wanted = set(attributes.items())
        for (metric, attrs), (value, n) in _points(self._reader).items():
            if metric != name or not wanted <= attrs:
                continue
            before_value, before_n = self._before.get((metric, attrs), (0.0, 0))
            total += value - before_value
            count += n - before_n
        return total, count

    def sum(self, name: str, **attributes: Any) -> float:
        """Counter increase, or histogram sum, across points whose attributes include these."""
        return self._delta(name, attributes)[0]

    def count(self, name: str, **attributes: Any) -> int:
        """Histogram recordings across points whose attributes include these."""
        return self._delta(name, attributes)[1]

    def names(self) -> set[str]:
        return {metric for metric, _ in _points(self._reader)}


@contextlib.contextmanager
def capture_metrics(reader: Any = None) -> Iterator[MetricsCapture]:
    """Metric changes inside the block; ``reader``: an ``InMemoryMetricReader`` of your own
    meter provider (default: o11ylab's)."""
    yield MetricsCapture(reader)


def span_tree(spans: list[ReadableSpan]) -> list[tuple[int, str]]:
    """(depth, name) in start order: an easy thing to assert a nesting with."""
    from .traceview import span_record, tree_rows

    records = sorted((span_record(s) for s in spans), key=lambda r: r["start_ns"])
    return [(depth, r["name"]) for depth, r in tree_rows(records)]
