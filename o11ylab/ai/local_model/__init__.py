"""Local transformers inference in the kernel, with a GenAI span and metrics per generation.

    from o11ylab.ai.local_model import get_local_model

    model = get_local_model()                      # LOCAL_MODEL_NAME, else SmolLM2-135M-Instruct
    model.chat([{"role": "user", "content": "Say hi"}], max_new_tokens=20).text
    model.generate(["A haiku about spans:", "A limerick about logs:"], max_new_tokens=30)
    for piece in model.stream_chat([{"role": "user", "content": "Count to five"}]):
        print(piece, end="")

Each call is one span ``chat {model}`` (messages, through the model's chat template) or
``text_completion {model}`` (plain prompts, one span per batch) of kind INTERNAL, with
``gen_ai.provider.name = o11ylab.local`` (``semconv.PROVIDER_LOCAL``), token usage, time to
first token, output tokens per second, device, dtype and (from o11ylab's cost enricher) a cost
of 0 USD; and the GenAI client metrics. Prompt and completion text go on the span only when
content capture includes spans.

The spans and metrics are not written here: they come from o11ylab's transformers and
sentence-transformers instrumentors (``o11ylab.instrumentation``), the same that trace a
user's own ``model.generate`` and ``SentenceTransformer.encode``, switched on here if the
loader has not done it. What only the engine knows (the time it waited for the model's lock,
``o11ylab.gen_ai.queue_time``; chat or completion; the conversation; the seed; a stream's
``cancelled`` finish reason) reaches the same span through ``span_notes``. A span covers the
model's run, after the wait for the lock.

The device comes from ``USE_GPU`` (unset: CUDA when torch sees one; 0: CPU; 1: CUDA, or CPU
with a note when there is none) and ``GPU_DEVICE_ID`` (default 0). One lock per model: calls
from several threads (the endpoint's request threads, a user's thread pool) take turns, and
the time each waited is on its span (``o11ylab.gen_ai.queue_time``).

Inside: ``_device`` (device and dtype), ``_engine`` (``LocalModel``: requests, generation),
``_stream`` (``TokenStream`` and its worker thread), ``_embedder`` (``LocalEmbedder``),
``_instrument`` (switching the instrumentors on), ``_cache`` (one engine per model and
options), ``_generation`` and ``_errors`` (what calls return and raise).
"""

from __future__ import annotations

from .._types import EmbeddingResult
from ._cache import get_local_embedder, get_local_model
from ._device import choose_device
from ._embedder import LocalEmbedder
from ._engine import DEFAULT_MAX_NEW_TOKENS, LocalModel, message_text
from ._errors import ContextWindowExceededError, EmptyPromptError, LocalModelError
from ._generation import Generation
from ._stream import TokenStream

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "ContextWindowExceededError",
    "EmbeddingResult",
    "EmptyPromptError",
    "Generation",
    "LocalEmbedder",
    "LocalModel",
    "LocalModelError",
    "TokenStream",
    "choose_device",
    "get_local_embedder",
    "get_local_model",
    "message_text",
]
