"""The chat path against a third-party OpenAI-compatible server: ``transformers serve``.

Same code, no changes: only ``OPENAI_BASE_URL`` points elsewhere. The server serves a tiny
model folder built locally in seconds (``o11ylab.models.build_tiny_model``), offline.
Needs ``transformers[serving]`` (fastapi, uvicorn, starlette, rich, openai, pydantic).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from o11ylab import semconv
from o11ylab.ai import chat
from o11ylab.ai.client import reset_clients
from o11ylab.testing import capture_metrics, capture_spans

from .conftest import free_port

pytestmark = pytest.mark.integration

CLI = shutil.which("transformers", path=str(Path(sys.executable).parent)) or shutil.which(
    "transformers"
)


@pytest.fixture(scope="module")
def served_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    if CLI is None:
        pytest.skip("the transformers CLI is not installed (pip install 'transformers[serving]')")
    for module in ("fastapi", "uvicorn", "rich"):
        pytest.importorskip(module, reason="transformers serve needs transformers[serving]")
    from o11ylab.models import build_tiny_model

    folder = build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-gpt2")
    port = free_port()
    log = (tmp_path_factory.getbasetemp() / "transformers-serve.log").open("w")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    server = subprocess.Popen(
        [CLI, "serve", str(folder), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                pytest.fail(f"transformers serve exited with {server.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve did not answer /health in 120 s; see {log.name}")
            time.sleep(0.5)
        yield f"{base}/v1", str(folder)
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=5)
        log.close()


@pytest.fixture
def pointed_at(served_model: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    base_url, model = served_model
    monkeypatch.setenv("OPENAI_BASE_URL", base_url)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    reset_clients()
    yield model
    reset_clients()


def test_chat_against_transformers_serve(pointed_at: str) -> None:
    with capture_spans() as spans, capture_metrics() as metrics:
        reply = chat("Say hello", max_tokens=5)  # the default model comes from /v1/models
    assert reply.model == pointed_at
    assert reply.usage is not None and reply.usage.output_tokens == 5
    (span,) = spans
    assert span.name == f"chat {pointed_at}"
    attributes = span.attributes
    assert attributes[semconv.GEN_AI_OPERATION_NAME] == "chat"
    assert attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == reply.usage.input_tokens
    assert attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 5
    assert attributes[semconv.SERVER_ADDRESS] == "127.0.0.1"
    # A third-party server's model has no price: cost unknown, never 0.
    assert semconv.GEN_AI_USAGE_COST not in attributes and attributes[semconv.COST_UNKNOWN]
    assert reply.cost_usd is None
    assert (
        metrics.count("gen_ai.client.operation.duration", **{"gen_ai.request.model": pointed_at})
        == 1
    )
    assert metrics.sum("gen_ai.client.token.usage", **{"gen_ai.token.type": "output"}) == 5


def test_streaming_against_transformers_serve(pointed_at: str) -> None:
    with capture_spans() as spans:
        stream = chat("Say hello", model=pointed_at, max_tokens=4, stream=True)
        pieces = list(stream)
    result = stream.result
    assert "".join(pieces) == result.text
    assert result.usage is not None and result.usage.output_tokens == 4
    (span,) = spans
    assert span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 4
    assert span.attributes["gen_ai.request.stream"] is True
    assert 0 < span.attributes[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] < 30
