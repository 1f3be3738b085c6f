"""Faults in the AI services, injected for real and survived: each test bounds its time.

* The local endpoint SIGKILLed in the middle of a streaming answer and of a plain one: the
  user gets one clear line, the ``chat`` span ends with ``error.type``, and the next call
  works (``ensure_local_endpoint()`` starts a new server; the message says so).
* Ctrl-C (KeyboardInterrupt, delivered to the main thread) during a long local generation and
  during a large Chroma add: the spans end with ``error.type=KeyboardInterrupt``, the model's
  lock is free, the hardware sampler and a live monitor keep going, and the collection,
  reopened by a new process, holds every document whose add returned (and whole batches only).
* The process SIGKILLed while it adds batches to a Chroma store: a new process opens the store
  and finds every acknowledged document, and can write to it.
* A GPU query failing in the middle of a traced cell (fake NVML): no exception reaches the
  cell. The sampler's own handling of failing, unsupported and lost GPUs is tested in
  ``test_hardware.py`` (``test_a_driver_error_mid_run_is_said_once_and_recovers``,
  ``test_a_lost_gpu_is_dropped_and_the_others_go_on``); this file adds the cell's view.

Everything runs on loopback with the tiny test model; nothing is downloaded.
"""

from __future__ import annotations

import _thread
import hashlib
import inspect
import json
import os
import random
import signal
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pynvml
import pytest
from opentelemetry.trace import StatusCode

from o11ylab import hardware, semconv, serve
from o11ylab.ai import AIError, EndpointUnreachable, chat
from o11ylab.ai.client import reset_clients
from o11ylab.testing import capture_spans

from .conftest import PYTHON, ROOT
from .fake_nvml import FakeNvml
from .test_hardware import fake_gpu  # noqa: F401 - the fixture: a sampler over a fake GPU

LONG_PROMPT = "hello"  # the tiny model answers it with whitespace until max_tokens, never EOS


# --- the local endpoint, killed -------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with room for long answers (a few thousand tokens take seconds)."""
    from o11ylab.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-long", context_window=4096)


@pytest.fixture
def own_endpoint(long_model: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No endpoint configured: the first call starts this process's own, as in a notebook."""
    for name in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        serve.LOCAL_ENDPOINT_ENV,
        serve.API_KEY_ENV,
        "O11YLAB_CHAT_MODEL",
        "EMBEDDING_MODEL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOCAL_MODEL_NAME", str(long_model))
    monkeypatch.setattr(serve, "_SHARED", None)
    started: list[serve.LocalEndpoint] = []
    real_start = serve.LocalEndpoint.start

    def start(self: serve.LocalEndpoint) -> serve.LocalEndpoint:
        started.append(self)
        return real_start(self)

    monkeypatch.setattr(serve.LocalEndpoint, "start", start)
    reset_clients()
    try:
        yield long_model
    finally:
        reset_clients()
        for endpoint in started:
            endpoint.stop()


def kill_shared_endpoint() -> int:
    endpoint = serve._SHARED  # the server ensure_local_endpoint() started
    assert endpoint is not None and endpoint.process is not None and endpoint.running()
    pid = endpoint.process.pid
    os.kill(pid, signal.SIGKILL)
    return pid


def assert_one_clear_line(error: BaseException) -> None:
    message = str(error)
    assert isinstance(error, EndpointUnreachable), repr(error)
    assert "\n" not in message and len(message) < 400, message
    assert "local endpoint" in message and "run the call again" in message, message
    assert "OPENAI_BASE_URL" not in message  # the user set no such thing
    assert error.__cause__ is None and error.__suppress_context__  # no SDK traceback chained


def assert_failed_chat_span(spans: list[Any], model: str) -> None:
    (span,) = [s for s in spans if s.name == f"chat {model}"]
    assert span.end_time is not None
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[semconv.ERROR_TYPE] == "openai.APIConnectionError"


def assert_next_call_works(killed_pid: int) -> None:
    started = time.monotonic()
    reply = chat("Are you back?", max_tokens=3)
    assert reply.usage is not None and reply.usage.output_tokens >= 1
    endpoint = serve._SHARED
    assert endpoint is not None and endpoint.process is not None
    assert endpoint.running() and endpoint.process.pid != killed_pid  # a new server
    assert time.monotonic() - started < 90


@pytest.mark.timeout(240)
def test_endpoint_killed_mid_stream_fails_the_span_and_the_next_call_starts_a_new_one(
    own_endpoint: Path,
) -> None:
    chat("warm up", max_tokens=2)  # starts the endpoint the way a notebook's first call does
    with capture_spans() as spans:
        stream = chat(LONG_PROMPT, max_tokens=3000, stream=True)
        pieces = [next(stream)]  # the answer has begun
        killed = kill_shared_endpoint()
        started = time.monotonic()
        with pytest.raises(AIError) as failure:
            pieces.extend(stream)
    assert time.monotonic() - started < 10  # the broken stream fails at once, no hang
    assert 1 <= len(pieces) < 3000
    assert_one_clear_line(failure.value)
    assert_failed_chat_span(spans, own_endpoint.name)
    assert_next_call_works(killed)


@pytest.mark.timeout(240)
def test_endpoint_killed_mid_request_fails_the_span_and_the_next_call_starts_a_new_one(
    own_endpoint: Path,
) -> None:
    chat("warm up", max_tokens=2)
    endpoint = serve._SHARED
    assert endpoint is not None
    killer = threading.Timer(1.0, kill_shared_endpoint)  # mid-generation: 4,000 tokens take >5 s
    started = time.monotonic()
    with capture_spans() as spans:
        killer.start()
        try:
            with pytest.raises(AIError) as failure:
                chat(LONG_PROMPT, max_tokens=4000)
        finally:
            killer.join()
    assert time.monotonic() - started < 30  # the SDK's retries are short, then one error
    assert_one_clear_line(failure.value)
    assert_failed_chat_span(spans, own_endpoint.name)
    assert endpoint.process is not None
    assert_next_call_works(endpoint.process.pid)


# --- Ctrl-C ---------------------------------------------------------------------------------------


@contextmanager
def ctrl_c_when(
    ready: Callable[[], bool], *, after_s: float = 0.3, within_s: float = 60
) -> Iterator[None]:
    """Deliver KeyboardInterrupt to the main thread once ``ready()`` (and ``after_s`` more).

    Use it inside ``pytest.raises(KeyboardInterrupt)``: the interrupt is always delivered
    before the block is left, so it can never escape into pytest itself. Python's own SIGINT
    handler is put in place for the block, as a kernel has one: a test run started in the
    background of a shell inherits SIGINT ignored, and ``interrupt_main`` then does nothing.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    def watch() -> None:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline and not ready():
            time.sleep(0.01)
        time.sleep(after_s)
        _thread.interrupt_main()

    watcher = threading.Thread(target=watch, name="ctrl-c", daemon=True)
    watcher.start()
    delivered = False
    try:
        yield
    except KeyboardInterrupt:
        delivered = True
        raise
    finally:
        try:
            if not delivered:  # the block ended first: let the interrupt land here, not in pytest
                watcher.join()
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    time.sleep(0.01)
        finally:
            signal.signal(signal.SIGINT, previous)


@pytest.fixture
def live_monitor(shell: Any) -> Iterator[Any]:
    """The extension's sampler, running, with a live monitor panel on it (as a kernel has)."""
    from o11ylab.widgets import HardwareMonitor

    sampler = hardware.get_sampler()
    assert sampler.running
    monitor = HardwareMonitor(sampler)
    try:
        yield monitor
    finally:
        monitor.close()


def assert_still_sampling(monitor: Any) -> None:
    sampler = monitor.sampler
    before = sampler.samples_taken
    deadline = time.monotonic() + sampler.interval_s * 3 + 2
    while sampler.samples_taken <= before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sampler.running and sampler.samples_taken > before
    assert monitor.running and "● live" in monitor._header.value


@pytest.mark.timeout(120)
def test_ctrl_c_during_a_long_generation_ends_the_span_and_frees_the_model(
    long_model: Path,
    live_monitor: Any,
) -> None:
    from o11ylab.ai.local_model import LocalModel

    model = LocalModel(long_model, device="cpu", verbose=False)
    started = time.monotonic()
    with capture_spans() as spans, pytest.raises(KeyboardInterrupt), ctrl_c_when(model.lock.locked):
        model.generate(LONG_PROMPT, max_new_tokens=3000)
    assert time.monotonic() - started < 20  # interrupted, not run to the end
    (span,) = spans
    assert span.name == f"text_completion {long_model.name}" and span.end_time is not None
    assert span.attributes[semconv.ERROR_TYPE] == "KeyboardInterrupt"
    assert span.status.status_code is StatusCode.ERROR

    assert not model.lock.locked()
    again = model.generate(LONG_PROMPT, max_new_tokens=3)  # the next generation just works
    assert again.output_tokens == 3
    assert_still_sampling(live_monitor)


def vector(doc_id: str, dims: int = 32) -> list[float]:
    """The same vector for an id in this process and in the child processes."""
    rng = random.Random(hashlib.sha256(doc_id.encode()).digest())
    return [rng.uniform(-1, 1) for _ in range(dims)]


VECTOR = "import hashlib, random\n" + inspect.getsource(vector)
REOPEN = textwrap.dedent("""\
    import json, sys
    from o11ylab.ai.vectorstore import VectorStore

    store = VectorStore(sys.argv[2], path=sys.argv[1], embedder=None)
    records = store.get()
    probe = json.loads(sys.argv[3])
    hits = {i: store.search(embedding=vector(i), top_k=1)[0].id for i in probe} if probe else {}
    store.add(["written after reopening"], ids=["after-reopen"], embeddings=[vector("x")])
    print(json.dumps({
        "ids": [r.id for r in records],
        "documents_match": all(r.document == "document " + r.id for r in records),
        "nearest": hits,
        "count_after_add": store.count(),
    }))
""")


def reopen(path: Path, collection: str, probe: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Open the store in a brand-new process (no cache of this one's Chroma client)."""
    done = subprocess.run(
        [PYTHON, "-c", VECTOR + REOPEN, str(path), collection, json.dumps(probe)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def batch(prefix: str, start: int, count: int) -> dict[str, Any]:
    ids = [f"{prefix}{n:05d}" for n in range(start, start + count)]
    return {
        "ids": ids,
        "documents": [f"document {i}" for i in ids],
        "embeddings": [vector(i) for i in ids],
    }


@pytest.mark.timeout(240)
def test_ctrl_c_during_a_chroma_add_keeps_every_returned_document(
    tmp_path: Path,
    live_monitor: Any,
    run_env: dict[str, str],
) -> None:
    from o11ylab.ai.vectorstore import VectorStore

    store = VectorStore("interrupted", path=tmp_path / "chroma", embedder=None, batch_size=100)
    returned = store.add(**batch("first-", 0, 500))  # an add that returned
    big = batch("big-", 0, 6000)  # 60 batches: seconds of work
    with (
        capture_spans() as spans,
        pytest.raises(KeyboardInterrupt),
        ctrl_c_when(lambda: store.count() >= 700, after_s=0.0),
    ):
        store.add(**big)
    # One span per Chroma batch: those done ended OK, the one Ctrl-C hit says so.
    (span,) = [
        s for s in spans if s.name == "add interrupted" and s.status.status_code is StatusCode.ERROR
    ]
    assert span.end_time is not None
    assert span.attributes[semconv.ERROR_TYPE] == "KeyboardInterrupt"
    assert span.status.status_code is StatusCode.ERROR

    # Consistent in this process: what went in is whole batches, the store still works.
    kept = store.count() - len(returned)
    assert 0 < kept < len(big["ids"]) and kept % 100 == 0
    assert [r.id for r in store.get(ids=big["ids"][:kept])] == big["ids"][:kept]
    assert store.search(embedding=vector(returned[7]), top_k=1)[0].id == returned[7]
    assert_still_sampling(live_monitor)

    # And in a new process: every returned document, the interrupted add's whole batches.
    reopened = reopen(tmp_path / "chroma", "interrupted", returned[:3], run_env)
    assert sorted(reopened["ids"]) == sorted(returned + big["ids"][:kept])
    assert reopened["documents_match"]
    assert reopened["nearest"] == {i: i for i in returned[:3]}
    assert reopened["count_after_add"] == len(returned) + kept + 1


# --- SIGKILL during a Chroma add ----------------------------------------------------------------

ADD_FOREVER = textwrap.dedent("""\
    import sys
    from o11ylab.ai.vectorstore import VectorStore

    store = VectorStore("killed", path=sys.argv[1], embedder=None, batch_size=100)
    for n in range(10_000):
        ids = [f"b{n:05d}-{j:03d}" for j in range(100)]
        store.add([f"document {i}" for i in ids], ids=ids, embeddings=[vector(i) for i in ids])
        print(f"ACK {n}", flush=True)  # the add returned: these 100 documents must survive
""")


@pytest.mark.timeout(240)
def test_sigkill_during_chroma_adds_keeps_every_acknowledged_document(
    tmp_path: Path,
    run_env: dict[str, str],
) -> None:
    folder = tmp_path / "chroma"
    writer = subprocess.Popen(
        [PYTHON, "-c", VECTOR + ADD_FOREVER, str(folder)],
        env=run_env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    acked: list[int] = []
    deadline = time.monotonic() + 120
    try:
        for line in writer.stdout:
            if line.startswith("ACK "):
                acked.append(int(line.split()[1]))
            if len(acked) >= 8 or time.monotonic() > deadline:
                break
    finally:
        writer.send_signal(signal.SIGKILL)  # no atexit, no flush, no goodbye
        rest, errors = writer.communicate(timeout=30)
    acked += [int(line.split()[1]) for line in rest.splitlines() if line.startswith("ACK ")]
    assert writer.returncode == -signal.SIGKILL
    assert len(acked) >= 8, errors[-3000:]

    expected = [f"b{n:05d}-{j:03d}" for n in acked for j in range(100)]
    probe = [expected[0], expected[len(expected) // 2], expected[-1]]
    reopened = reopen(folder, "killed", probe, run_env)
    found = set(reopened["ids"])
    assert not set(expected) - found, f"{len(set(expected) - found)} acknowledged docs lost"
    # Beyond the acknowledged batches, at most the one in flight, and only whole.
    assert len(found) - len(expected) in (0, 100)
    assert reopened["documents_match"]
    assert reopened["nearest"] == {i: i for i in probe}
    assert reopened["count_after_add"] == len(found) + 1  # the store takes writes again


# --- a GPU query failing mid-cell -----------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_gpu_failing_in_the_middle_of_a_cell_never_reaches_the_cell(
    fake_gpu: tuple[Any, FakeNvml, Any],  # noqa: F811 - the fixture imported above
    capsys: pytest.CaptureFixture[str],
) -> None:
    from o11ylab.widgets import HardwareMonitor

    shell, fake, sampler = fake_gpu
    monitor = HardwareMonitor(sampler)
    cell = textwrap.dedent("""\
        %%traced gpu-fails
        import time, pynvml
        import o11ylab
        with o11ylab.span("chat tiny-model", **{"gen_ai.operation.name": "chat"}):
            gpu = FAKE.gpus[0]
            for name in ("nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetMemoryInfo",
                         "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetPowerUsage"):
                gpu.failing[name] = pynvml.NVML_ERROR_UNKNOWN
            time.sleep(0.5)  # the sampler meets the failures too
        answer = 42
        """)
    try:
        with capture_spans() as spans:
            result = shell.run_cell(cell)
        assert result.success and shell.user_ns["answer"] == 42
        by_name = {s.name: s for s in spans}
        assert by_name["gpu-fails"].status.status_code is not StatusCode.ERROR
        assert semconv.HW_ENERGY_SPAN not in by_name["chat tiny-model"].attributes  # unknown
        assert "✓ gpu-fails" in capsys.readouterr().out

        # The GPU is then lost for good: still nothing reaches a cell, sampling goes on.
        fake.gpus[0].failing["nvmlDeviceGetUtilizationRates"] = pynvml.NVML_ERROR_GPU_IS_LOST
        assert shell.run_cell("%%traced after-loss\nanswer = 43\n").success
        assert shell.user_ns["answer"] == 43
        assert_still_sampling(monitor)
    finally:
        monitor.close()
