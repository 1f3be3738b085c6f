"""What ``%load_ext o11ylab`` and ``o11ylab.init()`` switch on, and ``%unload_ext`` off.

In order: the enrichers every GenAI span gets (cost, the key scrub; the hardware enricher is
the sampler's, ``o11ylab.hardware.attach``), the offline default for the openai SDK
(``o11ylab.local_openai``), then every installed GenAI instrumentor, lazily
(``o11ylab.instrumentation``), on the process's providers. ``deactivate`` undoes each step
and leaves alone what the user had instrumented before.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["activate", "deactivate", "is_active"]

_lock = threading.Lock()
_active: dict[str, Any] = {}


def is_active() -> bool:
    return bool(_active)


def activate(telemetry: Any, *, local_endpoint: bool = True) -> None:
    """Idempotent. ``local_endpoint``: point a plain openai client at the local endpoint when
    neither ``OPENAI_API_KEY`` nor ``OPENAI_BASE_URL`` is set (``O11YLAB_LOCAL_OPENAI=0`` says
    never)."""
    with _lock:
        local_endpoint = local_endpoint and getattr(telemetry.settings, "local_openai", True)
        if local_endpoint and not _active.get("local_endpoint"):
            from . import local_openai

            _active["local_endpoint"] = local_openai.activate() is not None
        if "telemetry" in _active:
            return
        _register_shared_endpoint()
        from opentelemetry import _logs, metrics, trace

        from . import instrumentation, pricing
        from .ai.client import ScrubEnricher

        pricing.install(telemetry)
        telemetry.enrichers.register(ScrubEnricher())
        instrumentation.activate(
            tracer_provider=trace.get_tracer_provider(),
            meter_provider=metrics.get_meter_provider(),
            logger_provider=_logs.get_logger_provider(),
        )
        _active["telemetry"] = telemetry


def deactivate(telemetry: Any = None) -> None:
    with _lock:
        if not _active:
            return
        from . import instrumentation, local_openai

        instrumentation.deactivate()
        if _active.get("local_endpoint"):
            local_openai.deactivate()
        owner = _active.get("telemetry") or telemetry
        if owner is not None:
            for name in ("cost", "scrub"):
                owner.enrichers.unregister(name)
        _active.clear()


def _register_shared_endpoint() -> None:
    """Calls to the shared local endpoint (``o11ylab run`` names it for its kernels) cost 0."""
    from urllib.parse import urlparse

    from .config import load_serve

    shared = load_serve().local_endpoint
    if not shared:
        return
    parsed = urlparse(shared)
    if parsed.hostname:
        from . import pricing

        pricing.register_local_server(parsed.hostname, parsed.port or 80)
