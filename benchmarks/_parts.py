"""Switch one part of o11ylab off inside a running kernel, to measure what it costs in situ.

Shared by ``bench_extension.py`` (per cell) and ``bench_call_cpu.py --parts`` (per chat call).
A part measured in a tight loop costs several times less than it does between a cell's or an SDK
call's own work, which leaves the caches cold; only switching it off where it runs shows its
real share. The switches reach into the SDK's private span-processor tuple and the telemetry's
methods: a benchmark's tool, never something o11ylab itself does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

# part -> what switching it off means
PARTS = {
    "nothing": "the same again: the spread between two measurements of one thing (A/A)",
    "hardware observer": "the hardware enricher: GPU energy and memory, CPU time per span",
    "cost enricher": "the cost enricher: genai-prices, its attributes and metric",
    "key scrub": "the enricher that scrubs API keys from span text",
    "enrichment registry": "every enricher and the registry that runs them",
    "metric points": "the per-cell metric points",
    "flush wake-up": "the export wake-up at each cell's end",
    "roll-up": "the cell roll-up: tokens, cost and energy summed onto the cell span",
    "run file": "the OTLP-JSON run file",
    "span buffer": "the span buffer the trace explorer reads",
    "trace context on the wire": "the openai_http instrumentor: traceparent, status, retries",
}
# What a chat call goes through (the rest is per cell, once per 100 calls in bench_call_cpu).
CALL_PARTS = tuple(part for part in PARTS if part not in ("metric points", "flush wake-up"))
_ENRICHERS = {"hardware observer": "hardware", "cost enricher": "cost", "key scrub": "scrub"}
_PROCESSORS = {
    "enrichment registry": "Enrichers",
    "roll-up": "CellRollup",
    "run file": "LocalSpanProcessor",
    "span buffer": "SpanBuffer",
}


@contextlib.contextmanager
def switched_off(part: str, telemetry: Any) -> Iterator[None]:
    """Run the block with ``part`` (a key of ``PARTS``) switched off; put it back after."""
    from opentelemetry import trace

    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}: one of {', '.join(PARTS)}")
    multi = getattr(trace.get_tracer_provider(), "_active_span_processor", None)
    processors = multi._span_processors if multi is not None else ()
    enricher = telemetry.enrichers.get(_ENRICHERS[part]) if part in _ENRICHERS else None
    instrumentor = None
    if enricher is not None:
        telemetry.enrichers.unregister(enricher.name)
    elif part in _PROCESSORS and multi is not None:
        kind = _PROCESSORS[part]
        multi._span_processors = tuple(p for p in processors if type(p).__name__ != kind)
    elif part == "metric points":
        telemetry.record_cell = lambda duration_s, failed: None
    elif part == "flush wake-up":
        telemetry.request_flush = lambda: None
    elif part == "trace context on the wire":
        from o11ylab.instrumentation.openai_http import OpenAIHTTPInstrumentor

        instrumentor = OpenAIHTTPInstrumentor()
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        else:
            instrumentor = None
    try:
        yield
    finally:
        if enricher is not None:
            telemetry.enrichers.register(enricher)
        if multi is not None:
            multi._span_processors = processors
        for name in ("record_cell", "request_flush"):
            telemetry.__dict__.pop(name, None)  # the class's own methods again
        if instrumentor is not None:
            instrumentor.instrument()
