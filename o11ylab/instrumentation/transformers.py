"""OpenTelemetry instrumentation for Hugging Face transformers: one GenAI span per generation.

    from o11ylab.instrumentation.transformers import TransformersInstrumentor

    TransformersInstrumentor().instrument()          # global providers, or pass your own:
    TransformersInstrumentor().instrument(tracer_provider=tp, meter_provider=mp)

``%load_ext o11ylab`` and ``o11ylab.init()`` switch it on when transformers is imported, and
``opentelemetry-instrument`` does too (entry point ``transformers`` in the
``opentelemetry_instrumentor`` group; ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=transformers``
turns it off).

What makes spans:

- ``GenerationMixin.generate`` (every causal LM / seq2seq model): ``text_completion {model}``.
- the ``text-generation`` pipeline: ``text_completion {model}``, or ``chat {model}`` when it
  was given chat messages. One span per pipeline call; the ``generate`` calls it makes add
  their tokens to that span and make none of their own.
- the ``feature-extraction`` pipeline: ``embeddings {model}``.

Spans are of kind INTERNAL: the model runs inside this process, so there is no remote peer for
a CLIENT span to call (the GenAI conventions allow INTERNAL for in-process inference). They
carry ``gen_ai.operation.name``, ``gen_ai.provider.name = o11ylab.local`` (local models are
priced at 0 by o11ylab's cost enricher), ``gen_ai.request.model`` (the model's
``name_or_path``; its folder's name when it is a path), the request parameters that were
passed, or set in the generation config when sampling (max tokens, temperature, top_p, top_k,
stop strings, sequences asked for), input tokens (padding excluded) and output tokens (new
tokens per sequence up to its end-of-sequence token, padding excluded), the finish reasons
(``stop``, ``length``), ``gen_ai.response.time_to_first_chunk``, output tokens per second
(``o11ylab.gen_ai.output_tokens_per_second``), device, dtype and context window. Prompt and
completion text (when a tokenizer is known: the pipeline's, ``tokenizer=``, or the
streamer's) only when ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` includes spans.
Errors set ``error.type`` and status ERROR and are raised unchanged. Metrics:
``gen_ai.client.operation.duration`` and ``gen_ai.client.token.usage``, plus, for streamed
generations, ``gen_ai.client.operation.time_to_first_chunk`` / ``...time_per_output_chunk``.

Streaming: pass a streamer (``TextIteratorStreamer``, ``TextStreamer``) as usual, ``generate``
running in another thread if you like; the span ends when generation ends and the time to the
first token is taken at the streamer's first token. The thread does not inherit the caller's
context by itself: start it with ``contextvars.copy_context().run`` to nest its span.

Overhead: nothing runs per token unless you stream. Without a streamer the time to first token
comes from a forward hook that fires once, after the prompt's forward pass, and removes
itself (on CUDA it waits for that pass to finish, a wait generate makes anyway); it is not
installed when the span is not recording.

Callers that know more than the instrumentor (o11ylab's engine: queue time, the conversation,
a cancellation) add it to the next span with ``span_notes`` (see ``o11ylab.instrumentation
._local``), not with a span of their own.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from .. import semconv
from ._local import (
    Instruments,
    ModelCall,
    Outcome,
    Patches,
    SpanNotes,
    _log,
    _now,
    active_call,
    model_name,
    span_notes,
    take_notes,
)

__all__ = ["Outcome", "SpanNotes", "TransformersInstrumentor", "span_notes"]

_INSTRUMENTS = ("transformers >= 4.40",)
_CONFIG_WINDOW_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_sequence_length",
    "seq_length",
)


class TransformersInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Spans and metrics for ``generate`` and the text-generation / feature-extraction
    pipelines (see the module's docs)."""

    _patches: Patches | None = None
    _instruments: Instruments | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return _INSTRUMENTS

    def _instrument(self, **kwargs: Any) -> None:
        from transformers import FeatureExtractionPipeline, TextGenerationPipeline
        from transformers.generation.utils import GenerationMixin

        self._instruments = Instruments(kwargs.get("tracer_provider"), kwargs.get("meter_provider"))
        patches = Patches()
        patches.wrap(GenerationMixin, "generate", self._wrap_generate)
        patches.wrap(TextGenerationPipeline, "__call__", self._wrap_text_generation)
        patches.wrap(FeatureExtractionPipeline, "__call__", self._wrap_feature_extraction)
        patches.wrap(FeatureExtractionPipeline, "preprocess", _count_pipeline_inputs)
        self._patches = patches

    def _uninstrument(self, **kwargs: Any) -> None:
        if self._patches is not None:
            self._patches.undo()
            self._patches = None

    # -- generate ----------------------------------------------------------------------------

    def _wrap_generate(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        instruments = self._instruments
        if instruments is None or not is_instrumentation_enabled():
            return wrapped(*args, **kwargs)
        running = active_call()
        if running is not None:
            if running.absorbs:  # a pipeline's generate: its span counts this call
                return _run_generate(running, wrapped, instance, args, kwargs)
            return wrapped(*args, **kwargs)  # generate inside generate (an assistant model)
        call = ModelCall(
            instruments,
            semconv.TEXT_COMPLETION_OPERATION,
            model_name(instance),
            _model_attributes(instance),
            take_notes(),
        )
        with call:
            return _run_generate(call, wrapped, instance, args, kwargs)

    # -- pipelines ---------------------------------------------------------------------------

    def _wrap_text_generation(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        instruments = self._instruments
        inputs = args[0] if args else kwargs.get("text_inputs")
        kind = _prompt_kind(inputs)
        if (
            instruments is None
            or kind is None
            or active_call() is not None
            or not is_instrumentation_enabled()
        ):
            return wrapped(*args, **kwargs)  # a lazy input (generator, dataset): per-generate spans
        call = ModelCall(
            instruments,
            kind,
            model_name(instance.model),
            _model_attributes(instance.model),
            take_notes(),
            absorbs=True,
        )
        call.tokenizer = getattr(instance, "tokenizer", None)
        if call.capture and call.input_messages is None:
            call.input_messages = _pipeline_messages(inputs)
        with call:
            return wrapped(*args, **kwargs)

    def _wrap_feature_extraction(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        instruments = self._instruments
        inputs = args[0] if args else kwargs.get("inputs")
        plain = isinstance(inputs, str) or (
            isinstance(inputs, list | tuple)
            and bool(inputs)
            and all(isinstance(i, str) for i in inputs)
        )
        if (
            instruments is None
            or not plain
            or active_call() is not None
            or not is_instrumentation_enabled()
        ):
            return wrapped(*args, **kwargs)
        model = instance.model
        attributes = _model_attributes(model, generation=False)
        dimensions = getattr(getattr(model, "config", None), "hidden_size", None)
        if isinstance(dimensions, int):
            attributes[semconv.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = dimensions
        call = ModelCall(
            instruments, semconv.EMBEDDINGS_OPERATION, model_name(model), attributes, take_notes()
        )
        if call.capture and call.input_messages is None:
            texts = [inputs] if isinstance(inputs, str) else list(inputs)
            call.input_messages = [{"role": "user", "content": t} for t in texts]
        with call:
            started = _now()
            output = wrapped(*args, **kwargs)
            call.outcome.duration = _now() - started
            call.counted = True
            return output


def _count_pipeline_inputs(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    features = wrapped(*args, **kwargs)
    call = active_call()
    if call is not None and call.operation == semconv.EMBEDDINGS_OPERATION:
        mask = features.get("attention_mask") if hasattr(features, "get") else None
        if mask is not None:
            call.outcome.input_tokens += int(mask.sum())
    return features


# --- what one generate call did ---------------------------------------------------------------


class _TimedStreamer:
    """Relays a streamer's ``put``/``end`` and timestamps each new token (streams only)."""

    def __init__(self, inner: Any, times: list[float]) -> None:
        self.inner = inner
        self.times = times
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if self._prompt_seen:
            self.times.append(_now())
        else:
            self._prompt_seen = True  # generate puts the prompt first
        self.inner.put(value)

    def end(self) -> None:
        self.inner.end()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _FirstForward:
    """A forward hook that notes when the prompt's forward pass ends, once, then goes."""

    def __init__(self, model: Any) -> None:
        self.at: float | None = None
        self._thread = threading.get_ident()
        self._handle = model.register_forward_hook(self)

    def __call__(self, module: Any, args: Any, output: Any) -> None:
        if threading.get_ident() != self._thread:
            return  # another thread's generate on the same model
        logits = getattr(output, "logits", None)
        if logits is not None and getattr(logits, "is_cuda", False):
            import torch

            torch.cuda.synchronize(logits.device)  # the pass is queued, not done, until now
        self.at = _now()
        self.remove()

    def remove(self) -> None:
        self._handle.remove()


def _run_generate(call: ModelCall, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    streamer = kwargs.get("streamer")
    hook: _FirstForward | None = None
    times: list[float] = []
    if streamer is not None:
        kwargs = {**kwargs, "streamer": _TimedStreamer(streamer, times)}
    elif call.wants_first_token:
        try:
            hook = _FirstForward(instance)
        except Exception:  # noqa: BLE001 - a model without torch hooks: no first-token time
            hook = None
    started = _now()
    try:
        output = wrapped(*args, **kwargs)
    finally:
        call.outcome.duration += _now() - started
        if hook is not None:
            hook.remove()
    if times:
        call.first_token_at(times[0])
        call.chunk_times.extend(times)
    elif hook is not None:
        call.first_token_at(hook.at)
    try:
        _count(call, instance, args, kwargs, output, streamer)
    except Exception:  # noqa: BLE001 - an output this does not know: a span without counts
        _log.debug("o11ylab: counting the tokens of a generation failed", exc_info=True)
    return output


def _setting(name: str, kwargs: Mapping[str, Any], config: Any) -> Any:
    value = kwargs.get(name)
    return getattr(config, name, None) if value is None else value


def _count(
    call: ModelCall, model: Any, args: Any, kwargs: Mapping[str, Any], output: Any, streamer: Any
) -> None:
    sequences = getattr(output, "sequences", output)
    if getattr(sequences, "ndim", 0) != 2:
        return
    config = kwargs.get("generation_config") or getattr(model, "generation_config", None)
    inputs = kwargs.get("input_ids", kwargs.get("inputs", args[0] if args else None))
    mask: Any = kwargs.get("attention_mask")  # a tensor or None, told apart by its ndim
    if getattr(inputs, "ndim", 0) == 2:
        width = int(inputs.shape[1])
        batch = int(inputs.shape[0])
        input_tokens = int(mask.sum()) if getattr(mask, "ndim", 0) == 2 else int(inputs.numel())
    else:
        inputs = None
        embeds: Any = kwargs.get("inputs_embeds")
        width = 0
        batch = int(embeds.shape[0]) if getattr(embeds, "ndim", 0) == 3 else int(sequences.shape[0])
        input_tokens = (
            int(mask.sum())
            if getattr(mask, "ndim", 0) == 2
            else (batch * int(embeds.shape[1]) if embeds is not None else 0)
        )
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        new = sequences[:, 1:]  # after the decoder's start token
    else:
        new = sequences[:, width:]
    max_new = _max_new_tokens(kwargs, config, width)
    eos = _token_ids(_setting("eos_token_id", kwargs, config))
    pad = _setting("pad_token_id", kwargs, config)
    pad = int(pad) if isinstance(pad, int) else None
    counts: list[int] = []
    finishes: list[str] = []
    kept_rows: list[list[int]] = []
    for row in new.tolist():
        kept: list[int] = []
        finish = None
        count = 0
        for token in row:
            if token in eos:
                count += 1
                finish = "stop"
                break
            if token == pad:
                break  # padding after this row ended (another row ran on)
            kept.append(token)
            count += 1
        if finish is None:
            finish = "length" if max_new is not None and count >= max_new else "stop"
        counts.append(count)
        finishes.append(finish)
        kept_rows.append(kept)
    outcome = call.outcome
    outcome.input_tokens += input_tokens
    outcome.output_tokens.extend(counts)
    outcome.finish_reasons.extend(finishes)
    outcome.output = output
    call.counted = True
    if not call.recording:
        return
    if not call.request_recorded:  # a pipeline's later generate calls ask the same
        call.request_recorded = True
        call.span.set_attributes(_request_attributes(kwargs, config, max_new))
    call.batch += batch
    if call.batch > 1:
        call.end_attributes[semconv.LOCAL_BATCH_SIZE] = call.batch
    if call.capture:
        tokenizer = (
            (call.notes.tokenizer if call.notes is not None else None)
            or kwargs.get("tokenizer")
            or getattr(streamer, "tokenizer", None)
            or call.tokenizer
        )
        if tokenizer is not None:
            stops = _setting("stop_strings", kwargs, config)
            stops = [stops] if isinstance(stops, str) else list(stops or ())
            for kept in kept_rows:
                call.completions.append(
                    _cut(str(tokenizer.decode(kept, skip_special_tokens=True)), stops)
                )
            if call.input_messages is None and inputs is not None:
                rows = inputs.tolist()
                masks = mask.tolist() if getattr(mask, "ndim", 0) == 2 else None
                call.input_messages = [
                    {
                        "role": "user",
                        "content": str(
                            tokenizer.decode(
                                [t for j, t in enumerate(row) if masks is None or masks[i][j]],
                                skip_special_tokens=True,
                            )
                        ),
                    }
                    for i, row in enumerate(rows)
                ]


def _cut(text: str, stops: Sequence[str]) -> str:
    for stop in stops:
        at = text.find(stop) if stop else -1
        if at >= 0:
            text = text[:at]
    return text


def _token_ids(value: Any) -> set[int]:
    if value is None:
        return set()
    if isinstance(value, int):
        return {value}
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, int):
        return {value}
    return {int(v) for v in value if v is not None}


def _max_new_tokens(kwargs: Mapping[str, Any], config: Any, width: int) -> int | None:
    value = _setting("max_new_tokens", kwargs, config)
    if isinstance(value, int):
        return value
    limit = _setting("max_length", kwargs, config)
    return limit - width if isinstance(limit, int) and limit > width else None


def _request_attributes(
    kwargs: Mapping[str, Any], config: Any, max_new: int | None
) -> dict[str, Any]:
    """Passed parameters, and the config's sampling settings when it samples."""
    attributes: dict[str, Any] = {}
    if max_new is not None:
        attributes[semconv.GEN_AI_REQUEST_MAX_TOKENS] = max_new
    sampling = bool(_setting("do_sample", kwargs, config))
    for name, key in (
        ("temperature", semconv.GEN_AI_REQUEST_TEMPERATURE),
        ("top_p", semconv.GEN_AI_REQUEST_TOP_P),
        ("top_k", semconv.GEN_AI_REQUEST_TOP_K),
    ):
        value = kwargs.get(name)
        if value is None and sampling:
            value = getattr(config, name, None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[key] = value
    stops = _setting("stop_strings", kwargs, config)
    if stops:
        attributes[semconv.GEN_AI_REQUEST_STOP_SEQUENCES] = (
            [stops] if isinstance(stops, str) else [str(s) for s in stops]
        )
    choices = _setting("num_return_sequences", kwargs, config)
    if isinstance(choices, int) and choices > 1:
        attributes[semconv.GEN_AI_REQUEST_CHOICE_COUNT] = choices
    return attributes


def _model_attributes(model: Any, generation: bool = True) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    device = getattr(model, "device", None)
    if device is not None:
        attributes[semconv.LOCAL_MODEL_DEVICE] = str(device)
    dtype = getattr(model, "dtype", None)
    if dtype is not None:
        attributes[semconv.LOCAL_MODEL_DTYPE] = str(dtype).removeprefix("torch.")
    config = getattr(model, "config", None)
    for key in _CONFIG_WINDOW_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            attributes[semconv.LOCAL_MODEL_CONTEXT_WINDOW] = value
            break
    if generation:
        attributes[semconv.GEN_AI_OUTPUT_TYPE] = "text"
    return attributes


def _is_conversation(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and bool(value)
        and all(isinstance(m, Mapping) and "role" in m for m in value)
    )


def _prompt_kind(inputs: Any) -> str | None:
    """``chat``, ``text_completion``, or None for a lazy input (the pipeline streams it)."""
    if isinstance(inputs, str):
        return semconv.TEXT_COMPLETION_OPERATION
    if hasattr(inputs, "messages") and _is_conversation(getattr(inputs, "messages", None)):
        return semconv.CHAT_OPERATION  # transformers' Chat
    if _is_conversation(inputs):
        return semconv.CHAT_OPERATION
    if isinstance(inputs, list | tuple) and inputs:
        if all(isinstance(i, str) for i in inputs):
            return semconv.TEXT_COMPLETION_OPERATION
        if all(_is_conversation(i) for i in inputs):
            return semconv.CHAT_OPERATION
    return None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", "")) if isinstance(p, Mapping) else str(p) for p in content
        )
    return "" if content is None else str(content)


def _pipeline_messages(inputs: Any) -> list[dict[str, str]]:
    if isinstance(inputs, str):
        return [{"role": "user", "content": inputs}]
    if hasattr(inputs, "messages") and not isinstance(inputs, list | tuple):
        inputs = inputs.messages
    if _is_conversation(inputs):
        conversations = [inputs]
    elif all(isinstance(i, str) for i in inputs):
        return [{"role": "user", "content": i} for i in inputs]
    else:
        conversations = list(inputs)
    return [
        {"role": str(m["role"]), "content": _text(m.get("content"))}
        for conversation in conversations
        for m in conversation
    ]
