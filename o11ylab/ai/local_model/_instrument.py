"""The instrumentors make the spans: switched on here for the engine when nothing has yet."""

from __future__ import annotations

import threading
from typing import Any

_INSTRUMENTED_LOCK = threading.Lock()
_INSTRUMENTORS: dict[str, Any] = {}
_PRICED = False


def _ensure_instrumented(embeddings: bool = False) -> None:
    """Switch on o11ylab's instrumentor (global providers) unless it is on, or the user turned
    it off with ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``; and put cost on GenAI spans. Cheap
    once it is on: the engine calls it before every generation."""
    global _PRICED
    name = "sentence_transformers" if embeddings else "transformers"
    known = _INSTRUMENTORS.get(name)
    if known is not None and known.is_instrumented_by_opentelemetry and _PRICED:
        return
    from ... import instrumentation, pricing

    with _INSTRUMENTED_LOCK:
        if embeddings:
            from ...instrumentation.sentence_transformers import (
                SentenceTransformersInstrumentor as Instrumentor,
            )
        else:
            from ...instrumentation.transformers import (
                TransformersInstrumentor as Instrumentor,
            )
        instrumentor = _INSTRUMENTORS[name] = Instrumentor()
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentation.ensure(name)  # through the loader when %load_ext activated it
        if not _PRICED:
            pricing.install()
            _PRICED = True
