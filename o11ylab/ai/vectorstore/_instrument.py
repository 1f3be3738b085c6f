"""The store makes no spans itself: ``ChromaInstrumentor`` does, switched on here if needed."""

from __future__ import annotations

from typing import Any


def _ensure_instrumented(tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Switch on ``ChromaInstrumentor`` unless it is on, or the user turned it off with
    ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``: on the providers passed, else the global ones
    (``o11ylab.ai._otel``; no provider is installed here). Idempotent."""
    from ...instrumentation.chromadb import ChromaInstrumentor
    from .._otel import switch_on

    switch_on(
        "chromadb",
        ChromaInstrumentor(),  # one instance per process
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
