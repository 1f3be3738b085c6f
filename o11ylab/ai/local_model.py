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
"""

from __future__ import annotations

import dataclasses
import os
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context

from .. import models, semconv
from ..errors import O11yLabError
from ..instrumentation._local import Outcome, span_notes

__all__ = [
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

DEFAULT_MAX_NEW_TOKENS = 256
# Below this a temperature samples as greedy decoding does, and dividing the logits by one near 0
# overflows float32 into NaN probabilities (a crash in torch.multinomial): decode greedily there,
# the line vLLM draws too.
_GREEDY_BELOW = 1e-5
_ROLES = {"system", "user", "assistant", "developer", "tool"}


class LocalModelError(O11yLabError):
    """A local generation could not run as asked. The message says what to change."""


class EmptyPromptError(LocalModelError, ValueError):
    """An empty prompt or an empty list of messages."""


class ContextWindowExceededError(LocalModelError, ValueError):
    """The prompt plus the tokens asked for do not fit the model's context window."""

    def __init__(self, model: str, input_tokens: int, max_new_tokens: int, context_window: int):
        self.input_tokens = input_tokens
        self.max_new_tokens = max_new_tokens
        self.context_window = context_window
        if input_tokens >= context_window:
            detail = f"the prompt alone is {input_tokens} tokens"
        else:
            detail = (
                f"the prompt is {input_tokens} tokens and {max_new_tokens} more were asked "
                f"for ({input_tokens + max_new_tokens} in all)"
            )
        super().__init__(
            f"{model} has a context window of {context_window} tokens, but {detail}. "
            "Shorten the prompt or ask for fewer new tokens (max_new_tokens / max_tokens)."
        )


@dataclasses.dataclass(frozen=True)
class Generation:
    """One generated answer and what it cost in tokens and time."""

    text: str
    model: str
    input_tokens: int
    output_tokens: int
    finish_reason: str  # "stop" (end of sequence or a stop string), "length", or "cancelled"
    time_to_first_token_s: float | None
    duration_s: float

    @property
    def tokens_per_second(self) -> float:
        return self.output_tokens / self.duration_s if self.duration_s > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class EmbeddingResult:
    vectors: list[list[float]]
    model: str
    input_tokens: int

    @property
    def dimensions(self) -> int:
        return len(self.vectors[0]) if self.vectors else 0


# --- device -----------------------------------------------------------------------------------


def choose_device(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(torch device, why) from ``USE_GPU`` and ``GPU_DEVICE_ID``."""
    import torch

    env = os.environ if env is None else env
    raw = env.get("USE_GPU", "").strip().lower()
    if raw in ("0", "false", "no", "off"):
        return "cpu", "USE_GPU=0"
    if raw not in ("", "auto", "1", "true", "yes", "on"):
        raise LocalModelError(f"USE_GPU={raw!r} is not a yes/no value: use 1, 0 or leave it unset.")
    if not torch.cuda.is_available():
        why = (
            "USE_GPU is set but torch sees no CUDA device"
            if raw not in ("", "auto")
            else ("no CUDA device")
        )
        return "cpu", why
    count = torch.cuda.device_count()
    id_raw = env.get("GPU_DEVICE_ID", "0").strip() or "0"
    try:
        index = int(id_raw)
    except ValueError:
        raise LocalModelError(f"GPU_DEVICE_ID={id_raw!r} is not a whole number.") from None
    if not 0 <= index < count:
        raise LocalModelError(
            f"GPU_DEVICE_ID={index} but torch sees {count} CUDA device(s): use 0..{count - 1}."
        )
    return f"cuda:{index}", f"{torch.cuda.get_device_name(index)}"


def _default_dtype(device: str) -> Any:
    import torch

    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32  # bf16 matmuls are slow on most CPUs


# --- telemetry: the instrumentors make the spans -------------------------------------------------

_INSTRUMENTED_LOCK = threading.Lock()
_INSTRUMENTORS: dict[str, Any] = {}
_PRICED = False


def _ensure_instrumented(embeddings: bool = False) -> None:
    """Switch on o11ylab's instrumentor (global providers) unless it is on, or the user turned
    it off with ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``; and put cost on GenAI spans. Cheap
    once it is on: the engine calls it before every generation."""
    global _PRICED
    name = "sentence_transformers" if embeddings else "transformers"
    known = _INSTRUMENTORS.get(name)
    if known is not None and known.is_instrumented_by_opentelemetry and _PRICED:
        return
    from .. import instrumentation, pricing

    with _INSTRUMENTED_LOCK:
        if embeddings:
            from ..instrumentation.sentence_transformers import (
                SentenceTransformersInstrumentor as Instrumentor,
            )
        else:
            from ..instrumentation.transformers import (
                TransformersInstrumentor as Instrumentor,
            )
        instrumentor = _INSTRUMENTORS[name] = Instrumentor()
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentation.ensure(name)  # through the loader when %load_ext activated it
        if not _PRICED:
            pricing.install()
            _PRICED = True


# --- the token clock ----------------------------------------------------------------------------


class _TokenClock:
    """A transformers streamer that timestamps every generation step (and can relay tokens).

    ``generate`` calls ``put`` once with the prompt, then once per new token (a column of the
    batch), then ``end``. ``on_token`` gets each new token's ids when streaming.
    """

    def __init__(self, on_token: Callable[[list[int]], None] | None = None) -> None:
        self.times: list[float] = []
        self._seen_prompt = False
        self._on_token = on_token

    def put(self, value: Any) -> None:
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        self.times.append(time.perf_counter())
        if self._on_token is not None:
            self._on_token(value.reshape(-1).tolist())

    def end(self) -> None:
        pass


class _Cancel:
    """A stopping criterion that ends generation when the consumer goes away."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


@dataclasses.dataclass
class _Request:
    operation: str
    prompts: list[str]
    messages: list[dict[str, str]] | None
    input_ids: Any
    attention_mask: Any
    input_tokens: list[int]
    max_new_tokens: int
    temperature: float | None
    top_p: float | None
    seed: int | None
    stop: list[str]


# --- the engine -----------------------------------------------------------------------------------


class LocalModel:
    """A causal language model and its tokenizer, loaded once, instrumented on every call."""

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str | None = None,
        dtype: Any = None,
        prepare: bool = True,
        verbose: bool = True,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        ref = models.resolve_chat_model(str(model) if model is not None else None, prepare=prepare)
        why = "asked for"
        if device is None:
            device, why = choose_device()
        self.ref = ref
        self.name = ref.name
        self.path = ref.path
        self.device = str(device)
        self._dtype = dtype if dtype is not None else _default_dtype(self.device)
        started = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(str(ref.path), local_files_only=True)
        loaded = AutoModelForCausalLM.from_pretrained(
            str(ref.path), dtype=self._dtype, local_files_only=True
        )
        self.model = loaded.to(self.device)  # type: ignore[arg-type]  # transformers' stub
        self.model.eval()
        self.dtype = str(self._dtype).removeprefix("torch.")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"  # decoder-only batches pad on the left
        self.context_window = self._context_window()
        # The window is checked here with a clearer error than the tokenizer's warning.
        self.tokenizer.model_max_length = sys.maxsize
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self.lock = threading.Lock()
        self._torch = torch
        _ensure_instrumented()
        if verbose:
            print(
                f"o11ylab: local model {self.name} on {self.device} ({self.dtype}; {why}), "
                f"loaded in {time.perf_counter() - started:.1f}s",
                file=sys.stderr,
                flush=True,
            )

    def _context_window(self) -> int:
        config = self.model.config
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        limit = getattr(self.tokenizer, "model_max_length", None)
        return int(limit) if isinstance(limit, int) and 0 < limit < 10_000_000 else 2048

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # -- public calls ------------------------------------------------------------------------------

    def generate(
        self,
        prompt: str | Sequence[str],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> Any:
        """Continue one prompt (returns a ``Generation``) or a batch (a list of them)."""
        single = isinstance(prompt, str)
        prompts = [prompt] if isinstance(prompt, str) else [str(p) for p in prompt]
        request = self._request(
            semconv.TEXT_COMPLETION_OPERATION,
            prompts,
            None,
            max_new_tokens,
            temperature,
            top_p,
            seed,
            stop,
        )
        results = self._run(request)
        return results[0] if single else results

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> Generation:
        """Answer a conversation (OpenAI-style messages) through the model's chat template."""
        prompt, normalized = self._render_chat(messages)
        request = self._request(
            semconv.CHAT_OPERATION,
            [prompt],
            normalized,
            max_new_tokens,
            temperature,
            top_p,
            seed,
            stop,
        )
        return self._run(request)[0]

    def stream(self, prompt: str, **options: Any) -> TokenStream:
        """Like ``generate`` for one prompt, yielding text as it is produced."""
        request = self._request(
            semconv.TEXT_COMPLETION_OPERATION,
            [prompt],
            None,
            options.pop("max_new_tokens", None),
            **_sampling(options),
        )
        return TokenStream(self, request, otel_context.get_current())

    def stream_chat(self, messages: Sequence[Mapping[str, Any]], **options: Any) -> TokenStream:
        """Like ``chat``, yielding text as it is produced; ``.result`` holds the totals."""
        prompt, normalized = self._render_chat(messages)
        request = self._request(
            semconv.CHAT_OPERATION,
            [prompt],
            normalized,
            options.pop("max_new_tokens", None),
            **_sampling(options),
        )
        return TokenStream(self, request, otel_context.get_current())

    # -- preparing a request -----------------------------------------------------------------------

    def _render_chat(
        self, messages: Sequence[Mapping[str, Any]]
    ) -> tuple[str, list[dict[str, str]]]:
        if not messages:
            raise EmptyPromptError("messages is empty: pass at least one message.")
        normalized: list[dict[str, str]] = []
        for index, message in enumerate(messages):
            if not isinstance(message, Mapping):
                raise LocalModelError(f"messages[{index}] is not a mapping with role and content.")
            role = message.get("role")
            if role not in _ROLES:
                raise LocalModelError(
                    f"messages[{index}].role is {role!r}: use one of {', '.join(sorted(_ROLES))}."
                )
            normalized.append(
                {
                    "role": "system" if role == "developer" else str(role),
                    "content": message_text(message.get("content")),
                }
            )
        if not any(m["content"].strip() for m in normalized):
            raise EmptyPromptError("every message is empty: give the model something to answer.")
        if not self.has_chat_template:
            raise LocalModelError(
                f"{self.name} has no chat template, so it cannot take messages: use "
                "generate(prompt) with plain text, or a model with a chat template."
            )
        prompt = self.tokenizer.apply_chat_template(
            normalized, tokenize=False, add_generation_prompt=True
        )
        return str(prompt), normalized

    def _request(
        self,
        operation: str,
        prompts: list[str],
        messages: list[dict[str, str]] | None,
        max_new_tokens: int | None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> _Request:
        if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
            raise EmptyPromptError("the prompt is empty: give the model some text to continue.")
        if max_new_tokens is not None and max_new_tokens < 1:
            raise LocalModelError(f"max_new_tokens must be at least 1, not {max_new_tokens}.")
        if seed is not None and not -(2**63) <= seed < 2**63:  # torch's and OTLP's int64
            raise LocalModelError(f"seed must be a 64-bit integer, not {seed}.")
        # Chat templates already hold the special tokens the model expects.
        encoded = self.tokenizer(
            prompts, return_tensors="pt", padding=True, add_special_tokens=messages is None
        )
        lengths = [int(n) for n in encoded["attention_mask"].sum(dim=1).tolist()]
        longest = int(encoded["input_ids"].shape[1])
        room = self.context_window - longest
        if max_new_tokens is None:
            if room < 1:
                raise ContextWindowExceededError(self.name, longest, 1, self.context_window)
            max_new_tokens = min(DEFAULT_MAX_NEW_TOKENS, room)
        elif max_new_tokens > room:
            raise ContextWindowExceededError(
                self.name, longest, max_new_tokens, self.context_window
            )
        stops = [stop] if isinstance(stop, str) else [s for s in (stop or ()) if s]
        return _Request(
            operation,
            prompts,
            messages,
            encoded["input_ids"],
            encoded["attention_mask"],
            lengths,
            int(max_new_tokens),
            temperature,
            top_p,
            seed,
            stops,
        )

    # -- running it --------------------------------------------------------------------------------

    def _notes(self, request: _Request, queue_time: float) -> Any:
        """What only the engine knows, for the instrumentor's span of this generation."""
        attributes: dict[str, Any] = {
            semconv.GEN_AI_REQUEST_MAX_TOKENS: request.max_new_tokens,
            semconv.LOCAL_MODEL_CONTEXT_WINDOW: self.context_window,
            semconv.LOCAL_QUEUE_TIME: queue_time,
            semconv.GEN_AI_RESPONSE_ID: f"local-{uuid.uuid4().hex[:24]}",
        }
        if request.temperature is not None:
            attributes[semconv.GEN_AI_REQUEST_TEMPERATURE] = request.temperature
        if request.top_p is not None:
            attributes[semconv.GEN_AI_REQUEST_TOP_P] = request.top_p
        if request.seed is not None:
            attributes[semconv.GEN_AI_REQUEST_SEED] = request.seed
        if request.stop:
            attributes[semconv.GEN_AI_REQUEST_STOP_SEQUENCES] = request.stop
        messages = (
            request.messages
            if request.messages is not None
            else [{"role": "user", "content": p} for p in request.prompts]
        )
        return span_notes(
            attributes,
            model=self.name,
            operation=request.operation,
            messages=messages,
            tokenizer=self.tokenizer,
            time_first_token=True,
        )

    def _generate_locked(
        self, request: _Request, clock: _TokenClock | None, cancel: _Cancel | None
    ) -> Any:
        _ensure_instrumented()
        torch = self._torch
        kwargs: dict[str, Any] = {
            "input_ids": request.input_ids.to(self.device),
            "attention_mask": request.attention_mask.to(self.device),
            "max_new_tokens": request.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if clock is not None:  # streams only: a streamer costs a little on every token
            kwargs["streamer"] = clock
        if request.temperature is not None and request.temperature >= _GREEDY_BELOW:
            kwargs.update(do_sample=True, temperature=request.temperature)
            if request.top_p is not None:
                kwargs["top_p"] = request.top_p
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if request.stop:
            kwargs.update(stop_strings=request.stop, tokenizer=self.tokenizer)
        if cancel is not None:
            from transformers import StoppingCriteriaList

            kwargs["stopping_criteria"] = StoppingCriteriaList([cancel])
        if request.seed is not None:
            torch.manual_seed(request.seed)
        with torch.inference_mode():
            return self.model.generate(**kwargs)

    def _decode(self, request: _Request, row: list[int]) -> tuple[str, int, str]:
        """(text, output tokens, finish reason) of one generated row (prompt cut off)."""
        count = 0
        finish = "length"
        kept: list[int] = []
        for token in row:
            if token in self._eos_ids:
                count += 1
                finish = "stop"
                break
            if token == self.tokenizer.pad_token_id and token not in self._eos_ids:
                break  # padding after another row of the batch finished
            kept.append(token)
            count += 1
        text = str(self.tokenizer.decode(kept, skip_special_tokens=True))
        for stop in request.stop:
            cut = text.find(stop)
            if cut >= 0:
                text, finish = text[:cut], "stop"
        return text, count, finish

    def _run(self, request: _Request) -> list[Generation]:
        started = time.perf_counter()
        with self.lock:
            queue_time = time.perf_counter() - started
            with self._notes(request, queue_time) as notes:
                output = self._generate_locked(request, None, None)
        prompt_width = request.input_ids.shape[1]
        duration = time.perf_counter() - started
        ttft = _first_token(notes.outcome, queue_time)
        results = []
        for row, input_tokens in zip(
            output[:, prompt_width:].tolist(), request.input_tokens, strict=True
        ):
            text, count, finish = self._decode(request, row)
            results.append(Generation(text, self.name, input_tokens, count, finish, ttft, duration))
        return results


def _first_token(outcome: Outcome | None, queue_time: float) -> float | None:
    """Seconds from the call to the first token (the instrumentor times it from the model's
    start; None when it is switched off)."""
    if outcome is None or outcome.time_to_first_token is None:
        return None
    return queue_time + outcome.time_to_first_token


def _sampling(options: dict[str, Any]) -> dict[str, Any]:
    allowed = {"temperature", "top_p", "seed", "stop"}
    unknown = set(options) - allowed
    if unknown:
        raise TypeError(f"unexpected option(s): {', '.join(sorted(unknown))}")
    return options


def message_text(content: Any) -> str:
    """The text of an OpenAI-style message content: a string or a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        texts: list[str] = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                texts.append(part)
            else:
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise LocalModelError(
                    f"message content of type {kind!r} is not supported by a "
                    "local text model; send text parts only."
                )
        return "".join(texts)
    raise LocalModelError("message content must be a string or a list of text parts.")


_DONE = object()


class TokenStream:
    """Text pieces of one generation, as the model produces them.

    Nothing runs until the first piece is asked for (or ``start()``). The model runs in a
    worker thread that holds the model's lock, decodes each new token and hands text pieces
    over; the same thread ends the span and records the metrics, so the telemetry is complete
    even when the consumer stops reading. ``cancel()`` (also ``close()`` or leaving a ``with``
    block) stops the model at its next token; the span then says finish reason ``cancelled``.
    After the last piece ``result`` holds the ``Generation``.
    """

    def __init__(self, engine: LocalModel, request: _Request, parent: Any) -> None:
        self._engine = engine
        self._request = request
        self._parent = parent
        self._pieces: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._cancel = _Cancel()
        self._worker: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.result: Generation | None = None
        self.first_token_at: float | None = None  # perf_counter() when the first piece was ready

    @property
    def input_tokens(self) -> int:
        return self._request.input_tokens[0]

    def start(self) -> TokenStream:
        with self._start_lock:
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._work, name="o11ylab-generate", daemon=True
                )
                self._worker.start()
        return self

    def __iter__(self) -> TokenStream:
        return self

    def __next__(self) -> str:
        self.start()
        item = self._pieces.get()
        if item is _DONE:
            self._pieces.put(_DONE)  # later calls stop too
            raise StopIteration
        if isinstance(item, BaseException):
            self._pieces.put(_DONE)
            raise item
        return str(item)

    def cancel(self) -> None:
        """Stop the model at its next token; returns at once."""
        self._cancel.event.set()

    def close(self) -> None:
        """Cancel and wait for the worker to end the span."""
        self.cancel()
        if self._worker is not None:
            self._worker.join()

    def wait(self, timeout: float | None = None) -> Generation | None:
        """Wait for the generation to finish (start it first); return its ``Generation``."""
        self.start()
        assert self._worker is not None
        self._worker.join(timeout)
        return self.result

    def __enter__(self) -> TokenStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _work(self) -> None:
        engine, request = self._engine, self._request
        started = time.perf_counter()
        token_context = otel_context.attach(self._parent)  # the caller's span is the parent
        tokens: list[int] = []
        state = {"emitted": "", "finish": "length"}
        eos = engine._eos_ids

        def on_token(ids: list[int]) -> None:
            token = int(ids[0])
            tokens.append(token)
            if token in eos:
                state["finish"] = "stop"
                return
            text = str(
                engine.tokenizer.decode(
                    [t for t in tokens if t not in eos], skip_special_tokens=True
                )
            )
            if text.endswith("\ufffd"):
                return  # half of a multi-byte character: wait for the rest
            for stop in request.stop:
                cut = text.find(stop)
                if cut >= 0:
                    text, state["finish"] = text[:cut], "stop"
            piece = text[len(state["emitted"]) :]
            if piece and text.startswith(state["emitted"]):
                if self.first_token_at is None:
                    self.first_token_at = time.perf_counter()
                state["emitted"] = text
                self._pieces.put(piece)

        def cancelled() -> bool:
            return (
                self._cancel.event.is_set()
                and state["finish"] != "stop"
                and len(tokens) < request.max_new_tokens
            )

        clock = _TokenClock(on_token)
        error: BaseException | None = None
        try:
            with engine.lock:
                queue_time = time.perf_counter() - started
                with engine._notes(request, queue_time) as notes:
                    notes.on_end = lambda _outcome: (
                        {semconv.GEN_AI_RESPONSE_FINISH_REASONS: ["cancelled"]}
                        if cancelled()
                        else None
                    )
                    engine._generate_locked(request, clock, self._cancel)
            finish = "cancelled" if cancelled() else state["finish"]
            ttft = clock.times[0] - started if clock.times else None
            self.result = Generation(
                state["emitted"],
                engine.name,
                request.input_tokens[0],
                len(tokens),
                finish,
                ttft,
                time.perf_counter() - started,
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            error = exc
        finally:
            otel_context.detach(token_context)
            self._pieces.put(error if error is not None else _DONE)


# --- embeddings -----------------------------------------------------------------------------------


class LocalEmbedder:
    """A sentence-transformers model (default all-MiniLM-L6-v2), instrumented like LocalModel."""

    def __init__(
        self, model: str | Path | None = None, *, device: str | None = None, verbose: bool = True
    ) -> None:
        ref = models.resolve_embedding_model(str(model) if model is not None else None)
        if device is None:
            device, _why = choose_device()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise LocalModelError(
                "Local embeddings need sentence-transformers: `pip install 'o11ylab[ai]'`."
            ) from None
        started = time.perf_counter()
        self.ref = ref
        self.name = ref.name
        self.device = str(device)
        self.model = SentenceTransformer(str(ref.path), device=self.device, local_files_only=True)
        # get_sentence_embedding_dimension was renamed in sentence-transformers 6.
        dimension = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        self.dimensions = int(dimension() or 0)
        self.max_tokens = int(self.model.max_seq_length or 512)
        self.lock = threading.Lock()
        _ensure_instrumented(embeddings=True)
        if verbose:
            print(
                f"o11ylab: embedding model {self.name} on {self.device} ({self.dimensions} "
                f"dimensions), loaded in {time.perf_counter() - started:.1f}s",
                file=sys.stderr,
                flush=True,
            )

    def count_tokens(self, texts: Sequence[str]) -> int:
        encoded = self.model.tokenizer(list(texts), truncation=True, max_length=self.max_tokens)
        return sum(len(ids) for ids in encoded["input_ids"])

    def embed(self, texts: str | Sequence[str]) -> EmbeddingResult:
        """Normalized vectors for ``texts``; one span ``embeddings {model}`` per call."""
        items = [texts] if isinstance(texts, str) else list(texts)
        if not items or any(not isinstance(t, str) or not t.strip() for t in items):
            raise EmptyPromptError("nothing to embed: pass one or more non-empty strings.")
        _ensure_instrumented(embeddings=True)
        with self.lock, span_notes(model=self.name) as notes:
            array = self.model.encode(
                items, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
        vectors = array.astype("float32").tolist()
        counted = notes.outcome.input_tokens if notes.outcome is not None else 0
        return EmbeddingResult(vectors, self.name, counted or self.count_tokens(items))


# --- one engine per model per process -------------------------------------------------------------

_ENGINES: dict[tuple[str, str], Any] = {}
_ENGINES_LOCK = threading.Lock()


def _shared(kind: str, model: str | Path | None, factory: Any) -> Any:
    key = (kind, str(model) if model is not None else "")
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _ENGINES[key] = factory()
        return engine


def get_local_model(model: str | Path | None = None, **options: Any) -> LocalModel:
    """The process's shared ``LocalModel`` (default: ``LOCAL_MODEL_NAME``, else SmolLM2)."""
    model = model if model is not None else (os.environ.get("LOCAL_MODEL_NAME", "").strip() or None)
    return _shared("chat", model, lambda: LocalModel(model, **options))  # type: ignore[no-any-return]


def get_local_embedder(model: str | Path | None = None, **options: Any) -> LocalEmbedder:
    """The process's shared ``LocalEmbedder`` (default: ``EMBEDDING_MODEL`` or all-MiniLM-L6-v2)."""
    model = model if model is not None else (os.environ.get("EMBEDDING_MODEL", "").strip() or None)
    return _shared("embedding", model, lambda: LocalEmbedder(model, **options))  # type: ignore[no-any-return]
