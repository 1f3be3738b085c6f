"""``LocalEmbedder``: a sentence-transformers model, instrumented like ``LocalModel``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context

from ... import models, semconv
from ..._say import say
from ...instrumentation._local import span_notes
from .._types import EmbeddingResult
from ._batch import BatchJob, batcher_of, end_call, for_requests
from ._device import choose_device, quiet_loading
from ._errors import EmptyPromptError, LocalModelError
from ._instrument import _ensure_instrumented


class LocalEmbedder:
    """A sentence-transformers model (default all-MiniLM-L6-v2), instrumented like LocalModel."""

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str | None = None,
        verbose: bool = True,
        tracer_provider: Any = None,
        meter_provider: Any = None,
    ) -> None:
        ref = models.resolve_embedding_model(str(model) if model is not None else None)
        if device is None:
            device, _why = choose_device()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise LocalModelError(
                "Local embeddings need sentence-transformers: `pip install 'o11ylab[ai]'`."
            ) from None
        started = time.perf_counter()
        self.ref = ref
        self.name = ref.name
        self.device = str(device)
        with quiet_loading():
            self.model = SentenceTransformer(
                str(ref.path), device=self.device, local_files_only=True
            )
        # get_sentence_embedding_dimension was renamed in sentence-transformers 6.
        dimension = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        self.dimensions = int(dimension() or 0)
        self.max_tokens = int(self.model.max_seq_length or 512)
        self.lock = threading.Lock()
        self._batcher: Any = None  # _batch.Batcher, made on the first batched request
        self._providers = {"tracer_provider": tracer_provider, "meter_provider": meter_provider}
        _ensure_instrumented(embeddings=True, **self._providers)
        if verbose:
            say(
                f"embedding model {self.name} on {self.device} ({self.dimensions} "
                f"dimensions), loaded in {time.perf_counter() - started:.1f}s",
                level=logging.INFO,
            )

    def count_tokens(self, texts: Sequence[str]) -> int:
        encoded = self.model.tokenizer(list(texts), truncation=True, max_length=self.max_tokens)
        return sum(len(ids) for ids in encoded["input_ids"])

    def embed(self, texts: str | Sequence[str]) -> EmbeddingResult:
        """Normalized vectors for ``texts``; one span ``embeddings {model}`` per call."""
        return self._embed(_texts(texts), None)

    def _embed(self, items: list[str], took_model: threading.Event | None) -> EmbeddingResult:
        try:
            _ensure_instrumented(embeddings=True, **self._providers)
            with self.lock:
                if took_model is not None:
                    took_model.set()  # the batch loop waits for it (_batch)
                with span_notes(model=self.name) as notes:
                    array = self._encode(items)
        finally:
            if took_model is not None:
                took_model.set()  # also when it failed before it got the model
        vectors = array.astype("float32").tolist()
        counted = notes.outcome.input_tokens if notes.outcome is not None else 0
        # Local models cost nothing, and the result says so (0, not unknown).
        return EmbeddingResult(
            vectors, self.name, counted or self.count_tokens(items), cost_usd=0.0
        )

    def batched_embed(self, texts: str | Sequence[str]) -> EmbeddingResult:
        """Like ``embed``, for a caller among several: a request that arrives while the model
        is busy is encoded in one call with the others waiting (``_batch``), each with the
        vectors, usage and span it gets alone. A lone request runs ``embed`` itself."""
        job = BatchedEmbedding(self, _texts(texts), otel_context.get_current())
        if job._wait_turn():
            return self._embed(job.texts, job.took_model)
        result: EmbeddingResult = job._result
        return result

    def _encode(self, items: list[str]) -> Any:
        return self.model.encode(
            items, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )


def _texts(texts: str | Sequence[str]) -> list[str]:
    items = [texts] if isinstance(texts, str) else list(texts)
    if not items or any(not isinstance(t, str) or not t.strip() for t in items):
        raise EmptyPromptError("nothing to embed: pass one or more non-empty strings.")
    return items


class BatchedEmbedding(BatchJob):
    """One embedding request waiting for the model (``LocalEmbedder.batched_embed``)."""

    def __init__(self, embedder: LocalEmbedder, texts: list[str], parent: Any) -> None:
        super().__init__(batcher_of(embedder, _embed_batch))
        self.texts = texts
        self.parent = parent


def _embed_batch(embedder: LocalEmbedder, batch: list[BatchedEmbedding]) -> list[EmbeddingResult]:
    """Encode the batch's texts in one call (the caller holds the lock); one span per request,
    in its caller's trace, with its own input tokens."""
    from opentelemetry.instrumentation.utils import is_instrumentation_enabled

    from ...instrumentation._local import ModelCall, SpanNotes
    from ...instrumentation.sentence_transformers import (
        SentenceTransformersInstrumentor,
        encode_call,
    )

    _ensure_instrumented(embeddings=True, **embedder._providers)
    instruments = (
        SentenceTransformersInstrumentor()._instruments if is_instrumentation_enabled() else None
    )
    calls: list[ModelCall] = []
    if instruments is not None:
        for job in batch:
            attach = otel_context.attach(job.parent)
            try:
                notes = SpanNotes(model=embedder.name)
                calls.append(encode_call(instruments, embedder.model, job.texts, notes))
            finally:
                otel_context.detach(attach)
    started = time.perf_counter()
    with for_requests(calls):  # the input tokens it counts into the first are set below
        array = embedder._encode([text for job in batch for text in job.texts])
    ran = time.perf_counter() - started
    vectors = array.astype("float32").tolist()
    results: list[EmbeddingResult] = []
    first = 0
    for row, job in enumerate(batch):
        tokens = embedder.count_tokens(job.texts)
        results.append(
            EmbeddingResult(
                vectors[first : first + len(job.texts)], embedder.name, tokens, cost_usd=0.0
            )
        )
        first += len(job.texts)
        if row < len(calls):
            call = calls[row]
            call.outcome.input_tokens = tokens
            call.outcome.duration = ran
            call.counted = True
            if call.recording:
                call.end_attributes[semconv.LOCAL_BATCH_SIZE] = len(batch)
    for call in calls:
        end_call(call, None)
    return results
