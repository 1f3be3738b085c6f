"""The one place that builds openai clients, picks their endpoint and instruments the SDK.

Which endpoint, without code changes:

========================================  ==================================================
``OPENAI_BASE_URL`` set                   that server (vLLM, Ollama, ``transformers serve``,
                                          a gateway); ``OPENAI_API_KEY`` sent if set
only ``OPENAI_API_KEY`` set               OpenAI
neither                                   o11ylab's local endpoint (``o11ylab.serve``),
                                          started on demand on 127.0.0.1 and reused
                                          (``O11YLAB_SERVE_API_KEY`` sent if it has a key)
========================================  ==================================================

``O11YLAB_OPENAI_TIMEOUT`` (seconds, default 60) and ``O11YLAB_OPENAI_MAX_RETRIES`` (default
2) are passed to the SDK explicitly. ``O11YLAB_CHAT_MODEL`` / ``O11YLAB_EMBEDDING_MODEL`` name
the default models.

Clients here are plain ``openai`` clients: their spans come from the instrumentors that
``%load_ext o11ylab`` / ``o11ylab.init()`` activate for every client (``o11ylab.instrumentation``:
the official ``OpenAIInstrumentor`` for ``chat {model}`` / ``embeddings {model}`` spans and the
``gen_ai.client.*`` metrics, o11ylab's ``openai_http`` for ``traceparent``, HTTP status and
retries) and from the enrichers (cost, and a scrub of anything that looks like an API key from
span status messages). ``instrument()`` switches them on when nothing has yet.

Errors reach the user as one ``AIError`` subclass with a hint; the key never appears in a
message, a span, a log record or a ``repr``.
"""

from __future__ import annotations

import asyncio
import re
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from opentelemetry.trace import Status, StatusCode

from .._compat import set_ended_status
from ..config import ConfigError, load_openai
from ..errors import O11yLabError

if TYPE_CHECKING:
    import openai

__all__ = [
    "AIError",
    "AuthenticationFailed",
    "BadRequest",
    "ContextTooLong",
    "Endpoint",
    "EndpointTimeout",
    "EndpointUnreachable",
    "InvalidInput",
    "ModelNotFound",
    "RateLimited",
    "ServerError",
    "default_model",
    "get_async_client",
    "get_client",
    "instrument",
    "is_instrumented",
    "reset_clients",
    "resolve_endpoint",
    "translate_errors",
    "uninstrument",
]

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_RETRIES = 2
OPENAI_URL = "https://api.openai.com/v1"
OPENAI_DEFAULT_MODELS = {"chat": "gpt-4o-mini", "embeddings": "text-embedding-3-small"}
_MODEL_ENV = {"chat": "O11YLAB_CHAT_MODEL", "embeddings": "O11YLAB_EMBEDDING_MODEL"}
# The SDK refuses to build a client without a key; servers that need none ignore this one.
_NO_KEY = "o11ylab-no-key"


# --- errors --------------------------------------------------------------------------------------


class AIError(O11yLabError, RuntimeError):
    """A chat or embeddings call failed. ``str()`` says what happened, where, and what to do."""

    hint = ""

    def __init__(
        self,
        message: str,
        *,
        endpoint: str = "",
        status_code: int | None = None,
        error_type: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.status_code = status_code
        self.error_type = error_type
        if hint is not None:
            self.hint = hint
        text = message.rstrip(".") + "."
        if self.hint:
            text += f" {self.hint}"
        super().__init__(scrub(text))


class InvalidInput(AIError, ValueError):
    """The call was refused before anything was sent (empty prompt, bad arguments)."""


class AuthenticationFailed(AIError):
    hint = (
        "Check OPENAI_API_KEY (the key was rejected; it is not shown here), or unset it "
        "and OPENAI_BASE_URL to use the local endpoint."
    )


class ModelNotFound(AIError):
    """The endpoint does not serve the model asked for (HTTP 404, or none of its ``/v1/models``
    fits). Not to be confused with ``o11ylab.models.LocalModelNotFoundError`` (formerly
    ``ModelNotFoundError``): a local model folder that is missing."""

    hint = "Pass model=... with a model this endpoint serves (see client.models.list())."


class RateLimited(AIError):
    hint = (
        "The SDK already retried; wait and run again, lower the request rate, or raise "
        "O11YLAB_OPENAI_MAX_RETRIES."
    )


class ServerError(AIError):
    hint = "The server failed, not your request; the SDK already retried. Try again later."


class EndpointTimeout(AIError):
    hint = "Raise O11YLAB_OPENAI_TIMEOUT (seconds), ask for fewer tokens, or check the server."


class EndpointUnreachable(AIError):
    hint = (
        "Is the server running? Check OPENAI_BASE_URL, or unset it to use o11ylab's local endpoint."
    )


class ContextTooLong(AIError):
    hint = "Shorten the prompt (or the retrieved context), or lower max_tokens."


class BadRequest(AIError):
    hint = "The server refused the request as malformed; its reason is above."


_KEY_PATTERN = re.compile(r"(\bsk-[A-Za-z0-9_*.\-]{3,}|Bearer\s+\S+)")
_known_keys: set[str] = set()


def scrub(text: str) -> str:
    """``text`` with every API key o11ylab knows, and anything shaped like one, masked."""
    for key in _known_keys:
        if key and len(key) >= 4:
            text = text.replace(key, "***")
    return _KEY_PATTERN.sub(
        lambda m: m.group(0)[:3] + "***" if m.group(0).startswith("sk-") else "Bearer ***", text
    )


# --- endpoint ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """Where calls go. ``api_key`` is never part of ``repr()``/``str()``."""

    kind: str  # "openai", "custom" or "local"
    base_url: str
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_retries: int = DEFAULT_MAX_RETRIES
    api_key: str = field(default=_NO_KEY, repr=False)

    @property
    def display(self) -> str:
        parsed = urlparse(self.base_url)
        port = f":{parsed.port}" if parsed.port else ""
        return f"{parsed.scheme}://{parsed.hostname}{port}{parsed.path}"

    @property
    def server(self) -> tuple[str | None, int]:
        """(host, port), as the instrumentation records ``server.address``/``server.port``."""
        parsed = urlparse(self.base_url)
        return parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)

    def __str__(self) -> str:
        return f"{self.kind} endpoint {self.display}"


def _local_base_url() -> str:
    try:
        from ..serve import ensure_local_endpoint
    except ImportError as exc:
        raise EndpointUnreachable(
            f"No OPENAI_API_KEY or OPENAI_BASE_URL is set and the local endpoint cannot start "
            f"({exc})",
            hint="Install the AI extras (pip install 'o11ylab[ai]') or set OPENAI_BASE_URL.",
        ) from None
    return ensure_local_endpoint()


_local_url: list[str] = []  # the local endpoint once started; reset when it stops answering


def resolve_endpoint(env: Mapping[str, str] | None = None) -> Endpoint:
    """The endpoint the environment asks for (starting the local one if none is set)."""
    settings = load_openai(env)
    key, base = settings.api_key, settings.base_url
    timeout, retries = settings.timeout_s, settings.max_retries
    from ..local_openai import PLACEHOLDER_KEY, is_local_url

    if key and key != PLACEHOLDER_KEY:
        _known_keys.add(key)
    if base:
        parsed = urlparse(base)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ConfigError(
                "OPENAI_BASE_URL is not an http(s) URL with a host; set it like "
                "http://127.0.0.1:8000/v1."
            )
        if is_local_url(base):  # the relay %load_ext set up, or `o11ylab run`'s shared server
            from .. import pricing

            pricing.register_local_server(parsed.hostname, parsed.port or 80)
            local_key = settings.local_api_key
            if local_key:
                _known_keys.add(local_key)
            key = "" if key == PLACEHOLDER_KEY else key
            return Endpoint(
                "local", base.rstrip("/"), timeout, retries, key or local_key or _NO_KEY
            )  # a key the user set wins
        return Endpoint("custom", base.rstrip("/"), timeout, retries, key or _NO_KEY)
    if key:
        return Endpoint("openai", OPENAI_URL, timeout, retries, key)
    if not _local_url:
        _local_url.append(_local_base_url().rstrip("/"))
        parsed = urlparse(_local_url[0])
        from .. import pricing

        pricing.register_local_server(parsed.hostname or "127.0.0.1", parsed.port or 80)
    # `o11ylab serve --api-key` / O11YLAB_SERVE_API_KEY protects the local endpoint too.
    local_key = settings.local_api_key
    if local_key:
        _known_keys.add(local_key)
    return Endpoint("local", _local_url[0], timeout, retries, local_key or _NO_KEY)


# --- instrumentation ---------------------------------------------------------------------------

_lock = threading.RLock()


# The instrumentors instrument() switched on itself (not the loader's, not the user's), so that
# uninstrument() undoes exactly those.
_switched_on: list[Any] = []
_INSTRUMENTORS = (
    ("openai", "opentelemetry.instrumentation.genai.openai", "OpenAIInstrumentor"),
    ("openai_http", "o11ylab.instrumentation.openai_http", "OpenAIHTTPInstrumentor"),
)


def instrument(*, tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Make sure the openai SDK is traced: the official ``OpenAIInstrumentor`` and o11ylab's
    ``openai_http`` are on (through the loader when ``%load_ext`` ran), on the providers passed,
    else the global ones; and, when o11ylab's telemetry runs, its cost and key-scrub enrichers.
    Installs no provider and writes no file (``o11ylab.ai._otel``). Idempotent and cheap after
    the first call. An SDK the user instrumented already is left as it is."""
    import importlib

    from ._otel import enrich, switch_on

    with _lock:
        for name, module, class_name in _INSTRUMENTORS:
            try:
                instrumentor = getattr(importlib.import_module(module), class_name)()
            except ImportError:  # the official instrumentation is an optional dependency
                continue
            if instrumentor.is_instrumented_by_opentelemetry:
                continue
            switch_on(
                name,
                instrumentor,
                tracer_provider=tracer_provider,
                meter_provider=meter_provider,
            )
            if instrumentor.is_instrumented_by_opentelemetry and not _by_loader(name):
                _switched_on.append(instrumentor)
    enrich(scrub=True)


def _by_loader(name: str) -> bool:
    from .. import instrumentation

    return name in instrumentation.get().instrumented()


def uninstrument() -> None:
    """Undo ``instrument()`` and what ``%load_ext``/``o11ylab.init()`` switched on for the SDK
    (idempotent); clients built earlier stop making spans."""
    from ..activation import deactivate
    from ..telemetry import peek_telemetry

    deactivate(peek_telemetry())
    with _lock:
        while _switched_on:
            instrumentor = _switched_on.pop()
            if instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.uninstrument()


def is_instrumented() -> bool:
    from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor

    return bool(OpenAIInstrumentor().is_instrumented_by_opentelemetry)


class ScrubEnricher:
    """Masks keys in error status messages (servers echo rejected keys in their 401 bodies)."""

    name = "scrub"

    def on_end(self, span: Any, _state: None = None) -> None:
        status = span.status
        if status.status_code is not StatusCode.ERROR or not status.description:
            return
        cleaned = scrub(status.description)
        if cleaned != status.description:
            set_ended_status(span, Status(StatusCode.ERROR, cleaned))


# --- clients -------------------------------------------------------------------------------------

_clients: dict[tuple[Any, ...], Any] = {}
_async_clients: dict[tuple[Any, ...], tuple[Callable[[], Any], openai.AsyncOpenAI]] = {}


def _key(endpoint: Endpoint) -> tuple[Any, ...]:
    # hash() of the key, not the key: this tuple may be printed while debugging.
    return (
        endpoint.kind,
        endpoint.base_url,
        endpoint.timeout_s,
        endpoint.max_retries,
        hash(endpoint.api_key),
    )


def get_client(
    endpoint: Endpoint | None = None, *, tracer_provider: Any = None, meter_provider: Any = None
) -> openai.OpenAI:
    """An instrumented ``openai.OpenAI`` for ``endpoint`` (default: from the environment),
    built once and reused. The providers count when this call switches the instrumentation on
    (see ``instrument``)."""
    import openai

    instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    endpoint = endpoint or resolve_endpoint()
    key = ("sync", *_key(endpoint))
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = openai.OpenAI(
                api_key=endpoint.api_key,
                base_url=endpoint.base_url,
                timeout=endpoint.timeout_s,
                max_retries=endpoint.max_retries,
            )
            client._o11ylab_endpoint = endpoint  # type: ignore[attr-defined]
            _clients[key] = client
    return client


def get_async_client(
    endpoint: Endpoint | None = None, *, tracer_provider: Any = None, meter_provider: Any = None
) -> openai.AsyncOpenAI:
    """An instrumented ``openai.AsyncOpenAI``; one per event loop (connections belong to one)."""
    import openai

    instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    endpoint = endpoint or resolve_endpoint()
    try:
        loop: Any = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    key = ("async", *_key(endpoint))
    with _lock:
        entry = _async_clients.get(key)
        # A finished loop's id can be reused by the next one (asyncio.run per call): compare
        # the loops themselves, through a weak reference that does not keep the old one alive.
        if entry is not None and entry[0]() is loop:
            return entry[1]
        client = openai.AsyncOpenAI(
            api_key=endpoint.api_key,
            base_url=endpoint.base_url,
            timeout=endpoint.timeout_s,
            max_retries=endpoint.max_retries,
        )
        client._o11ylab_endpoint = endpoint  # type: ignore[attr-defined]
        _async_clients[key] = ((weakref.ref(loop) if loop is not None else (lambda: None)), client)
    return client


def endpoint_of(client: Any) -> Endpoint:
    endpoint = getattr(client, "_o11ylab_endpoint", None)
    if endpoint is None:
        endpoint = Endpoint("custom", str(client.base_url).rstrip("/"))
    return endpoint


def reset_clients() -> None:
    """Forget built clients and the local endpoint's address (after changing the environment)."""
    with _lock:
        for client in _clients.values():
            try:
                client.close()
            except (OSError, RuntimeError):  # closing a dead connection: nothing left to free
                continue
        _clients.clear()
        _async_clients.clear()
        _local_url.clear()
        _default_models.clear()


# --- default models ------------------------------------------------------------------------------

_default_models: dict[tuple[str, str], str] = {}


def default_model(kind: str, client: Any = None) -> str:
    """The model to use when none is given: ``O11YLAB_CHAT_MODEL`` / ``O11YLAB_EMBEDDING_MODEL``,
    else OpenAI's small defaults, else what the server lists at ``/v1/models``."""
    settings = load_openai()
    configured = settings.chat_model if kind == "chat" else settings.embedding_model
    if configured:
        return configured
    client = client or get_client()
    endpoint = endpoint_of(client)
    if endpoint.kind == "openai":
        return OPENAI_DEFAULT_MODELS[kind]
    cache_key = (endpoint.base_url, kind)
    if cache_key in _default_models:
        return _default_models[cache_key]
    with translate_errors(endpoint):
        listed = [m.id for m in client.models.list().data]
    chosen = _pick(kind, listed, endpoint)
    _default_models[cache_key] = chosen
    return chosen


def _looks_like_embedder(name: str) -> bool:
    lowered = name.lower()
    return any(part in lowered for part in ("embed", "minilm", "mpnet", "bge-", "e5-", "gte-"))


def _pick(kind: str, listed: list[str], endpoint: Endpoint) -> str:
    wanted = [m for m in listed if _looks_like_embedder(m) == (kind == "embeddings")]
    if endpoint.kind == "local":
        from .. import models

        preferred = models.DEFAULT_CHAT_MODEL if kind == "chat" else models.DEFAULT_EMBEDDING_MODEL
        if preferred in listed:
            return preferred
    if wanted:
        return wanted[0]
    raise ModelNotFound(
        f"{endpoint} lists no {kind} model ({', '.join(listed) or 'no models at all'})",
        endpoint=endpoint.display,
        hint=f"Pass model=... or set {_MODEL_ENV[kind]}.",
    )


# --- turning SDK errors into one clear message ---------------------------------------------------


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(message := inner.get("message"), str):
            return message
        if isinstance(detail := body.get("detail"), str):
            return detail
        if isinstance(message := body.get("message"), str):
            return message
    if isinstance(body, str) and body.strip():
        return body.strip()[:300]
    return getattr(exc, "message", "") or ""


def _error_code(exc: Any) -> str:
    code = getattr(exc, "code", None)
    body = getattr(exc, "body", None)
    if not code and isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            code = inner.get("code") or inner.get("type")
    return str(code or "")


def _is_context_error(message: str, code: str) -> bool:
    text = f"{code} {message}".lower()
    return any(
        marker in text
        for marker in (
            "context_length_exceeded",
            "context length",
            "context window",
            "maximum context",
            "too many tokens",
            "prompt is too long",
            "longer than the model",
        )
    )


def translate(exc: BaseException, endpoint: Endpoint, model: str | None = None) -> AIError | None:
    """The ``AIError`` for an SDK exception, or None for exceptions that are not the SDK's."""
    import openai

    where = endpoint.display
    about = f" for model {model!r}" if model else ""
    if isinstance(exc, openai.APITimeoutError):
        return EndpointTimeout(
            f"No answer from {endpoint}{about} within {endpoint.timeout_s:g} s "
            f"(after {endpoint.max_retries} retries)",
            endpoint=where,
            error_type="timeout",
        )
    if isinstance(exc, openai.APIConnectionError):
        hint = None
        if endpoint.kind == "local":
            _local_url.clear()  # the next call starts (or finds) the local endpoint again
            # OPENAI_BASE_URL (the class hint) is not what a user of the local endpoint set.
            hint = (
                "o11ylab's local endpoint stopped answering; run the call again and a new "
                "one is started."
            )
        return EndpointUnreachable(
            f"Cannot connect to {endpoint} ({_cause(exc)})",
            endpoint=where,
            error_type="connection",
            hint=hint,
        )
    if not isinstance(exc, openai.APIStatusError):
        return None
    status = exc.status_code
    detail = scrub(_server_message(exc))
    said = f": {detail}" if detail else ""
    code = _error_code(exc)
    kwargs: dict[str, Any] = {"endpoint": where, "status_code": status, "error_type": str(status)}
    if status in (401, 403):
        return AuthenticationFailed(f"{endpoint} refused the API key (HTTP {status})", **kwargs)
    if status == 404:
        return ModelNotFound(
            f"{endpoint} does not serve model {model!r} (HTTP 404){said}"
            if model
            else f"{endpoint} answered HTTP 404{said}",
            **kwargs,
        )
    if status == 429:
        return RateLimited(f"{endpoint} is rate limiting{about} (HTTP 429){said}", **kwargs)
    if status >= 500:
        return ServerError(f"{endpoint} failed{about} (HTTP {status}){said}", **kwargs)
    if _is_context_error(detail, code):
        return ContextTooLong(
            f"The prompt is longer than the context window{about} (HTTP {status}){said}", **kwargs
        )
    return BadRequest(f"{endpoint} refused the request{about} (HTTP {status}){said}", **kwargs)


def _cause(exc: BaseException) -> str:
    inner = exc.__cause__ or exc.__context__
    while inner is not None and (inner.__cause__ or inner.__context__) is not None:
        inner = inner.__cause__ or inner.__context__
    text = str(inner) if inner is not None else str(exc)
    return scrub(text)[:200] or type(exc).__name__


@contextmanager
def translate_errors(endpoint: Endpoint, model: str | None = None) -> Iterator[None]:
    """Re-raise SDK errors as one ``AIError`` (no chained SDK traceback)."""
    try:
        yield
    except AIError:
        raise
    except Exception as exc:
        mapped = translate(exc, endpoint, model)
        if mapped is None:
            raise
        try:
            raise mapped from None
        finally:
            # `from None` only hides the SDK's error: it stays reachable as __context__, and
            # its text may hold a key a gateway echoed back. Drop it: the message says it all.
            mapped.__context__ = None
