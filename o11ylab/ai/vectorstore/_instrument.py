"""The store makes no spans itself: ``ChromaInstrumentor`` does, switched on here if needed."""

from __future__ import annotations


def _ensure_instrumented() -> None:
    """Switch on ``ChromaInstrumentor`` (global providers: o11ylab's telemetry) unless it is on,
    or the user turned it off with ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``. Idempotent."""
    from ...instrumentation.chromadb import ChromaInstrumentor

    if ChromaInstrumentor().is_instrumented_by_opentelemetry:  # one instance per process
        return
    from ... import instrumentation
    from ...telemetry import get_telemetry

    get_telemetry()  # the global providers the instrumentor then uses
    instrumentation.ensure("chromadb")
