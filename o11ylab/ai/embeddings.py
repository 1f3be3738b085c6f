"""Embeddings through the instrumented openai SDK.

    from o11ylab.ai import embed

    result = embed(["a span", "a trace"])
    result.vectors[0][:3], result.dimensions, result.input_tokens, result.cost_usd

Each request is one ``embeddings {model}`` span (the official OpenAI instrumentation) with
``gen_ai.embeddings.dimension.count``, ``gen_ai.usage.input_tokens`` and the cost. Locally
the endpoint serves all-MiniLM-L6-v2 (384 dimensions, normalized). Long lists go out in
batches of ``batch_size`` texts, one span each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import pricing
from ._types import EmbeddingResult
from .client import (
    Endpoint,
    InvalidInput,
    default_model,
    endpoint_of,
    get_async_client,
    get_client,
    translate_errors,
)

__all__ = ["EmbeddingResult", "aembed", "embed"]

DEFAULT_BATCH_SIZE = 256


def _texts(texts: str | Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    elif not isinstance(texts, Sequence):
        raise InvalidInput(
            f"texts must be a string or a list of strings, not {type(texts).__name__}"
        )
    if not texts:
        raise InvalidInput("No texts to embed", hint="Pass at least one non-empty string.")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInput(f"texts[{index}] is not a string (got {type(text).__name__})")
        if not text.strip():
            raise InvalidInput(
                f"texts[{index}] is empty",
                hint="Embeddings of empty text mean nothing; drop it first.",
            )
    return list(texts)


def _prepare(
    client: Any,
    texts: str | Sequence[str],
    model: str | None,
    batch_size: int,
    dimensions: int | None,
) -> tuple[Endpoint, str, list[str], dict[str, Any]]:
    items = _texts(texts)
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise InvalidInput("model is empty", hint="Pass a model name, or None for the default.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInput(f"batch_size must be a whole number >= 1, not {batch_size!r}")
    extra: dict[str, Any] = {"encoding_format": "float"}
    if dimensions is not None:
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
            raise InvalidInput(f"dimensions must be a whole number >= 1, not {dimensions!r}")
        extra["dimensions"] = dimensions
    pricing.load_table()
    endpoint = endpoint_of(client)
    return endpoint, model or default_model("embeddings", get_client(endpoint)), items, extra


def _collect(endpoint: Endpoint, model: str, responses: list[Any]) -> EmbeddingResult:
    vectors: list[list[float]] = []
    tokens = 0
    for response in responses:
        ordered = sorted(response.data, key=lambda item: item.index)
        vectors.extend(list(item.embedding) for item in ordered)
        if response.usage is not None:
            tokens += int(response.usage.prompt_tokens or 0)
    response_model = responses[-1].model if responses else None
    cost = pricing.price_call(model, response_model, tokens, server=endpoint.server)
    return EmbeddingResult(
        vectors=vectors,
        model=response_model or model,
        input_tokens=tokens,
        cost_usd=None if cost is None else cost.amount,
        responses=responses,
    )


def embed(
    texts: str | Sequence[str],
    model: str | None = None,
    *,
    dimensions: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    client: Any = None,
) -> EmbeddingResult:
    """Embed one text or a list of texts; one vector per text, in order."""
    client = client or get_client()
    endpoint, chosen, items, extra = _prepare(client, texts, model, batch_size, dimensions)
    responses = []
    with translate_errors(endpoint, chosen):
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            responses.append(client.embeddings.create(model=chosen, input=batch, **extra))
    return _collect(endpoint, chosen, responses)


async def aembed(
    texts: str | Sequence[str],
    model: str | None = None,
    *,
    dimensions: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    client: Any = None,
) -> EmbeddingResult:
    """``embed`` for ``await``."""
    client = client or get_async_client()
    endpoint, chosen, items, extra = _prepare(client, texts, model, batch_size, dimensions)
    responses = []
    with translate_errors(endpoint, chosen):
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            responses.append(await client.embeddings.create(model=chosen, input=batch, **extra))
    return _collect(endpoint, chosen, responses)
