"""The local OpenAI-compatible endpoint over real HTTP, with the real openai SDK.

One server (a subprocess, as users run it) with the tiny model serves most tests; its spans
are read back from the OTLP-JSON trace file it writes, as a collector would receive them.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from o11ylab import models, serve
from o11ylab.serve import LocalEndpoint

from .conftest import free_port

pytestmark = pytest.mark.timeout(180)
PYTHON = sys.executable


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return models.build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def server_env(run_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(O11YLAB_RUN_DIR=str(run_dir), O11YLAB_PROMETHEUS_PORT="0", HF_HUB_OFFLINE="1")
    for key in ("LOCAL_MODEL_NAME", "EMBEDDING_MODEL", serve.API_KEY_ENV, serve.LOCAL_ENDPOINT_ENV):
        env.pop(key, None)
    return env


@pytest.fixture(scope="module")
def endpoint(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEndpoint]:
    run_dir = tmp_path_factory.mktemp("serve-run")
    with LocalEndpoint(model=str(tiny), env=server_env(run_dir), echo=False) as started:
        started.run_dir = run_dir  # type: ignore[attr-defined]
        yield started


@pytest.fixture(scope="module")
def client(endpoint: LocalEndpoint) -> openai.OpenAI:
    return openai.OpenAI(base_url=endpoint.base_url, api_key="unused", max_retries=0, timeout=60)


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, dict[str, Any] | str]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"content-type": "application/json", **(headers or {})}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def server_spans(
    run_dir: Path, trace_id: str, wanted: int, timeout: float = 15
) -> list[dict[str, Any]]:
    """Spans of one trace from the server's OTLP-JSON file, waiting for its batch export."""
    deadline = time.monotonic() + timeout
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = []
        for path in glob.glob(str(run_dir / "traces.*.jsonl")):
            for line in Path(path).read_text().splitlines():
                for resource_spans in json.loads(line)["resourceSpans"]:
                    resource = {
                        a["key"]: a["value"] for a in resource_spans["resource"]["attributes"]
                    }
                    for scope_spans in resource_spans["scopeSpans"]:
                        for span in scope_spans["spans"]:
                            if span["traceId"] == trace_id:
                                found.append({**span, "resource": resource})
        if len(found) >= wanted:
            return found
        time.sleep(0.3)
    return found


def attribute(span: dict[str, Any], key: str) -> Any:
    for item in span.get("attributes", []):
        if item["key"] == key:
            return next(iter(item["value"].values()))
    return None


# --- the happy paths --------------------------------------------------------------------------


def test_health_and_models(endpoint: LocalEndpoint, client: openai.OpenAI) -> None:
    status, body = http("GET", endpoint.url + "/health")
    assert status == 200 and body["status"] == "ok" and body["model"] == "tiny"
    assert body["device"] == "cpu"
    ids = [m.id for m in client.models.list().data]
    assert ids == ["tiny", "all-MiniLM-L6-v2"]
    assert client.models.retrieve("tiny").id == "tiny"


def test_chat_returns_an_answer_with_usage(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Say something"}], max_tokens=5
    )
    choice = answer.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert answer.usage is not None
    assert answer.usage.prompt_tokens > 0 and 1 <= answer.usage.completion_tokens <= 5
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    assert answer.model == "tiny" and answer.id.startswith("chatcmpl-")


def test_streaming_chat_with_and_without_usage(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Stream it"}]
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=messages,
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes in (["stop"], ["length"])
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert 1 <= usage.completion_tokens <= 6 and usage.prompt_tokens > 0
    whole = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6)
    assert text == whole.choices[0].message.content  # greedy: the same answer either way
    plain = list(
        client.chat.completions.create(model="tiny", messages=messages, max_tokens=3, stream=True)
    )
    assert all(c.usage is None for c in plain)


def test_concurrent_embedding_requests_each_get_their_own_vectors_and_trace(
    endpoint: LocalEndpoint, client: openai.OpenAI
) -> None:
    """Requests that meet at the model are encoded together: each still gets the vectors and
    usage it gets alone, and its spans stay in the trace its traceparent named."""
    asks = [[f"request {i}: " + "spans and traces " * i, "one"][: 1 + i % 2] for i in range(8)]
    alone = [client.embeddings.create(model="all-MiniLM-L6-v2", input=texts) for texts in asks]
    traces = [f"{i + 1:032x}" for i in range(len(asks))]
    answers: list[Any] = [None] * len(asks)

    def one(index: int) -> None:
        answers[index] = http(
            "POST",
            endpoint.base_url + "/embeddings",
            {"model": "all-MiniLM-L6-v2", "input": asks[index]},
            {"traceparent": f"00-{traces[index]}-{index + 1:016x}-01"},
        )

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(asks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for (status, body), expected in zip(answers, alone, strict=True):
        assert status == 200 and isinstance(body, dict)
        vectors = [item["embedding"] for item in body["data"]]
        assert np.allclose(vectors, [d.embedding for d in expected.data], rtol=0, atol=1e-5)
        assert body["usage"]["prompt_tokens"] == expected.usage.prompt_tokens
    for index, trace_id in enumerate(traces):
        spans = server_spans(endpoint.run_dir, trace_id, wanted=2)  # type: ignore[attr-defined]
        by_name = {s["name"]: s for s in spans}
        server = by_name["POST /v1/embeddings"]
        assert server["parentSpanId"] == f"{index + 1:016x}"
        encode = by_name["embeddings all-MiniLM-L6-v2"]
        assert encode["parentSpanId"] == server["spanId"]
        assert int(attribute(encode, "gen_ai.usage.input_tokens")) == (
            alone[index].usage.prompt_tokens
        )
        # Absent when it ran the unbatched path; 1 when it waited for company that came too
        # late (a busy machine) and ran as a batch of one. test_local_batching holds the model
        # to see requests batched for certain.
        batch = attribute(encode, "o11ylab.gen_ai.batch_size")
        assert batch is None or 1 <= int(batch) <= len(asks)


def test_embeddings_are_384_normalized_dimensions(client: openai.OpenAI) -> None:
    texts = ["spans and traces", "a cell"]
    # The SDK asks for base64 by itself and decodes it; floats are the other encoding.
    by_default = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)
    as_floats = client.embeddings.create(
        model="all-MiniLM-L6-v2", input=texts, encoding_format="float"
    )
    for result in (by_default, as_floats):
        assert [d.index for d in result.data] == [0, 1]
        vector = result.data[0].embedding
        assert len(vector) == 384
        assert abs(sum(x * x for x in vector) ** 0.5 - 1) < 1e-3
        assert result.usage.prompt_tokens > 4 and result.model == "all-MiniLM-L6-v2"
    assert by_default.data[1].embedding == pytest.approx(as_floats.data[1].embedding, abs=1e-6)
    raw = client.embeddings.create(model="all-MiniLM-L6-v2", input="one", encoding_format="base64")
    packed = base64.b64decode(raw.data[0].embedding)  # type: ignore[arg-type]
    assert len(struct.unpack("<384f", packed)) == 384


def test_metrics_serve_the_genai_server_metrics(
    endpoint: LocalEndpoint, client: openai.OpenAI
) -> None:
    client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "m"}], max_tokens=4
    )
    status, text = http("GET", endpoint.url + "/metrics")
    assert status == 200 and isinstance(text, str)
    for name in (
        "gen_ai_server_request_duration_seconds_count",
        "gen_ai_server_time_to_first_token_seconds_count",
        "gen_ai_server_time_per_output_token_seconds_count",
        "gen_ai_client_token_usage_count",
    ):
        assert name in text, name
    assert 'gen_ai_operation_name="chat"' in text and 'gen_ai_request_model="tiny"' in text


def test_the_server_continues_the_callers_trace(
    endpoint: LocalEndpoint, client: openai.OpenAI
) -> None:
    from opentelemetry.propagate import inject

    from o11ylab.telemetry import get_telemetry
    from o11ylab.testing import capture_spans

    headers: dict[str, str] = {}
    with capture_spans() as made, get_telemetry().tracer.start_as_current_span("caller") as caller:
        inject(headers)
        client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "t"}],
            max_tokens=3,
            extra_headers=headers,
        )
    trace_id = format(caller.get_span_context().trace_id, "032x")
    # The parent is the caller's span, or the SDK's chat span under it when the openai SDK is
    # instrumented in this process (o11ylab's openai_http sends that span's traceparent).
    chat_spans = [
        s
        for s in made
        if s.name == "chat tiny"
        and s.parent is not None
        and s.parent.span_id == caller.get_span_context().span_id
    ]
    caller_id = format(
        (chat_spans[0].context if chat_spans else caller.get_span_context()).span_id, "016x"
    )
    spans = server_spans(endpoint.run_dir, trace_id, wanted=2)  # type: ignore[attr-defined]
    by_name = {s["name"]: s for s in spans}
    server = by_name["POST /v1/chat/completions"]
    assert server["kind"] == 2 and server["parentSpanId"] == caller_id  # SPAN_KIND_SERVER
    assert int(attribute(server, "http.response.status_code")) == 200
    generation = by_name["chat tiny"]
    assert generation["parentSpanId"] == server["spanId"]
    assert 1 <= int(attribute(generation, "gen_ai.usage.output_tokens")) <= 3
    assert server["resource"]["service.name"] == {"stringValue": "o11ylab-serve"}
    assert len([s for s in spans if s["kind"] == 2]) == 1  # one server span, not two


# --- errors a user can cause --------------------------------------------------------------------


def test_unknown_model_is_a_404_model_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == "model_not_found"
    assert "tiny" in caught.value.message  # says what is served instead
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="tiny-embedder", input="x")


def test_bad_bodies_are_400s_in_the_openai_shape(endpoint: LocalEndpoint) -> None:
    url = endpoint.base_url + "/chat/completions"
    cases = [
        http("POST", url, raw=b'{"model": "tiny", "messages": ['),
        http("POST", url, body=[1, 2]),
        http("POST", url, body={"messages": [{"role": "user", "content": "no model"}]}),
        http(
            "POST",
            url,
            body={"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
        ),
        http("POST", url, body={"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}),
        http(
            "POST",
            endpoint.base_url + "/embeddings",
            body={"model": "all-MiniLM-L6-v2", "input": []},
        ),
        http(
            "POST",
            endpoint.base_url + "/embeddings",
            body={"model": "all-MiniLM-L6-v2", "input": "x", "dimensions": 1536},
        ),
    ]
    for status, body in cases:
        assert status == 400, body
        assert isinstance(body, dict) and body["error"]["type"] == "invalid_request_error"
        assert "Traceback" not in json.dumps(body)


def test_empty_messages_and_too_long_prompts_are_400s(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="messages is empty"):
        client.chat.completions.create(model="tiny", messages=[])
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "word " * 400}]
        )
    assert caught.value.code == "context_length_exceeded"
    assert "context window of 256 tokens" in caught.value.message
    with pytest.raises(openai.BadRequestError, match="context window"):
        client.chat.completions.create(
            model="tiny", stream=True, max_tokens=5000, messages=[{"role": "user", "content": "hi"}]
        )


def test_unknown_routes_answer_json(endpoint: LocalEndpoint) -> None:
    status, body = http("GET", endpoint.url + "/v1/nothing-here")
    assert status == 404 and isinstance(body, dict) and "error" in body


# --- concurrency ----------------------------------------------------------------------------------


def test_concurrent_clients_are_all_served(client: openai.OpenAI) -> None:
    answers: list[Any] = []
    errors: list[BaseException] = []

    def one(index: int) -> None:
        try:
            messages = [{"role": "user", "content": f"client {index}"}]
            if index % 2:
                chunks = list(
                    client.chat.completions.create(
                        model="tiny",
                        messages=messages,
                        max_tokens=5,
                        stream=True,
                        stream_options={"include_usage": True},
                    )
                )
                answers.append(chunks[-1].usage)
            else:
                answers.append(
                    client.chat.completions.create(
                        model="tiny", messages=messages, max_tokens=5
                    ).usage
                )
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    assert len(answers) == 8 and all(1 <= u.completion_tokens <= 5 for u in answers)


def test_a_client_that_leaves_mid_stream_stops_the_model(
    endpoint: LocalEndpoint, client: openai.OpenAI
) -> None:
    from opentelemetry.propagate import inject

    from o11ylab.telemetry import get_telemetry

    headers: dict[str, str] = {}
    with get_telemetry().tracer.start_as_current_span("leaving caller") as caller:
        inject(headers)
        stream = client.chat.completions.create(
            model="tiny",
            max_tokens=230,
            stream=True,
            extra_headers=headers,
            messages=[{"role": "user", "content": "long"}],
        )
        next(iter(stream))
        stream.close()
    answer = client.chat.completions.create(
        model="tiny", max_tokens=2, messages=[{"role": "user", "content": "next"}]
    )
    assert answer.usage is not None
    trace_id = format(caller.get_span_context().trace_id, "032x")
    spans = server_spans(endpoint.run_dir, trace_id, wanted=2)  # type: ignore[attr-defined]
    generation = next(s for s in spans if s["name"] == "chat tiny")
    finish = next(
        item["value"]
        for item in generation["attributes"]
        if item["key"] == "gen_ai.response.finish_reasons"
    )
    assert finish == {"arrayValue": {"values": [{"stringValue": "cancelled"}]}}
    assert int(attribute(generation, "gen_ai.usage.output_tokens")) < 230


# --- who may call ---------------------------------------------------------------------------------


def test_binding_off_loopback_needs_a_key(tiny: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            PYTHON,
            "-m",
            "o11ylab",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
            "--model",
            str(tiny),
        ],
        env=server_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "without an API key" in done.stderr and serve.API_KEY_ENV in done.stderr


def test_a_key_is_checked_on_every_v1_request(tiny: Path, tmp_path: Path) -> None:
    key = "s3cret-test-key"
    with LocalEndpoint(model=str(tiny), api_key=key, env=server_env(tmp_path), echo=False) as keyed:
        for given in (None, "wrong"):
            headers = {"authorization": f"Bearer {given}"} if given else {}
            status, body = http("GET", keyed.base_url + "/models", headers=headers)
            assert status == 401 and isinstance(body, dict)
            assert body["error"]["code"] == "invalid_api_key" and key not in json.dumps(body)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=keyed.base_url, api_key="wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=keyed.base_url, api_key=key, max_retries=0)
        assert good.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "k"}], max_tokens=2
        ).usage
        assert http("GET", keyed.url + "/health")[0] == 200  # health stays open for probes
        assert http("GET", keyed.url + "/metrics")[0] == 401, "/metrics needs the key too"
        metrics = http("GET", keyed.url + "/metrics", headers={"authorization": f"Bearer {key}"})
        assert metrics[0] == 200 and "gen_ai_server_request_duration" in str(metrics[1])
    assert not keyed.running()


def test_the_default_host_is_loopback() -> None:
    parser = __import__("argparse").ArgumentParser()
    serve.add_arguments(parser)
    assert parser.parse_args([]).host == "127.0.0.1"
    assert serve.is_loopback("127.0.0.1") and serve.is_loopback("::1")
    assert serve.is_loopback("localhost") and not serve.is_loopback("0.0.0.0")


# --- ensure_local_endpoint ------------------------------------------------------------------------


def test_ensure_reuses_a_healthy_configured_endpoint(
    endpoint: LocalEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(serve.LOCAL_ENDPOINT_ENV, endpoint.url)  # /v1 is added
    started = time.perf_counter()
    assert serve.ensure_local_endpoint() == endpoint.base_url
    assert time.perf_counter() - started < 5


def test_ensure_starts_one_when_none_answers_and_reuses_it(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(serve.LOCAL_ENDPOINT_ENV, f"http://127.0.0.1:{free_port()}/v1")
    monkeypatch.setenv("LOCAL_MODEL_NAME", str(tiny))
    monkeypatch.setenv("O11YLAB_RUN_DIR", str(tmp_path))
    monkeypatch.setattr(serve, "_SHARED", None)
    try:
        base_url = serve.ensure_local_endpoint()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        assert "does not answer /health" in capsys.readouterr().err
        assert serve.ensure_local_endpoint() == base_url  # reused, not a second server
        listed = openai.OpenAI(base_url=base_url, api_key="unused").models.list()
        assert listed.data[0].id == "tiny"
    finally:
        shared = serve._SHARED
        if shared is not None:
            shared.stop()


def test_a_server_that_cannot_start_is_reported_with_its_log(tmp_path: Path) -> None:
    endpoint = LocalEndpoint(
        model=str(tmp_path / "no-such-model"),
        env=server_env(tmp_path),
        echo=False,
        start_timeout_s=60,
    )
    with pytest.raises(serve.EndpointError) as caught:
        endpoint.start()
    assert "exited with status 1" in str(caught.value)
    assert "No model folder" in str(caught.value)
