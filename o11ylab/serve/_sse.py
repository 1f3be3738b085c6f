"""One streamed completion as server-sent events, in OpenAI's chunk format."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from ._errors import OpenAIError


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


class Chunks:
    """The ``chat.completion.chunk`` events of one completion, encoded for the wire."""

    def __init__(self, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        self.head = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
        }
        self.include_usage = include_usage

    def delta(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        body: dict[str, Any] = {
            **self.head,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.include_usage:
            body["usage"] = None
        return event(body)

    def usage(self, result: Any) -> bytes:
        return event(
            {**self.head, "choices": [], "usage": usage(result.input_tokens, result.output_tokens)}
        )


def event(body: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(body)}\n\n".encode()


_END = object()


def _pump(stream: Any, loop: asyncio.AbstractEventLoop, pieces: asyncio.Queue[Any]) -> None:
    """Hand the model's pieces to the event loop as they come (runs on its own thread)."""
    try:
        for piece in stream:
            loop.call_soon_threadsafe(pieces.put_nowait, piece)
        loop.call_soon_threadsafe(pieces.put_nowait, _END)
    except BaseException as exc:  # noqa: BLE001 - handed to the loop, reported in-band below
        loop.call_soon_threadsafe(pieces.put_nowait, exc)


async def _batches(pieces: asyncio.Queue[Any]) -> AsyncIterator[list[Any]]:
    """What arrived together, as one list; the end marker or an error closes the last one."""
    while True:
        batch = [await pieces.get()]
        while not pieces.empty():
            batch.append(pieces.get_nowait())
        yield batch
        if batch[-1] is _END or isinstance(batch[-1], BaseException):
            return


async def sse(stream: Any, info: dict[str, Any], chunks: Chunks) -> AsyncIterator[bytes]:
    """Server-sent events of one streamed completion.

    A thread reads the model's pieces and hands them to the event loop as they come; pieces
    that arrived together leave in one write (each still its own chunk).
    """
    pieces: asyncio.Queue[Any] = asyncio.Queue()
    try:
        yield chunks.delta({"role": "assistant", "content": ""})
        threading.Thread(
            target=_pump,
            args=(stream, asyncio.get_running_loop(), pieces),
            name="o11ylab-sse",
            daemon=True,
        ).start()
        async for batch in _batches(pieces):
            out: list[bytes] = []
            for item in batch:
                if isinstance(item, BaseException):
                    # The answer already started: report in-band, as OpenAI does.
                    info["error_type"] = type(item).__qualname__
                    error = OpenAIError(
                        500, f"generation failed ({type(item).__name__})", type_="server_error"
                    )
                    yield b"".join([*out, event(error.body())])
                    return
                if item is _END:
                    break
                if info.get("first_token_at") is None:
                    info["first_token_at"] = stream.first_token_at or time.perf_counter()
                out.append(chunks.delta({"content": item}))
            if out:
                yield b"".join(out)
        yield _tail(stream.result, info, chunks)
    finally:
        stream.cancel()  # a client that went away stops the model at its next token


def _tail(result: Any, info: dict[str, Any], chunks: Chunks) -> bytes:
    """The finish chunk, the usage chunk when asked for, and ``[DONE]``."""
    tail = [chunks.delta({}, result.finish_reason if result is not None else "stop")]
    if result is not None:
        info["output_tokens"] = result.output_tokens
        if chunks.include_usage:
            tail.append(chunks.usage(result))
    tail.append(b"data: [DONE]\n\n")
    return b"".join(tail)
