"""OpenTelemetry instrumentation for sentence-transformers: one span per ``encode`` call.

    from o11ylab.instrumentation.sentence_transformers import SentenceTransformersInstrumentor

    SentenceTransformersInstrumentor().instrument(tracer_provider=tp, meter_provider=mp)

``SentenceTransformer.encode`` (and ``encode_query`` / ``encode_document``, which call it)
makes one ``embeddings {model}`` span of kind INTERNAL (the model runs in this process: no
remote peer), with ``gen_ai.operation.name = embeddings``, ``gen_ai.provider.name =
o11ylab.local``, ``gen_ai.request.model`` (the model folder's name), the input tokens the
model saw (counted from the tokenizer's attention masks as ``encode`` batches its inputs;
padding excluded), ``gen_ai.embeddings.dimension.count`` and the device; the input texts
only when ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` includes spans. Errors set
``error.type`` and status ERROR and are raised unchanged. Metrics:
``gen_ai.client.operation.duration`` and ``gen_ai.client.token.usage`` (input).

Declared as the ``sentence_transformers`` entry point of the ``opentelemetry_instrumentor``
group, so ``%load_ext o11ylab``, ``o11ylab.init()`` and ``opentelemetry-instrument`` find it.
A caller can add attributes to the next span (o11ylab's embedder names the model it serves)
with ``span_notes``.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from .. import semconv
from ._local import (
    Instruments,
    ModelCall,
    Outcome,
    Patches,
    SpanNotes,
    _now,
    active_call,
    model_name,
    span_notes,
    take_notes,
)

__all__ = ["Outcome", "SentenceTransformersInstrumentor", "SpanNotes", "span_notes"]

_INSTRUMENTS = ("sentence-transformers >= 3.0",)


class SentenceTransformersInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """An ``embeddings {model}`` span per ``SentenceTransformer.encode`` (see the module)."""

    _patches: Patches | None = None
    _instruments: Instruments | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return _INSTRUMENTS

    def _instrument(self, **kwargs: Any) -> None:
        from sentence_transformers import SentenceTransformer

        self._instruments = Instruments(kwargs.get("tracer_provider"), kwargs.get("meter_provider"))
        patches = Patches()
        patches.wrap(SentenceTransformer, "encode", self._wrap_encode)
        for name in ("preprocess", "tokenize"):  # preprocess in v6, tokenize before
            if callable(getattr(SentenceTransformer, name, None)):
                patches.wrap(SentenceTransformer, name, _count_inputs)
                break
        self._patches = patches

    def _uninstrument(self, **kwargs: Any) -> None:
        if self._patches is not None:
            self._patches.undo()
            self._patches = None

    def _wrap_encode(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        instruments = self._instruments
        if instruments is None or active_call() is not None or not is_instrumentation_enabled():
            return wrapped(*args, **kwargs)
        inputs = args[0] if args else kwargs.get("inputs", kwargs.get("sentences"))
        call = encode_call(instruments, instance, inputs, take_notes())
        with call:
            started = _now()
            output = wrapped(*args, **kwargs)
            call.outcome.duration = _now() - started
            call.counted = call.outcome.input_tokens > 0  # none when encoding in other processes
            return output


def encode_call(
    instruments: Instruments, model: Any, inputs: Any, notes: SpanNotes | None
) -> ModelCall:
    """The span (started) of one ``encode`` of ``inputs`` by ``model``; o11ylab's embedder
    starts one per request when it encodes several requests' inputs in one call."""
    attributes: dict[str, Any] = {}
    device = getattr(model, "device", None)
    if device is not None:
        attributes[semconv.LOCAL_MODEL_DEVICE] = str(device)
    dimensions = _dimensions(model)
    if dimensions:
        attributes[semconv.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = dimensions
    call = ModelCall(instruments, semconv.EMBEDDINGS_OPERATION, _name(model), attributes, notes)
    if call.capture and call.input_messages is None:
        texts = [inputs] if isinstance(inputs, str) else list(inputs or ())
        call.input_messages = [{"role": "user", "content": str(t)} for t in texts]
    return call


def _count_inputs(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    features = wrapped(*args, **kwargs)
    call = active_call()
    if call is not None and call.operation == semconv.EMBEDDINGS_OPERATION:
        mask = features.get("attention_mask") if hasattr(features, "get") else None
        if mask is not None:
            call.outcome.input_tokens += int(mask.sum())
    return features


def _dimensions(model: Any) -> int | None:
    method = getattr(model, "get_embedding_dimension", None) or getattr(
        model, "get_sentence_embedding_dimension", None
    )
    try:
        value = method() if method is not None else None
    except Exception:  # noqa: BLE001 - an optional detail of a third-party model
        return None
    return int(value) if isinstance(value, int) else None


def _name(model: Any) -> str:
    """The folder the model was loaded from (its first module's transformer), else its id."""
    card = getattr(model, "model_card_data", None)
    for candidate in (getattr(card, "model_id", None), getattr(card, "base_model", None)):
        if isinstance(candidate, str) and candidate:
            return candidate
    try:
        first = model[0]
    except Exception:  # noqa: BLE001 - not every model is a module list
        first = None
    inner = getattr(first, "auto_model", None) or getattr(first, "model", None)
    if inner is not None:
        return model_name(inner)
    path = getattr(model, "_model_path", None) or getattr(model, "model_path", None)
    return Path(str(path)).name if path else type(model).__name__
