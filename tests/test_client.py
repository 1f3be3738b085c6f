"""Endpoint choice, instrumentation on/off, and every failure a user can meet, over real HTTP.

Failures a healthy server never produces on demand (401 with the key echoed, 429, 5xx, a flaky
server, a hanging one) come from ``FaultyServer`` below: a real HTTP server on loopback that
speaks the OpenAI error format, so the real SDK, its retries and the real instrumentation run.
Everything else talks to o11ylab's own local endpoint.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.trace import StatusCode

from o11ylab import semconv
from o11ylab.ai import chat, embed
from o11ylab.ai import client as ai_client
from o11ylab.ai.client import (
    AIError,
    AuthenticationFailed,
    Endpoint,
    EndpointTimeout,
    EndpointUnreachable,
    RateLimited,
    ServerError,
    get_client,
    resolve_endpoint,
)
from o11ylab.config import ConfigError
from o11ylab.testing import capture_logs, capture_spans

from .ai_support import LocalServer, local_fixture, local_server_fixture  # noqa: F401
from .conftest import free_port

SECRET = "sk-test-o11ylab-0123456789abcdefSECRET"


class _Handler(BaseHTTPRequestHandler):
    server: FaultyServer

    def log_message(self, *args: Any) -> None:
        pass

    def _send(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        request = json.loads(self.rfile.read(length) or b"{}")
        self.server.requests.append({"path": self.path, "headers": dict(self.headers)})
        mode = self.path.split("/")[1]
        fast_retry = {"retry-after-ms": "5"}  # the SDK honours it: retries without long sleeps
        if mode == "unauthorized":
            # OpenAI echoes part of a rejected key; a careless server echoes all of it.
            key = self.headers.get("authorization", "").removeprefix("Bearer ")
            self._send(
                401,
                {
                    "error": {
                        "message": f"Incorrect API key provided: {key}.",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
            )
        elif mode == "ratelimited":
            self._send(
                429,
                {
                    "error": {
                        "message": "Rate limit reached for requests",
                        "type": "requests",
                        "code": "rate_limit_exceeded",
                    }
                },
                fast_retry,
            )
        elif mode == "broken":
            self._send(
                500, {"error": {"message": "The server had an error", "type": "server"}}, fast_retry
            )
        elif mode == "flaky" and len(self.server.requests) == 1:
            self._send(503, {"error": {"message": "overloaded", "type": "server"}}, fast_retry)
        elif mode == "slow":
            time.sleep(2)
            self._send(200, _completion(request))
        else:
            self._send(200, _completion(request))


def _completion(request: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": request["model"],
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "fine"},
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }


class FaultyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the client gave up on a slow answer (the timeout test): nothing to report

    def endpoint(self, mode: str, *, timeout_s: float = 10, max_retries: int = 2) -> Endpoint:
        return Endpoint(
            "custom",
            f"http://127.0.0.1:{self.server_port}/{mode}/v1",
            timeout_s=timeout_s,
            max_retries=max_retries,
            api_key=SECRET,
        )


@pytest.fixture
def faulty() -> Iterator[FaultyServer]:
    server = FaultyServer()
    ai_client._known_keys.add(SECRET)  # as resolve_endpoint does for OPENAI_API_KEY
    yield server
    server.shutdown()
    server.server_close()


def _fail(endpoint: Endpoint) -> tuple[AIError, Any]:
    with capture_spans() as spans, pytest.raises(AIError) as caught:
        chat("hello", model="gpt-4o-mini", max_tokens=4, client=get_client(endpoint))
    (span,) = [s for s in spans if s.name == "chat gpt-4o-mini"]
    return caught.value, span


def _everything_recorded(span: Any, logs: list[Any]) -> str:
    parts = [repr(dict(span.attributes)), str(span.status.description)]
    parts += [repr(dict(event.attributes or {})) + event.name for event in span.events]
    parts += [
        str(record.log_record.body) + repr(dict(record.log_record.attributes or {}))
        for record in logs
    ]
    return "\n".join(parts)


# --- choosing the endpoint -----------------------------------------------------------------------


def test_base_url_wins_and_key_goes_with_it() -> None:
    endpoint = resolve_endpoint(
        {"OPENAI_BASE_URL": "http://127.0.0.1:8000/v1/", "OPENAI_API_KEY": SECRET}
    )
    assert (endpoint.kind, endpoint.base_url) == ("custom", "http://127.0.0.1:8000/v1")
    assert endpoint.api_key == SECRET


def test_key_alone_means_openai_with_explicit_timeout_and_retries() -> None:
    endpoint = resolve_endpoint(
        {
            "OPENAI_API_KEY": SECRET,
            "O11YLAB_OPENAI_TIMEOUT": "12.5",
            "O11YLAB_OPENAI_MAX_RETRIES": "4",
        }
    )
    assert (endpoint.kind, endpoint.base_url) == ("openai", "https://api.openai.com/v1")
    assert (endpoint.timeout_s, endpoint.max_retries) == (12.5, 4)
    defaults = resolve_endpoint({"OPENAI_API_KEY": SECRET})
    assert (defaults.timeout_s, defaults.max_retries) == (60.0, 2)


def test_neither_means_the_local_endpoint_on_loopback(local: LocalServer) -> None:
    endpoint = resolve_endpoint()  # OPENAI_* unset; the session's endpoint is the local one
    assert endpoint.kind == "local"
    assert endpoint.base_url == local.base_url
    assert endpoint.base_url.startswith("http://127.0.0.1:") and endpoint.base_url.endswith("/v1")
    assert endpoint.api_key == local.api_key  # O11YLAB_SERVE_API_KEY goes with it
    assert resolve_endpoint().base_url == endpoint.base_url  # found once, reused


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OPENAI_BASE_URL": "localhost:8000"}, "OPENAI_BASE_URL is not an http(s) URL"),
        (
            {"OPENAI_API_KEY": "k", "O11YLAB_OPENAI_TIMEOUT": "soon"},
            "O11YLAB_OPENAI_TIMEOUT='soon'",
        ),
        ({"OPENAI_API_KEY": "k", "O11YLAB_OPENAI_TIMEOUT": "0"}, "out of range"),
        ({"OPENAI_API_KEY": "k", "O11YLAB_OPENAI_MAX_RETRIES": "-1"}, "O11YLAB_OPENAI_MAX_RETRIES"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_endpoint(env)


def test_the_key_is_not_in_any_repr() -> None:
    endpoint = resolve_endpoint({"OPENAI_API_KEY": SECRET})
    client = get_client(endpoint)
    for text in (repr(endpoint), str(endpoint), repr(client), repr(ai_client._clients)):
        assert SECRET not in text


# --- instrumentation -----------------------------------------------------------------------------


def test_instrument_and_uninstrument_are_idempotent(faulty: FaultyServer) -> None:
    client = get_client(faulty.endpoint("ok"))
    try:
        ai_client.instrument()
        ai_client.instrument()
        with capture_spans() as spans:
            chat("hello", model="m1", max_tokens=4, client=client)
        assert [s.name for s in spans] == ["chat m1"]

        ai_client.uninstrument()
        ai_client.uninstrument()
        assert not ai_client.is_instrumented()
        with capture_spans() as spans:
            chat("hello", model="m1", max_tokens=4, client=client)
        assert spans == []
    finally:
        ai_client.instrument()
    with capture_spans() as spans:
        chat("hello", model="m1", max_tokens=4, client=client)
    assert [s.name for s in spans] == ["chat m1"]


def test_requests_carry_the_chat_span_as_traceparent(faulty: FaultyServer) -> None:
    with capture_spans() as spans:
        chat("hello", model="m1", max_tokens=4, client=get_client(faulty.endpoint("ok")))
    (span,) = spans
    traceparent = faulty.requests[-1]["headers"]["traceparent"]
    _, trace_id, parent_id, _ = traceparent.split("-")
    assert trace_id == format(span.context.trace_id, "032x")
    assert parent_id == format(span.context.span_id, "016x")


def test_sampled_out_calls_record_nothing_but_still_work_and_propagate(
    faulty: FaultyServer,
) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    parent = SpanContext(
        trace_id=0x1234, span_id=0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.DEFAULT)
    )  # not sampled
    with capture_spans() as spans, trace.use_span(NonRecordingSpan(parent)):
        reply = chat("hello", model="m1", max_tokens=4, client=get_client(faulty.endpoint("ok")))
    assert reply.text == "fine" and reply.usage is not None
    assert spans == []
    traceparent = faulty.requests[-1]["headers"]["traceparent"]
    assert traceparent.split("-")[1] == format(0x1234, "032x")
    assert traceparent.endswith("-00")  # the server is told not to sample either


def test_trace_headers_are_what_the_propagator_api_writes_and_follow_a_users_propagator(
    faulty: FaultyServer,
) -> None:
    from opentelemetry import baggage, context, propagate, trace
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.propagators.textmap import DefaultSetter
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    client = get_client(faulty.endpoint("ok"))
    parent = SpanContext(
        trace_id=0xABC,
        span_id=0xDEF,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "v1")]),
    )
    headers = ("traceparent", "tracestate", "baggage", "x-mine")
    # With baggage the propagators write all three; without, o11ylab writes the W3C pair itself
    # (the API's default propagator): the headers must be what inject writes either way.
    for items, written in (({"tenant": "t1"}, {"baggage": "tenant=t1"}), ({}, {})):
        token = context.attach(
            baggage.set_baggage("tenant", items["tenant"]) if items else context.get_current()
        )
        try:
            with trace.use_span(NonRecordingSpan(parent)), capture_spans() as spans:
                chat("hello", model="m1", max_tokens=4, client=client)
                expected: dict[str, str] = {}
                with trace.use_span(NonRecordingSpan(spans[0].context)):  # the chat span's
                    propagate.inject(expected)
        finally:
            context.detach(token)
        sent = {k: v for k, v in faulty.requests[-1]["headers"].items() if k in headers}
        assert sent == expected and sent["tracestate"] == "vendor=v1"
        assert {k: v for k, v in sent.items() if k == "baggage"} == written
        assert sent["traceparent"].endswith("-01")

    class Mine:  # a user's own propagator (B3, a gateway's header): asked, not bypassed
        fields = frozenset({"x-mine"})

        def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
            span_id = trace.get_current_span(context).get_span_context().span_id
            (setter or DefaultSetter()).set(carrier, "x-mine", format(span_id, "x"))

    default = propagate.get_global_textmap()
    propagate.set_global_textmap(CompositePropagator([Mine()]))  # type: ignore[list-item]
    try:
        with capture_spans() as spans:
            chat("hello", model="m1", max_tokens=4, client=client)
    finally:
        propagate.set_global_textmap(default)
    sent = {k: v for k, v in faulty.requests[-1]["headers"].items() if k in headers}
    assert sent == {"x-mine": format(spans[0].context.span_id, "x")}


# --- errors --------------------------------------------------------------------------------------


def test_rejected_key_gives_one_clear_error_and_never_shows_the_key(faulty: FaultyServer) -> None:
    with capture_logs() as logs:
        error, span = _fail(faulty.endpoint("unauthorized"))
    assert isinstance(error, AuthenticationFailed)
    assert "refused the API key (HTTP 401)" in str(error) and "OPENAI_API_KEY" in str(error)
    assert error.__cause__ is None and error.__suppress_context__  # one traceback, not two
    assert error.__context__ is None, "the SDK's error, with the echoed key, is not kept"
    assert span.attributes[semconv.ERROR_TYPE] == "openai.AuthenticationError"
    assert span.attributes[semconv.HTTP_RESPONSE_STATUS_CODE] == 401
    assert span.status.status_code is StatusCode.ERROR
    recorded = _everything_recorded(span, logs)
    assert "Incorrect API key provided: ***" in span.status.description  # masked
    for text in (str(error), repr(error), recorded):
        assert SECRET not in text and SECRET[10:30] not in text


def test_rate_limit_is_retried_then_reported(faulty: FaultyServer) -> None:
    error, span = _fail(faulty.endpoint("ratelimited", max_retries=2))
    assert isinstance(error, RateLimited) and "HTTP 429" in str(error)
    assert len(faulty.requests) == 3
    assert span.attributes[semconv.ERROR_TYPE] == "openai.RateLimitError"
    assert span.attributes[semconv.HTTP_REQUEST_RESEND_COUNT] == 2
    retries = [e for e in span.events if e.name == semconv.RETRY_EVENT]
    assert [e.attributes[semconv.HTTP_REQUEST_RESEND_COUNT] for e in retries] == [1, 2]
    assert all(e.attributes[semconv.HTTP_RESPONSE_STATUS_CODE] == 429 for e in retries)


def test_server_error_is_reported_after_retries(faulty: FaultyServer) -> None:
    error, span = _fail(faulty.endpoint("broken", max_retries=1))
    assert isinstance(error, ServerError) and "HTTP 500" in str(error)
    assert "The server had an error" in str(error)
    assert span.attributes[semconv.ERROR_TYPE] == "openai.InternalServerError"
    assert span.attributes[semconv.HTTP_RESPONSE_STATUS_CODE] == 500


def test_a_retry_that_succeeds_leaves_a_successful_span_that_shows_it(
    faulty: FaultyServer,
) -> None:
    with capture_spans() as spans:
        reply = chat("hello", model="m1", max_tokens=4, client=get_client(faulty.endpoint("flaky")))
    assert reply.text == "fine"
    (span,) = spans
    assert span.status.status_code is not StatusCode.ERROR
    assert span.attributes[semconv.HTTP_REQUEST_RESEND_COUNT] == 1
    assert span.attributes[semconv.HTTP_RESPONSE_STATUS_CODE] == 200
    (event,) = [e for e in span.events if e.name == semconv.RETRY_EVENT]
    assert event.attributes[semconv.HTTP_RESPONSE_STATUS_CODE] == 503


def test_timeout_names_the_setting_to_raise(faulty: FaultyServer) -> None:
    started = time.perf_counter()
    error, span = _fail(faulty.endpoint("slow", timeout_s=0.3, max_retries=0))
    assert time.perf_counter() - started < 1.8  # the 2 s server was not waited for
    assert isinstance(error, EndpointTimeout)
    assert "within 0.3 s" in str(error) and "O11YLAB_OPENAI_TIMEOUT" in str(error)
    assert span.attributes[semconv.ERROR_TYPE] == "openai.APITimeoutError"


def test_connection_refused_says_where_and_what_to_check() -> None:
    port = free_port()
    endpoint = Endpoint("custom", f"http://127.0.0.1:{port}/v1", max_retries=0)
    error, span = _fail(endpoint)
    assert isinstance(error, EndpointUnreachable)
    assert f"127.0.0.1:{port}" in str(error) and "OPENAI_BASE_URL" in str(error)
    assert span.attributes[semconv.ERROR_TYPE] == "openai.APIConnectionError"


def test_a_retry_after_a_refused_connection_is_counted_on_the_span() -> None:
    # No response, so no status: the attempt that raised is what marks the next as a retry.
    endpoint = Endpoint("custom", f"http://127.0.0.1:{free_port()}/v1", max_retries=1)
    error, span = _fail(endpoint)
    assert isinstance(error, EndpointUnreachable)
    assert span.attributes[semconv.HTTP_REQUEST_RESEND_COUNT] == 1
    (event,) = [e for e in span.events if e.name == semconv.RETRY_EVENT]
    assert dict(event.attributes) == {semconv.HTTP_REQUEST_RESEND_COUNT: 1}
    assert semconv.HTTP_RESPONSE_STATUS_CODE not in span.attributes


def test_embeddings_errors_are_translated_too() -> None:
    endpoint = Endpoint("custom", f"http://127.0.0.1:{free_port()}/v1", max_retries=0)
    with capture_spans() as spans, pytest.raises(EndpointUnreachable):
        embed(["text"], model="text-embedding-3-small", client=get_client(endpoint))
    (span,) = spans
    assert span.name == "embeddings text-embedding-3-small"
    assert span.attributes[semconv.ERROR_TYPE] == "openai.APIConnectionError"


def test_openai_settings_come_from_config_and_never_show_the_keys() -> None:
    from o11ylab.config import load_openai

    settings = load_openai(
        {
            "OPENAI_API_KEY": "sk-secret-123",
            "O11YLAB_SERVE_API_KEY": "local-secret",
            "O11YLAB_OPENAI_TIMEOUT": "12.5",
            "O11YLAB_CHAT_MODEL": " m1 ",
        }
    )
    assert (settings.api_key, settings.local_api_key) == ("sk-secret-123", "local-secret")
    assert (settings.timeout_s, settings.max_retries, settings.chat_model) == (12.5, 2, "m1")
    assert settings.embedding_model is None
    assert "secret" not in repr(settings)
