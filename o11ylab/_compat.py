"""Every place o11ylab leans on another library's internals, in one module.

Each is here because the library has no public way to do what o11ylab needs; each has a test in
``tests/test_compat.py`` run against the installed version, whose failure names the library
and the version that changed. When a library grows a public way, the function here changes and
its callers do not.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.attributes import BoundedAttributes
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import Status

# Also OPENAI_CLIENT_MODULE and OPENAI_SEND_METHODS (not listed: names in quotes with those
# prefixes read as environment variables to tests/test_settings_documented.py).
__all__ = [
    "batch_closed",
    "batch_export_lock",
    "batch_queued",
    "batch_worker",
    "chroma_dimension_mismatch",
    "chroma_embedding_conflict",
    "chroma_rejects_name",
    "current_context",
    "exporter_preferences",
    "raw_attributes",
    "set_ended_attributes",
    "set_ended_status",
    "share_metric_storage",
    "span_in",
    "w3c_headers",
]


# --- opentelemetry-sdk: enriching a span someone else created ------------------------------------


def raw_attributes(holder: Any) -> Mapping[str, Any]:
    """The attributes of a span (or event, link) as the plain dict the SDK keeps, to read.

    ``span.attributes`` is a mappingproxy over the SDK's ``BoundedAttributes``, a Python
    ``MutableMapping``: each ``get`` runs ``Mapping.get`` and ``__getitem__`` in Python, and
    iterating ``items()`` two frames per attribute. The enrichers, roll-ups and run-file
    encoder read every GenAI span's ~20 attributes: through the dict, ~100 fewer Python calls
    a chat call (issue 13). Only for reading; other holders get their public mapping.
    """
    bounded = getattr(holder, "_attributes", None)
    if bounded is None:
        return holder.attributes or {}
    raw = getattr(bounded, "_dict", None)
    return raw if isinstance(raw, dict) else bounded


_PLAIN = frozenset((str, bool, int, float))


def _stored_as_they_are(target: Any, attributes: dict[str, Any]) -> bool:
    """Store plain values straight into a ``BoundedAttributes``' dict when the SDK's cleaning
    would store them unchanged: no value length limit, room for all, str keys, plain values.

    The enrichers' and the cells' numbers and names always are. The cleaning pass runs in
    Python per value; on every GenAI span and cell it cost ~5 µs (issue 13). False: nothing
    was stored, the caller goes the SDK's way.
    """
    raw = getattr(target, "_dict", None)
    maxlen = getattr(target, "maxlen", 0)
    if (
        type(raw) is not dict
        or getattr(target, "max_value_len", 0) is not None
        or (maxlen is not None and len(raw) + len(attributes) > maxlen)
    ):
        return False
    for key, value in attributes.items():
        if type(value) not in _PLAIN or type(key) is not str or not key:
            return False
    with target._lock:
        raw.update(attributes)
    return True


def set_attributes(span: Any, attributes: dict[str, Any]) -> None:
    """``span.set_attributes(attributes)`` for a span still open, by the short way of
    ``_stored_as_they_are`` where it is the SDK's own span."""
    target = getattr(span, "_attributes", None)
    if (
        target is None
        or getattr(span, "_end_time", True) is not None
        or not _stored_as_they_are(target, attributes)
    ):
        span.set_attributes(attributes)  # anyone's span, or an ended one (the SDK warns)


def set_ended_attributes(span: ReadableSpan, attributes: dict[str, Any]) -> None:
    """Add attributes to a span during a processor's ``on_end``.

    The SDK hands processors a ReadableSpan sharing the span's attribute map, frozen at
    ``end()``. Unfreezing it for the duration of this call is the only way to enrich a span
    someone else created (the SDK has no public hook); attribute limits still apply.
    """
    # Declared a Mapping; the SDK's spans hold a BoundedAttributes (with its _immutable flag).
    target: BoundedAttributes | None = span._attributes  # type: ignore[assignment]
    if target is None or _stored_as_they_are(target, attributes):
        return
    frozen = getattr(target, "_immutable", False)
    try:
        target._immutable = False
        # One cleaning pass and one lock for all of them: the cost enricher's 8 attributes took
        # 5.2 µs set one by one, 3.7 µs this way (issue 13: it runs on every GenAI span).
        target._set_items(attributes)
    finally:
        target._immutable = frozen


def set_ended_status(span: ReadableSpan, status: Status) -> None:
    """Replace an ended span's status (to scrub a key a server echoed into its description)."""
    span._status = status


# --- opentelemetry-api: the current context and the W3C headers, without the API's frames ------
#
# On every chat call the openai_http instrumentor reads the current span and writes traceparent.
# Through the API (``propagate.inject``: the composite propagator, ``get_current_span``,
# ``get_value``, ``get_current``, the span context's properties, the baggage propagator) that is
# ~20 Python calls, each ~1 us right after the SDK's own work has left the caches cold: a direct
# read and one f-string measured 15-22 us a call less in place (bench_call_cpu, issue 13).


def _context_var() -> ContextVar[Any] | None:
    from opentelemetry import context

    runtime = getattr(context, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    return var if type(var) is ContextVar else None


def _current_by_api() -> Any:
    from opentelemetry.context import get_current

    return get_current()


_CURRENT = _context_var()
# ``opentelemetry.context.get_current``: the ContextVar's own C ``get`` where the API keeps the
# context in one (its default runtime context), else the API's function.
current_context: Callable[[], Any] = _CURRENT.get if _CURRENT is not None else _current_by_api


def _keys() -> tuple[Any, Any, Any, bool]:
    from opentelemetry import baggage, trace
    from opentelemetry.trace import propagation
    from opentelemetry.trace.span import TraceFlags, TraceState

    span_key = getattr(propagation, "_SPAN_KEY", None)
    baggage_key = getattr(baggage, "_BAGGAGE_KEY", None)
    # A SpanContext is a tuple of (trace_id, span_id, is_remote, trace_flags, trace_state,
    # is_valid); unpacking it costs no property call.
    state = TraceState([("k", "v")])
    probe = trace.SpanContext(1, 2, True, TraceFlags(1), state)
    unpacks = isinstance(probe, tuple) and tuple(probe) == (1, 2, True, 1, state, True)
    direct = bool(span_key and baggage_key and unpacks)
    return span_key, baggage_key, trace.INVALID_SPAN_CONTEXT, direct


_SPAN_KEY, _BAGGAGE_KEY, _INVALID, _DIRECT = _keys()
_PROPAGATE: Any = None  # opentelemetry.propagate, imported at the first request (~20 ms)
_CHECKED: list[Any] = [None, False]  # the global propagator last looked at, and its verdict


def _w3c_pair(propagator: Any) -> bool:
    """Whether ``propagator`` is the API's default: a composite of exactly the W3C trace-context
    and baggage propagators (OTEL_PROPAGATORS unset, or ``tracecontext,baggage``)."""
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    inner = getattr(propagator, "_propagators", None)
    return (
        _DIRECT
        and type(propagator) is CompositePropagator
        and isinstance(inner, (list, tuple))
        and [type(p) for p in inner] == [TraceContextTextMapPropagator, W3CBaggagePropagator]
    )


def span_in(context: Any) -> Any:
    """``trace.get_current_span(context)``, or None where it would be the invalid span."""
    if _DIRECT:
        return context.get(_SPAN_KEY)
    from opentelemetry import trace

    span = trace.get_current_span(context)
    return None if span is trace.INVALID_SPAN else span


def w3c_headers(context: Any, headers: Any) -> Any:
    """``propagate.inject(headers, context)``, and the context's span (or None) back.

    With the API's default propagator and no baggage, ``traceparent`` (and ``tracestate``) are
    written here as the W3C propagator writes them; any other propagator, or baggage, goes
    through ``inject``. ``propagate._HTTP_TEXT_FORMAT`` is what ``get_global_textmap()`` returns.
    """
    global _PROPAGATE
    propagate = _PROPAGATE
    if propagate is None:
        from opentelemetry import propagate

        _PROPAGATE = propagate
    propagator = propagate.__dict__.get("_HTTP_TEXT_FORMAT") or propagate.get_global_textmap()
    if propagator is not _CHECKED[0]:
        _CHECKED[:] = [propagator, _w3c_pair(propagator)]
    if not _CHECKED[1] or context.get(_BAGGAGE_KEY):
        propagate.inject(headers, context)
        return span_in(context)
    span = context.get(_SPAN_KEY)
    if span is not None:
        span_context = span.get_span_context()
        if span_context != _INVALID:  # the W3C propagator's own test
            trace_id, span_id, _remote, flags, state, _valid = span_context
            headers["traceparent"] = f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"
            if state:
                headers["tracestate"] = state.to_header()
    return span


# --- opentelemetry-sdk: what a batch processor's queue holds and dropped ------------------------


def batch_worker(processor: Any) -> Any:
    """The worker a ``BatchSpanProcessor`` / ``BatchLogRecordProcessor`` delegates to (1.45: one
    ``BatchProcessor`` class for both, with the queue, the export lock and the shutdown flag)."""
    return processor._batch_processor


def batch_closed(worker: Any) -> bool:
    """Whether the worker was shut down: the SDK queues nothing after that."""
    return bool(worker._shutdown)


def batch_queued(worker: Any) -> int:
    return len(worker._queue)


def batch_export_lock(worker: Any) -> Any:
    """Held while items move from the queue to the exporter: totals agree while it is held."""
    return worker._export_lock


def exporter_preferences(exporter: Any) -> tuple[Any, Any]:
    """A metric exporter's preferred temporality and aggregation, to wrap it without changing
    what it asks for (the SDK keeps them private)."""
    return exporter._preferred_temporality, exporter._preferred_aggregation


# --- opentelemetry-sdk: several metric readers over one aggregation ------------------------------


def share_metric_storage(hub: MetricReader, reader: MetricReader) -> None:
    """Make ``reader`` collect what ``hub`` (registered on a MeterProvider) has aggregated.

    Each reader registered on a MeterProvider aggregates every measurement in its own storage:
    with the in-memory, the run file's and the Prometheus readers, a histogram point cost 25 µs
    instead of 14 µs with one (issue 13's benchmark: ~40 µs per chat call, 4 points). Readers that
    want the same temporality and aggregation can read one storage instead; ``reader`` must not
    be registered on a provider itself. The SDK has no public way: a reader collects through the
    callback the provider sets on registration (``_set_collect_callback``), and the hub's
    callback is ``_collect``.
    """
    collect: Any = hub._collect  # typed in the SDK as another callback than it holds
    if collect is None:
        raise RuntimeError("the hub reader is not registered on a MeterProvider")

    def collect_from_hub(_reader: MetricReader, timeout_millis: float = 10_000) -> Any:
        return collect(hub, timeout_millis=timeout_millis)

    reader._set_collect_callback(collect_from_hub)


# --- openai: the one method every request goes through -------------------------------------------

OPENAI_CLIENT_MODULE = "openai._base_client"
# Every SDK request, retries included, passes through these (openai 1.x to 3.x); wrapping them
# gives trace context on the wire and the HTTP status and retry count on the GenAI span.
OPENAI_SEND_METHODS = ("SyncAPIClient._send_request", "AsyncAPIClient._send_request")


# --- chromadb: errors it raises as plain exceptions, told apart by their text --------------------

_CHROMA_DIMENSION = re.compile(r"dimension of (\d+), got (\d+)")


def chroma_dimension_mismatch(message: str) -> tuple[int, int] | None:
    """(expected, got) when Chroma refused vectors of the wrong dimension."""
    match = _CHROMA_DIMENSION.search(message)
    return (int(match.group(1)), int(match.group(2))) if match else None


def chroma_embedding_conflict(message: str) -> str | None:
    """The persisted embedding function's description when a collection was opened with
    another kind of embedding function, else None."""
    if "Embedding function conflict" not in message:
        return None
    return message.rsplit("persisted: ", 1)[-1]


def chroma_rejects_name(message: str) -> bool:
    """Whether Chroma refused a collection name (its validation message)."""
    lowered = message.lower()
    return "name" in lowered and "expected" in lowered
