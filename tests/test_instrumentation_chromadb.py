"""ChromaInstrumentor: what a plain chromadb user sees in their traces and metrics.

Each test gets a fresh TracerProvider + InMemorySpanExporter and MeterProvider +
InMemoryMetricReader, handed to ``instrument()``; the instrumentor is undone afterwards (and put
back on the global providers if something, such as o11ylab's VectorStore, had it on before).
Collections hold tiny hand-made vectors or use a toy embedding function: no model, no download.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chromadb
import pytest
from chromadb.api.types import EmbeddingFunction
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Sampler
from opentelemetry.trace import SpanKind, StatusCode

from o11ylab.instrumentation.chromadb import ChromaInstrumentor

from .conftest import free_port

CAPTURE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
AXES = {"x": [1.0, 0.0, 0.0], "y": [0.0, 1.0, 0.0], "z": [0.0, 0.0, 1.0]}
DOCS = {"x": "the x axis, secret memo", "y": "the y axis", "z": "the z axis"}


class Letters(EmbeddingFunction):  # type: ignore[type-arg]
    """Counts of a, e, o: a toy model. Makes a span of its own, as an SDK call would."""

    def __init__(self, tracer_provider: Any = None, fail_with: BaseException | None = None) -> None:
        self.tracer = trace.get_tracer("test.embedder", tracer_provider=tracer_provider)
        self.fail_with = fail_with

    def __call__(self, input: list[str]) -> list[list[float]]:  # Chroma calls it "input"
        with self.tracer.start_as_current_span("embeddings letters"):
            if self.fail_with is not None:
                raise self.fail_with
            return [[float(t.count(c)) + 0.01 for c in "aeo"] for t in input]

    @staticmethod
    def name() -> str:
        return "letters"

    def get_config(self) -> dict[str, Any]:
        return {}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> Letters:
        return Letters()


@dataclass
class Otel:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def only(self, name: str) -> ReadableSpan:
        matching = [s for s in self.spans() if s.name == name]
        assert len(matching) == 1, [s.name for s in self.spans()]
        return matching[0]

    def points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        return [
            point
            for rm in (data.resource_metrics if data else ())
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == metric
            for point in m.data.data_points
        ]


def _instrumented(sampler: Sampler | None = None) -> Iterator[Otel]:
    instrumentor = ChromaInstrumentor()
    was_on = instrumentor.is_instrumented_by_opentelemetry
    if was_on:
        instrumentor.uninstrument()
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(sampler=sampler) if sampler else TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        yield Otel(exporter, reader, tracer_provider)
    finally:
        instrumentor.uninstrument()
        if was_on:
            instrumentor.instrument()


@pytest.fixture
def otel(monkeypatch: pytest.MonkeyPatch) -> Iterator[Otel]:
    monkeypatch.delenv(CAPTURE, raising=False)
    yield from _instrumented()


def _name() -> str:
    return f"c-{uuid.uuid4().hex[:12]}"


def _axes(client: Any, name: str | None = None) -> Any:
    collection = client.get_or_create_collection(name or _name(), embedding_function=None)
    collection.add(ids=list(AXES), embeddings=list(AXES.values()), documents=list(DOCS.values()))
    return collection


# --- retrieval ---------------------------------------------------------------------------------


def test_a_query_is_a_retrieval_span(otel: Otel) -> None:
    collection = _axes(chromadb.EphemeralClient())
    result = collection.query(query_embeddings=[AXES["x"]], n_results=2)

    assert result["ids"][0][0] == "x"
    span = otel.only(f"retrieval {collection.name}")
    assert span.kind is SpanKind.CLIENT and span.status.is_ok
    assert dict(span.attributes or {}) == {
        "gen_ai.operation.name": "retrieval",
        "gen_ai.data_source.id": collection.name,
        "gen_ai.retrieval.top_k": 2,
        "db.system.name": "chromadb",
        "db.collection.name": collection.name,
        "db.response.returned_rows": 2,
    }
    (duration,) = otel.points("gen_ai.client.operation.duration")
    assert duration.count == 1 and 0 < duration.sum < 5
    assert duration.attributes["gen_ai.operation.name"] == "retrieval"
    assert not otel.points("db.client.response.returned_rows"), "the count is on the span"


def test_several_queries_in_one_call(otel: Otel) -> None:
    collection = _axes(chromadb.EphemeralClient())
    collection.query(query_embeddings=[AXES["x"], AXES["y"]], n_results=1)

    span = otel.only(f"retrieval {collection.name}")
    assert span.attributes["db.operation.batch.size"] == 2
    assert span.attributes["db.response.returned_rows"] == 2
    assert span.attributes["gen_ai.retrieval.top_k"] == 1


def test_an_embedding_functions_span_nests_under_the_chroma_span(otel: Otel) -> None:
    client = chromadb.EphemeralClient()
    collection = client.get_or_create_collection(
        _name(), embedding_function=Letters(otel.tracer_provider)
    )
    collection.add(ids=["a", "o"], documents=["aaaa", "oooo"])
    collection.query(query_texts=["ooo!"], n_results=1)

    add = otel.only(f"add {collection.name}")
    retrieval = otel.only(f"retrieval {collection.name}")
    embeddings = [s for s in otel.spans() if s.name == "embeddings letters"]
    assert [s.parent.span_id for s in embeddings if s.parent] == [
        add.context.span_id,
        retrieval.context.span_id,
    ]
    assert retrieval.attributes["gen_ai.request.model"] == "Letters"
    assert add.attributes["gen_ai.request.model"] == "Letters"


def test_an_error_marks_the_span_and_is_raised_unchanged(otel: Otel) -> None:
    collection = _axes(chromadb.EphemeralClient())
    with pytest.raises(Exception, match="dimension") as caught:
        collection.query(query_embeddings=[[1.0, 0.0]], n_results=1)  # 2 dims, not 3

    span = otel.only(f"retrieval {collection.name}")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == type(caught.value).__qualname__
    (duration,) = otel.points("gen_ai.client.operation.duration")
    assert duration.attributes["error.type"] == type(caught.value).__qualname__


def test_ctrl_c_mid_query_marks_the_span(otel: Otel) -> None:
    collection = chromadb.EphemeralClient().get_or_create_collection(
        _name(), embedding_function=Letters(fail_with=KeyboardInterrupt())
    )
    collection.add(ids=["a"], embeddings=[[1.0, 0.0, 0.0]])
    with pytest.raises(KeyboardInterrupt):
        collection.query(query_texts=["interrupted"], n_results=1)

    span = otel.only(f"retrieval {collection.name}")
    assert span.attributes["error.type"] == "KeyboardInterrupt"
    assert span.status.status_code is StatusCode.ERROR


# --- content -------------------------------------------------------------------------------------


def test_no_query_or_document_text_by_default(otel: Otel) -> None:
    collection = chromadb.EphemeralClient().get_or_create_collection(
        _name(), embedding_function=Letters(), configuration={"hnsw": {"space": "cosine"}}
    )
    collection.add(ids=["m"], documents=["a secret memo"])
    collection.query(query_texts=["private question"], n_results=1)
    collection.get(ids=["m"])

    recorded = json.dumps([dict(s.attributes or {}) for s in otel.spans()])
    assert "secret" not in recorded and "private" not in recorded
    assert "gen_ai.retrieval.query.text" not in recorded


def test_query_and_documents_with_content_capture_on(
    otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CAPTURE, "SPAN_ONLY")
    collection = chromadb.EphemeralClient().get_or_create_collection(
        _name(), embedding_function=Letters(), configuration={"hnsw": {"space": "cosine"}}
    )
    collection.add(ids=["o", "a"], documents=["oooo", "aaaa"])
    result = collection.query(query_texts=["ooo!"], n_results=1)

    span = otel.only(f"retrieval {collection.name}")
    assert span.attributes["gen_ai.retrieval.query.text"] == "ooo!"
    (document,) = json.loads(span.attributes["gen_ai.retrieval.documents"])
    assert document == {
        "id": "o",
        "content": "oooo",
        "score": pytest.approx(1 - result["distances"][0][0]),
    }
    # Writes never carry text, capture or not.
    assert "oooo" not in json.dumps(dict(otel.only(f"add {collection.name}").attributes))


# --- data operations ---------------------------------------------------------------------------


def test_writes_and_reads_are_database_spans_with_counts(otel: Otel) -> None:
    collection = _axes(chromadb.EphemeralClient())
    collection.upsert(ids=["x", "w"], embeddings=[[1.0, 0.1, 0.0], [0.5, 0.5, 0.0]])
    collection.update(ids="w", embeddings=[[0.4, 0.6, 0.0]])
    got = collection.get(ids=["x", "y"])
    collection.delete(ids=["w"])

    name = collection.name
    spans = [s for s in otel.spans() if not s.name.startswith("retrieval")]
    assert [s.name for s in spans] == [
        f"{op} {name}" for op in ("add", "upsert", "update", "get", "delete")
    ]
    for span in spans:
        assert span.kind is SpanKind.CLIENT
        assert span.attributes["db.system.name"] == "chromadb"
        assert span.attributes["db.collection.name"] == name
        assert span.attributes["db.operation.name"] == span.name.split()[0]
    counts = [s.attributes.get("o11ylab.vectorstore.record_count") for s in spans]
    assert counts == [3, 2, 1, None, 1]
    assert spans[3].attributes["db.response.returned_rows"] == len(got["ids"]) == 2
    assert "secret memo" not in json.dumps([dict(s.attributes) for s in spans])


def test_a_failed_write_marks_its_span(otel: Otel) -> None:
    collection = _axes(chromadb.EphemeralClient())
    with pytest.raises(Exception, match="dimension"):
        collection.add(ids=["bad"], embeddings=[[1.0, 0.0]])
    stored, failed = [s for s in otel.spans() if s.name == f"add {collection.name}"]
    assert stored.status.is_ok
    assert failed.status.status_code is StatusCode.ERROR and "error.type" in failed.attributes


# --- sampling, life cycle --------------------------------------------------------------------------


def test_nothing_recorded_and_no_attribute_work_when_sampled_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def must_not_run(*args: Any) -> None:
        raise AssertionError("content capture read for a span nobody records")

    monkeypatch.setenv(CAPTURE, "SPAN_ONLY")
    monkeypatch.setattr("o11ylab.config.content_capture", must_not_run)
    for otel in _instrumented(sampler=ALWAYS_OFF):
        collection = _axes(chromadb.EphemeralClient())
        result = collection.query(query_embeddings=[AXES["z"]], n_results=1)
        collection.get(ids=["z"])

        assert result["ids"] == [["z"]]
        assert otel.spans() == []
        # Metrics do not follow trace sampling.
        (duration,) = otel.points("gen_ai.client.operation.duration")
        assert duration.count == 1


def test_in_a_sampled_out_trace_nothing_below_is_recorded_and_the_duration_still_counts(
    otel: Otel,
) -> None:
    # A cell span whose trace the default ParentBased sampler dropped: the query under it
    # starts no span of its own, and the embedding function below stays sampled out too.
    client = chromadb.EphemeralClient()
    collection = client.get_or_create_collection(
        _name(), embedding_function=Letters(otel.tracer_provider)
    )
    collection.add(ids=["a", "o"], documents=["aaaa", "oooo"])
    otel.exporter.clear()
    dropped = trace.NonRecordingSpan(
        trace.SpanContext(
            trace_id=0xA1, span_id=0xB2, is_remote=False, trace_flags=trace.TraceFlags(0)
        )
    )
    with trace.use_span(dropped):
        result = collection.query(query_texts=["ooo!"], n_results=1)
        assert trace.get_current_span() is dropped

    assert result["ids"] == [["o"]]
    assert otel.spans() == []
    (duration,) = otel.points("gen_ai.client.operation.duration")
    assert duration.count == 1


def test_the_queued_duration_keeps_its_exemplar_pointing_at_the_span(otel: Otel) -> None:
    collection = _axes(chromadb.EphemeralClient())
    with otel.tracer_provider.get_tracer("test").start_as_current_span("cell"):
        collection.query(query_embeddings=[AXES["x"]], n_results=1)
        # Read while another span is current: the exemplar is still the query's.
        (duration,) = otel.points("gen_ai.client.operation.duration")

    retrieval = otel.only(f"retrieval {collection.name}")
    (exemplar,) = duration.exemplars
    assert (exemplar.trace_id, exemplar.span_id) == (
        retrieval.context.trace_id,
        retrieval.context.span_id,
    )
    # Drained at that collection: the next one adds nothing new.
    (again,) = otel.points("gen_ai.client.operation.duration")
    assert again.count == 1


def test_the_queue_of_unread_durations_is_bounded() -> None:
    from opentelemetry.metrics import NoOpMeter

    from o11ylab.telemetry._deferred import DeferredHistogram

    histogram = DeferredHistogram(NoOpMeter("test"), "d", unit="s", description="", limit=3)
    for value in range(10):
        histogram.record(float(value), {})
    assert [v for v, _attributes, _context in histogram._pending] == [7.0, 8.0, 9.0]
    histogram.drain()
    assert not histogram._pending


def test_instrument_and_uninstrument_are_idempotent_and_leave_no_patch() -> None:
    from chromadb.api.models.AsyncCollection import AsyncCollection
    from chromadb.api.models.Collection import Collection

    for otel in _instrumented():
        ChromaInstrumentor().instrument(tracer_provider=otel.tracer_provider)  # a second time
        collection = _axes(chromadb.EphemeralClient())
        collection.query(query_embeddings=[AXES["x"]], n_results=1)
        assert len([s for s in otel.spans() if s.name.startswith("retrieval")]) == 1
        assert hasattr(Collection.query, "__wrapped__")
    ChromaInstrumentor().uninstrument()  # a second time: nothing left to undo

    for owner in (Collection, AsyncCollection):
        for name in ("query", "add", "upsert", "update", "delete", "get"):
            method = owner.__dict__[name]
            assert inspect.isfunction(method) and not hasattr(method, "__wrapped__"), name
            assert method.__module__ == owner.__module__
    was_on = ChromaInstrumentor().is_instrumented_by_opentelemetry
    assert not was_on


def test_plain_instrument_uses_the_global_providers() -> None:
    """What ``opentelemetry-instrument`` does: no providers passed."""
    from o11ylab.testing import capture_spans

    instrumentor = ChromaInstrumentor()
    was_on = instrumentor.is_instrumented_by_opentelemetry
    instrumentor.uninstrument()
    from o11ylab.telemetry import get_telemetry

    get_telemetry()  # o11ylab's global providers, which capture_spans reads
    instrumentor.instrument()
    try:
        with capture_spans() as spans:
            collection = _axes(chromadb.EphemeralClient())
            collection.query(query_embeddings=[AXES["y"]], n_results=1)
        assert f"retrieval {collection.name}" in [s.name for s in spans]
    finally:
        if not was_on:
            instrumentor.uninstrument()


# --- client kinds ----------------------------------------------------------------------------------


def test_persistent_client(otel: Otel, tmp_path: Path) -> None:
    collection = _axes(chromadb.PersistentClient(path=str(tmp_path / "chroma")))
    collection.query(query_embeddings=[AXES["y"]], n_results=1)
    span = otel.only(f"retrieval {collection.name}")
    assert span.attributes["db.response.returned_rows"] == 1
    assert "server.address" not in span.attributes


@pytest.fixture
def chroma_server(tmp_path: Path) -> Iterator[int]:
    """A real ``chroma run`` on loopback, waited on through its heartbeat."""
    chroma = Path(sys.executable).parent / "chroma"
    if not chroma.exists():
        pytest.skip("the chroma CLI (from the chromadb wheel) is not installed")
    port = free_port()
    log_path = tmp_path / "chroma-server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [
                str(chroma),
                "run",
                "--path",
                str(tmp_path / "server-data"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    chromadb.HttpClient(host="127.0.0.1", port=port).heartbeat()
                    break
                except Exception:  # noqa: BLE001 - any failure to connect means "not up yet"
                    if server.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"chroma run did not start: {log_path.read_text()[-2000:]}")
                    time.sleep(0.1)  # poll interval while waiting on the heartbeat
            yield port
        finally:
            server.terminate()
            server.wait(timeout=20)


@pytest.mark.integration
def test_http_client_against_a_real_server(otel: Otel, chroma_server: int) -> None:
    provider_before = trace.get_tracer_provider()
    client = chromadb.HttpClient(host="127.0.0.1", port=chroma_server)
    collection = _axes(client)
    collection.query(query_embeddings=[AXES["z"]], n_results=2)

    span = otel.only(f"retrieval {collection.name}")
    assert span.attributes["server.address"] == "127.0.0.1"
    assert span.attributes["server.port"] == chroma_server
    assert span.attributes["db.response.returned_rows"] == 2
    assert otel.only(f"add {collection.name}").attributes["server.port"] == chroma_server
    assert trace.get_tracer_provider() is provider_before  # Chroma set no global provider

    async def use_async_client() -> str:
        async_client = await chromadb.AsyncHttpClient(host="127.0.0.1", port=chroma_server)
        async_collection = await async_client.get_or_create_collection(
            _name(), embedding_function=None
        )
        await async_collection.add(ids=["a"], embeddings=[[0.0, 1.0, 0.0]])
        await async_collection.query(query_embeddings=[[0.0, 1.0, 0.0]], n_results=1)
        return str(async_collection.name)

    name = asyncio.run(use_async_client())
    assert otel.only(f"retrieval {name}").attributes["db.response.returned_rows"] == 1
    assert otel.only(f"add {name}").attributes["o11ylab.vectorstore.record_count"] == 1
