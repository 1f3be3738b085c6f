"""One registry of enrichers: what o11ylab adds to spans, whoever made them.

An enricher has a ``name`` and either or both of::

    def on_start(self, span: Span) -> object | None: ...      # the live span -> its state
    def on_end(self, span: ReadableSpan, state) -> dict[str, Any] | None: ...  # attributes

``on_start`` returns what the enricher needs back at the end (a measurement begun, say), or
None when the span is not its business; the registry keeps that state and hands it to
``on_end``, so no enricher keeps its own table of open spans. An enricher without ``on_start``
gets None. Cost, GPU energy and memory, CPU time (on GenAI spans and on cells) and the key
scrub all come through here, whichever instrumentation made the span.

``on_end`` runs before the cell roll-ups, the span buffer and the exporters see the span, so a
cost or an energy reading put on an ``anthropic`` or ``langchain`` span reaches the cell's
totals and the trace file like one put on an ``openai`` span. Registration is by name and
idempotent; ``register`` returns the remover, and ``unregister(name)`` does the same
(``%unload_ext`` leaves nothing behind).

Enrichers must be cheap and must never raise: one that raises is removed, with one warning,
and the span and the cell carry on. The registry is a ``SpanProcessor`` added first to the
tracer provider o11ylab builds (after the user's own processors when the provider is theirs).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from ._compat import set_ended_attributes
from ._say import say

__all__ = ["Enricher", "Enrichers", "set_ended_attributes"]

# Spans started and never ended (an abandoned generator, a crashed thread) must not grow the
# state table without bound; the oldest state goes first.
_MAX_OPEN_SPANS = 4096


class Enricher(Protocol):
    name: str


StartHook = Callable[[Span], Any]
EndHook = Callable[[ReadableSpan, Any], "dict[str, Any] | None"]


class Enrichers(SpanProcessor):
    """The registry. Reads are lock-free: registration swaps whole tuples."""

    def __init__(self) -> None:
        self._by_name: dict[str, Any] = {}
        self._starts: tuple[tuple[str, StartHook], ...] = ()
        self._ends: tuple[tuple[str, EndHook], ...] = ()
        # span id -> ((enricher name, state), ...) for spans some enricher took an interest in.
        self._open: dict[int, tuple[tuple[str, Any], ...]] = {}
        self._lock = threading.Lock()

    def register(self, enricher: Any) -> Callable[[], None]:
        """Add ``enricher`` (replacing one of the same name); returns what removes it."""
        name = enricher.name
        with self._lock:
            self._by_name[name] = enricher
            self._rebuild()

        def remove() -> None:
            with self._lock:
                if self._by_name.get(name) is enricher:
                    del self._by_name[name]
                    self._rebuild()

        return remove

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
        states: list[tuple[str, Any]] = []
        for name, hook in self._starts:
            try:
                state = hook(span)
            except Exception as exc:  # noqa: BLE001 - an enricher must never break a span or a cell
                self._drop(name, exc)
                continue
            if state is not None:
                states.append((name, state))
        if states:
            opened = self._open
            opened[span.get_span_context().span_id] = tuple(states)
            if len(opened) > _MAX_OPEN_SPANS:
                try:
                    del opened[next(iter(opened))]
                except (StopIteration, KeyError, RuntimeError):  # another thread got there first
                    pass

    def on_end(self, span: ReadableSpan) -> None:
        states: dict[str, Any] = {}
        if self._open and span.context is not None:
            held = self._open.pop(span.context.span_id, None)
            if held:
                states = dict(held)
        added: dict[str, Any] = {}
        for name, hook in self._ends:
            try:
                extra = hook(span, states.get(name))
            except Exception as exc:  # noqa: BLE001 - a broken enricher is dropped, the span still ends
                self._drop(name, exc)
                continue
            if extra:
                added.update(extra)
        if added:  # one pass for every enricher's attributes (cost's and hardware's, say)
            set_ended_attributes(span, added)

    def _drop(self, name: str, exc: Exception) -> None:
        self.unregister(name)
        say(f"the {name} enricher failed and was removed ({type(exc).__name__}: {exc})")
