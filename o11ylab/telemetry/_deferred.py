"""Instruments whose work on the hot path is a queue append or a sum, and the SDK's at collection.

Right after a call into native code (Chroma's HNSW search in Rust, 1.5 MB of vectors) the CPU's
caches hold that code's data, not the metrics SDK's: one ``Histogram.record`` that takes 12 µs in
a tight loop took 95-105 µs there, 5 % of a 2 ms query, on a span that is not even sampled. A
``deque.append`` of the measurement costs well under a microsecond, cold or warm.

The queue is drained into the real histogram by the callback of an observable instrument, which
the SDK calls at the start of every collection (a periodic export, a Prometheus scrape, a
``force_flush``, the final collection at shutdown), before it reads any instrument. So every
reader sees every measurement made before its collection, on the same instrument, with the same
exemplars (each measurement keeps the context it was made in). The drain records from the
collecting thread, which the SDK allows: a synchronous ``record`` takes no lock that
``collect`` holds while it runs callbacks.

The queue is bounded: a meter whose metrics are never read (the API's no-op, a provider with no
reader) drops its oldest measurements instead of growing. Only a measurement's timestamp moves,
to the time it was drained, which histogram points do not report.

``SummedCounter`` goes further for a counter: it keeps the sums itself, and an observable
counter reports them, so no per-measurement SDK work is left for collection either.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from .._compat import current_context

__all__ = ["DeferredHistogram", "SummedCounter"]

_QUEUE_LIMIT = 65_536  # about 4 MB of pending tuples at most
_SERIES_LIMIT = 2000  # the SDK's default cardinality limit
_OVERFLOW = object()  # the series past the limit (no tuple of values can be it)


class DeferredHistogram:
    """``record`` queues; the meter's next collection records into the real histogram."""

    def __init__(
        self, meter: Meter, name: str, *, unit: str, description: str, limit: int = _QUEUE_LIMIT
    ) -> None:
        self._target = meter.create_histogram(name, unit=unit, description=description).record
        self._pending: deque[tuple[float, Mapping[str, Any], Context]] = deque(maxlen=limit)
        _LIVE.add(self)
        # Never observes anything, so it exports no points: it is only the collection hook.
        # One per meter: a meter hands back the instrument it already has for a name, with the
        # callbacks it was made with, so the callback drains every live queue, not just this.
        meter.create_observable_gauge(
            _HOOK, callbacks=[_drain_all], description="Internal: records queued measurements."
        )

    def record(
        self, value: float, attributes: Mapping[str, Any], context: Context | None = None
    ) -> None:
        """Queue one measurement, made in ``context`` (default: the current one, as ``record``)."""
        self._pending.append((value, attributes, current_context() if context is None else context))

    def drain(self) -> None:
        """Record everything queued now (also what every collection does first)."""
        pending, record = self._pending, self._target
        while pending:
            try:
                value, attributes, context = pending.popleft()
            except IndexError:  # another thread drained the last one
                return
            record(value, attributes, context=context)

    def close(self) -> None:
        """Record what is queued and stop (an instrumentor's ``_uninstrument``)."""
        self.drain()
        _LIVE.discard(self)


class SummedCounter:
    """A counter summed here, per series, and read at collection by an observable counter.

    For o11ylab's cost counter, added on every costed span. ``add`` is one locked dict update;
    the SDK's ``Counter.add`` (attribute set, aggregation, exemplar sampling) cost ~9 us a call
    even when replayed from a queue at collection (bench_call_cpu, issue 13). What it gives up
    is exemplars: an observable instrument has no context to take them from. The official
    instrumentation's duration and token histograms carry exemplars for the same calls.

    A series is the tuple of its attribute values, in the order of ``keys`` (None: absent).
    Past ``limit`` series, further ones are summed into one with ``otel.metric.overflow``, as
    the SDK's own cardinality limit does.
    """

    def __init__(
        self,
        meter: Meter,
        name: str,
        *,
        keys: tuple[str, ...],
        unit: str,
        description: str,
        limit: int = _SERIES_LIMIT,
    ) -> None:
        self._keys = keys
        self._limit = limit
        self._sums: dict[object, float] = {}
        self._lock = threading.Lock()
        meter.create_observable_counter(
            name, callbacks=[self._observe], unit=unit, description=description
        )

    def add(self, amount: float, values: tuple[Any, ...]) -> None:
        """Add ``amount`` to the series of ``values`` (hashable: span attribute values are)."""
        sums = self._sums
        key: object = values
        with self._lock:
            if key not in sums and len(sums) >= self._limit:
                key = _OVERFLOW
            sums[key] = sums.get(key, 0.0) + amount

    def _observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            series = list(self._sums.items())
        for key, total in series:
            if key is _OVERFLOW:
                yield Observation(total, {"otel.metric.overflow": True})
            else:
                values: Any = key
                attributes = {
                    k: v for k, v in zip(self._keys, values, strict=True) if v is not None
                }
                yield Observation(total, attributes)


_HOOK = "o11ylab.instrumentation.deferred"  # the name it has always exported under
_LIVE: weakref.WeakSet[DeferredHistogram] = weakref.WeakSet()


def _drain_all(_options: CallbackOptions) -> Iterable[Observation]:
    for histogram in list(_LIVE):
        histogram.drain()
    return ()
