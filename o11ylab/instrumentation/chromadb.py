"""OpenTelemetry instrumentation for Chroma: a GenAI ``retrieval`` span per query, a ``db.*``
span per write or read.

    from o11ylab.instrumentation.chromadb import ChromaInstrumentor

    ChromaInstrumentor().instrument(tracer_provider=tp, meter_provider=mp)   # or the globals
    collection.query(query_texts=["where do traces go?"], n_results=4)      # retrieval span

Declared as the ``chromadb`` entry point of the ``opentelemetry_instrumentor`` group, so
``%load_ext o11ylab``, ``o11ylab.init()`` and ``opentelemetry-instrument`` find it. It patches
the collection classes, so every client kind is covered: ``PersistentClient``,
``EphemeralClient``, ``HttpClient`` and the async client's ``AsyncCollection``.

What each call makes (span kind CLIENT; all names in ``o11ylab.semconv``):

``Collection.query``
    ``retrieval {collection}``, the GenAI retrieval operation: ``gen_ai.operation.name =
    retrieval``, ``gen_ai.data_source.id`` (the collection's *name*: the id is a UUID nobody
    recognises, and it changes when a collection is deleted and made again, while the name is
    what the user's code and the span name say), ``gen_ai.retrieval.top_k`` (``n_results``),
    ``db.system.name = chromadb``, ``db.collection.name``, ``db.response.returned_rows``
    (hits over all queries), ``db.operation.batch.size`` when one call carries several queries,
    ``gen_ai.request.model`` when Chroma embeds query texts (the embedding function's
    ``otel_model_name``, else its ``model_name`` — a folder shortened to its name —, else its
    class), ``server.address`` / ``server.port`` for an ``HttpClient``. With content capture
    on spans (``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` = ``SPAN_ONLY`` or
    ``SPAN_AND_EVENT``) also ``gen_ai.retrieval.query.text`` (a string, or a list for several
    queries) and ``gen_ai.retrieval.documents`` (JSON ``[{"id", "score", "content"}]``; score
    grows with similarity: ``1 - distance`` for cosine and ip, ``-distance`` for l2).
``add`` / ``upsert`` / ``update`` / ``delete`` / ``get``
    ``{operation} {collection}`` with ``db.operation.name``, ``db.system.name``,
    ``db.collection.name``, the server for an ``HttpClient``, and a count: records written or
    deleted (``o11ylab.vectorstore.record_count``) or, for ``get``, ``db.response.returned_rows``;
    ``gen_ai.request.model`` when Chroma embeds the documents. Never any text.

The span is current while Chroma's own Python code runs, so the embedding function's spans
(``OpenAIEmbeddingFunction`` → the openai SDK's ``embeddings`` span, a sentence-transformers
``embeddings`` span, anything a custom function makes) nest under it. An exception sets
``error.type`` (its class name) and status ERROR and is raised unchanged, Ctrl-C included.

Metrics, on the given meter provider: ``gen_ai.client.operation.duration`` (s) per query, with
``gen_ai.operation.name``, ``db.system.name``, ``db.collection.name`` and ``error.type`` on
failure. (No ``db.client.response.returned_rows`` histogram: it is opt-in in the conventions and
cost a third of a sampled-out query's overhead; the count is on each span.)

Cost: a span that is not recording (sampled out) gets no attribute work at all: the start
attributes and the metric attributes are built once per collection name and reused, content
capture is read only for a recording span, and the results are not looked at. The duration is
queued and recorded into the histogram when metrics are next read (``_deferred``): right after
Chroma's native search, one direct ``record`` cost 95-105 µs of a 2 ms query.

Why not ``opentelemetry-util-genai``'s ``TelemetryHandler.retrieval()``: it fits the span, but
(1) it reads the content-capture mode from the environment once, when the handler is built,
where o11ylab reads ``o11ylab.config.content_capture()`` per recording span (one reading of
that variable across o11ylab, and one that a notebook can change); (2) every call, recorded or
not, builds its invocation object, a context-data dataclass, start-attribute and metric dicts
and a context value, which is most of the 1 % budget a sampled-out 2 ms query has; (3) its
``gen_ai.client.operation.duration`` histogram is created with util-genai's description and
buckets, a second instrument next to the one every other part of o11ylab shares under the
``o11ylab`` scope. The span it would make is the one written here, attribute for attribute.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Collection as _Collection
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import NonRecordingSpan, SpanKind, Status, StatusCode

from .. import semconv
from .._version import __version__
from ..telemetry._deferred import DeferredHistogram

__all__ = ["ChromaInstrumentor"]

_INSTRUMENTS = ("chromadb >= 1.0",)
_DATA_OPERATIONS = ("add", "upsert", "update", "delete", "get")
_QUERY_DEFAULT_TOP_K = 10  # Collection.query's own default for n_results
_MAX_CACHED_NAMES = 1024  # collections whose prepared attributes are kept
_log = logging.getLogger("o11ylab.instrumentation")


class _Names:
    """Everything about one collection name that every call reuses (built once, never mutated)."""

    __slots__ = (
        "data",
        "data_names",
        "duration_attributes",
        "retrieval_attributes",
        "retrieval_name",
    )

    def __init__(self, name: str) -> None:
        common = {
            semconv.DB_SYSTEM_NAME: semconv.DB_SYSTEM_CHROMA,
            semconv.DB_COLLECTION_NAME: name,
        }
        self.retrieval_name = f"{semconv.RETRIEVAL_OPERATION} {name}"
        self.retrieval_attributes = {
            semconv.GEN_AI_OPERATION_NAME: semconv.RETRIEVAL_OPERATION,
            semconv.GEN_AI_DATA_SOURCE_ID: name,
            **common,
        }
        self.duration_attributes = {
            semconv.GEN_AI_OPERATION_NAME: semconv.RETRIEVAL_OPERATION,
            **common,
        }
        self.data_names = {op: f"{op} {name}" for op in _DATA_OPERATIONS}
        self.data = {op: {semconv.DB_OPERATION_NAME: op, **common} for op in _DATA_OPERATIONS}


class ChromaInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Spans for Chroma collections' queries, writes and reads (see the module docstring)."""

    _patches: list[tuple[type, str]] | None = None

    def instrumentation_dependencies(self) -> _Collection[str]:
        return _INSTRUMENTS

    def _instrument(self, **kwargs: Any) -> None:
        import wrapt
        from chromadb.api.models.Collection import Collection

        self._tracer = trace.get_tracer(semconv.SCOPE, __version__, kwargs.get("tracer_provider"))
        meter = metrics.get_meter(
            semconv.SCOPE, __version__, meter_provider=kwargs.get("meter_provider")
        )
        # The same name, unit and description as o11ylab's other GenAI instruments, so one
        # meter hands every part of o11ylab one instrument.
        # Queued per call and recorded when metrics are read (see _deferred: a record right
        # after Chroma's native search costs 8x what it does warm).
        self._duration = DeferredHistogram(
            meter,
            semconv.METRIC_GEN_AI_CLIENT_OPERATION_DURATION,
            unit="s",
            description="Duration of GenAI operations.",
        )
        # Only the GenAI duration histogram: the opt-in db.client.response.returned_rows
        # histogram cost a third of a sampled-out query's overhead; the count is on the span.
        self._names: dict[str, _Names] = {}

        targets: list[tuple[type, bool]] = [(Collection, False)]
        try:
            from chromadb.api.models.AsyncCollection import AsyncCollection
        except ImportError:  # an install without the async client
            pass
        else:
            targets.append((AsyncCollection, True))
        patches: list[tuple[type, str]] = []
        for owner, is_async in targets:
            query = self._async_query if is_async else self._query
            if "query" in owner.__dict__:
                wrapt.wrap_function_wrapper(owner, "query", query)
                patches.append((owner, "query"))
            for operation in _DATA_OPERATIONS:
                if operation in owner.__dict__:
                    wrapper = (self._async_data if is_async else self._data)(operation)
                    wrapt.wrap_function_wrapper(owner, operation, wrapper)
                    patches.append((owner, operation))
        self._patches = patches

    def _uninstrument(self, **kwargs: Any) -> None:
        from opentelemetry.instrumentation.utils import unwrap

        for owner, name in reversed(self._patches or []):
            unwrap(owner, name)
        self._patches = None
        self._duration.close()

    # -- shared -------------------------------------------------------------------------------

    def _names_for(self, collection: Any) -> _Names:
        name = collection.name
        names = self._names.get(name)
        if names is None:
            if len(self._names) >= _MAX_CACHED_NAMES:
                self._names.clear()
            names = self._names[name] = _Names(name)
        return names

    def _begin(self, name: str, attributes: dict[str, Any]) -> tuple[Any, Any, Any]:
        """The call's span, the context it is current in, and the token to detach.

        Inside a trace that is sampled out, with the SDK's default ``ParentBased`` sampler (which
        o11ylab's sampler is too), the span is certain to be dropped: then there is no span to
        start and nothing to attach. The sampled-out parent stays current, so what runs below
        it (the embedding function's spans) is sampled out as well, exactly as it would be under
        a dropped child. Right after Chroma's native search, a sampled-out ``start_span`` cost
        68 µs (5 µs warm): most of what a query in a sampled-out trace had left to pay.
        """
        parent = trace.get_current_span()
        if type(parent) is NonRecordingSpan and _drops_children(self._tracer, parent):
            return parent, otel_context.get_current(), None  # ending it is a no-op
        span = self._tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
        current = trace.set_span_in_context(span)
        return span, current, otel_context.attach(current)

    # -- retrieval ---------------------------------------------------------------------------

    def _query(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if not is_instrumentation_enabled():
            return wrapped(*args, **kwargs)
        names = self._names_for(instance)
        span, current, token = self._begin(names.retrieval_name, names.retrieval_attributes)
        started = time.perf_counter()
        try:
            try:
                result = wrapped(*args, **kwargs)
            except BaseException as error:  # Ctrl-C included: the span says how it ended
                self._query_failed(span, current, names, started, error)
                raise
            self._query_done(span, current, names, started, instance, args, kwargs, result)
            return result
        finally:
            if token is not None:
                otel_context.detach(token)
            span.end()

    async def _async_query(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if not is_instrumentation_enabled():
            return await wrapped(*args, **kwargs)
        names = self._names_for(instance)
        span, current, token = self._begin(names.retrieval_name, names.retrieval_attributes)
        started = time.perf_counter()
        try:
            try:
                result = await wrapped(*args, **kwargs)
            except BaseException as error:
                self._query_failed(span, current, names, started, error)
                raise
            self._query_done(span, current, names, started, instance, args, kwargs, result)
            return result
        finally:
            if token is not None:
                otel_context.detach(token)
            span.end()

    def _query_failed(
        self, span: Any, current: Any, names: _Names, started: float, error: BaseException
    ) -> None:
        try:
            kind = type(error).__qualname__
            self._duration.record(
                time.perf_counter() - started,
                {**names.duration_attributes, semconv.ERROR_TYPE: kind},
                current,
            )
            if span.is_recording():
                _mark_failed(span, kind, error)
        except Exception:  # noqa: BLE001 - telemetry must never hide the user's own error
            _log.debug("o11ylab: Chroma span attributes failed", exc_info=True)

    def _query_done(
        self,
        span: Any,
        current: Any,
        names: _Names,
        started: float,
        instance: Any,
        args: Any,
        kwargs: Any,
        result: Any,
    ) -> None:
        try:
            # With the span's context, so exemplars point at it.
            self._duration.record(time.perf_counter() - started, names.duration_attributes, current)
            if span.is_recording():
                ids = result["ids"]
                span.set_attributes(
                    _retrieval_attributes(
                        instance, args, kwargs, result, sum(map(len, ids)), len(ids)
                    )
                )
        except Exception:  # noqa: BLE001 - a result of an unexpected shape: the user still gets it
            _log.debug("o11ylab: Chroma span attributes failed", exc_info=True)

    # -- writes and reads ----------------------------------------------------------------------

    def _data(self, operation: str) -> Any:
        def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            if not is_instrumentation_enabled():
                return wrapped(*args, **kwargs)
            names = self._names_for(instance)
            span, _current, token = self._begin(names.data_names[operation], names.data[operation])
            try:
                try:
                    result = wrapped(*args, **kwargs)
                except BaseException as error:
                    if span.is_recording():
                        _mark_failed(span, type(error).__qualname__, error)
                    raise
                if span.is_recording():
                    _set_data_attributes(span, operation, instance, args, kwargs, result)
                return result
            finally:
                if token is not None:
                    otel_context.detach(token)
                span.end()

        return wrapper

    def _async_data(self, operation: str) -> Any:
        async def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            if not is_instrumentation_enabled():
                return await wrapped(*args, **kwargs)
            names = self._names_for(instance)
            span, _current, token = self._begin(names.data_names[operation], names.data[operation])
            try:
                try:
                    result = await wrapped(*args, **kwargs)
                except BaseException as error:
                    if span.is_recording():
                        _mark_failed(span, type(error).__qualname__, error)
                    raise
                if span.is_recording():
                    _set_data_attributes(span, operation, instance, args, kwargs, result)
                return result
            finally:
                if token is not None:
                    otel_context.detach(token)
                span.end()

        return wrapper


def _drops_children(tracer: Any, parent: Any) -> bool:
    """Whether ``tracer``'s sampler is sure to drop a child of the sampled-out span ``parent``.

    Only for the SDK's ``ParentBased`` sampler whose delegate for that kind of parent is
    ``ALWAYS_OFF`` (its default); for any other sampler the span is started and it decides.
    """
    sampler = getattr(tracer, "sampler", None)
    if type(sampler) is not ParentBased:
        return False
    parent_context = parent.get_span_context()
    if not parent_context.is_valid or parent_context.trace_flags.sampled:
        return False
    delegate = getattr(
        sampler,
        "_remote_parent_not_sampled" if parent_context.is_remote else "_local_parent_not_sampled",
        None,
    )
    return delegate is ALWAYS_OFF


# --- attributes (recording spans only) ------------------------------------------------------------


def _mark_failed(span: Any, kind: str, error: BaseException) -> None:
    span.set_attribute(semconv.ERROR_TYPE, kind)
    span.set_status(Status(StatusCode.ERROR, str(error)[:500] or kind))


def _argument(args: Any, kwargs: Any, name: str, position: int) -> Any:
    """A wrapped method's argument by name or position (``args`` excludes ``self``)."""
    if name in kwargs:
        return kwargs[name]
    return args[position] if len(args) > position else None


def _server(collection: Any, attributes: dict[str, Any]) -> None:
    """``server.address`` / ``server.port`` for a collection reached over HTTP."""
    url = getattr(getattr(collection, "_client", None), "_api_url", None)
    if not isinstance(url, str):
        return
    parts = urlsplit(url)
    if parts.hostname:
        attributes[semconv.SERVER_ADDRESS] = parts.hostname
        port = parts.port or (443 if parts.scheme == "https" else 80)
        attributes[semconv.SERVER_PORT] = port


def _request_model(collection: Any) -> str | None:
    """The model Chroma embeds texts with: the embedding function's name for it."""
    function = getattr(collection, "_embedding_function", None)
    if function is None:
        return None
    named = getattr(function, "otel_model_name", None)
    if isinstance(named, str) and named:
        return named
    model = getattr(function, "model_name", None)
    if isinstance(model, str) and model:
        return os.path.basename(model.rstrip("/\\")) if os.sep in model else model
    return type(function).__name__


def _retrieval_attributes(
    collection: Any, args: Any, kwargs: Any, result: Any, returned: int, queries: int
) -> dict[str, Any]:
    attributes: dict[str, Any] = {semconv.DB_RESPONSE_RETURNED_ROWS: returned}
    top_k = _argument(args, kwargs, "n_results", 5)
    top_k = _QUERY_DEFAULT_TOP_K if top_k is None else top_k
    if type(top_k) is int:
        attributes[semconv.GEN_AI_RETRIEVAL_TOP_K] = top_k
    if queries > 1:
        attributes[semconv.DB_OPERATION_BATCH_SIZE] = queries
    texts = _argument(args, kwargs, "query_texts", 1)
    embedded = texts is not None and _argument(args, kwargs, "query_embeddings", 0) is None
    if embedded:
        model = _request_model(collection)
        if model:
            attributes[semconv.GEN_AI_REQUEST_MODEL] = model
    _server(collection, attributes)
    from ..config import content_capture

    if content_capture().on_spans:
        if texts is not None:
            attributes[semconv.GEN_AI_RETRIEVAL_QUERY_TEXT] = (
                texts
                if isinstance(texts, str)
                else texts[0]
                if len(texts) == 1
                else [str(t) for t in texts]
            )
        attributes[semconv.GEN_AI_RETRIEVAL_DOCUMENTS] = _documents_json(collection, result)
    return attributes


def _documents_json(collection: Any, result: Any) -> str:
    """The hits as the retrieval-documents schema has them: id, score, content."""
    score = _scorer(collection)
    documents = result.get("documents") or ()
    distances = result.get("distances") or ()
    out: list[dict[str, Any]] = []
    for index, ids in enumerate(result["ids"]):
        texts = documents[index] if index < len(documents) and documents[index] else None
        dists = distances[index] if index < len(distances) and distances[index] else None
        for position, record_id in enumerate(ids):
            item: dict[str, Any] = {"id": record_id}
            if dists is not None:
                item["score"] = score(float(dists[position]))
            if texts is not None:
                item["content"] = texts[position]
            out.append(item)
    return json.dumps(out, ensure_ascii=False)


def _scorer(collection: Any) -> Any:
    """Distance to score for the collection's space (Chroma's default space is l2)."""
    raw = getattr(getattr(collection, "_model", None), "configuration_json", None) or {}
    space = (raw.get("hnsw") or {}).get("space") or (raw.get("spann") or {}).get("space")
    if space == "l2" or space is None:
        return lambda distance: -distance
    return lambda distance: 1.0 - distance


def _set_data_attributes(
    span: Any, operation: str, collection: Any, args: Any, kwargs: Any, result: Any
) -> None:
    try:
        attributes: dict[str, Any] = {}
        if operation == "get":
            attributes[semconv.DB_RESPONSE_RETURNED_ROWS] = len(result["ids"])
        elif operation == "delete":
            if isinstance(result, dict) and isinstance(result.get("deleted"), int):
                attributes[semconv.VECTORSTORE_RECORD_COUNT] = result["deleted"]
        else:  # add, upsert, update
            ids = _argument(args, kwargs, "ids", 0)
            if ids is not None:
                attributes[semconv.VECTORSTORE_RECORD_COUNT] = (
                    1 if isinstance(ids, str) else len(ids)
                )
            if (
                _argument(args, kwargs, "embeddings", 1) is None
                and _argument(args, kwargs, "documents", 3) is not None
            ):
                model = _request_model(collection)
                if model:
                    attributes[semconv.GEN_AI_REQUEST_MODEL] = model
        _server(collection, attributes)
        span.set_attributes(attributes)
    except Exception:  # noqa: BLE001 - an odd argument shape costs an attribute, never the call
        _log.debug("o11ylab: Chroma span attributes failed", exc_info=True)
