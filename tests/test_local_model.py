"""Local generation in the kernel: the spans and metrics a user sees, streaming, the lock."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from o11ylab import models, semconv
from o11ylab.ai import local_model
from o11ylab.ai.local_model import (
    ContextWindowExceededError,
    EmptyPromptError,
    LocalModel,
    LocalModelError,
)
from o11ylab.config import ContentCapture
from o11ylab.telemetry import get_telemetry
from o11ylab.testing import capture_metrics, capture_spans

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> LocalModel:
    folder = models.build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")
    return LocalModel(folder, device="cpu", verbose=False)


@pytest.fixture
def content_on(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The instrumentors read the environment variable (they also run without o11ylab's
    # telemetry, under opentelemetry-instrument); o11ylab's settings come from the same one.
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
    telemetry = get_telemetry()
    on = dataclasses.replace(telemetry.settings, capture_content=ContentCapture.SPAN_ONLY)
    monkeypatch.setattr(telemetry, "settings", on)
    yield


def only(spans: list[Any], name: str) -> Any:
    matching = [s for s in spans if s.name == name]
    assert len(matching) == 1, [s.name for s in spans]
    return matching[0]


def test_generation_is_one_genai_span_with_usage_timing_device_and_zero_cost(
    engine: LocalModel,
) -> None:
    with capture_spans() as spans:
        result = engine.generate("Observability means", max_new_tokens=6)
    span = only(spans, "text_completion tiny")
    attributes = dict(span.attributes)
    assert span.kind.name == "INTERNAL"
    assert attributes[semconv.GEN_AI_OPERATION_NAME] == "text_completion"
    assert attributes[semconv.GEN_AI_PROVIDER_NAME] == semconv.PROVIDER_LOCAL == "o11ylab.local"
    assert attributes[semconv.GEN_AI_REQUEST_MODEL] == "tiny"
    assert attributes[semconv.GEN_AI_REQUEST_MAX_TOKENS] == 6
    assert attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == result.input_tokens > 0
    assert attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == result.output_tokens
    assert 1 <= result.output_tokens <= 6
    assert attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == (result.finish_reason,)
    assert 0 < attributes[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] <= result.duration_s
    assert attributes[semconv.LOCAL_OUTPUT_TOKENS_PER_SECOND] > 0
    assert attributes[semconv.LOCAL_MODEL_DEVICE] == "cpu"
    assert attributes[semconv.LOCAL_MODEL_DTYPE] == "float32"
    assert attributes[semconv.GEN_AI_USAGE_COST] == 0.0
    # Content capture is off by default: no prompt or completion text anywhere on the span.
    assert semconv.GEN_AI_INPUT_MESSAGES not in attributes
    assert semconv.GEN_AI_OUTPUT_MESSAGES not in attributes
    assert "Observability" not in json.dumps({k: str(v) for k, v in attributes.items()})


def test_chat_uses_the_template_and_records_the_chat_operation(engine: LocalModel) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    with capture_spans() as spans:
        result = engine.chat(messages, max_new_tokens=5)
    span = only(spans, "chat tiny")
    assert span.attributes[semconv.GEN_AI_OPERATION_NAME] == "chat"
    rendered = engine.tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    assert result.input_tokens == engine.count_tokens(rendered)
    assert span.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == result.input_tokens


def test_content_goes_on_the_span_only_when_capture_is_on(
    engine: LocalModel, content_on: None
) -> None:
    with capture_spans() as spans:
        result = engine.chat([{"role": "user", "content": "secret question"}], max_new_tokens=3)
    span = only(spans, "chat tiny")
    inputs = json.loads(span.attributes[semconv.GEN_AI_INPUT_MESSAGES])
    outputs = json.loads(span.attributes[semconv.GEN_AI_OUTPUT_MESSAGES])
    assert inputs == [{"role": "user", "parts": [{"type": "text", "content": "secret question"}]}]
    assert outputs[0]["parts"][0]["content"] == result.text
    assert outputs[0]["finish_reason"] == result.finish_reason


def test_a_batch_is_one_span_with_the_summed_usage(engine: LocalModel) -> None:
    with capture_spans() as spans:
        results = engine.generate(["A trace is", "Metrics are numbers over time"], max_new_tokens=4)
    assert len(results) == 2
    span = only(spans, "text_completion tiny")
    assert span.attributes[semconv.LOCAL_BATCH_SIZE] == 2
    assert span.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == sum(
        r.input_tokens for r in results
    )
    assert span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == sum(
        r.output_tokens for r in results
    )
    assert results[0].input_tokens != results[1].input_tokens  # padding is not counted


def test_metrics_follow_the_genai_names(engine: LocalModel) -> None:
    labels = {
        semconv.GEN_AI_OPERATION_NAME: "chat",
        semconv.GEN_AI_REQUEST_MODEL: "tiny",
        semconv.GEN_AI_PROVIDER_NAME: semconv.PROVIDER_LOCAL,
    }
    messages = [{"role": "user", "content": "count"}]
    with capture_metrics() as metrics:
        result = engine.chat(messages, max_new_tokens=5)
    assert metrics.count(semconv.METRIC_GEN_AI_CLIENT_OPERATION_DURATION, **labels) == 1
    assert (
        metrics.sum(
            semconv.METRIC_GEN_AI_CLIENT_TOKEN_USAGE,
            **labels,
            **{semconv.GEN_AI_TOKEN_TYPE: "input"},
        )
        == result.input_tokens
    )
    assert (
        metrics.sum(
            semconv.METRIC_GEN_AI_CLIENT_TOKEN_USAGE,
            **labels,
            **{semconv.GEN_AI_TOKEN_TYPE: "output"},
        )
        == result.output_tokens
    )
    # Chunk timings are for streams (the conventions say so); a whole answer records none.
    assert metrics.count(semconv.METRIC_GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK, **labels) == 0
    with capture_metrics() as metrics:
        stream = engine.stream_chat(messages, max_new_tokens=5)
        "".join(stream)
    assert stream.result is not None
    assert metrics.count(semconv.METRIC_GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK, **labels) == 1
    assert (
        metrics.count(semconv.METRIC_GEN_AI_CLIENT_TIME_PER_OUTPUT_CHUNK, **labels)
        == stream.result.output_tokens - 1
    )


def test_streaming_yields_the_text_as_it_comes_and_ends_one_span(engine: LocalModel) -> None:
    with capture_spans() as spans:
        stream = engine.stream_chat(
            [{"role": "user", "content": "stream please"}], max_new_tokens=8
        )
        pieces = list(stream)
    result = stream.result
    assert result is not None and "".join(pieces) == result.text
    assert len(pieces) >= 1 and stream.first_token_at is not None
    span = only(spans, "chat tiny")
    assert span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == result.output_tokens
    assert span.attributes[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] > 0


def test_a_cancelled_stream_stops_the_model_and_says_so(engine: LocalModel) -> None:
    with (
        capture_spans() as spans,
        engine.stream("Observability means", max_new_tokens=200) as stream,
    ):
        next(stream)
    span = only(spans, "text_completion tiny")
    assert span.attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("cancelled",)
    assert span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] < 200
    assert span.status.status_code.name == "UNSET"


def test_a_stream_that_is_never_read_runs_nothing(engine: LocalModel) -> None:
    with capture_spans() as spans:
        engine.stream("never read", max_new_tokens=3)
    assert spans == []


def test_threads_take_turns_inside_the_model(
    engine: LocalModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside = 0
    most = 0
    guard = threading.Lock()
    forward = engine.model.forward

    def counting_forward(*args: Any, **kwargs: Any) -> Any:
        nonlocal inside, most
        with guard:
            inside += 1
            most = max(most, inside)
        try:
            return forward(*args, **kwargs)
        finally:
            with guard:
                inside -= 1

    monkeypatch.setattr(engine.model, "forward", counting_forward)
    results: list[Any] = []
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            if index % 2:
                results.append(
                    list(
                        engine.stream_chat(
                            [{"role": "user", "content": f"t{index}"}], max_new_tokens=6
                        )
                    )
                )
            else:
                results.append(engine.generate(f"thread {index}", max_new_tokens=6))
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    with capture_spans() as spans:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert not errors and len(results) == 6
    assert most == 1
    generation_spans = [s for s in spans if s.name.endswith(" tiny")]
    assert len(generation_spans) == 6
    assert max(s.attributes[semconv.LOCAL_QUEUE_TIME] for s in generation_spans) > 0


def test_a_prompt_longer_than_the_window_is_a_clear_error(engine: LocalModel) -> None:
    with pytest.raises(ContextWindowExceededError, match="context window of 256 tokens"):
        engine.generate("word " * 400)
    with pytest.raises(ContextWindowExceededError, match="asked for"):
        engine.generate("short prompt", max_new_tokens=1000)


def test_empty_prompts_and_messages_are_refused(engine: LocalModel) -> None:
    with pytest.raises(EmptyPromptError):
        engine.generate("   ")
    with pytest.raises(EmptyPromptError):
        engine.chat([])
    with pytest.raises(LocalModelError, match="role"):
        engine.chat([{"role": "wizard", "content": "hi"}])


def test_device_follows_use_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    assert local_model.choose_device({"USE_GPU": "0"}) == ("cpu", "USE_GPU=0")
    if not torch.cuda.is_available():
        device, why = local_model.choose_device({"USE_GPU": "1"})
        assert device == "cpu" and "no CUDA" in why
        assert local_model.choose_device({})[0] == "cpu"
    with pytest.raises(LocalModelError, match="USE_GPU"):
        local_model.choose_device({"USE_GPU": "maybe"})


def test_a_missing_model_folder_says_how_to_prepare(tmp_path: Path) -> None:
    with pytest.raises(models.ModelNotFoundError, match="o11ylab models prepare"):
        LocalModel(tmp_path / "missing", verbose=False)


def test_local_embeddings_are_384_normalized_dimensions_with_a_span() -> None:
    embedder = local_model.get_local_embedder(device="cpu", verbose=False)
    with capture_spans() as spans:
        result = embedder.embed(["a span is a timed operation", "metrics are numbers"])
    assert result.dimensions == 384 and len(result.vectors) == 2
    norm = sum(x * x for x in result.vectors[0]) ** 0.5
    assert abs(norm - 1.0) < 1e-3
    span = only(spans, "embeddings all-MiniLM-L6-v2")
    assert span.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == result.input_tokens > 0
    assert span.attributes[semconv.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] == 384
    with pytest.raises(EmptyPromptError):
        embedder.embed([])


def test_get_local_model_shares_one_engine_per_model_and_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from o11ylab.ai.local_model import _cache

    monkeypatch.setattr(_cache, "_ENGINES", {})  # this test's engines only
    folder = models.build_tiny_model(tmp_path / "tiny")
    first = local_model.get_local_model(folder, device="cpu", verbose=False)
    # verbose only prints a line: the same engine
    assert local_model.get_local_model(folder, device="cpu", verbose=True) is first
    if local_model.choose_device()[0] == "cpu":  # no device given: the one USE_GPU picks
        assert local_model.get_local_model(folder, verbose=False) is first
    other = local_model.get_local_model(folder, device="cpu", dtype=torch.bfloat16, verbose=False)
    assert other is not first
    assert (first.dtype, other.dtype) == ("float32", "bfloat16")
    assert local_model.get_local_model(folder, device="cpu", dtype=torch.bfloat16) is other
