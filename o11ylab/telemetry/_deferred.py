"""Instruments whose measurements are queued on the hot path and recorded when metrics are read.

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
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.context import Context, get_current
from opentelemetry.metrics import CallbackOptions, Meter, Observation

__all__ = ["DeferredCounter", "DeferredHistogram"]

_QUEUE_LIMIT = 65_536  # about 4 MB of pending tuples at most


class DeferredHistogram:
    """``record`` queues; the meter's next collection records into the real histogram."""

    def __init__(
        self, meter: Meter, name: str, *, unit: str, description: str, limit: int = _QUEUE_LIMIT
    ) -> None:
        self._target = self._create(meter, name, unit, description)
        self._pending: deque[tuple[float, Mapping[str, Any], Context]] = deque(maxlen=limit)
        _LIVE.add(self)
        # Never observes anything, so it exports no points: it is only the collection hook.
        # One per meter: a meter hands back the instrument it already has for a name, with the
        # callbacks it was made with, so the callback drains every live queue, not just this.
        meter.create_observable_gauge(
            _HOOK, callbacks=[_drain_all], description="Internal: records queued measurements."
        )

    def _create(self, meter: Meter, name: str, unit: str, description: str) -> Any:
        histogram = meter.create_histogram(name, unit=unit, description=description)
        return histogram.record

    def record(
        self, value: float, attributes: Mapping[str, Any], context: Context | None = None
    ) -> None:
        """Queue one measurement, made in ``context`` (default: the current one, as ``record``)."""
        self._pending.append((value, attributes, get_current() if context is None else context))

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


class DeferredCounter(DeferredHistogram):
    """``add`` queues; the meter's next collection adds to the real counter."""

    def _create(self, meter: Meter, name: str, unit: str, description: str) -> Any:
        return meter.create_counter(name, unit=unit, description=description).add

    def add(
        self, amount: float, attributes: Mapping[str, Any], context: Context | None = None
    ) -> None:
        """Queue one increment, made in ``context`` (default: the current one, as ``add``)."""
        self._pending.append((amount, attributes, get_current() if context is None else context))


_HOOK = "o11ylab.instrumentation.deferred"  # the name it has always exported under
_LIVE: weakref.WeakSet[DeferredHistogram] = weakref.WeakSet()


def _drain_all(_options: CallbackOptions) -> Iterable[Observation]:
    for histogram in list(_LIVE):
        histogram.drain()
    return ()
