"""The real local endpoint for the chat, embeddings, cost and pipeline tests.

One ``o11ylab serve`` per test session, over a tiny chat model built in seconds and the real
all-MiniLM-L6-v2 embedder, protected by an API key so the wrong-key path is real too. Tests
reach it exactly as users do, through ``ensure_local_endpoint()``: the ``local`` fixture sets
``O11YLAB_LOCAL_ENDPOINT`` (and the endpoint's key) for one test and resets the clients.

Import the fixtures into a test module (they register as ``local`` and ``local_server``)::

    from .ai_support import LocalServer, local_fixture, local_server_fixture  # noqa: F401
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from o11ylab.otlpjson import read_spans

SERVER_KEY = "o11ylab-test-server-key-6f1d9a"


@dataclass
class LocalServer:
    base_url: str
    pid: int
    api_key: str
    chat_model: str = "tiny-chat"
    embedding_model: str = "all-MiniLM-L6-v2"


@pytest.fixture(scope="session", name="local_server")
def local_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    from o11ylab.models import build_tiny_model
    from o11ylab.serve import LocalEndpoint

    # A context window of 1024 leaves room for a RAG prompt; the tests that overflow it say so.
    folder = build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-chat", context_window=1024)
    endpoint = LocalEndpoint(model=str(folder), api_key=SERVER_KEY, echo=False, start_timeout_s=180)
    with endpoint:
        assert endpoint.process is not None
        yield LocalServer(
            endpoint.base_url, endpoint.process.pid, SERVER_KEY, chat_model=folder.name
        )


@pytest.fixture(name="local")
def local_fixture(
    local_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalServer]:
    """No OPENAI_* variables: the client picks o11ylab's local endpoint (this session's)."""
    from o11ylab.ai.client import reset_clients
    from o11ylab.serve import API_KEY_ENV, LOCAL_ENDPOINT_ENV

    for name in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "O11YLAB_CHAT_MODEL",
        "O11YLAB_EMBEDDING_MODEL",
        "O11YLAB_PRICING_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(LOCAL_ENDPOINT_ENV, local_server.base_url)
    monkeypatch.setenv(API_KEY_ENV, local_server.api_key)
    reset_clients()
    yield local_server
    reset_clients()


def server_spans(
    run_dir: Path, pid: int, until: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 15
) -> list[dict[str, Any]]:
    """The endpoint's spans from its OTLP-JSON file, waiting for its batch export."""
    deadline = time.monotonic() + timeout_s
    while True:
        spans = [s for s in read_spans(run_dir) if s["resource"].get("process.pid") == pid]
        if until(spans) or time.monotonic() > deadline:
            return spans
        time.sleep(0.25)


@contextlib.contextmanager
def uvicorn_in_thread(app: Any, name: str) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    from .conftest import free_port

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off"
        )
    )
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
