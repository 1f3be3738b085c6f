"""The endpoint launcher against a local impostor: the child binds its port before it loads
its models and reports it back, an auto-started endpoint has a key of its own, and its /health
proves it holds that key. So nothing the launcher or its clients send reaches another process,
even one that holds the port asked for or answers /health with 200. Real subprocesses of
``o11ylab serve`` over the tiny model, on loopback.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from o11ylab import models, serve
from o11ylab.local_openai import LocalRelay
from o11ylab.serve._launcher import _healthy

pytestmark = pytest.mark.timeout(300)

SECRET = "PRIVATE-PROMPT-123"


class Impostor:
    """Another local process's listener: it records every byte and answers every request 200."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.received = bytearray()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection:
                connection.settimeout(2)
                try:
                    self.received += connection.recv(65536)
                    body = b'{"status": "ok"}'
                    connection.sendall(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
                    )
                except OSError:
                    pass

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def impostor() -> Iterator[Impostor]:
    started = Impostor()
    yield started
    started.close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return models.build_tiny_model(tmp_path_factory.mktemp("launcher") / "tiny")


def child_env(run_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(O11YLAB_RUN_DIR=str(run_dir), O11YLAB_PROMETHEUS_PORT="0", HF_HUB_OFFLINE="1")
    for key in ("LOCAL_MODEL_NAME", "EMBEDDING_MODEL", serve.API_KEY_ENV, serve.LOCAL_ENDPOINT_ENV):
        env.pop(key, None)
    return env


def ask(base_url: str, key: str, model: str) -> str:
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=60)
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": SECRET}], max_tokens=2
    )
    return str(reply.choices[0].message.content)


def test_a_taken_port_fails_the_start_and_the_impostor_gets_nothing(
    tiny: Path, tmp_path: Path, impostor: Impostor
) -> None:
    endpoint = launcher(tiny, tmp_path, port=impostor.port)
    with pytest.raises(serve.EndpointError) as caught:
        endpoint.start()
    assert "cannot listen" in str(caught.value)  # it failed at once, before loading
    assert impostor.received == b"", "the launcher sent the impostor something"


def test_an_auto_port_endpoint_and_its_key_reach_that_server_only(
    tiny: Path, tmp_path: Path, impostor: Impostor
) -> None:
    key = serve.new_launch_key()
    with launcher(tiny, tmp_path, api_key=key) as endpoint:
        assert endpoint.port != impostor.port
        assert ask(endpoint.base_url, key, "tiny") is not None
        with pytest.raises(openai.AuthenticationError):  # no other local user can use it
            ask(endpoint.base_url, "guessed", "tiny")
        assert _healthy(endpoint.base_url, api_key=key)
    # The impostor answers /health with 200, but cannot prove it holds the key.
    impostor_url = f"http://127.0.0.1:{impostor.port}/v1"
    assert _healthy(impostor_url) and not _healthy(impostor_url, api_key=key)
    assert key.encode() not in impostor.received  # the probe sends a challenge, not the key
    assert SECRET.encode() not in impostor.received


def test_the_kernels_relay_starts_a_keyed_endpoint_and_reaches_it(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", serve.LOCAL_ENDPOINT_ENV, serve.API_KEY_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOCAL_MODEL_NAME", str(tiny))
    monkeypatch.setenv("O11YLAB_RUN_DIR", str(tmp_path))
    monkeypatch.setattr(serve, "_SHARED", None)
    key = serve.new_launch_key()
    relay = LocalRelay(api_key=key)
    try:
        assert ask(relay.base_url, key, "tiny") is not None
        shared = serve._SHARED
        assert shared is not None and shared.api_key == key
        with pytest.raises(openai.AuthenticationError):  # the server itself requires the key
            ask(shared.base_url, "guessed", "tiny")
    finally:
        relay.close()
        if serve._SHARED is not None:
            serve._SHARED.stop()


def launcher(tiny: Path, run_dir: Path, **options: object) -> serve.LocalEndpoint:
    return serve.LocalEndpoint(
        model=str(tiny), env=child_env(run_dir), echo=False, start_timeout_s=120, **options
    )  # type: ignore[arg-type]


def test_stopping_the_endpoint_keeps_the_spans_of_its_last_requests(
    tiny: Path, tmp_path: Path
) -> None:
    """SIGTERM stops the server and then its telemetry is flushed: uvicorn re-raises the signal
    once it has stopped, which had ended the process first and lost the last second's spans."""
    from o11ylab.otlpjson import read_spans

    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    key = serve.new_launch_key()
    with launcher(tiny, tmp_path, api_key=key) as endpoint:
        client = openai.OpenAI(base_url=endpoint.base_url, api_key=key, max_retries=0)
        client.models.list(extra_headers={"traceparent": traceparent})
    assert endpoint.process is not None and endpoint.process.returncode == 0
    served = [s for s in read_spans(tmp_path) if s["name"] == "GET /v1/models"]
    assert [s["trace_id"] for s in served] == ["0af7651916cd43dd8448eb211c80319c"]
