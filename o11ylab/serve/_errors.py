"""OpenAI-style errors, and the request limits refused with one before any model work."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

# Request limits, refused with a 400 or 413 that names the limit. OpenAI allows 4 stop sequences
# and 2,048 embedding inputs. Transformers prepares each stop string against the whole vocabulary
# inside generate(), under the model lock: 200 stop strings of 100 characters held the model for
# 34 s and left 4.9 GB in use.
MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 64
MAX_EMBEDDING_INPUTS = 2048
# A client's model string on a span is cut here; on a metric it is OTHER unless served.
MAX_ATTRIBUTE_CHARS = 256
OTHER = "_OTHER"


class OpenAIError(Exception):
    """An error answered as OpenAI answers it: ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def error_type_of(status: int) -> str:
    return {401: "authentication_error", 404: "invalid_request_error", 429: "rate_limit_error"}.get(
        status, "server_error" if status >= 500 else "invalid_request_error"
    )


def invalid(message: str, param: str | None = None) -> OpenAIError:
    """A 400 ``invalid_value`` about ``param``."""
    return OpenAIError(400, message, param=param, code="invalid_value")


async def send_error(
    send: Callable[..., Awaitable[Any]],
    error: OpenAIError,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Answer with ``error`` from a pure ASGI middleware (before FastAPI is reached)."""
    payload = json.dumps(error.body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def check_stop(stop: str | list[str] | None) -> None:
    """At most 4 stop sequences of at most 64 characters, before anything reaches the model."""
    sequences = [stop] if isinstance(stop, str) else stop or []
    if len(sequences) > MAX_STOP_SEQUENCES:
        raise invalid(
            f"stop has {len(sequences)} sequences; at most {MAX_STOP_SEQUENCES} are allowed.",
            "stop",
        )
    longest = max((len(s) for s in sequences), default=0)
    if longest > MAX_STOP_CHARS:
        raise invalid(
            f"A stop sequence has {longest} characters; at most {MAX_STOP_CHARS} are allowed.",
            "stop",
        )


def unknown_model(name: str, chat: str, embedding: str) -> OpenAIError:
    if len(name) > MAX_ATTRIBUTE_CHARS:
        name = name[:MAX_ATTRIBUTE_CHARS] + "…"
    return OpenAIError(
        404,
        f"The model `{name}` does not exist on this endpoint. It serves `{chat}` (chat) "
        f"and `{embedding}` (embeddings); see GET /v1/models.",
        param="model",
        code="model_not_found",
    )
