"""One registry of enrichers: what o11ylab adds to every GenAI span, whoever made the span.

An enricher has a ``name`` and either or both of::

    def on_start(self, span: Span) -> None: ...                    # the live span
    def on_end(self, span: ReadableSpan) -> dict[str, Any] | None: ...  # attributes to add

``on_end`` runs before the cell roll-ups, the span buffer and the exporters see the span, so a
cost or an energy reading put on an ``anthropic`` or ``langchain`` span reaches the cell's
totals and the trace file like one put on an ``openai`` span. Registration is by name and
idempotent; ``unregister`` undoes it (``%unload_ext`` leaves nothing behind).

Enrichers must be cheap and must never raise: one that raises is removed, with one warning,
and the span and the cell carry on. The registry is a ``SpanProcessor`` added first to the
tracer provider o11ylab builds (after the user's own processors when the provider is theirs).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, Protocol

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from ._compat import set_ended_attributes

__all__ = ["Enricher", "Enrichers", "set_ended_attributes"]


class Enricher(Protocol):
    name: str


StartHook = Callable[[Span], None]
EndHook = Callable[[ReadableSpan], "dict[str, Any] | None"]


class Enrichers(SpanProcessor):
    """The registry. Reads are lock-free: registration swaps whole tuples."""

    def __init__(self) -> None:
        self._by_name: dict[str, Any] = {}
        self._starts: tuple[tuple[str, StartHook], ...] = ()
        self._ends: tuple[tuple[str, EndHook], ...] = ()
        self._lock = threading.Lock()

    def register(self, enricher: Any) -> None:
        """Add ``enricher`` (replacing one of the same name)."""
        with self._lock:
            self._by_name[enricher.name] = enricher
            self._rebuild()

    def unregister(self, name: str) -> None:
        with self._lock:
            if self._by_name.pop(name, None) is not None:
                self._rebuild()

    def get(self, name: str) -> Any:
        return self._by_name.get(name)

    def names(self) -> list[str]:
        return list(self._by_name)

    def _rebuild(self) -> None:
        enrichers = list(self._by_name.items())
        self._starts = tuple((n, e.on_start) for n, e in enrichers if hasattr(e, "on_start"))
        self._ends = tuple((n, e.on_end) for n, e in enrichers if hasattr(e, "on_end"))

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for name, hook in self._starts:
            try:
                hook(span)
            except Exception as exc:  # noqa: BLE001 - an enricher must never break a span or a cell
                self._drop(name, exc)

    def on_end(self, span: ReadableSpan) -> None:
        for name, hook in self._ends:
            try:
                extra = hook(span)
            except Exception as exc:  # noqa: BLE001 - a broken enricher is dropped, the span still ends
                self._drop(name, exc)
                continue
            if extra:
                set_ended_attributes(span, extra)

    def _drop(self, name: str, exc: Exception) -> None:
        self.unregister(name)
        print(
            f"o11ylab: the {name} enricher failed and was removed ({type(exc).__name__}: {exc})",
            file=sys.stderr,
        )
