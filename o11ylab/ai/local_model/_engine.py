"""``LocalModel``: a causal language model, its tokenizer and its lock; generate, chat, stream."""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context

from ... import models, semconv
from ..._say import say
from ...instrumentation._local import Outcome, span_notes
from ._batch import BatchedChat
from ._device import _default_dtype, choose_device, quiet_loading
from ._errors import ContextWindowExceededError, EmptyPromptError, LocalModelError
from ._generation import Generation, _Request
from ._instrument import _ensure_instrumented
from ._stream import TokenStream, _Cancel, _TokenClock

DEFAULT_MAX_NEW_TOKENS = 256
# Below this a temperature samples as greedy decoding does, and dividing the logits by one near 0
# overflows float32 into NaN probabilities (a crash in torch.multinomial): decode greedily there,
# the line vLLM draws too.
_GREEDY_BELOW = 1e-5
_ROLES = {"system", "user", "assistant", "developer", "tool"}


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
        tracer_provider: Any = None,
        meter_provider: Any = None,
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
        with quiet_loading():
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
        self._batcher: Any = None  # _batch._Batcher, made on the first batched request
        self._torch = torch
        # Used when this engine switches the instrumentor on (o11ylab.ai._otel).
        self._providers = {"tracer_provider": tracer_provider, "meter_provider": meter_provider}
        _ensure_instrumented(**self._providers)
        if verbose:
            say(  # information, not an error: stdout, not Jupyter's red stderr block
                f"local model {self.name} on {self.device} ({self.dtype}; {why}), "
                f"loaded in {time.perf_counter() - started:.1f}s",
                level=logging.INFO,
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
        return TokenStream(self, self._chat_request(messages, options), otel_context.get_current())

    def batched_chat(self, messages: Sequence[Mapping[str, Any]], **options: Any) -> Any:
        """Like ``stream_chat`` for a caller that wants only the whole answer: a greedy request
        that arrives while the model is busy is answered in one batch with the others waiting
        (``_batch``), with the text it gets alone. Sampled requests run alone, as a stream."""
        request = self._chat_request(messages, options)
        parent = otel_context.get_current()
        if request.temperature is not None and request.temperature >= _GREEDY_BELOW:
            return TokenStream(self, request, parent)
        return BatchedChat(self, request, parent)

    # -- preparing a request -----------------------------------------------------------------------

    def _chat_request(
        self, messages: Sequence[Mapping[str, Any]], options: dict[str, Any]
    ) -> _Request:
        prompt, normalized = self._render_chat(messages)
        return self._request(
            semconv.CHAT_OPERATION,
            [prompt],
            normalized,
            options.pop("max_new_tokens", None),
            **_sampling(options),
        )

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
        return span_notes(**self._note_fields(request, queue_time))

    def _note_fields(self, request: _Request, queue_time: float) -> dict[str, Any]:
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
        return {
            "attributes": attributes,
            "model": self.name,
            "operation": request.operation,
            "messages": messages,
            "tokenizer": self.tokenizer,
            "time_first_token": True,
        }

    def _generate_locked(
        self, request: _Request, clock: _TokenClock | None, cancel: _Cancel | None
    ) -> Any:
        _ensure_instrumented(**self._providers)
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
