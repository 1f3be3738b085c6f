"""``o11ylab serve``: a local OpenAI-compatible endpoint over local models, instrumented.

    o11ylab serve                      # http://127.0.0.1:8008/v1, SmolLM2 + all-MiniLM-L6-v2
    o11ylab serve --model ./my-model --port 9000
    o11ylab serve --host 0.0.0.0 --api-key-file ~/.o11ylab/serve.key   # off loopback a key is required
    O11YLAB_SERVE_API_KEY=... o11ylab serve --host 0.0.0.0              # or from the environment

(``--api-key KEY`` works too, but every local user can read a command line: it warns.)

Routes: ``POST /v1/chat/completions`` (streaming and not; ``usage`` always in a whole answer,
and in a last chunk of a stream when ``stream_options.include_usage`` asks for it),
``POST /v1/embeddings`` (384-dimension MiniLM vectors, float or base64), ``GET /v1/models``,
``GET /health`` and ``GET /metrics`` (Prometheus text of this server's metrics).

Every request is one SERVER span that continues the caller's trace from its ``traceparent``
header; the generation inside it is the engine's ``chat {model}`` span (see
``o11ylab.ai.local_model``). The GenAI model-server metrics ``gen_ai.server.request.duration``,
``gen_ai.server.time_to_first_token`` and ``gen_ai.server.time_per_output_token`` are
recorded per request. Requests run on a thread pool and take turns on the model's lock, so two
threads are never inside one model. Errors are OpenAI-style JSON with the matching status
(unknown model 404 ``model_not_found``, bad body 400, context too long 400
``context_length_exceeded``, wrong key 401); an unexpected failure is a 500 whose body names
the exception type and never carries a traceback.

From Python: ``ensure_local_endpoint()`` returns a base URL ending in ``/v1`` (the healthy
``O11YLAB_LOCAL_ENDPOINT`` if set, else a server started for this process and stopped at
exit); ``LocalEndpoint`` is the same as a context manager for runs that own their server.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations at run time.
import argparse
import atexit
import base64
import dataclasses
import hmac
import inspect
import json
import logging
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from . import models, semconv
from .errors import O11yLabError
from .telemetry import is_loopback, is_loopback_host_header

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_PORT",
    "LOCAL_ENDPOINT_ENV",
    "EndpointError",
    "LocalEndpoint",
    "ServeConfig",
    "add_arguments",
    "create_app",
    "ensure_local_endpoint",
    "is_loopback",
    "run_command",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8008
API_KEY_ENV = "O11YLAB_SERVE_API_KEY"
MAX_BODY_ENV = "O11YLAB_SERVE_MAX_BODY_MB"
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
DEFAULT_MAX_BODY_MB = 8  # a whole 8k-token chat is ~40 kB; 2,048 long inputs fit in 8 MB
LOCAL_ENDPOINT_ENV = "O11YLAB_LOCAL_ENDPOINT"
START_TIMEOUT_ENV = "O11YLAB_SERVE_START_TIMEOUT"

_log = logging.getLogger("o11ylab.serve")


class EndpointError(O11yLabError, RuntimeError):
    """The local endpoint could not be started or reached. The message says why and what next."""


@dataclasses.dataclass
class ServeConfig:
    model: str | None = None  # None: LOCAL_MODEL_NAME, else the default chat model
    embedding_model: str | None = None  # None: EMBEDDING_MODEL, else all-MiniLM-L6-v2
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key: str | None = None
    device: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_MB * 1024 * 1024  # 0: no limit


# --- OpenAI-style errors -------------------------------------------------------------------------


class OpenAIError(Exception):
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


def _error_type_of(status: int) -> str:
    return {401: "authentication_error", 404: "invalid_request_error", 429: "rate_limit_error"}.get(
        status, "server_error" if status >= 500 else "invalid_request_error"
    )


def _check_stop(stop: str | list[str] | None) -> None:
    """At most 4 stop sequences of at most 64 characters, before anything reaches the model."""
    sequences = [stop] if isinstance(stop, str) else stop or []
    if len(sequences) > MAX_STOP_SEQUENCES:
        raise OpenAIError(
            400,
            f"stop has {len(sequences)} sequences; at most {MAX_STOP_SEQUENCES} are allowed.",
            param="stop",
            code="invalid_value",
        )
    longest = max((len(s) for s in sequences), default=0)
    if longest > MAX_STOP_CHARS:
        raise OpenAIError(
            400,
            f"A stop sequence has {longest} characters; at most {MAX_STOP_CHARS} are allowed.",
            param="stop",
            code="invalid_value",
        )


# --- the body limit (a pure ASGI middleware) -----------------------------------------------------


class _BodyLimit:
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
            body = json.dumps(OpenAIError(413, self._message()).body()).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 413,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
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


# --- server-side telemetry (a pure ASGI middleware) -----------------------------------------------

_ROUTES = ("/v1/chat/completions", "/v1/embeddings", "/v1/models", "/health", "/metrics")
_PROBES = frozenset({"/health", "/metrics"})
_GENAI_ROUTES = {
    "/v1/chat/completions": semconv.CHAT_OPERATION,
    "/v1/embeddings": semconv.EMBEDDINGS_OPERATION,
}


class _ServerInstruments:
    def __init__(self, meter: Any) -> None:
        self.duration = meter.create_histogram(
            semconv.METRIC_GEN_AI_SERVER_REQUEST_DURATION,
            unit="s",
            description="GenAI server request duration, to the last byte of the answer.",
        )
        self.first_token = meter.create_histogram(
            semconv.METRIC_GEN_AI_SERVER_TIME_TO_FIRST_TOKEN,
            unit="s",
            description="Time from the request to the first output token.",
        )
        self.per_token = meter.create_histogram(
            semconv.METRIC_GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN,
            unit="s",
            description="Time per output token after the first.",
        )


class _Telemetry:
    """One SERVER span per request, in the caller's trace; GenAI server metrics; the API key.

    Handlers leave what they learn (model, tokens, first-token time) in the request's
    ``state["o11ylab"]`` dict; this middleware turns it into attributes and metrics once the
    last byte is sent, which for a stream is after its last chunk.
    """

    def __init__(
        self, app: Any, api_key: str | None, host: str, port: int, max_body_bytes: int = 0
    ) -> None:
        from .telemetry import get_telemetry

        self.app = app  # the FastAPI app (its openapi() and routes stay reachable here)
        self._inner = _BodyLimit(app, max_body_bytes) if max_body_bytes > 0 else app
        self.api_key = api_key
        self.host = host
        self.port = port
        self._loopback = is_loopback(host)
        telemetry = get_telemetry()
        self.tracer = telemetry.tracer
        self.instruments = _ServerInstruments(telemetry.meter)

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[..., Awaitable[Any]],
        send: Callable[..., Awaitable[Any]],
    ) -> None:
        if scope["type"] != "http":
            await self._inner(scope, receive, send)
            return
        from opentelemetry import context as otel_context
        from opentelemetry import trace
        from opentelemetry.propagate import extract
        from opentelemetry.trace import SpanKind

        started = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path = scope.get("path", "")
        if self._loopback and not is_loopback_host_header(headers.get("host", "")):
            # DNS rebinding: a web page's script reaching 127.0.0.1 under its own name.
            await _send_json(
                send,
                403,
                OpenAIError(
                    403,
                    "This server listens on loopback and answers only requests addressed to "
                    "127.0.0.1, localhost or [::1] (the Host header).",
                ).body(),
            )
            return
        if path == "/metrics" and not self._authorized(headers):
            await _send_json(
                send,
                401,
                OpenAIError(
                    401,
                    "Missing or wrong API key: /metrics needs it too, as "
                    "'Authorization: Bearer <key>' (Prometheus: authorization.credentials).",
                    type_="authentication_error",
                    code="invalid_api_key",
                ).body(),
            )
            return
        if path in _PROBES and "traceparent" not in headers:
            # A launcher's liveness probe or a scrape belongs to no trace: it would make a
            # one-span trace of its own per probe (a run must stay one trace).
            await self._inner(scope, receive, send)
            return
        method = scope.get("method", "GET")
        route = path if path in _ROUTES or path.startswith("/v1/models/") else None
        if route and route.startswith("/v1/models/"):
            route = "/v1/models/{model}"
        attributes: dict[str, Any] = {
            semconv.HTTP_REQUEST_METHOD: method,
            semconv.URL_PATH: path,
            semconv.URL_SCHEME: scope.get("scheme", "http"),
            semconv.SERVER_ADDRESS: self.host,
            semconv.SERVER_PORT: self.port,
        }
        if route:
            attributes[semconv.HTTP_ROUTE] = route
        client = scope.get("client")
        if client:
            attributes[semconv.CLIENT_ADDRESS] = client[0]
        parent = extract(headers)
        span = self.tracer.start_span(
            f"{method} {route}" if route else method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
        )
        info: dict[str, Any] = {"started": started}
        scope.setdefault("state", {})["o11ylab"] = info
        status = {"code": 500}

        async def send_wrapper(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        token = otel_context.attach(trace.set_span_in_context(span, parent))
        failure: BaseException | None = None
        try:
            if path.startswith("/v1/") and not self._authorized(headers):
                status["code"] = 401
                info["error_type"] = "invalid_api_key"
                await _send_json(
                    send,
                    401,
                    OpenAIError(
                        401,
                        "Missing or wrong API key: send it as 'Authorization: Bearer <key>' "
                        f"(the server's key is set by --api-key-file or {API_KEY_ENV}).",
                        type_="authentication_error",
                        code="invalid_api_key",
                    ).body(),
                )
                return
            await self._inner(scope, receive, send_wrapper)
        except BaseException as exc:
            failure = exc
            status["code"] = 500
            raise
        finally:
            otel_context.detach(token)
            self._finish(span, info, status["code"], failure, _GENAI_ROUTES.get(path))

    def _authorized(self, headers: dict[str, str]) -> bool:
        if not self.api_key:
            return True
        given = headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(value.strip().encode(), self.api_key.encode())

    def _finish(
        self,
        span: Any,
        info: dict[str, Any],
        code: int,
        failure: BaseException | None,
        operation: str | None,
    ) -> None:
        from opentelemetry.trace import Status, StatusCode

        ended = time.perf_counter()
        error_type = info.get("error_type")
        if failure is not None:
            error_type = type(failure).__qualname__
        elif code >= 400 and not error_type:
            error_type = str(code)
        span.set_attribute(semconv.HTTP_RESPONSE_STATUS_CODE, code)
        if info.get("model"):
            span.set_attribute(semconv.GEN_AI_REQUEST_MODEL, info["model"])
        if error_type:
            span.set_attribute(semconv.ERROR_TYPE, error_type)
        if code >= 500:  # HTTP conventions: a 4xx is the client's error, not the server's
            span.set_status(Status(StatusCode.ERROR, str(failure or error_type)[:300]))
            if failure is not None:
                span.record_exception(failure)
        span.end()
        if operation is None:
            return
        metric_attributes: dict[str, Any] = {
            semconv.GEN_AI_OPERATION_NAME: operation,
            semconv.GEN_AI_PROVIDER_NAME: semconv.PROVIDER_LOCAL,
            semconv.SERVER_ADDRESS: self.host,
            semconv.SERVER_PORT: self.port,
        }
        if info.get("model"):
            # Only a model this server serves is a label: any string a client sends would
            # otherwise be a new series (3,000 unknown-model 404s made /metrics 21 MB).
            metric_attributes[semconv.GEN_AI_REQUEST_MODEL] = info.get("served_model", OTHER)
        if info.get("response_model"):
            metric_attributes[semconv.GEN_AI_RESPONSE_MODEL] = info["response_model"]
        if error_type:
            metric_attributes[semconv.ERROR_TYPE] = error_type
        self.instruments.duration.record(ended - info["started"], metric_attributes)
        first = info.get("first_token_at")
        if error_type or first is None:
            return
        self.instruments.first_token.record(first - info["started"], metric_attributes)
        output_tokens = int(info.get("output_tokens") or 0)
        if output_tokens > 1:
            self.instruments.per_token.record(
                (ended - first) / (output_tokens - 1), metric_attributes
            )


async def _send_json(send: Callable[..., Awaitable[Any]], status: int, body: Any) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


# --- the app -------------------------------------------------------------------------------------


def create_app(config: ServeConfig, *, engine: Any = None, embedder: Any = None) -> Any:
    """The FastAPI app: loads the chat model now (or uses ``engine``), the embedder on first use."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from ._version import __version__
    from .ai import local_model
    from .telemetry import get_telemetry

    telemetry = get_telemetry()
    if engine is None:
        engine = local_model.get_local_model(config.model, device=config.device)
    embedding_ref = models.resolve_embedding_model(config.embedding_model)
    embedder_box: dict[str, Any] = {"engine": embedder}
    embedder_lock = threading.Lock()
    created = int(time.time())

    def get_embedder() -> Any:
        with embedder_lock:
            if embedder_box["engine"] is None:
                embedder_box["engine"] = local_model.get_local_embedder(
                    config.embedding_model, device=config.device
                )
            return embedder_box["engine"]

    chat_ids = {engine.name, str(engine.path)}
    if engine.name == models.DEFAULT_CHAT_MODEL:
        chat_ids.add(models.DEFAULT_CHAT_MODEL_HUB_ID)
    if config.model:
        chat_ids.add(config.model)
    embedding_ids = {embedding_ref.name, str(embedding_ref.path)}
    if embedding_ref.name == models.DEFAULT_EMBEDDING_MODEL:
        embedding_ids.add(f"sentence-transformers/{models.DEFAULT_EMBEDDING_MODEL}")
    if config.embedding_model:
        embedding_ids.add(config.embedding_model)

    class Message(BaseModel):
        model_config = ConfigDict(extra="allow")
        role: str
        content: str | list[Any] | None = None

    class StreamOptions(BaseModel):
        model_config = ConfigDict(extra="allow")
        include_usage: bool = False

    class ChatRequest(BaseModel):
        model_config = ConfigDict(extra="allow")
        model: str
        messages: list[Message]
        max_tokens: int | None = Field(None, ge=1)
        max_completion_tokens: int | None = Field(None, ge=1)
        temperature: float | None = Field(None, ge=0, le=2)
        top_p: float | None = Field(None, gt=0, le=1)
        n: int | None = Field(None, ge=1)
        seed: int | None = None
        stop: str | list[str] | None = None
        stream: bool | None = False
        stream_options: StreamOptions | None = None

    class EmbeddingRequest(BaseModel):
        model_config = ConfigDict(extra="allow")
        model: str
        input: str | list[str] | list[int] | list[list[int]]
        encoding_format: str | None = "float"
        dimensions: int | None = None

    extra: dict[str, Any] = {}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        # Newer FastAPI traces requests itself. The middleware below already makes the one
        # SERVER span per request (with the GenAI detail and the key check), so FastAPI keeps
        # only its HTTP metrics; its logs could carry request bodies.
        extra["telemetry"] = {
            "tracing": False,
            "operation_spans": False,
            "logs": False,
            "auto_configure": False,
        }
    app = FastAPI(
        title="o11ylab local OpenAI-compatible endpoint",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        **extra,
    )

    @app.exception_handler(OpenAIError)
    async def _openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
        request.state.o11ylab["error_type"] = exc.code or exc.type
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        first = problems[0] if problems else {}
        location = [str(p) for p in first.get("loc", ()) if p != "body"]
        if first.get("type") == "json_invalid":
            message, location = "The request body is not valid JSON.", []
        elif first.get("type") == "model_attributes_type" or not location:
            message = "The request body must be a JSON object: " + str(first.get("msg", ""))
        else:
            message = f"{'.'.join(location)}: {first.get('msg', 'invalid value')}"
        request.state.o11ylab["error_type"] = "invalid_request_error"
        return JSONResponse(
            OpenAIError(
                400, message, param=".".join(location) or None, code="invalid_value"
            ).body(),
            status_code=400,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            message = f"Unknown route {request.method} {request.url.path}."
        return JSONResponse(
            OpenAIError(exc.status_code, message, type_=_error_type_of(exc.status_code)).body(),
            status_code=exc.status_code,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        _log.error("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            OpenAIError(
                500,
                f"The server failed ({type(exc).__name__}); details are in the server's log.",
                type_="server_error",
            ).body(),
            status_code=500,
        )

    def engine_error(exc: Exception) -> OpenAIError:
        if isinstance(exc, local_model.ContextWindowExceededError):
            return OpenAIError(400, str(exc), param="messages", code="context_length_exceeded")
        if isinstance(exc, local_model.EmptyPromptError):
            return OpenAIError(400, str(exc), param="messages", code="invalid_value")
        return OpenAIError(400, str(exc), code="invalid_value")

    # /health and /metrics run on the event loop, not the thread pool the generations queue on:
    # with 80 generations queued a sync /health took 21 s, and a kernel then judged the shared
    # server dead and started a second one.
    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": engine.name,
            "embedding_model": embedding_ref.name,
            "device": engine.device,
            "dtype": engine.dtype,
            "version": __version__,
        }

    @app.get("/metrics", response_class=PlainTextResponse)  # so the schema says text, too
    async def metrics() -> Response:
        return Response(telemetry.prometheus_text(), media_type="text/plain; version=0.0.4")

    def model_card(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": created, "owned_by": "o11ylab"}

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(engine.name), model_card(embedding_ref.name)]}

    @app.get("/v1/models/{model_id:path}")
    def get_model(model_id: str) -> dict[str, Any]:
        if model_id in chat_ids:
            return model_card(engine.name)
        if model_id in embedding_ids:
            return model_card(embedding_ref.name)
        raise _unknown_model(model_id, engine.name, embedding_ref.name)

    @app.post(
        "/v1/chat/completions", responses={200: {"content": {"text/event-stream": {}}}}
    )  # "stream": true
    def chat_completions(body: ChatRequest, request: Request) -> Any:
        info = request.state.o11ylab
        info["model"] = body.model[:MAX_ATTRIBUTE_CHARS]
        if body.model not in chat_ids:
            raise _unknown_model(body.model, engine.name, embedding_ref.name)
        info["served_model"] = body.model
        if not body.messages:
            raise OpenAIError(
                400,
                "messages is empty: send at least one message.",
                param="messages",
                code="invalid_value",
            )
        if body.n not in (None, 1):
            raise OpenAIError(
                400,
                "n > 1 is not supported by the local endpoint.",
                param="n",
                code="invalid_value",
            )
        _check_stop(body.stop)
        messages = [m.model_dump(exclude_none=True) for m in body.messages]
        options = {
            "max_new_tokens": body.max_completion_tokens or body.max_tokens,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "seed": body.seed,
            "stop": body.stop,
        }
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        now = int(time.time())
        info["response_model"] = engine.name
        if not body.stream:
            called = time.perf_counter()
            try:
                result = engine.chat(messages, **options)
            except local_model.LocalModelError as exc:
                raise engine_error(exc) from None
            if result.time_to_first_token_s is not None:
                info["first_token_at"] = called + result.time_to_first_token_s
            info["output_tokens"] = result.output_tokens
            return {
                "id": completion_id,
                "object": "chat.completion",
                "created": now,
                "model": engine.name,
                "system_fingerprint": None,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": result.finish_reason,
                        "logprobs": None,
                        "message": {"role": "assistant", "content": result.text},
                    }
                ],
                "usage": _usage(result.input_tokens, result.output_tokens),
            }
        try:
            stream = engine.stream_chat(messages, **options)
        except local_model.LocalModelError as exc:
            raise engine_error(exc) from None
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _sse(stream, info, completion_id, now, engine.name, include_usage),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    @app.post("/v1/embeddings")
    def embeddings(body: EmbeddingRequest, request: Request) -> Any:
        info = request.state.o11ylab
        info["model"] = body.model[:MAX_ATTRIBUTE_CHARS]
        if body.model not in embedding_ids:
            raise _unknown_model(body.model, engine.name, embedding_ref.name)
        info["served_model"] = body.model
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts:
            raise OpenAIError(
                400,
                "input is empty: send a string or a list of strings.",
                param="input",
                code="invalid_value",
            )
        if len(texts) > MAX_EMBEDDING_INPUTS:
            raise OpenAIError(
                400,
                f"input has {len(texts):,} items; at most {MAX_EMBEDDING_INPUTS} are allowed "
                "per request (as OpenAI's): send them in batches.",
                param="input",
                code="invalid_value",
            )
        if not all(isinstance(t, str) for t in texts):
            raise OpenAIError(
                400,
                "Token-id input is not supported here: send strings.",
                param="input",
                code="invalid_value",
            )
        if body.encoding_format not in (None, "float", "base64"):
            raise OpenAIError(
                400,
                "encoding_format must be 'float' or 'base64'.",
                param="encoding_format",
                code="invalid_value",
            )
        model = get_embedder()
        if body.dimensions is not None and body.dimensions != model.dimensions:
            raise OpenAIError(
                400,
                f"{model.name} makes {model.dimensions}-dimension vectors; "
                f"dimensions={body.dimensions} is not available.",
                param="dimensions",
                code="invalid_value",
            )
        try:
            result = model.embed(texts)
        except local_model.LocalModelError as exc:
            raise OpenAIError(400, str(exc), param="input", code="invalid_value") from None
        info["response_model"] = model.name
        data = []
        for index, vector in enumerate(result.vectors):
            encoded: Any = vector
            if body.encoding_format == "base64":
                encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        return {
            "object": "list",
            "data": data,
            "model": model.name,
            "usage": {"prompt_tokens": result.input_tokens, "total_tokens": result.input_tokens},
        }

    return _Telemetry(app, config.api_key, config.host, config.port, config.max_body_bytes)


def _unknown_model(name: str, chat: str, embedding: str) -> OpenAIError:
    if len(name) > MAX_ATTRIBUTE_CHARS:
        name = name[:MAX_ATTRIBUTE_CHARS] + "…"
    return OpenAIError(
        404,
        f"The model `{name}` does not exist on this endpoint. It serves `{chat}` (chat) "
        f"and `{embedding}` (embeddings); see GET /v1/models.",
        param="model",
        code="model_not_found",
    )


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


async def _sse(
    stream: Any,
    info: dict[str, Any],
    completion_id: str,
    created: int,
    model: str,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """Server-sent events of one streamed completion, in the OpenAI chunk format.

    A thread reads the model's pieces and hands them to the event loop as they come; pieces
    that arrived together leave in one write (each still its own chunk).
    """
    import asyncio

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            body["usage"] = None
        return f"data: {json.dumps(body)}\n\n".encode()

    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[Any] = asyncio.Queue()
    end = object()

    def pump() -> None:
        try:
            for piece in stream:
                loop.call_soon_threadsafe(pieces.put_nowait, piece)
            loop.call_soon_threadsafe(pieces.put_nowait, end)
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, reported in-band below
            loop.call_soon_threadsafe(pieces.put_nowait, exc)

    try:
        yield chunk({"role": "assistant", "content": ""})
        threading.Thread(target=pump, name="o11ylab-sse", daemon=True).start()
        finished = False
        while not finished:
            batch = [await pieces.get()]
            while not pieces.empty():
                batch.append(pieces.get_nowait())
            out: list[bytes] = []
            for item in batch:
                if item is end:
                    finished = True
                    break
                if isinstance(item, BaseException):
                    # The answer already started: report in-band, as OpenAI does.
                    info["error_type"] = type(item).__qualname__
                    error = OpenAIError(
                        500, f"generation failed ({type(item).__name__})", type_="server_error"
                    )
                    out.append(f"data: {json.dumps(error.body())}\n\n".encode())
                    yield b"".join(out)
                    return
                if info.get("first_token_at") is None:
                    info["first_token_at"] = stream.first_token_at or time.perf_counter()
                out.append(chunk({"content": item}))
            if out:
                yield b"".join(out)
        result = stream.result
        finish = result.finish_reason if result is not None else "stop"
        tail = [chunk({}, finish)]
        if result is not None:
            info["output_tokens"] = result.output_tokens
            if include_usage:
                body = {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": None,
                    "choices": [],
                    "usage": _usage(result.input_tokens, result.output_tokens),
                }
                tail.append(f"data: {json.dumps(body)}\n\n".encode())
        tail.append(b"data: [DONE]\n\n")
        yield b"".join(tail)
    finally:
        stream.cancel()  # a client that went away stops the model at its next token


# --- running the server ---------------------------------------------------------------------


def _watch_parent(pid: int, server: Any) -> None:
    """Stop the server when the process that started it is gone (a killed kernel leaves no
    atexit behind to stop it)."""
    while not server.should_exit:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            server.should_exit = True
            return
        except PermissionError:
            pass
        time.sleep(1.0)


def serve(config: ServeConfig, *, exit_with_parent: int | None = None) -> int:
    """Load the models and serve until interrupted."""
    import uvicorn

    from .ai import local_model

    if not is_loopback(config.host) and not config.api_key:
        print(
            f"o11ylab serve: refusing to listen on {config.host} without an API key: pass "
            f"--api-key-file PATH or set {API_KEY_ENV} (loopback, the default, needs none).",
            file=sys.stderr,
        )
        return 2
    if _service_name_unset():
        os.environ["OTEL_SERVICE_NAME"] = semconv.SERVE_SERVICE_NAME
    try:
        app = create_app(config)
    except (models.ModelNotFoundError, local_model.LocalModelError) as exc:
        print(f"o11ylab serve: {exc}", file=sys.stderr)
        return 1
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(uv_config)
    if exit_with_parent:
        threading.Thread(
            target=_watch_parent,
            args=(exit_with_parent, server),
            name="o11ylab-parent-watch",
            daemon=True,
        ).start()
    host = f"[{config.host}]" if ":" in config.host else config.host
    print(
        f"o11ylab serve: http://{host}:{config.port}/v1 (chat and embeddings; /health, /metrics)",
        file=sys.stderr,
        flush=True,
    )
    server.run()
    from .telemetry import peek_telemetry

    telemetry = peek_telemetry()
    if telemetry is not None:
        telemetry.shutdown()
    return 0


def _service_name_unset() -> bool:
    if os.environ.get("OTEL_SERVICE_NAME", "").strip():
        return False
    resource = os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    return not any(part.strip().startswith("service.name=") for part in resource.split(","))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to listen on (default 127.0.0.1; anything else needs a key)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    parser.add_argument(
        "--model",
        default=None,
        help="chat model folder or cached hub id (default: LOCAL_MODEL_NAME, "
        f"else {models.DEFAULT_CHAT_MODEL})",
    )
    parser.add_argument(
        "--embedding-model",
        default=None,
        help="embedding model folder (default: EMBEDDING_MODEL, else "
        f"{models.DEFAULT_EMBEDDING_MODEL})",
    )
    parser.add_argument(
        "--api-key-file",
        default=None,
        metavar="PATH",
        help=f"file whose first line is the bearer key every /v1 request must send "
        f"(default: {API_KEY_ENV})",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help="the key itself: readable by every local user in the process list; prefer "
        f"--api-key-file or {API_KEY_ENV}",
    )
    parser.add_argument(
        "--max-body-mb",
        type=float,
        default=None,
        metavar="MB",
        help=f"largest request body accepted, in MB; 0 for no limit (default: {MAX_BODY_ENV}, "
        f"else {DEFAULT_MAX_BODY_MB})",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="torch device, e.g. cpu or cuda:0 (default: USE_GPU / GPU_DEVICE_ID)",
    )
    parser.add_argument(
        "--exit-with-parent", type=int, default=None, metavar="PID", help=argparse.SUPPRESS
    )


def api_key_from(args: argparse.Namespace) -> str | None:
    """The server's key: ``--api-key-file``, else ``--api-key`` (with a warning), else
    ``O11YLAB_SERVE_API_KEY``. Never echoes a key."""
    if args.api_key_file:
        path = Path(args.api_key_file).expanduser()
        try:
            key = path.read_text(encoding="utf-8").partition("\n")[0].strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SystemExit(
                f"o11ylab serve: cannot read --api-key-file {path} "
                f"({getattr(exc, 'strerror', None) or type(exc).__name__}): "
                "point it at a readable file whose first line is the key."
            ) from None
        if not key:
            raise SystemExit(
                f"o11ylab serve: --api-key-file {path} is empty: put the key on its first line."
            )
        return key
    if args.api_key:
        print(
            "o11ylab serve: --api-key is readable by every local user in the process list; "
            f"use --api-key-file PATH or {API_KEY_ENV} instead.",
            file=sys.stderr,
        )
        return str(args.api_key).strip() or None
    return os.environ.get(API_KEY_ENV, "").strip() or None


def max_body_bytes_from(args: argparse.Namespace) -> int:
    """``--max-body-mb``, else ``O11YLAB_SERVE_MAX_BODY_MB``, else the default, in bytes."""
    raw: Any = args.max_body_mb
    if raw is None:
        raw = os.environ.get(MAX_BODY_ENV, "").strip() or DEFAULT_MAX_BODY_MB
    try:
        megabytes = float(raw)
    except ValueError:
        megabytes = -1.0
    if not 0 <= megabytes <= 1024:
        raise SystemExit(
            f"o11ylab serve: {MAX_BODY_ENV} / --max-body-mb={raw!r} is not a size in MB: "
            "use a number in 0..1024 (0: no limit)."
        )
    return int(megabytes * 1024 * 1024)


def run_command(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    api_key = api_key_from(args)
    config = ServeConfig(
        model=args.model,
        embedding_model=args.embedding_model,
        host=args.host,
        port=args.port,
        api_key=api_key,
        device=args.device,
        max_body_bytes=max_body_bytes_from(args),
    )
    return serve(config, exit_with_parent=args.exit_with_parent)


# --- starting one from Python ----------------------------------------------------------------


def _free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _root(base_url: str) -> str:
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _healthy(base_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(_root(base_url) + "/health", timeout=timeout) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError, ValueError):
        return False


class LocalEndpoint:
    """``o11ylab serve`` in a subprocess on 127.0.0.1, for as long as this object says.

        with LocalEndpoint() as endpoint:
            client = openai.OpenAI(base_url=endpoint.base_url, api_key="unused")

    ``start()`` prepares the default model first when needed (progress on stderr), waits for
    ``/health`` up to ``start_timeout_s`` (default 120 s, env ``O11YLAB_SERVE_START_TIMEOUT``)
    and raises ``EndpointError`` with the end of the server's log if it does not come up.
    The server also stops by itself when this process dies.
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        embedding_model: str | None = None,
        port: int | None = None,
        api_key: str | None = None,
        start_timeout_s: float | None = None,
        env: dict[str, str] | None = None,
        echo: bool = True,
    ) -> None:
        self.model = model
        self.embedding_model = embedding_model
        self.host = DEFAULT_HOST
        self.port = port
        self.api_key = api_key
        self.start_timeout_s = start_timeout_s or float(os.environ.get(START_TIMEOUT_ENV) or 120)
        self.env = env
        self.echo = echo
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._log_dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise EndpointError("the local endpoint is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _say(self, message: str) -> None:
        if self.echo:
            print(f"o11ylab: {message}", file=sys.stderr, flush=True)

    def _prepare_default_model(self, env: dict[str, str]) -> None:
        chosen = self.model or env.get("LOCAL_MODEL_NAME", "").strip()
        if chosen and chosen != models.DEFAULT_CHAT_MODEL:
            return
        cache = env.get("O11YLAB_MODEL_CACHE", "").strip()
        folder = (
            Path(cache).expanduser() / models.DEFAULT_CHAT_MODEL
            if cache
            else models.default_chat_model_dir()
        )
        if models.is_prepared(folder):
            return
        self._say(f"preparing {models.DEFAULT_CHAT_MODEL} once (about a minute, offline)")
        command = [sys.executable, "-m", "o11ylab", "models", "prepare"]
        process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        assert process.stdout is not None
        tail: list[str] = []
        for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            tail = ([*tail, line])[-20:]
            if line.startswith("["):  # our step lines; transformers' bars stay out of the way
                self._say(line)
        if process.wait() != 0:
            raise EndpointError(
                f"preparing {models.DEFAULT_CHAT_MODEL} failed:\n" + "\n".join(tail)
            )

    def start(self) -> "LocalEndpoint":
        if self.running():
            return self
        env = dict(os.environ if self.env is None else self.env)
        env.pop("TRACEPARENT", None)  # the server continues each caller's trace from headers
        env["OTEL_SERVICE_NAME"] = semconv.SERVE_SERVICE_NAME
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        # OpenMP's spinning workers starve a generation that runs on a pooled thread when the
        # CPU is shared: 4-10x slower non-streamed chat on 2 busy cores; passive waits fix it.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        if self.api_key:
            env[API_KEY_ENV] = self.api_key
        self._prepare_default_model(env)
        self.port = self.port or _free_port()
        command = [
            sys.executable,
            "-m",
            "o11ylab",
            "serve",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--exit-with-parent",
            str(os.getpid()),
        ]
        if self.model:
            command += ["--model", str(self.model)]
        if self.embedding_model:
            command += ["--embedding-model", str(self.embedding_model)]
        self._log_dir = tempfile.TemporaryDirectory(prefix="o11ylab-serve-")
        self.log_path = Path(self._log_dir.name) / "serve.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log_tail = self._log_tail()
                self._cleanup()
                raise EndpointError(
                    f"o11ylab serve exited with status {self.process.returncode} before it was "
                    f"ready:\n{log_tail}"
                )
            if _healthy(self.base_url, timeout=1.0):
                return self
            time.sleep(0.2)
        log_tail = self._log_tail()
        self.stop()
        raise EndpointError(
            f"o11ylab serve did not answer /health within {self.start_timeout_s:.0f} s; raise "
            f"{START_TIMEOUT_ENV} on a slow machine. Its log ends with:\n{log_tail}"
        )

    def _log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").replace("\r", "\n").splitlines()
        return "\n".join(line for line in text[-lines:] if line.strip())

    def stop(self, timeout: float = 10.0) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._log_dir is not None:
            self._log_dir.cleanup()
            self._log_dir = None

    def __enter__(self) -> "LocalEndpoint":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


_SHARED: LocalEndpoint | None = None
_SHARED_LOCK = threading.Lock()


def _exits_within(endpoint: LocalEndpoint, seconds: float) -> bool:
    """Whether a server that stopped answering exits within ``seconds`` (killed, crashing)."""
    if endpoint.process is None:
        return True
    try:
        endpoint.process.wait(seconds)
    except subprocess.TimeoutExpired:
        return False  # alive, just slow to answer: keep it
    return True


def ensure_local_endpoint(
    *,
    model: str | None = None,
    embedding_model: str | None = None,
    start_timeout_s: float | None = None,
) -> str:
    """A base URL (ending in ``/v1``) of a healthy local OpenAI-compatible endpoint.

    ``O11YLAB_LOCAL_ENDPOINT`` when it is set and answers ``/health``; otherwise one server
    started for this process on a free loopback port (reused by later calls, stopped when the
    process exits).
    """
    global _SHARED
    configured = os.environ.get(LOCAL_ENDPOINT_ENV, "").strip()
    if configured:
        base = _root(configured) + "/v1"
        if _healthy(base):
            return base
        print(
            f"o11ylab: {LOCAL_ENDPOINT_ENV} ({base}) does not answer /health; starting a local "
            "endpoint of this process's own instead.",
            file=sys.stderr,
            flush=True,
        )
    with _SHARED_LOCK:
        shared = _SHARED
        if shared is not None and shared.running():
            # A killed server can still look alive for a moment after its sockets close (the
            # client saw the connection drop first): wait for it to go, and start another.
            if _healthy(shared.base_url) or not _exits_within(shared, 5.0):
                return shared.base_url
            shared.stop()
        endpoint = LocalEndpoint(
            model=model, embedding_model=embedding_model, start_timeout_s=start_timeout_s
        )
        endpoint._say("starting the local model endpoint (o11ylab serve) on 127.0.0.1")
        endpoint.start()
        atexit.register(endpoint.stop)
        _SHARED = endpoint
        endpoint._say(f"local OpenAI-compatible endpoint at {endpoint.base_url}")
        return endpoint.base_url
