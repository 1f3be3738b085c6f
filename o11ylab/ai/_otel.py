"""How o11ylab's own helpers get their spans, without installing providers.

The helpers (``VectorStore``, ``LocalModel``, ``LocalEmbedder``, the openai clients) make no
spans themselves: the instrumentors do (``o11ylab.instrumentation``). ``switch_on`` turns one
on, if nothing has yet: on the providers the caller passed, else through
``o11ylab.instrumentation.ensure`` on the global ones (the loader's when ``%load_ext`` ran). It
never builds providers and never writes a file: with no provider set up anywhere the spans go
to the OpenTelemetry API's proxy, which forwards them once the application sets providers
(``%load_ext o11ylab``, ``o11ylab.init()``, or the user's own).

An instrumentor patches its library once per process, so the providers passed in count when
that call switches it on; one already on keeps the providers it has.

The enrichers (cost, the key scrub) belong to o11ylab's own telemetry: ``enrich`` adds them to
it when it is running, and does nothing otherwise.
"""

from __future__ import annotations

from typing import Any

__all__ = ["enrich", "switch_on"]


def switch_on(
    name: str, instrumentor: Any, *, tracer_provider: Any = None, meter_provider: Any = None
) -> None:
    """Instrument with ``instrumentor`` (entry-point ``name``) unless it is on already or
    ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` names it. Idempotent, cheap once on."""
    if instrumentor.is_instrumented_by_opentelemetry:
        return
    from .. import instrumentation

    if tracer_provider is None and meter_provider is None:
        instrumentation.ensure(name)
        return
    if instrumentation.is_disabled(name):
        return
    providers = {
        key: value
        for key, value in (("tracer_provider", tracer_provider), ("meter_provider", meter_provider))
        if value is not None
    }
    instrumentor.instrument(skip_dep_check=True, **providers)


def enrich(*, scrub: bool = False) -> None:
    """Cost (and with ``scrub`` the key scrub) on GenAI spans, when o11ylab's telemetry runs."""
    from ..telemetry import peek_telemetry

    telemetry = peek_telemetry()
    if telemetry is None:
        return
    if telemetry.enrichers.get("cost") is None:
        from .. import pricing

        pricing.install(telemetry)
    if scrub and telemetry.enrichers.get("scrub") is None:
        from .client import ScrubEnricher

        telemetry.enrichers.register(ScrubEnricher())
