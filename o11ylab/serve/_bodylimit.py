"""The request body limit, a pure ASGI middleware: a body over the limit is never read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ._config import MAX_BODY_ENV
from ._errors import OpenAIError, send_error


class BodyLimit:
    """A body over ``limit`` bytes gets an OpenAI-style 413 and is not read: at once when its
    Content-Length says so (the openai SDK always sends one), else as soon as the chunks
    received pass the limit. A 200 MB body was buffered whole before (RSS +400 MB)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _message(self) -> str:
        return (
            f"The request body is larger than this server's limit of {self.limit:,} bytes "
            f"(o11ylab serve --max-body-mb, or {MAX_BODY_ENV})."
        )

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[..., Awaitable[Any]],
        send: Callable[..., Awaitable[Any]],
    ) -> None:
        if scope["type"] != "http" or self.limit <= 0:
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await send_error(
                send, OpenAIError(413, self._message()), headers=[(b"connection", b"close")]
            )
            return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    from starlette.exceptions import HTTPException

                    # FastAPI passes an HTTPException from reading the body through unchanged.
                    raise HTTPException(status_code=413, detail=self._message())
            return message

        await self.app(scope, limited, send)
