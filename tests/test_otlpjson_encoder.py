"""The run file's span encoder writes what the SDK's protobuf encoder + MessageToDict wrote.

The old path (protobuf, then ``MessageToDict``, then ids rewritten to hex) is the reference:
it is the OTLP/JSON mapping every OTLP tool reads. Each case is a span a user can make.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.span import TraceFlags, TraceState

from o11ylab.telemetry._otlpjson import encode_spans_line, to_json_line


def _spans(make: Any, resource: Resource | None = None) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=resource or Resource.create({"service.name": "s"}), shutdown_on_exit=False
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    make(provider)
    provider.shutdown()
    return list(exporter.get_finished_spans())


def _same(spans: list[ReadableSpan]) -> dict[str, Any]:
    ours = json.loads(encode_spans_line(spans))
    reference = json.loads(to_json_line(encode_spans(spans)))
    assert ours == reference
    return dict(ours)


def test_a_genai_span_with_every_attribute_type_events_and_status() -> None:
    def make(provider: TracerProvider) -> None:
        tracer = provider.get_tracer("o11ylab", "1.2.3", schema_url="https://opentelemetry.io/s/1")
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.usage.input_tokens": 12,
            "big": 2**62,
            "negative": -3,
            "zero": 0,
            "empty": "",
            "flag": False,
            "cost": 0.0035,
            "whole": 2.0,
            "texts": ["a", ""],
            "numbers": [1, 2],
            "floats": [0.5],
            "flags": [True, False],
            "nothing": [],
            "unicode": 'naïve ✓ \u0000 "quoted"',
        }
        with tracer.start_as_current_span(
            "chat gpt", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            span.add_event("gen_ai.choice", {"index": 0})
            span.add_event("")
            span.set_status(Status(StatusCode.ERROR, "boom"))
            with tracer.start_as_current_span(
                "child", links=[Link(span.get_span_context(), {"l": 1})]
            ):
                pass
        with tracer.start_as_current_span("ok") as ok:
            ok.set_status(Status(StatusCode.OK))

    encoded = _same(_spans(make))
    (scope,) = encoded["resourceSpans"][0]["scopeSpans"]
    assert len(scope["spans"]) == 3 and scope["schemaUrl"]


def test_non_finite_floats_remote_parents_trace_state_and_kinds() -> None:
    def make(provider: TracerProvider) -> None:
        tracer = provider.get_tracer("t")
        remote = SpanContext(
            trace_id=0xABC,
            span_id=0x1,
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
            trace_state=TraceState([("vendor", "v1"), ("x", "y")]),
        )
        parent = trace.set_span_in_context(NonRecordingSpan(remote))
        token = otel_context.attach(parent)
        try:
            for kind in SpanKind:
                tracer.start_span(
                    f"k{kind.value}",
                    kind=kind,
                    attributes={"nan": math.nan, "inf": math.inf, "ninf": -math.inf},
                ).end()
        finally:
            otel_context.detach(token)

    encoded = _same(_spans(make))
    spans = encoded["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert {s["flags"] for s in spans} == {0x300} and spans[0]["traceState"] == "vendor=v1,x=y"


def test_several_scopes_and_resources_in_one_batch() -> None:
    first = _spans(lambda p: p.get_tracer("a").start_span("1").end())
    second = _spans(
        lambda p: (
            p.get_tracer("b", "2").start_span("2").end(),
            p.get_tracer("a").start_span("3").end(),
        ),
        Resource.create({"service.name": "other", "n": 1}, schema_url="https://x/2"),
    )
    _same(first + second)
    assert _same([]) == {}


@pytest.mark.parametrize("value", [2**64, object()])
def test_an_attribute_the_encoder_cannot_write_is_left_out_and_the_span_kept(value: Any) -> None:
    def make(provider: TracerProvider) -> None:
        span = provider.get_tracer("t").start_span("x", attributes={"ok": 1})
        span._attributes._dict["bad"] = value  # past the SDK's own checks, as a buggy library might
        span.end()

    spans = _spans(make)
    ours = json.loads(encode_spans_line(spans))
    (span,) = ours["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert [a["key"] for a in span["attributes"]] == ["ok"]


def test_the_line_is_the_same_without_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    """orjson is there with the ai extra; without it the standard library writes the line."""
    from o11ylab.telemetry import _otlpjson

    def make(provider: TracerProvider) -> None:
        tracer = provider.get_tracer("scope", "1.0")
        with (
            tracer.start_as_current_span("outer", attributes={"text": "héllo", "n": 3}),
            tracer.start_as_current_span("inner", attributes={"xs": (1.5, 2.5)}),
        ):
            pass

    spans = _spans(make)
    fast = encode_spans_line(spans)
    monkeypatch.setattr(_otlpjson, "_dumps", _otlpjson._json)
    plain = encode_spans_line(spans)
    assert plain.endswith(b"\n") and json.loads(plain) == json.loads(fast) == _same(spans)
