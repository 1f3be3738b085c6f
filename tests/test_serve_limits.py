"""``o11ylab serve`` refuses oversized requests up front, each with an OpenAI-style error that
names the limit: stop sequences, embedding inputs and the body size. Real HTTP on loopback, the
real openai SDK, the app ``o11ylab serve`` runs over the tiny test model.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from o11ylab import models, serve

from .ai_support import uvicorn_in_thread

pytestmark = pytest.mark.timeout(300)

BODY_LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tiny = models.build_tiny_model(tmp_path_factory.mktemp("limit-models") / "tiny")
    app = serve.create_app(serve.ServeConfig(model=str(tiny), max_body_bytes=BODY_LIMIT))
    with uvicorn_in_thread(app, "limits-server") as url:
        yield url


@pytest.fixture
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=20)


def chat(client: openai.OpenAI, **extra: Any) -> Any:
    return client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2, **extra
    )


def test_a_few_short_stop_sequences_are_fine(client: openai.OpenAI) -> None:
    assert chat(client, stop=["\n", "END", "x" * serve.MAX_STOP_CHARS]).choices


def test_more_than_four_stop_sequences_are_refused_at_once(client: openai.OpenAI) -> None:
    started = time.perf_counter()
    with pytest.raises(openai.BadRequestError) as refused:
        chat(client, stop=[f"stop-{i}" * 20 for i in range(100)])
    assert time.perf_counter() - started < 5, "refused before the model prepares anything"
    assert refused.value.status_code == 400
    assert "stop has 100 sequences; at most 4" in str(refused.value)


def test_a_long_stop_sequence_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        chat(client, stop="y" * (serve.MAX_STOP_CHARS + 1))
    assert "stop" in str(refused.value) and str(serve.MAX_STOP_CHARS) in str(refused.value)


def test_more_than_2048_embedding_inputs_are_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model=models.DEFAULT_EMBEDDING_MODEL, input=["a"] * 2049)
    assert "input has 2,049 items" in str(refused.value) and "2048" in str(refused.value)


def _raw(base_url: str, request: bytes) -> bytes:
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as connection:
        connection.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            piece = connection.recv(65536)
            if not piece:
                break
            answer += piece
        return answer


def test_a_huge_declared_body_is_refused_without_being_read(base_url: str) -> None:
    # 200 MB announced, not one byte of it sent: the answer comes anyway.
    answer = _raw(
        base_url,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 200000000\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"larger than this server's limit" in answer and b"--max-body-mb" in answer


def test_a_chunked_body_past_the_limit_is_cut_off(base_url: str) -> None:
    chunk = b"x" * 65536
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(8)) + b"0\r\n\r\n"
    answer = _raw(
        base_url,
        b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks,
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"larger than this server's limit" in answer


def test_unknown_models_do_not_grow_the_metrics(client: openai.OpenAI, base_url: str) -> None:
    import urllib.request

    def metrics() -> str:
        """The server's own series (in this process the client's instrumentation, whose
        labels are not the server's to bound, shares the registry)."""
        with urllib.request.urlopen(base_url + "/metrics", timeout=20) as response:
            text = response.read().decode()
        return "\n".join(line for line in text.splitlines() if line.startswith("gen_ai_server"))

    chat(client)  # a served model: its own label
    before = len(metrics())
    for i in range(300):
        name = f"no-such-model-{i}-" + "z" * 10_000
        with pytest.raises(openai.NotFoundError) as refused:
            client.chat.completions.create(
                model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=1
            )
        assert len(str(refused.value)) < 2_000, "the error does not echo 10 kB back"
    after = metrics()
    assert "no-such-model" not in after
    assert 'gen_ai_request_model="_OTHER"' in after and 'gen_ai_request_model="tiny"' in after
    assert len(after) < before + 20_000, f"/metrics grew from {before} to {len(after)} bytes"


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8008", "127.0.0.1.evil.example"])
def test_a_foreign_host_header_is_refused_on_loopback(base_url: str, host: str) -> None:
    # DNS rebinding: a page's script reaching 127.0.0.1 under its own name gets nothing.
    answer = _raw(base_url, f"GET /v1/models HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 403"), answer[:200]
    assert b"tiny" not in answer


@pytest.mark.parametrize("host", ["127.0.0.1:8008", "localhost", "[::1]:8008", "LOCALHOST:1"])
def test_loopback_host_headers_are_answered(base_url: str, host: str) -> None:
    answer = _raw(base_url, f"GET /v1/models HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 200") and b"tiny" in answer
