"""Chat in one line, through the instrumented openai SDK: sync, async and streaming.

    from o11ylab.ai import chat, achat

    reply = chat("What is a span?", max_tokens=64)
    print(reply.text, reply.usage, reply.cost_usd)

    for piece in (stream := chat("Count to five", stream=True)):
        print(piece, end="")
    stream.result.usage                       # usage and cost once the stream is drained

    reply = await achat([{"role": "user", "content": "Hi"}])

Each call is one ``chat {model}`` span made by the official OpenAI instrumentation, with
``gen_ai.*`` attributes, token usage, cost, and for streams the time to first chunk
(``gen_ai.response.time_to_first_chunk``). The endpoint and the default model come from the
environment (see ``o11ylab.ai.client``). Bad input fails before anything is sent; server
errors arrive as one ``AIError`` with a hint.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Self, overload

from .. import pricing
from .client import (
    Endpoint,
    InvalidInput,
    default_model,
    endpoint_of,
    get_async_client,
    get_client,
    translate_errors,
)

__all__ = ["AsyncChatStream", "ChatResult", "ChatStream", "Usage", "achat", "chat"]

DEFAULT_MAX_TOKENS = 256
_ROLES = ("system", "developer", "user", "assistant", "tool")
Messages = str | Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int = 0
    cached_input_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass
class ChatResult:
    """A chat answer: its text, usage and cost (None when the model has no price)."""

    text: str
    model: str
    usage: Usage | None
    cost_usd: float | None
    finish_reason: str | None = None
    time_to_first_chunk_s: float | None = None
    response: Any = field(default=None, repr=False)  # the SDK's ChatCompletion (not for streams)

    def __str__(self) -> str:
        return self.text


# --- input checks --------------------------------------------------------------------------------


def build_messages(messages: Messages, system: str | None = None) -> list[dict[str, Any]]:
    """Messages as the API wants them; a string is one user message. Refuses empty input."""
    if isinstance(messages, str):
        if not messages.strip():
            raise InvalidInput("The prompt is empty", hint="Pass some text to ask about.")
        built: list[dict[str, Any]] = [{"role": "user", "content": messages}]
    else:
        if isinstance(messages, Mapping) or not isinstance(messages, Sequence):
            raise InvalidInput(
                f"messages must be a string or a list of {{'role', 'content'}} dicts, not "
                f"{type(messages).__name__}",
            )
        if not messages:
            raise InvalidInput(
                "messages is empty", hint="Pass a prompt string or at least one user message."
            )
        built = []
        for index, message in enumerate(messages):
            if not isinstance(message, Mapping):
                raise InvalidInput(
                    f"messages[{index}] is not a dict with 'role' and 'content' "
                    f"(got {type(message).__name__})"
                )
            role = message.get("role")
            if role not in _ROLES:
                raise InvalidInput(
                    f"messages[{index}] has role {role!r}; use one of {', '.join(_ROLES)}"
                )
            content = message.get("content")
            empty = (
                content is None
                or (isinstance(content, str) and not content.strip())
                or (isinstance(content, Sequence) and not isinstance(content, str) and not content)
            )
            if empty and not (role == "assistant" and message.get("tool_calls")):
                raise InvalidInput(f"messages[{index}] ({role}) has no content")
            built.append(dict(message))
    if system is not None:
        if not system.strip():
            raise InvalidInput("The system prompt is empty", hint="Pass system=None for none.")
        built.insert(0, {"role": "system", "content": system})
    return built


def _request(
    client: Any,
    messages: Messages,
    model: str | None,
    system: str | None,
    max_tokens: int | None,
    temperature: float | None,
    stream: bool,
    extra: dict[str, Any],
) -> tuple[Endpoint, str, dict[str, Any]]:
    built = build_messages(messages, system)
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise InvalidInput("model is empty", hint="Pass a model name, or None for the default.")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise InvalidInput(f"max_tokens must be a whole number >= 1, not {max_tokens!r}")
    pricing.load_table()  # a broken O11YLAB_PRICING_FILE is reported now, not after the call
    endpoint = endpoint_of(client)
    chosen = model or default_model("chat", client)
    kwargs: dict[str, Any] = {"model": chosen, "messages": built, **extra}
    if max_tokens is not None:
        # OpenAI's newer models refuse max_tokens; OpenAI-compatible servers expect it.
        kwargs["max_completion_tokens" if endpoint.kind == "openai" else "max_tokens"] = max_tokens
    if temperature is not None:
        kwargs["temperature"] = temperature
    if stream:
        kwargs["stream"] = True
        kwargs["stream_options"] = {"include_usage": True}
    return endpoint, chosen, kwargs


def _usage(raw: Any) -> Usage | None:
    if raw is None:
        return None
    details = getattr(raw, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) or 0
    return Usage(
        int(raw.prompt_tokens or 0), int(getattr(raw, "completion_tokens", 0) or 0), int(cached)
    )


def _cost(
    endpoint: Endpoint, request_model: str, response_model: str | None, usage: Usage | None
) -> float | None:
    if usage is None:
        return None
    cost = pricing.price_call(
        request_model,
        response_model,
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_input_tokens,
        server=endpoint.server,
    )
    return None if cost is None else cost.amount


def _result(endpoint: Endpoint, model: str, response: Any) -> ChatResult:
    choice = response.choices[0] if response.choices else None
    text = (choice.message.content or "") if choice is not None else ""
    usage = _usage(response.usage)
    return ChatResult(
        text=text,
        model=response.model or model,
        usage=usage,
        cost_usd=_cost(endpoint, model, response.model, usage),
        finish_reason=getattr(choice, "finish_reason", None),
        response=response,
    )


# --- sync ----------------------------------------------------------------------------------------


# The return type follows stream=: a type checker knows which one a call gets.
@overload
def chat(
    messages: Messages,
    model: str | None = None,
    *,
    system: str | None = None,
    stream: Literal[False] = False,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    temperature: float | None = None,
    client: Any = None,
    **extra: Any,
) -> ChatResult: ...


@overload
def chat(
    messages: Messages,
    model: str | None = None,
    *,
    system: str | None = None,
    stream: Literal[True],
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    temperature: float | None = None,
    client: Any = None,
    **extra: Any,
) -> ChatStream: ...


@overload
def chat(
    messages: Messages,
    model: str | None = None,
    *,
    system: str | None = None,
    stream: bool = False,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    temperature: float | None = None,
    client: Any = None,
    **extra: Any,
) -> ChatResult | ChatStream: ...


def chat(
    messages: Messages,
    model: str | None = None,
    *,
    system: str | None = None,
    stream: bool = False,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    temperature: float | None = None,
    client: Any = None,
    **extra: Any,
) -> ChatResult | ChatStream:
    """Ask a chat model. ``messages`` is a prompt string or a list of message dicts.

    Returns a ``ChatResult``, or with ``stream=True`` a ``ChatStream`` that yields text pieces
    and has ``.result`` once drained. ``extra`` goes to ``chat.completions.create`` as is.
    """
    client = client or get_client()
    endpoint, chosen, kwargs = _request(
        client, messages, model, system, max_tokens, temperature, stream, extra
    )
    with translate_errors(endpoint, chosen):
        response = client.chat.completions.create(**kwargs)
    if stream:
        return ChatStream(response, endpoint, chosen)
    return _result(endpoint, chosen, response)


class _StreamState:
    def __init__(self, endpoint: Endpoint, model: str) -> None:
        self.endpoint = endpoint
        self.model = model
        self.pieces: list[str] = []
        self.response_model: str | None = None
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.started = time.perf_counter()
        self.first_chunk_s: float | None = None
        self.result: ChatResult | None = None

    def take(self, chunk: Any) -> str:
        if self.first_chunk_s is None:
            self.first_chunk_s = time.perf_counter() - self.started
        self.response_model = self.response_model or getattr(chunk, "model", None)
        if getattr(chunk, "usage", None) is not None:
            self.usage = _usage(chunk.usage)
        piece = ""
        for choice in chunk.choices or ():
            if choice.index != 0:
                continue
            if choice.delta is not None and choice.delta.content:
                piece += choice.delta.content
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
        if piece:
            self.pieces.append(piece)
        return piece

    def finish(self) -> ChatResult:
        if self.result is None:
            self.result = ChatResult(
                text="".join(self.pieces),
                model=self.response_model or self.model,
                usage=self.usage,
                cost_usd=_cost(self.endpoint, self.model, self.response_model, self.usage),
                finish_reason=self.finish_reason,
                time_to_first_chunk_s=self.first_chunk_s,
            )
        return self.result


class ChatStream(Iterator[str]):
    """Text pieces as they arrive; ``.result`` (drains what is left) has text, usage, cost.

    The span ends when the stream is drained or closed; use it in a ``with`` block or drain
    it, so an abandoned stream does not hold its span open.
    """

    def __init__(self, stream: Any, endpoint: Endpoint, model: str) -> None:
        self._stream = stream
        self._state = _StreamState(endpoint, model)
        self._pieces = self._read()

    def _read(self) -> Generator[str, None, None]:
        with translate_errors(self._state.endpoint, self._state.model):
            for chunk in self._stream:
                piece = self._state.take(chunk)
                if piece:
                    yield piece
        self._state.finish()

    def __iter__(self) -> ChatStream:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    @property
    def result(self) -> ChatResult:
        for _ in self:
            pass
        return self._state.finish()

    @property
    def text(self) -> str:
        return self.result.text

    def close(self) -> None:
        self._stream.close()
        self._pieces.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- async ---------------------------------------------------------------------------------------


@overload
async def achat(
    messages: Messages,
    model: str | None = None,
    *,
    system: str | None = None,
    stream: Literal[False] = False,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    temperature: float | None = None,
    client: Any = None,
    **extra: Any,
) -> ChatResult: ...


@overload
async def achat(
    messages: Messages,
    model: str | None = None,
    *,
    system: str | None = None,
    stream: Literal[True],
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    temperature: float | None = None,
    client: Any = None,
    **extra: Any,
) -> AsyncChatStream: ...


@overload
async def achat(
    messages: Messages,
    model: str | None = None,
    *,
    system: str | None = None,
    stream: bool = False,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    temperature: float | None = None,
    client: Any = None,
    **extra: Any,
) -> ChatResult | AsyncChatStream: ...


async def achat(
    messages: Messages,
    model: str | None = None,
    *,
    system: str | None = None,
    stream: bool = False,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    temperature: float | None = None,
    client: Any = None,
    **extra: Any,
) -> ChatResult | AsyncChatStream:
    """``chat`` for ``await``; with ``stream=True`` an ``AsyncChatStream`` (``async for``)."""
    client = client or get_async_client()
    if model is None:
        # Finding the default model lists the server's models once, synchronously.
        model = default_model("chat", get_client(endpoint_of(client)))
    endpoint, chosen, kwargs = _request(
        client, messages, model, system, max_tokens, temperature, stream, extra
    )
    with translate_errors(endpoint, chosen):
        response = await client.chat.completions.create(**kwargs)
    if stream:
        return AsyncChatStream(response, endpoint, chosen)
    return _result(endpoint, chosen, response)


class AsyncChatStream(AsyncIterator[str]):
    """``async for`` text pieces; ``await stream.aresult()`` gives text, usage and cost."""

    def __init__(self, stream: Any, endpoint: Endpoint, model: str) -> None:
        self._stream = stream
        self._state = _StreamState(endpoint, model)
        self._pieces = self._read()

    async def _read(self) -> AsyncGenerator[str, None]:
        with translate_errors(self._state.endpoint, self._state.model):
            async for chunk in self._stream:
                piece = self._state.take(chunk)
                if piece:
                    yield piece
        self._state.finish()

    def __aiter__(self) -> AsyncChatStream:
        return self

    async def __anext__(self) -> str:
        return await self._pieces.__anext__()

    async def aresult(self) -> ChatResult:
        async for _ in self:
            pass
        return self._state.finish()

    @property
    def result(self) -> ChatResult:
        """The result of a drained stream (use ``await aresult()`` to drain it)."""
        return self._state.finish()

    async def aclose(self) -> None:
        await self._stream.close()
        await self._pieces.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
