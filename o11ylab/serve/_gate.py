"""Who may ask: the loopback Host check and the API key, each a pure ASGI middleware."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..telemetry import is_loopback, is_loopback_host_header
from ._config import API_KEY_ENV
from ._errors import OpenAIError, send_error

Receive = Callable[..., Awaitable[Any]]
Send = Callable[..., Awaitable[Any]]


def header(scope: MutableMapping[str, Any], name: bytes) -> str:
    """A request header's value ('' when absent), ``name`` in lower case."""
    value = next((v for k, v in scope["headers"] if k == name), b"")
    return str(value.decode("latin-1"))


CHALLENGE_HEADER = "x-o11ylab-challenge"
PROOF_HEADER = "x-o11ylab-proof"


def proof(api_key: str, challenge: str) -> str:
    """What a server holding ``api_key`` answers to ``challenge`` on /health: a launcher tells
    the server it started from anything else answering on that port, and sends no key to learn
    it (an impostor learns nothing from the challenge)."""
    mac = hmac.new(api_key.encode(), challenge[:128].encode(), hashlib.sha256)
    return mac.hexdigest()


class LoopbackHostOnly:
    """On a loopback bind, only requests addressed to 127.0.0.1, localhost or [::1] get in:
    DNS rebinding had a web page's script reach 127.0.0.1 under its own name and get a
    completion through ``Host: evil.example``."""

    def __init__(self, app: Any, host: str) -> None:
        self.app = app
        self.on = is_loopback(host)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        checked = self.on and scope["type"] == "http"
        if checked and not is_loopback_host_header(header(scope, b"host")):
            await send_error(
                send,
                OpenAIError(
                    403,
                    "This server listens on loopback and answers only requests addressed "
                    "to 127.0.0.1, localhost or [::1] (the Host header).",
                ),
            )
            return
        await self.app(scope, receive, send)


class ApiKeyGate:
    """With a key set, every ``/v1`` route and ``/metrics`` need ``Authorization: Bearer <key>``
    (compared in constant time); ``/health`` stays open for liveness probes."""

    def __init__(self, app: Any, api_key: str | None) -> None:
        self.app = app
        self.api_key = api_key

    def authorized(self, scope: MutableMapping[str, Any]) -> bool:
        if not self.api_key:
            return True
        scheme, _, value = header(scope, b"authorization").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(value.strip().encode(), self.api_key.encode())

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        guarded = path == "/metrics" or path.startswith("/v1/")
        if not guarded or self.authorized(scope):
            await self.app(scope, receive, send)
            return
        info = scope.get("state", {}).get("o11ylab")
        if info is not None:
            info["error_type"] = "invalid_api_key"
        where = (
            "/metrics needs it too, as 'Authorization: Bearer <key>' (Prometheus: "
            "authorization.credentials)."
            if path == "/metrics"
            else "send it as 'Authorization: Bearer <key>' (the server's key is set by "
            f"--api-key-file or {API_KEY_ENV})."
        )
        await send_error(
            send,
            OpenAIError(
                401,
                f"Missing or wrong API key: {where}",
                type_="authentication_error",
                code="invalid_api_key",
            ),
        )
