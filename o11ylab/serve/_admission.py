"""Backpressure, a pure ASGI middleware: past a queue depth, a generation is refused at once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ._config import MAX_QUEUE_ENV
from ._errors import OpenAIError, send_error

GENERATION_ROUTES = frozenset({"/v1/chat/completions", "/v1/embeddings"})
RETRY_AFTER_S = 1


class Admission:
    """At most ``max_queue`` chat and embedding requests held at once, running or waiting for
    the model; one more gets an OpenAI-style 503 with ``Retry-After`` (the openai SDK waits that
    long and retries). A stream is held until its last chunk. Without a bound, 80 queued
    generations meant a new request waited minutes, and its client's retries queued it again.
    Everything here runs on the event loop, so the count needs no lock."""

    def __init__(self, app: Any, max_queue: int) -> None:
        self.app = app
        self.max_queue = max_queue
        self.held = 0

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[..., Awaitable[Any]],
        send: Callable[..., Awaitable[Any]],
    ) -> None:
        if scope["type"] != "http" or scope.get("path") not in GENERATION_ROUTES:
            await self.app(scope, receive, send)
            return
        if self.held >= self.max_queue:
            info = scope.get("state", {}).get("o11ylab")
            if info is not None:
                info["error_type"] = "server_overloaded"
            await send_error(
                send,
                OpenAIError(
                    503,
                    f"This server already holds {self.held} requests (its queue limit, "
                    f"{MAX_QUEUE_ENV}); retry after {RETRY_AFTER_S} s.",
                    type_="server_error",
                    code="server_overloaded",
                ),
                headers=[(b"retry-after", str(RETRY_AFTER_S).encode())],
            )
            return
        self.held += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.held -= 1
