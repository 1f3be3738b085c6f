"""The FastAPI app of ``o11ylab serve``: what it serves, its routes, and its error answers."""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations at run time.
import asyncio
import base64
import concurrent.futures
import contextvars
import inspect
import logging
import struct
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import models
from .._version import __version__
from ._admission import Admission
from ._bodylimit import BodyLimit
from ._config import ServeConfig
from ._errors import (
    MAX_ATTRIBUTE_CHARS,
    MAX_EMBEDDING_INPUTS,
    OpenAIError,
    check_stop,
    error_type_of,
    invalid,
    unknown_model,
)
from ._gate import CHALLENGE_HEADER, PROOF_HEADER, ApiKeyGate, LoopbackHostOnly, proof
from ._schema import ChatRequest, EmbeddingRequest
from ._sse import Chunks, sse, usage
from ._telemetry import ServerTelemetry

_log = logging.getLogger("o11ylab.serve")


class Served:
    """What this server serves: the chat engine, the embedder (loaded on first use), and every
    name a client may call each by."""

    def __init__(
        self,
        config: ServeConfig,
        engine: Any,
        embedder: Any,
        after_load: Callable[[], None] | None = None,
    ) -> None:
        from ..ai import local_model

        self.config = config
        self._after_load = after_load  # called after the embedder loads (o11ylab serve's)
        self.engine = engine or local_model.get_local_model(config.model, device=config.device)
        self.embedding_ref = models.resolve_embedding_model(config.embedding_model)
        self._embedder = embedder
        self._embedder_lock = threading.Lock()
        # The threads that prepare non-streamed requests and wait for their answers, reused:
        # starting a thread per request held the event loop until the new thread ran
        # (Thread.start waits for it), 22% of the loop's time at 10 clients (py-spy). One per
        # request the server admits.
        self.waiters = concurrent.futures.ThreadPoolExecutor(
            max_workers=config.max_queue, thread_name_prefix="o11ylab-chat"
        )
        self.created = int(time.time())
        self.chat_ids = {self.engine.name, str(self.engine.path)}
        if self.engine.name == models.DEFAULT_CHAT_MODEL:
            self.chat_ids.add(models.DEFAULT_CHAT_MODEL_HUB_ID)
        if config.model:
            self.chat_ids.add(config.model)
        self.embedding_ids = {self.embedding_ref.name, str(self.embedding_ref.path)}
        if self.embedding_ref.name == models.DEFAULT_EMBEDDING_MODEL:
            self.embedding_ids.add(f"sentence-transformers/{models.DEFAULT_EMBEDDING_MODEL}")
        if config.embedding_model:
            self.embedding_ids.add(config.embedding_model)
        self.max_prompt_chars = self.engine.context_window * _longest_token(self.engine)

    def embedder(self) -> Any:
        with self._embedder_lock:
            if self._embedder is None:
                from ..ai import local_model

                self._embedder = local_model.get_local_embedder(
                    self.config.embedding_model, device=self.config.device
                )
                if self._after_load is not None:
                    self._after_load()
            return self._embedder

    def card(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self.created, "owned_by": "o11ylab"}

    def unknown(self, name: str) -> OpenAIError:
        return unknown_model(name, self.engine.name, self.embedding_ref.name)

    def choose(self, name: str, served: set[str], info: dict[str, Any]) -> None:
        """Note the client's model on the span (cut) and, when served, as a metric label."""
        info["model"] = name[:MAX_ATTRIBUTE_CHARS]
        if name not in served:
            raise self.unknown(name)
        info["served_model"] = name


def _longest_token(engine: Any) -> int:
    """Characters in the vocabulary's longest token (its stored form, which is never shorter
    than the text it decodes to); 64 when the tokenizer does not list its vocabulary."""
    try:
        return max(64, max(len(token) for token in engine.tokenizer.get_vocab()))
    except (AttributeError, TypeError, ValueError):
        return 64


def _served(request: Request) -> Served:
    served: Served = request.app.state.served
    return served


# --- error answers -------------------------------------------------------------------------------


async def _openai_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OpenAIError)
    request.state.o11ylab["error_type"] = exc.code or exc.type
    return JSONResponse(exc.body(), status_code=exc.status)


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
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
    error = invalid(message, ".".join(location) or None)
    return JSONResponse(error.body(), status_code=400)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    if exc.status_code == 404:
        message = f"Unknown route {request.method} {request.url.path}."
    return JSONResponse(
        OpenAIError(exc.status_code, message, type_=error_type_of(exc.status_code)).body(),
        status_code=exc.status_code,
    )


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


def _engine_error(exc: Exception) -> OpenAIError:
    from ..ai import local_model

    if isinstance(exc, local_model.ContextWindowExceededError):
        return OpenAIError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, local_model.EmptyPromptError):
        return OpenAIError(400, str(exc), param="messages", code="invalid_value")
    return OpenAIError(400, str(exc), code="invalid_value")


# --- probes and the model list -------------------------------------------------------------------

# /health and /metrics run on the event loop, not the thread pool the generations queue on:
# with 80 generations queued a sync /health took 21 s, and a kernel then judged the shared
# server dead and started a second one.


async def health(request: Request, response: Response) -> dict[str, Any]:
    served = _served(request)
    challenge = request.headers.get(CHALLENGE_HEADER)
    if challenge and served.config.api_key:
        response.headers[PROOF_HEADER] = proof(served.config.api_key, challenge)
    return {
        "status": "ok",
        "model": served.engine.name,
        "embedding_model": served.embedding_ref.name,
        "device": served.engine.device,
        "dtype": served.engine.dtype,
        "version": __version__,
    }


async def metrics(request: Request) -> Response:
    from ..telemetry import peek_telemetry

    telemetry = peek_telemetry()
    text = (
        telemetry.prometheus_text()
        if telemetry is not None
        else b"# o11ylab: no telemetry in this process; `o11ylab serve` sets it up\n"
    )
    return Response(text, media_type="text/plain; version=0.0.4")


def list_models(request: Request) -> dict[str, Any]:
    served = _served(request)
    cards = [served.card(served.engine.name), served.card(served.embedding_ref.name)]
    return {"object": "list", "data": cards}


def get_model(model_id: str, request: Request) -> dict[str, Any]:
    served = _served(request)
    if model_id in served.chat_ids:
        return served.card(served.engine.name)
    if model_id in served.embedding_ids:
        return served.card(served.embedding_ref.name)
    raise served.unknown(model_id)


# --- chat ----------------------------------------------------------------------------------------


def _chat_options(body: ChatRequest) -> dict[str, Any]:
    """The engine's options from a checked request (400s for what it cannot do)."""
    if not body.messages:
        raise invalid("messages is empty: send at least one message.", "messages")
    if body.n not in (None, 1):
        raise invalid("n > 1 is not supported by the local endpoint.", "n")
    check_stop(body.stop)
    return {
        "max_new_tokens": body.max_completion_tokens or body.max_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "seed": body.seed,
        "stop": body.stop,
    }


def _check_prompt_size(served: Served, messages: list[dict[str, Any]]) -> None:
    """Refuse a prompt that cannot fit before tokenizing it: a 21 MB prompt took 36 s and
    2.9 GB to be tokenized and then refused. No token covers more characters than the
    vocabulary's longest, so more than context window x that many characters cannot fit."""
    from ..ai.local_model import LocalModelError, message_text

    try:
        size = sum(len(message_text(m.get("content"))) for m in messages)
    except LocalModelError as exc:  # content a text model cannot take: the client's mistake
        raise _engine_error(exc) from None
    if size > served.max_prompt_chars:
        raise OpenAIError(
            400,
            f"The messages have {size:,} characters; {served.engine.name} has a context window "
            f"of {served.engine.context_window:,} tokens, which no more than "
            f"{served.max_prompt_chars:,} characters can fit. Shorten the messages.",
            param="messages",
            code="context_length_exceeded",
        )


async def chat_completions(body: ChatRequest, request: Request) -> Any:
    served, info = _served(request), request.state.o11ylab
    served.choose(body.model, served.chat_ids, info)
    options = _chat_options(body)
    messages = [m.model_dump(exclude_none=True) for m in body.messages]
    _check_prompt_size(served, messages)
    engine = served.engine
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    now = int(time.time())
    info["response_model"] = engine.name
    called = time.perf_counter()
    if not body.stream:
        result = await _answer(served, messages, options, request)
        if result is None:
            info["error_type"] = "client_closed"
            return Response(status_code=499)  # nobody reads it: the client has gone
        return _completion(result, info, called, completion_id, now, engine.name)
    stream = await _prepared(engine, messages, options)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(
        sse(stream, info, Chunks(completion_id, now, engine.name, include_usage)),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


async def _prepared(engine: Any, messages: list[dict[str, Any]], options: dict[str, Any]) -> Any:
    """The generation's stream, not started: templating and tokenizing run on the thread
    pool, off the event loop that answers /health."""
    from starlette.concurrency import run_in_threadpool

    from ..ai import local_model

    try:
        return await run_in_threadpool(lambda: engine.stream_chat(messages, **options))
    except local_model.LocalModelError as exc:
        raise _engine_error(exc) from None


async def _answer(
    served: Served, messages: list[dict[str, Any]], options: dict[str, Any], request: Request
) -> Any:
    """The finished ``Generation`` of a non-streamed request, or None when the client went
    away first, in which case the model stops at its next token (or never starts, if it was
    still waiting for the model). A client with a 3 s timeout had left its generation running,
    and its retries queued the same work again: the next 1-token request waited 123 s.

    One of the server's waiting threads templates and tokenizes the request (off the event
    loop that answers /health), then waits for its answer: a whole answer is wanted, so the
    request may share one ``generate`` with others waiting (``LocalModel.batched_chat``)."""
    from ..ai import local_model

    started: list[Any] = []
    gone = threading.Event()

    def answer() -> Any:
        try:
            stream = served.engine.batched_chat(messages, **options)
        except local_model.LocalModelError as exc:
            raise _engine_error(exc) from None
        started.append(stream)
        if gone.is_set():
            stream.cancel()
        for _ in stream:
            pass
        return stream.result

    def stop() -> None:
        gone.set()
        if started:
            started[0].cancel()
        done.add_done_callback(_heard)

    # In this request's context: its span is the parent of the generation's.
    context = contextvars.copy_context()
    done = asyncio.get_running_loop().run_in_executor(served.waiters, context.run, answer)
    try:
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(done), _DISCONNECT_POLL_S)
            except TimeoutError:
                if await request.is_disconnected():
                    stop()
                    return None
    except asyncio.CancelledError:  # the server is stopping: so does the generation
        stop()
        raise


_DISCONNECT_POLL_S = 0.25  # how soon a gone client's generation is stopped


def _heard(future: asyncio.Future[Any]) -> None:
    """Nobody waits for this answer any more: take its error, if any, so asyncio does not log
    it as never retrieved."""
    if not future.cancelled():
        future.exception()


def _completion(
    result: Any, info: dict[str, Any], called: float, completion_id: str, now: int, model: str
) -> dict[str, Any]:
    if result.time_to_first_token_s is not None:
        info["first_token_at"] = called + result.time_to_first_token_s
    info["output_tokens"] = result.output_tokens
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": now,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "finish_reason": result.finish_reason,
                "logprobs": None,
                "message": {"role": "assistant", "content": result.text},
            }
        ],
        "usage": usage(result.input_tokens, result.output_tokens),
    }


# --- embeddings ----------------------------------------------------------------------------------


def _embedding_texts(body: EmbeddingRequest) -> list[str]:
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise invalid("input is empty: send a string or a list of strings.", "input")
    if len(texts) > MAX_EMBEDDING_INPUTS:
        raise invalid(
            f"input has {len(texts):,} items; at most {MAX_EMBEDDING_INPUTS} are allowed "
            "per request (as OpenAI's): send them in batches.",
            "input",
        )
    if not all(isinstance(t, str) for t in texts):
        raise invalid("Token-id input is not supported here: send strings.", "input")
    if body.encoding_format not in (None, "float", "base64"):
        raise invalid("encoding_format must be 'float' or 'base64'.", "encoding_format")
    return [str(t) for t in texts]


def embeddings(body: EmbeddingRequest, request: Request) -> Any:
    from ..ai import local_model

    served, info = _served(request), request.state.o11ylab
    served.choose(body.model, served.embedding_ids, info)
    texts = _embedding_texts(body)
    model = served.embedder()
    if body.dimensions is not None and body.dimensions != model.dimensions:
        raise invalid(
            f"{model.name} makes {model.dimensions}-dimension vectors; "
            f"dimensions={body.dimensions} is not available.",
            "dimensions",
        )
    try:
        # Requests that wait for the model are encoded together, each with its own vectors.
        result = model.batched_embed(texts)
    except local_model.LocalModelError as exc:
        raise invalid(str(exc), "input") from None
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


# --- the app -------------------------------------------------------------------------------------


class ServeApp:
    """The ASGI app ``o11ylab serve`` runs: the FastAPI ``app`` (its routes and OpenAPI schema)
    behind the Host check, the telemetry, the key gate, the queue bound and the body limit, in
    that order."""

    def __init__(self, app: FastAPI, asgi: Callable[..., Awaitable[None]]) -> None:
        self.app = app
        self._asgi = asgi

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[..., Awaitable[Any]],
        send: Callable[..., Awaitable[Any]],
    ) -> None:
        await self._asgi(scope, receive, send)


def _fastapi() -> FastAPI:
    extra: dict[str, Any] = {}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        # Newer FastAPI traces requests itself. The middleware already makes the one SERVER
        # span per request (with the GenAI detail), so FastAPI keeps only its HTTP metrics;
        # its logs could carry request bodies.
        extra["telemetry"] = {
            "tracing": False,
            "operation_spans": False,
            "logs": False,
            "auto_configure": False,
        }
    return FastAPI(
        title="o11ylab local OpenAI-compatible endpoint",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        **extra,
    )


def create_app(
    config: ServeConfig,
    *,
    engine: Any = None,
    embedder: Any = None,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    after_load: Callable[[], None] | None = None,
) -> ServeApp:
    """The app: loads the chat model now (or uses ``engine``), the embedder on first use, and
    then calls ``after_load``.

    Spans and metrics go to ``tracer_provider`` / ``meter_provider``, else to the global ones;
    nothing here installs a provider (``o11ylab serve`` does, for its own process).
    """
    app = _fastapi()
    app.state.served = Served(config, engine, embedder, after_load)
    app.add_exception_handler(OpenAIError, _openai_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
    app.add_api_route("/health", health, methods=["GET"])
    # response_class so the schema says text, too
    app.add_api_route("/metrics", metrics, methods=["GET"], response_class=PlainTextResponse)
    app.add_api_route("/v1/models", list_models, methods=["GET"])
    app.add_api_route("/v1/models/{model_id:path}", get_model, methods=["GET"])
    app.add_api_route(
        "/v1/chat/completions",
        chat_completions,
        methods=["POST"],
        responses={200: {"content": {"text/event-stream": {}}}},  # "stream": true
    )
    app.add_api_route("/v1/embeddings", embeddings, methods=["POST"])
    inner: Any = BodyLimit(app, config.max_body_bytes) if config.max_body_bytes > 0 else app
    traced = ServerTelemetry(
        ApiKeyGate(Admission(inner, config.max_queue), config.api_key),
        config.host,
        config.port,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    return ServeApp(app, LoopbackHostOnly(traced, config.host))
