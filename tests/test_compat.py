"""o11ylab._compat against the installed libraries: one test per internal it leans on.

A failure here means a library changed what o11ylab reaches into; the message names the
library and its version, and ``o11ylab/_compat.py`` is the one place to adapt.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import types

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.trace import Status, StatusCode

from o11ylab import _compat


def _changed(distribution: str) -> str:
    return f"{distribution} {importlib.metadata.version(distribution)} changed: adapt o11ylab/_compat.py"


class _OnEnd(SpanProcessor):
    def __init__(self, hook: object) -> None:
        self.hook = hook
        self.ended: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.hook(span)  # type: ignore[operator]
        self.ended.append(span)


def test_an_ended_span_takes_attributes_and_a_status_and_stays_frozen() -> None:
    def enrich(span: ReadableSpan) -> None:
        _compat.set_ended_attributes(span, {"o11ylab.added": 1})
        _compat.set_ended_status(span, Status(StatusCode.ERROR, "scrubbed"))

    processor = _OnEnd(enrich)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    span = provider.get_tracer("t").start_span("s")
    span.end()
    (ended,) = processor.ended
    assert ended.attributes is not None
    assert ended.attributes.get("o11ylab.added") == 1, _changed("opentelemetry-sdk")
    assert ended.status.description == "scrubbed", _changed("opentelemetry-sdk")
    with pytest.raises(TypeError):  # still frozen after the call
        ended.attributes["late"] = 2  # type: ignore[index]


def test_attributes_added_to_an_ended_span_keep_the_sdks_limits() -> None:
    from opentelemetry.sdk.trace import SpanLimits

    def enrich(span: ReadableSpan) -> None:
        _compat.set_ended_attributes(span, {"added.1": 1.5, "added.2": "x" * 10, "added.3": True})

    for limits, expected in (
        (SpanLimits(), {"kept": 0, "added.1": 1.5, "added.2": "x" * 10, "added.3": True}),
        # full: the oldest go, as the SDK's own set_attribute does
        (SpanLimits(max_span_attributes=2), {"added.2": "x" * 10, "added.3": True}),
        # a value length limit: strings cut, as the SDK cuts them
        (
            SpanLimits(max_attribute_length=4),
            {"kept": 0, "added.1": 1.5, "added.2": "xxxx", "added.3": True},
        ),
    ):
        processor = _OnEnd(enrich)
        provider = TracerProvider(span_limits=limits)
        provider.add_span_processor(processor)
        provider.get_tracer("t").start_span("s", attributes={"kept": 0}).end()
        (ended,) = processor.ended
        assert dict(ended.attributes or {}) == expected, _changed("opentelemetry-sdk")


def test_attributes_set_on_an_open_span_are_the_sdks_and_an_ended_span_refuses_them() -> None:
    from opentelemetry.sdk.trace import SpanLimits

    provider = TracerProvider(span_limits=SpanLimits(max_attribute_length=3))
    span = provider.get_tracer("t").start_span("s", attributes={"kept": 0})
    _compat.set_attributes(span, {"n": 2, "long": "abcdef", "list": [1, 2]})
    assert dict(span.attributes or {}) == {"kept": 0, "n": 2, "long": "abc", "list": (1, 2)}
    span = TracerProvider().get_tracer("t").start_span("s")
    _compat.set_attributes(span, {"n": 2, "list": [1, 2]})
    assert dict(span.attributes or {}) == {"n": 2, "list": (1, 2)}
    span.end()
    _compat.set_attributes(span, {"late": 1})
    assert "late" not in (span.attributes or {})


def test_a_spans_and_its_events_attributes_can_be_read_as_a_plain_dict() -> None:
    processor = _OnEnd(lambda span: None)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    span = provider.get_tracer("t").start_span("s", attributes={"a": 1, "b": "two"})
    span.add_event("retry", {"n": 2})
    span.end()
    (ended,) = processor.ended
    raw = _compat.raw_attributes(ended)
    assert type(raw) is dict and raw == dict(ended.attributes or {}), _changed("opentelemetry-sdk")
    (event,) = ended.events
    assert dict(_compat.raw_attributes(event)) == {"n": 2}, _changed("opentelemetry-sdk")

    other = types.SimpleNamespace(attributes={"c": 3})  # a span of another SDK
    assert _compat.raw_attributes(other) == {"c": 3}


def test_the_openai_send_methods_exist_and_take_the_request() -> None:
    module = importlib.import_module(_compat.OPENAI_CLIENT_MODULE)
    for path in _compat.OPENAI_SEND_METHODS:
        owner, name = path.split(".")
        method = getattr(getattr(module, owner, None), name, None)
        assert callable(method), _changed("openai")
        assert "request" in inspect.signature(method).parameters, _changed("openai")


# The custom function below is deliberately bare: Chroma warns that it lacks newer methods.
@pytest.mark.filterwarnings("ignore:legacy embedding function config")
def test_chroma_errors_are_told_apart_by_their_text() -> None:
    import chromadb
    from chromadb.utils.embedding_functions import DefaultEmbeddingFunction

    client = chromadb.EphemeralClient()
    collection = client.get_or_create_collection("compat-dims", embedding_function=None)
    collection.add(ids=["a"], embeddings=[[1.0, 0.0, 0.0]])
    with pytest.raises(Exception) as wrong_dimension:
        collection.add(ids=["b"], embeddings=[[1.0, 0.0]])
    assert _compat.chroma_dimension_mismatch(str(wrong_dimension.value)) == (3, 2), _changed(
        "chromadb"
    )

    with pytest.raises(Exception) as bad_name:
        client.get_or_create_collection("x", embedding_function=None)  # under 3 characters
    assert _compat.chroma_rejects_name(str(bad_name.value)), _changed("chromadb")

    class Named:  # a custom embedding function Chroma persists by name
        def __call__(self, input: list[str]) -> list[list[float]]:
            return [[0.0, 1.0, 0.0] for _ in input]

        @staticmethod
        def name() -> str:
            return "compat-named"

    client.get_or_create_collection(
        "compat-conflict", embedding_function=DefaultEmbeddingFunction()
    )
    with pytest.raises(Exception) as conflict:
        client.get_or_create_collection("compat-conflict", embedding_function=Named())  # type: ignore[arg-type]
    assert _compat.chroma_embedding_conflict(str(conflict.value)) is not None, _changed("chromadb")
    assert _compat.chroma_embedding_conflict("some other error") is None


def test_a_batch_processors_queue_lock_and_shutdown_can_be_read() -> None:
    import threading

    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    release = threading.Event()

    class Held(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            release.wait(10)
            return SpanExportResult.SUCCESS

    processor = BatchSpanProcessor(
        Held(), max_queue_size=8, max_export_batch_size=8, schedule_delay_millis=60_000
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    worker = _compat.batch_worker(processor)
    for n in range(3):
        provider.get_tracer("t").start_span(f"s{n}").end()
    assert _compat.batch_queued(worker) == 3, _changed("opentelemetry-sdk")
    lock = _compat.batch_export_lock(worker)
    assert lock.acquire(timeout=1), _changed("opentelemetry-sdk")
    lock.release()
    assert not _compat.batch_closed(worker)
    release.set()
    processor.shutdown()
    assert _compat.batch_closed(worker), _changed("opentelemetry-sdk")


def test_a_metric_exporters_preferences_can_be_read() -> None:
    from opentelemetry.sdk.metrics import Counter
    from opentelemetry.sdk.metrics.export import AggregationTemporality, ConsoleMetricExporter
    from opentelemetry.sdk.metrics.view import LastValueAggregation

    exporter = ConsoleMetricExporter(
        preferred_temporality={Counter: AggregationTemporality.DELTA},
        preferred_aggregation={Counter: LastValueAggregation()},
    )
    temporality, aggregation = _compat.exporter_preferences(exporter)
    assert temporality[Counter] is AggregationTemporality.DELTA, _changed("opentelemetry-sdk")
    assert isinstance(aggregation[Counter], LastValueAggregation), _changed("opentelemetry-sdk")


def test_a_reader_collects_what_another_reader_aggregated() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    hub, shared = InMemoryMetricReader(), InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[hub], shutdown_on_exit=False)
    _compat.share_metric_storage(hub, shared)
    provider.get_meter("t").create_counter("c").add(3, {"k": "v"})
    data = shared.get_metrics_data()
    assert data is not None, _changed("opentelemetry-sdk")
    points = [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in metric.data.data_points
    ]
    assert [(p.value, dict(p.attributes)) for p in points] == [(3, {"k": "v"})], _changed(
        "opentelemetry-sdk"
    )
    provider.shutdown()


def test_w3c_headers_are_what_inject_writes_and_skip_the_api_with_its_default_propagator() -> None:
    from opentelemetry import context, propagate, trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    tracer = TracerProvider().get_tracer("t")
    assert _compat.current_context() is context.get_current()
    assert _compat.span_in(context.get_current()) is None
    for flags in (TraceFlags.SAMPLED, TraceFlags.DEFAULT):
        for state in (TraceState(), TraceState([("vendor", "v1")])):
            parent = SpanContext(0xABC, 0xDEF, True, TraceFlags(flags), state)
            with trace.use_span(NonRecordingSpan(parent)), tracer.start_as_current_span("s") as s:
                written: dict[str, str] = {}
                span = _compat.w3c_headers(_compat.current_context(), written)
                expected: dict[str, str] = {}
                propagate.inject(expected)
            assert written == expected and span is s, _changed("opentelemetry-api")
            assert ("tracestate" in written) == bool(state)
    assert propagate.get_global_textmap() is _compat._CHECKED[0]
    assert _compat._CHECKED[1], f"the direct way is not taken: {_changed('opentelemetry-api')}"
