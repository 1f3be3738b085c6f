"""``o11ylab serve`` under load and abandonment: a bounded queue answered with 503 and
Retry-After, a non-streamed generation stopped when its client goes, a prompt too long for the
context refused before it is tokenized, and probes that make no traces. The app ``o11ylab
serve`` runs, over a real tiny model in this process (so the test can hold the model's lock,
as a long generation would), served by uvicorn on loopback.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from o11ylab import models, serve

from .ai_support import uvicorn_in_thread

pytestmark = pytest.mark.timeout(300)

MAX_QUEUE = 2


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from o11ylab.ai.local_model import get_local_model

    folder = models.build_tiny_model(tmp_path_factory.mktemp("bp") / "tiny", context_window=2048)
    return get_local_model(str(folder))


@pytest.fixture(scope="module")
def spans() -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture(scope="module")
def base_url(engine: Any, spans: Any) -> Iterator[str]:
    config = serve.ServeConfig(model=str(engine.path), max_queue=MAX_QUEUE)
    app = serve.create_app(config, engine=engine, tracer_provider=spans[0])
    with uvicorn_in_thread(app, "backpressure-server") as url:
        yield url


def chat_body(engine: Any, max_tokens: int, content: str = "hi") -> dict[str, Any]:
    return {
        "model": engine.name,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
    }


def post(base_url: str, body: dict[str, Any], timeout: float = 120) -> httpx.Response:
    return httpx.post(base_url + "/v1/chat/completions", json=body, timeout=timeout)


def in_thread(target: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(target())
        except Exception as exc:  # noqa: BLE001 - handed to the test, which asserts on it
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_past_the_queue_limit_a_request_gets_503_with_retry_after(
    base_url: str, engine: Any
) -> None:
    # The model is busy (its lock held, as a long generation holds it): requests queue.
    with engine.lock:
        calls = [in_thread(lambda: post(base_url, chat_body(engine, 1))) for _ in range(6)]
        refused: list[httpx.Response] = []
        deadline = time.monotonic() + 60
        while len(refused) < 6 - MAX_QUEUE and time.monotonic() < deadline:
            refused = [out[0] for thread, out in calls if out and not thread.is_alive()]
            time.sleep(0.05)
        # Everything past the limit was answered at once, while the model was still busy.
        assert len(refused) == 6 - MAX_QUEUE, [r for _, r in calls]
    for thread, _ in calls:
        thread.join(60)
    answers = [out[0] for _, out in calls]
    assert sorted(a.status_code for a in answers) == [200] * MAX_QUEUE + [503] * (6 - MAX_QUEUE)
    for answer in refused:
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        error = answer.json()["error"]
        assert (
            error["code"] == "server_overloaded" and "O11YLAB_SERVE_MAX_QUEUE" in error["message"]
        )
    assert post(base_url, chat_body(engine, 1)).status_code == 200  # the queue emptied


def test_an_abandoned_generation_does_not_hold_up_the_next_request(
    base_url: str, engine: Any
) -> None:
    # Long enough that a third of it is well above the server's disconnect poll (0.25 s): the
    # abandoned request is first in line and runs until the server sees its client gone.
    long = chat_body(engine, 1500, "tell me a long story")
    started = time.monotonic()
    assert post(base_url, long).json()["usage"]["completion_tokens"] == 1500
    full = time.monotonic() - started  # what the abandoned request would have cost
    with engine.lock:  # the abandoned request waits for the model, as behind other work
        with pytest.raises(httpx.ReadTimeout):
            post(base_url, long, timeout=1.0)  # the client gives up after 1 s
        # The next request is sent at once, while the model is still busy.
        nxt = in_thread(lambda: post(base_url, chat_body(engine, 1)))
    started = time.monotonic()
    nxt[0].join(120)
    waited = time.monotonic() - started
    assert nxt[1] and nxt[1][0].status_code == 200
    assert waited < full / 3, (
        f"the next request waited {waited:.1f} s; a full one takes {full:.1f} s"
    )


def test_a_prompt_too_long_for_the_context_is_refused_before_tokenizing(
    base_url: str, engine: Any
) -> None:
    started = time.monotonic()
    answer = post(base_url, chat_body(engine, 1, "word " * 800_000))  # 4 MB
    elapsed = time.monotonic() - started
    assert answer.status_code == 400, answer.text[:300]
    error = answer.json()["error"]
    assert error["code"] == "context_length_exceeded" and "4,000,000 characters" in error["message"]
    assert elapsed < 3, f"refused after {elapsed:.1f} s"
    assert post(base_url, chat_body(engine, 1)).status_code == 200


def test_probes_and_untraced_model_lookups_make_no_spans(base_url: str, spans: Any) -> None:
    exporter = spans[1]
    exporter.clear()
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    for path in ("/health", "/metrics"):
        assert httpx.get(base_url + path, headers={"traceparent": traceparent}).status_code == 200
    assert httpx.get(base_url + "/v1/models").status_code == 200
    unknown = httpx.get(base_url + "/v1/models/no-such-model")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert not exporter.get_finished_spans()
    # A lookup inside a caller's trace stays in it.
    assert httpx.get(base_url + "/v1/models", headers={"traceparent": traceparent}).is_success
    (span,) = exporter.get_finished_spans()
    assert span.name == "GET /v1/models"
    assert format(span.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
