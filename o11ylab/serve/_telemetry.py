"""Server-side telemetry, a pure ASGI middleware: one SERVER span per request in the caller's
trace, and the GenAI model-server metrics."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .. import semconv
from ._errors import OTHER

Receive = Callable[..., Awaitable[Any]]
Send = Callable[..., Awaitable[Any]]

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


def _route(path: str) -> str | None:
    if path.startswith("/v1/models/"):
        return "/v1/models/{model}"
    return path if path in _ROUTES else None


def _untraced(path: str, headers: dict[str, str]) -> bool:
    """A liveness probe or a scrape belongs to no trace, and neither does a model lookup that
    comes with none: each would be a one-span trace of its own (a run must stay one trace; the
    launcher's probes and the clients' GET /v1/models to pick a default had made 6 of them)."""
    if path in _PROBES:
        return True
    return path.startswith("/v1/models") and "traceparent" not in headers


class ServerTelemetry:
    """One SERVER span per request, in the caller's trace; GenAI server metrics.

    Handlers leave what they learn (model, tokens, first-token time) in the request's
    ``state["o11ylab"]`` dict; this middleware turns it into attributes and metrics once the
    last byte is sent, which for a stream is after its last chunk. The providers are the ones
    passed in, else the global ones (only the ``o11ylab serve`` process installs those).
    """

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        *,
        tracer_provider: Any = None,
        meter_provider: Any = None,
    ) -> None:
        from opentelemetry import metrics, trace

        from .._version import __version__

        self.app = app
        self.host = host
        self.port = port
        self.tracer = trace.get_tracer(semconv.SCOPE, __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter(semconv.SCOPE, __version__, meter_provider=meter_provider)
        self.instruments = _ServerInstruments(meter)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from opentelemetry import context as otel_context
        from opentelemetry import trace
        from opentelemetry.propagate import extract

        started = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path = scope.get("path", "")
        if _untraced(path, headers):
            scope.setdefault("state", {})["o11ylab"] = {}  # handlers' notes, read by no one
            await self.app(scope, receive, send)
            return
        parent = extract(headers)
        span = self._start_span(scope, path, parent)
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
            await self.app(scope, receive, send_wrapper)
        except BaseException as exc:
            failure = exc
            status["code"] = 500
            raise
        finally:
            otel_context.detach(token)
            error_type = self._end_span(span, info, status["code"], failure)
            operation = _GENAI_ROUTES.get(path)
            if operation is not None:
                self._record(operation, info, error_type)

    def _start_span(self, scope: MutableMapping[str, Any], path: str, parent: Any) -> Any:
        from opentelemetry.trace import SpanKind

        method = scope.get("method", "GET")
        route = _route(path)
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
        return self.tracer.start_span(
            f"{method} {route}" if route else method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
        )

    def _end_span(
        self, span: Any, info: dict[str, Any], code: int, failure: BaseException | None
    ) -> str | None:
        """End the request's span; returns its error type (None when it went well)."""
        from opentelemetry.trace import Status, StatusCode

        info["ended"] = time.perf_counter()
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
        return str(error_type) if error_type else None

    def _record(self, operation: str, info: dict[str, Any], error_type: str | None) -> None:
        attributes: dict[str, Any] = {
            semconv.GEN_AI_OPERATION_NAME: operation,
            semconv.GEN_AI_PROVIDER_NAME: semconv.PROVIDER_LOCAL,
            semconv.SERVER_ADDRESS: self.host,
            semconv.SERVER_PORT: self.port,
        }
        if info.get("model"):
            # Only a model this server serves is a label: any string a client sends would
            # otherwise be a new series (3,000 unknown-model 404s made /metrics 21 MB).
            attributes[semconv.GEN_AI_REQUEST_MODEL] = info.get("served_model", OTHER)
        if info.get("response_model"):
            attributes[semconv.GEN_AI_RESPONSE_MODEL] = info["response_model"]
        if error_type:
            attributes[semconv.ERROR_TYPE] = error_type
        ended, started = info["ended"], info["started"]
        self.instruments.duration.record(ended - started, attributes)
        first = info.get("first_token_at")
        if error_type or first is None:
            return
        self.instruments.first_token.record(first - started, attributes)
        output_tokens = int(info.get("output_tokens") or 0)
        if output_tokens > 1:
            self.instruments.per_token.record((ended - first) / (output_tokens - 1), attributes)
