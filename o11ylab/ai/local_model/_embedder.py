"""``LocalEmbedder``: a sentence-transformers model, instrumented like ``LocalModel``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ... import models
from ..._say import say
from ...instrumentation._local import span_notes
from .._types import EmbeddingResult
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
        items = [texts] if isinstance(texts, str) else list(texts)
        if not items or any(not isinstance(t, str) or not t.strip() for t in items):
            raise EmptyPromptError("nothing to embed: pass one or more non-empty strings.")
        _ensure_instrumented(embeddings=True, **self._providers)
        with self.lock, span_notes(model=self.name) as notes:
            array = self.model.encode(
                items, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
        vectors = array.astype("float32").tolist()
        counted = notes.outcome.input_tokens if notes.outcome is not None else 0
        # Local models cost nothing, and the result says so (0, not unknown).
        return EmbeddingResult(
            vectors, self.name, counted or self.count_tokens(items), cost_usd=0.0
        )
