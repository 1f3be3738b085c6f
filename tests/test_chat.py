"""Chat over real HTTP to the local endpoint, with the real SDK and the official instrumentation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from o11ylab import semconv
from o11ylab.ai import (
    AuthenticationFailed,
    ChatStream,
    ContextTooLong,
    InvalidInput,
    ModelNotFound,
    achat,
    chat,
)
from o11ylab.ai.client import reset_clients
from o11ylab.telemetry import get_telemetry
from o11ylab.testing import capture_metrics, capture_spans

from .ai_support import (  # noqa: F401 - fixtures
    LocalServer,
    local_fixture,
    local_server_fixture,
    server_spans,
)

pytestmark = pytest.mark.integration


def test_chat_makes_one_span_with_usage_and_cost(local: LocalServer) -> None:
    with capture_spans() as spans, capture_metrics() as metrics:
        reply = chat("What is a span?", max_tokens=6)
    assert reply.usage is not None and reply.usage.output_tokens == 6
    assert reply.model == local.chat_model and reply.finish_reason == "length"
    assert reply.cost_usd == 0.0  # o11ylab's own endpoint serves local models: free

    (span,) = spans
    assert span.name == f"chat {local.chat_model}"
    assert span.kind is SpanKind.CLIENT
    attributes = span.attributes
    assert attributes[semconv.GEN_AI_OPERATION_NAME] == "chat"
    assert attributes[semconv.GEN_AI_PROVIDER_NAME] == "openai"
    assert attributes[semconv.GEN_AI_REQUEST_MODEL] == local.chat_model
    assert attributes[semconv.GEN_AI_RESPONSE_MODEL] == local.chat_model
    assert attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == reply.usage.input_tokens > 0
    assert attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 6
    assert attributes["gen_ai.request.max_tokens"] == 6
    assert attributes[semconv.SERVER_ADDRESS] == "127.0.0.1"
    assert f":{attributes[semconv.SERVER_PORT]}/" in local.base_url
    assert attributes[semconv.GEN_AI_USAGE_COST] == 0.0
    assert attributes[semconv.COST_PRICED_AS] == "local"
    assert attributes[semconv.GEN_AI_USAGE_COST_CURRENCY] == "USD"
    # No prompt or completion text by default.
    assert not any(key.endswith(("input.messages", "output.messages")) for key in attributes)

    model = {"gen_ai.request.model": local.chat_model}
    assert metrics.count("gen_ai.client.operation.duration", **model) == 1
    assert (
        0
        < metrics.sum("gen_ai.client.operation.duration", **model)
        <= (span.end_time - span.start_time) / 1e9 + 0.01
    )
    assert metrics.sum("gen_ai.client.token.usage", **model, **{"gen_ai.token.type": "output"}) == 6
    assert (
        metrics.sum("gen_ai.client.token.usage", **model, **{"gen_ai.token.type": "input"})
        == reply.usage.input_tokens
    )
    assert semconv.METRIC_GEN_AI_COST in metrics.names()  # recorded, as 0 USD
    assert metrics.sum(semconv.METRIC_GEN_AI_COST, **model) == 0.0


def test_client_and_server_spans_share_one_trace(local: LocalServer) -> None:
    with capture_spans() as spans:
        chat("Where does a trace start?", max_tokens=3)
    (client_span,) = spans
    trace_id = format(client_span.context.trace_id, "032x")
    client_id = format(client_span.context.span_id, "016x")
    run_dir = Path(get_telemetry().run_dir)

    def done(found: list[dict]) -> bool:
        return any(s["trace_id"] == trace_id and s["name"].startswith("chat") for s in found)

    in_trace = [s for s in server_spans(run_dir, local.pid, done) if s["trace_id"] == trace_id]
    (server_span,) = [s for s in in_trace if s["kind"] == SpanKind.SERVER.value + 1]
    assert server_span["name"] == "POST /v1/chat/completions"
    assert server_span["parent_span_id"] == client_id  # continued from our traceparent
    assert server_span["resource"]["service.name"] == "o11ylab-serve"
    generation = [s for s in in_trace if s["parent_span_id"] == server_span["span_id"]]
    assert [s["name"] for s in generation] == [f"chat {local.chat_model}"]
    assert generation[0]["attributes"][semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 3


def test_streaming_yields_pieces_and_records_time_to_first_chunk(local: LocalServer) -> None:
    with capture_spans() as spans, capture_metrics() as metrics:
        stream = chat("Count to three", max_tokens=5, stream=True)
        assert isinstance(stream, ChatStream)
        pieces = list(stream)
    result = stream.result
    assert "".join(pieces) == result.text
    assert result.usage is not None and result.usage.output_tokens == 5  # include_usage honoured
    assert result.cost_usd == 0.0
    (span,) = spans
    assert span.attributes["gen_ai.request.stream"] is True
    assert span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 5
    ttfc = span.attributes[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
    assert 0 < ttfc <= (span.end_time - span.start_time) / 1e9
    assert result.time_to_first_chunk_s is not None and result.time_to_first_chunk_s > 0
    assert metrics.count("gen_ai.client.operation.time_to_first_chunk") == 1
    assert metrics.count("gen_ai.client.operation.time_per_output_chunk") >= 1


def test_a_closed_stream_ends_its_span(local: LocalServer) -> None:
    with capture_spans() as spans, chat("Say something", max_tokens=8, stream=True) as stream:
        next(stream, None)
    assert [s.name for s in spans] == [f"chat {local.chat_model}"]


def test_async_chat_and_async_stream(local: LocalServer) -> None:
    async def both() -> tuple:
        reply = await achat([{"role": "user", "content": "Hi"}], max_tokens=4)
        stream = await achat("Hi again", max_tokens=4, stream=True)
        pieces = [piece async for piece in stream]
        return reply, pieces, await stream.aresult()

    with capture_spans() as spans:
        reply, pieces, streamed = asyncio.run(both())
    assert reply.usage.output_tokens == 4 and streamed.usage.output_tokens == 4
    assert "".join(pieces) == streamed.text
    assert [s.name for s in spans] == [f"chat {local.chat_model}"] * 2
    assert all(s.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 4 for s in spans)
    assert all(s.attributes[semconv.HTTP_RESPONSE_STATUS_CODE] == 200 for s in spans)  # async send
    assert spans[1].attributes["gen_ai.request.stream"] is True


def test_chat_spans_nest_under_the_current_span(local: LocalServer) -> None:
    from o11ylab import span as o11y_span

    with capture_spans() as spans, o11y_span("my step") as parent:
        chat("Nested?", max_tokens=2)
    chat_span = next(s for s in spans if s.name.startswith("chat"))
    assert chat_span.parent.span_id == parent.get_span_context().span_id


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ("", "The prompt is empty"),
        ("   \n", "The prompt is empty"),
        ([], "messages is empty"),
        ([{"role": "user", "content": ""}], "messages[0] (user) has no content"),
        ([{"role": "wizard", "content": "hi"}], "messages[0] has role 'wizard'"),
        (["hi"], "messages[0] is not a dict with 'role' and 'content' (got str)"),
        ({"role": "user", "content": "hi"}, "messages must be a string or a list"),
    ],
)
def test_empty_or_malformed_messages_fail_before_anything_is_sent(
    local: LocalServer, messages: object, message: str
) -> None:
    with capture_spans() as spans, pytest.raises(InvalidInput) as caught:
        chat(messages, max_tokens=2)  # type: ignore[arg-type]
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert spans == []


def test_bad_max_tokens_is_refused(local: LocalServer) -> None:
    with pytest.raises(InvalidInput, match="max_tokens must be a whole number >= 1"):
        chat("hi", max_tokens=0)


def test_unknown_model_says_what_the_endpoint_serves(local: LocalServer) -> None:
    with capture_spans() as spans, pytest.raises(ModelNotFound) as caught:
        chat("hi", model="gpt-7-imaginary", max_tokens=2)
    text = str(caught.value)
    assert "does not serve model 'gpt-7-imaginary' (HTTP 404)" in text
    assert local.chat_model in text  # the server's list of what it does serve
    (span,) = spans
    assert span.name == "chat gpt-7-imaginary"
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[semconv.ERROR_TYPE] == "openai.NotFoundError"
    assert span.attributes[semconv.HTTP_RESPONSE_STATUS_CODE] == 404
    assert semconv.GEN_AI_USAGE_COST not in span.attributes  # nothing used, nothing costed


def test_prompt_longer_than_the_context_window(local: LocalServer) -> None:
    with capture_spans() as spans, pytest.raises(ContextTooLong) as caught:
        chat("observability " * 1500, max_tokens=2)
    assert "longer than the context window" in str(caught.value)
    assert "1024" in str(caught.value)  # the server names the window
    (span,) = spans
    assert span.attributes[semconv.ERROR_TYPE] == "openai.BadRequestError"
    assert span.attributes[semconv.HTTP_RESPONSE_STATUS_CODE] == 400


def test_wrong_key_against_the_real_endpoint(
    local: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "sk-wrong-0000111122223333"
    monkeypatch.setenv("OPENAI_BASE_URL", local.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", wrong)
    reset_clients()
    with capture_spans() as spans, pytest.raises(AuthenticationFailed) as caught:
        chat("hi", model=local.chat_model, max_tokens=2)
    assert "HTTP 401" in str(caught.value)
    (span,) = spans
    assert span.attributes[semconv.ERROR_TYPE] == "openai.AuthenticationError"
    recorded = repr(dict(span.attributes)) + str(span.status.description)
    for text in (str(caught.value), repr(caught.value), recorded):
        assert wrong not in text and local.api_key not in text


def test_endpoint_down_is_one_clear_error(
    local: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from o11ylab.ai import EndpointUnreachable

    from .conftest import free_port

    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")
    monkeypatch.setenv("O11YLAB_OPENAI_MAX_RETRIES", "0")
    reset_clients()
    with pytest.raises(EndpointUnreachable, match="Cannot connect to custom endpoint") as caught:
        chat("hi", model="any", max_tokens=2)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
