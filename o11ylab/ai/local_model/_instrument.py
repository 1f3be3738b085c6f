"""The instrumentors make the spans: switched on here for the engine when nothing has yet."""

from __future__ import annotations

from typing import Any


def _ensure_instrumented(
    embeddings: bool = False, tracer_provider: Any = None, meter_provider: Any = None
) -> None:
    """Switch on o11ylab's instrumentor unless it is on, or the user turned it off with
    ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``: on the providers passed, else the global ones
    (``o11ylab.ai._otel``; no provider is installed here); and put cost on GenAI spans when
    o11ylab's telemetry runs. Cheap once it is on: the engine calls it before every generation."""
    from .._otel import enrich, switch_on

    if embeddings:
        from ...instrumentation.sentence_transformers import (
            SentenceTransformersInstrumentor as Instrumentor,
        )

        name = "sentence_transformers"
    else:
        from ...instrumentation.transformers import TransformersInstrumentor as Instrumentor

        name = "transformers"
    switch_on(name, Instrumentor(), tracer_provider=tracer_provider, meter_provider=meter_provider)
    enrich()
