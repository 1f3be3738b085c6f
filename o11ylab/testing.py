"""Test helpers for your own tests (and ours): capture what o11ylab records.

    from o11ylab.testing import capture_spans

    def test_embeds_under_one_span():
        with capture_spans() as spans:
            my_pipeline("question")
        assert [s.name for s in spans] == ["embeddings all-MiniLM-L6-v2", "rag"]

Each helper starts o11ylab's telemetry if nothing has (from the environment; set
``O11YLAB_TRACE_FILE=0`` to keep tests from writing run files) and captures only what
happens inside the ``with`` block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from .telemetry import get_telemetry

__all__ = ["MetricsCapture", "capture_logs", "capture_metrics", "capture_spans", "span_tree"]


@contextlib.contextmanager
def _tapped(sinks: list[list[Any]]) -> Iterator[list[Any]]:
    sink: list[Any] = []
    sinks.append(sink)
    try:
        yield sink
    finally:
        sinks.remove(sink)


def capture_spans() -> contextlib.AbstractContextManager[list[ReadableSpan]]:
    """Spans that end inside the block, in the order they end."""
    return _tapped(get_telemetry().buffer.sinks)


def capture_logs() -> contextlib.AbstractContextManager[list[Any]]:
    """OTel log records emitted inside the block (``record.log_record.body`` and friends)."""
    return _tapped(get_telemetry().log_tap.sinks)


def _points(telemetry: Any) -> dict[tuple[str, frozenset[tuple[str, Any]]], tuple[float, int]]:
    reader = telemetry.memory_reader
    if reader is None:
        raise RuntimeError(
            "capture_metrics() needs o11ylab's own meter provider; another one was set first."
        )
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

    def __init__(self) -> None:
        self._telemetry = get_telemetry()
        self._before = _points(self._telemetry)

    def _delta(self, name: str, attributes: dict[str, Any]) -> tuple[float, int]:
        total, count = 0.0, 0
        wanted = set(attributes.items())
        for (metric, attrs), (value, n) in _points(self._telemetry).items():
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
        return {metric for metric, _ in _points(self._telemetry)}


@contextlib.contextmanager
def capture_metrics() -> Iterator[MetricsCapture]:
    yield MetricsCapture()


def span_tree(spans: list[ReadableSpan]) -> list[tuple[int, str]]:
    """(depth, name) in start order: an easy thing to assert a nesting with."""
    from .traceview import TraceView, span_record

    return [(depth, r["name"]) for depth, r in TraceView([span_record(s) for s in spans])._rows()]
