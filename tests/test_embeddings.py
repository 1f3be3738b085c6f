"""Embeddings over real HTTP to the local endpoint (all-MiniLM-L6-v2), instrumented by the SDK's
official instrumentation."""

from __future__ import annotations

import asyncio
import math

import pytest

from o11ylab import semconv
from o11ylab.ai import InvalidInput, ModelNotFound, aembed, embed
from o11ylab.testing import capture_metrics, capture_spans

from .ai_support import LocalServer, local_fixture, local_server_fixture  # noqa: F401

pytestmark = pytest.mark.integration


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (
        math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    )


def test_embed_gives_one_normalized_384_vector_per_text_and_one_span(local: LocalServer) -> None:
    texts = ["A span is one timed operation.", "GPUs need cooling.", "Traces are trees of spans."]
    with capture_spans() as spans, capture_metrics() as metrics:
        result = embed(texts)
    assert len(result) == 3 and result.dimensions == 384
    assert result.model == local.embedding_model
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-3 for v in result.vectors)
    assert result.input_tokens > 0 and result.cost_usd == 0.0
    # Real embeddings: the two sentences about spans are closer than span vs. GPU cooling.
    assert _cosine(result.vectors[0], result.vectors[2]) > _cosine(
        result.vectors[0], result.vectors[1]
    )

    (span,) = spans
    assert span.name == f"embeddings {local.embedding_model}"
    attributes = span.attributes
    assert attributes[semconv.GEN_AI_OPERATION_NAME] == "embeddings"
    assert attributes[semconv.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] == 384
    assert attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == result.input_tokens
    assert semconv.GEN_AI_USAGE_OUTPUT_TOKENS not in attributes
    assert attributes[semconv.GEN_AI_USAGE_COST] == 0.0
    assert not any("input" in key and "text" in key for key in attributes)  # no text recorded

    operation = {"gen_ai.operation.name": "embeddings"}
    assert metrics.count("gen_ai.client.operation.duration", **operation) == 1
    assert metrics.sum("gen_ai.client.token.usage", **operation) == result.input_tokens


def test_long_lists_go_out_in_batches_in_order(local: LocalServer) -> None:
    texts = [f"note number {i} about telemetry" for i in range(5)]
    whole = embed(texts)
    with capture_spans() as spans:
        batched = embed(texts, batch_size=2)
    assert len(spans) == 3
    assert sum(s.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] for s in spans) == (
        batched.input_tokens
    )
    assert batched.input_tokens == whole.input_tokens
    for a, b in zip(whole.vectors, batched.vectors, strict=True):
        assert _cosine(a, b) > 0.9999


def test_async_embed(local: LocalServer) -> None:
    with capture_spans() as spans:
        result = asyncio.run(aembed("one text"))
    assert len(result.vectors) == 1 and result.dimensions == 384
    assert [s.name for s in spans] == [f"embeddings {local.embedding_model}"]


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ([], "No texts to embed"),
        ("", "texts[0] is empty"),
        (["fine", "  "], "texts[1] is empty"),
        (["fine", 3], "texts[1] is not a string (got int)"),
        (42, "texts must be a string or a list of strings"),
    ],
)
def test_bad_input_fails_before_anything_is_sent(
    local: LocalServer, texts: object, message: str
) -> None:
    with capture_spans() as spans, pytest.raises(InvalidInput) as caught:
        embed(texts)  # type: ignore[arg-type]
    assert message in str(caught.value)
    assert spans == []


def test_bad_batch_size(local: LocalServer) -> None:
    with pytest.raises(InvalidInput, match="batch_size"):
        embed(["x"], batch_size=0)


def test_unknown_embedding_model(local: LocalServer) -> None:
    with capture_spans() as spans, pytest.raises(ModelNotFound, match="HTTP 404"):
        embed(["x"], model="text-embedding-9")
    (span,) = spans
    assert span.attributes[semconv.ERROR_TYPE] == "openai.NotFoundError"
