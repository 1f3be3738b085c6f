"""The Chroma vector store: what a notebook user sees, what its spans and metrics say, and the
errors each bad input gets.

Most tests store tiny hand-made vectors (fast, no model). The tests that search by text share
one all-MiniLM-L6-v2, loaded once for the session.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from o11ylab import semconv
from o11ylab.ai import vectorstore as vs
from o11ylab.ai.vectorstore import (
    ChromaConnectionError,
    CollectionNameError,
    DimensionMismatchError,
    DuplicateIdError,
    EmptyQueryError,
    Hit,
    ModelMismatchError,
    NoEmbedderError,
    StorePathError,
    TopKError,
    VectorStore,
    VectorStoreError,
)
from o11ylab.config import ContentCapture
from o11ylab.telemetry import get_telemetry
from o11ylab.testing import capture_metrics, capture_spans

from .conftest import PYTHON, ROOT, free_port

DOCS = {
    "tempo": "Grafana Tempo stores distributed traces and lets you search them by trace id.",
    "mimir": "Grafana Mimir is long-term storage for Prometheus metrics.",
    "loki": "Loki collects log lines and indexes only their labels.",
    "nvml": "NVML reports GPU utilization, memory and the energy counter in millijoules.",
    "chroma": "Chroma is an open-source vector database for embeddings and similarity search.",
    "pasta": "Boil the pasta in salted water and keep a cup of the cooking water for the sauce.",
}
TOPICS = {
    "tempo": "traces",
    "mimir": "metrics",
    "loki": "logs",
    "nvml": "gpu",
    "chroma": "vectors",
    "pasta": "cooking",
}

# Unit vectors along the axes of a 4-dimensional space: the nearest neighbour is obvious.
AXES = {
    "x": [1.0, 0.0, 0.0, 0.0],
    "y": [0.0, 1.0, 0.0, 0.0],
    "z": [0.0, 0.0, 1.0, 0.0],
    "w": [0.0, 0.0, 0.0, 1.0],
}


@pytest.fixture(scope="session")
def minilm() -> Any:
    """The default embedder, loaded once: every store with embedder="default" shares it."""
    from o11ylab.ai.local_model import get_local_embedder

    return get_local_embedder()


@pytest.fixture
def chroma_dir(tmp_path: Path) -> Path:
    return tmp_path / "chroma"


@pytest.fixture
def vectors(chroma_dir: Path) -> VectorStore:
    """A store of four axis vectors with documents and metadata; no model."""
    store = VectorStore("axes", path=chroma_dir, embedder=None)
    store.add(
        [f"the {name} axis" for name in AXES],
        ids=list(AXES),
        embeddings=list(AXES.values()),
        metadatas=[{"group": "xy" if n in "xy" else "zw", "rank": i} for i, n in enumerate(AXES)],
    )
    return store


@pytest.fixture
def texts(chroma_dir: Path, minilm: Any) -> VectorStore:
    store = VectorStore("notes", path=chroma_dir, embedder="default")
    store.add(list(DOCS.values()), ids=list(DOCS), metadatas=[{"topic": TOPICS[k]} for k in DOCS])
    return store


@pytest.fixture
def content_capture(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Content capture on: OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=SPAN_ONLY (what the
    instrumentors read) and o11ylab's settings as that variable would have made them."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
    telemetry = get_telemetry()
    monkeypatch.setattr(
        telemetry,
        "settings",
        dataclasses.replace(telemetry.settings, capture_content=ContentCapture.SPAN_ONLY),
    )
    yield


def only(spans: list[Any], name: str) -> Any:
    matching = [s for s in spans if s.name == name]
    assert len(matching) == 1, [s.name for s in spans]
    return matching[0]


def all_attribute_text(spans: list[Any]) -> str:
    return json.dumps([dict(s.attributes or {}) for s in spans], default=str)


# --- what a user does ------------------------------------------------------------------------


def test_text_search_finds_the_document_that_answers(texts: VectorStore) -> None:
    hits = texts.search("where do my distributed traces go?", top_k=3)

    assert [type(h) for h in hits] == [Hit] * 3
    assert hits[0].id == "tempo"
    assert hits[0].document == DOCS["tempo"]
    assert hits[0].metadata == {"topic": "traces"}
    assert 0 < hits[0].score <= 1 and hits[0].score > hits[1].score >= hits[2].score
    assert hits[0].distance == pytest.approx(1 - hits[0].score)
    assert texts.embedding_model == "all-MiniLM-L6-v2"


def test_a_collection_remembers_its_model(texts: VectorStore) -> None:
    import chromadb

    reopened = VectorStore("notes", path=Path(texts.location), embedder=None)
    assert reopened.embedding_model == "all-MiniLM-L6-v2"
    assert reopened.search("GPU energy counter", top_k=1)[0].id == "nvml"

    # Chroma saved its own embedding function config: plain chromadb can search by text too.
    plain = chromadb.PersistentClient(path=texts.location).get_collection("notes")
    assert plain.query(query_texts=["cooking water"], n_results=1)["ids"] == [["pasta"]]


def test_several_queries_at_once_get_one_list_each(texts: VectorStore) -> None:
    results = texts.query(["GPU energy in millijoules", "how to cook spaghetti"], top_k=1)

    assert [[h.id for h in hits] for hits in results] == [["nvml"], ["pasta"]]


def test_filters_narrow_the_search(vectors: VectorStore) -> None:
    near_x = [0.9, 0.1, 0.05, 0.0]

    assert [h.id for h in vectors.search(embedding=near_x, top_k=4)][:2] == ["x", "y"]
    assert [h.id for h in vectors.search(embedding=near_x, where={"group": "zw"})] == ["z", "w"]
    ranked = vectors.search(embedding=near_x, top_k=4, where={"rank": {"$gte": 2}})
    assert {h.id for h in ranked} == {"z", "w"}
    in_text = vectors.search(embedding=near_x, where_document={"$contains": "w axis"})
    assert [h.id for h in in_text] == ["w"]


def test_get_delete_and_count(vectors: VectorStore) -> None:
    assert vectors.count() == 4
    assert [r.document for r in vectors.get(["y"])] == ["the y axis"]
    assert {r.id for r in vectors.get(where={"group": "zw"})} == {"z", "w"}

    assert vectors.delete(["x"]) == 1
    assert vectors.delete(where={"group": "zw"}) == 2
    assert vectors.count() == 1
    assert [h.id for h in vectors.search(embedding=AXES["x"], top_k=4)] == ["y"]
    with pytest.raises(ValueError, match="needs ids or a where"):
        vectors.delete()
    assert vectors.count() == 1


def test_upsert_updates_and_is_safe_to_run_twice(vectors: VectorStore) -> None:
    for _ in range(2):
        vectors.upsert(
            ["x, renamed"], ids=["x"], embeddings=[AXES["y"]], metadatas=[{"group": "new"}]
        )

    assert vectors.count() == 4
    (record,) = vectors.get(["x"])
    assert record.document == "x, renamed"
    assert record.metadata == {"group": "new", "rank": 0}  # Chroma merges metadata keys
    assert {h.id for h in vectors.search(embedding=AXES["y"], top_k=2)} == {"x", "y"}


def test_adds_in_batches_of_the_size_asked(chroma_dir: Path) -> None:
    store = VectorStore("batches", path=chroma_dir, embedder=None, batch_size=3)
    with capture_spans() as spans:
        ids = store.add(
            ids=[f"v{i}" for i in range(10)], embeddings=[[float(i), 1.0] for i in range(10)]
        )

    assert ids == [f"v{i}" for i in range(10)] and store.count() == 10
    # One Chroma add (one span from ChromaInstrumentor) per batch.
    adds = [s for s in spans if s.name == "add batches"]
    assert [s.attributes[semconv.VECTORSTORE_RECORD_COUNT] for s in adds] == [3, 3, 3, 1]


def test_data_survives_a_fresh_client(chroma_dir: Path) -> None:
    import chromadb.api.client

    first = VectorStore("keep", path=chroma_dir, embedder=None)
    first.add(["kept"], ids=["k"], embeddings=[[0.0, 1.0]])
    # A restarted kernel starts with no Chroma system in memory: drop the cached one.
    chromadb.api.client.SharedSystemClient.clear_system_cache()

    again = VectorStore("keep", path=chroma_dir, embedder=None)
    assert again.count() == 1
    assert [(h.id, h.document) for h in again.search(embedding=[0.0, 1.0])] == [("k", "kept")]


def test_data_survives_across_processes(chroma_dir: Path, run_env: dict[str, str]) -> None:
    run_env["CHROMA_PATH"] = str(chroma_dir)  # the default location, from the environment
    write = textwrap.dedent("""
        from o11ylab.ai.vectorstore import VectorStore
        store = VectorStore("shared", embedder=None)
        store.add(["from process one"], ids=["p1"], embeddings=[[0.6, 0.8]], metadatas=[{"pid": 1}])
        print(store.location)
    """)
    read = textwrap.dedent("""
        import json
        from o11ylab.ai.vectorstore import VectorStore
        store = VectorStore("shared", embedder=None)
        hits = store.search(embedding=[0.6, 0.8], top_k=1)
        print(json.dumps({"count": store.count(),
                          "hits": [[h.id, h.document, h.metadata] for h in hits]}))
    """)
    for script in (write, read):
        done = subprocess.run(
            [PYTHON, "-c", script],
            env=run_env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "count": 1,
        "hits": [["p1", "from process one", {"pid": 1}]],
    }


def test_any_chroma_embedding_function_and_client() -> None:
    import chromadb
    from chromadb.api.types import EmbeddingFunction

    class Letters(EmbeddingFunction):  # type: ignore[type-arg]
        """Counts of a, e, o: a toy model that needs no weights."""

        def __init__(self) -> None:
            pass

        def __call__(self, input: list[str]) -> list[list[float]]:  # Chroma calls it "input"
            return [[float(t.count(c)) + 0.01 for c in "aeo"] for t in input]

        @staticmethod
        def name() -> str:
            return "letters"

        def get_config(self) -> dict[str, Any]:
            return {}

        @staticmethod
        def build_from_config(config: dict[str, Any]) -> Letters:
            return Letters()

    store = VectorStore("toy", client=chromadb.EphemeralClient(), embedder=Letters())
    store.add(["aaaa", "eeee", "oooo"], ids=["a", "e", "o"])
    with capture_spans() as spans:
        assert store.search("ooo!", top_k=1)[0].id == "o"
    assert store.embedding_model == "Letters"
    assert only(spans, "retrieval toy").attributes["gen_ai.request.model"] == "Letters"
    assert store.location == "(your chromadb Client)"


def test_a_bad_chroma_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHROMA_HOST", "127.0.0.1")
    monkeypatch.setenv("CHROMA_PORT", "eight thousand")
    with pytest.raises(ChromaConnectionError, match="CHROMA_PORT='eight thousand' is not a port"):
        VectorStore("docs", embedder=None)


# --- telemetry -------------------------------------------------------------------------------


def test_retrieval_span_follows_the_genai_retrieval_convention(vectors: VectorStore) -> None:
    from opentelemetry.trace import SpanKind

    with capture_spans() as spans, capture_metrics() as metrics:
        hits = vectors.search(embedding=AXES["z"], top_k=3)

    assert len(hits) == 3
    span = only(spans, "retrieval axes")
    assert span.kind is SpanKind.CLIENT
    assert span.status.is_ok
    # o11ylab.* are the hardware sampler's measurements, there once the extension is loaded.
    attributes = {k: v for k, v in span.attributes.items() if not k.startswith("o11ylab.")}
    assert attributes == {
        "gen_ai.operation.name": "retrieval",
        "gen_ai.data_source.id": "axes",
        "gen_ai.retrieval.top_k": 3,
        "db.response.returned_rows": 3,
        "db.collection.name": "axes",
        "db.system.name": "chromadb",
    }
    retrieval = {"gen_ai.operation.name": "retrieval", "db.collection.name": "axes"}
    assert metrics.count("gen_ai.client.operation.duration", **retrieval) == 1
    assert 0 < metrics.sum("gen_ai.client.operation.duration", **retrieval) < 5
    assert metrics.count("db.client.response.returned_rows") == 0, "the count is on the span"


def test_text_search_shows_its_embedding_step(texts: VectorStore) -> None:
    with capture_spans() as spans:
        texts.query(["traces", "metrics"], top_k=2)

    span = only(spans, "retrieval notes")
    assert span.attributes["gen_ai.request.model"] == "all-MiniLM-L6-v2"
    assert span.attributes["db.operation.batch.size"] == 2
    assert span.attributes["db.response.returned_rows"] == 4
    embedding = only(spans, "embeddings all-MiniLM-L6-v2")
    assert embedding.parent.span_id == span.context.span_id
    assert embedding.attributes["gen_ai.usage.input_tokens"] > 0


def test_adding_texts_embeds_one_batch_at_a_time(chroma_dir: Path, minilm: Any) -> None:
    store = VectorStore("batched-texts", path=chroma_dir, batch_size=2)
    with capture_spans() as spans:
        store.add(list(DOCS.values())[:5])

    adds = [s for s in spans if s.name == "add batched-texts"]
    assert [s.attributes["o11ylab.vectorstore.record_count"] for s in adds] == [2, 2, 1]
    assert {s.attributes["gen_ai.request.model"] for s in adds} == {"all-MiniLM-L6-v2"}
    embeddings = [s for s in spans if s.name == "embeddings all-MiniLM-L6-v2"]
    # Each batch's embedding runs inside Chroma's add, under that batch's span.
    assert sorted(s.parent.span_id for s in embeddings) == sorted(a.context.span_id for a in adds)
    assert store.count() == 5


def test_writes_get_database_spans_without_text(vectors: VectorStore) -> None:
    with capture_spans() as spans:
        vectors.upsert(["secret memo"], ids=["m"], embeddings=[[0.5, 0.5, 0.5, 0.5]])
        vectors.get(["m"])
        vectors.delete(["m"])

    assert [s.name for s in spans] == ["upsert axes", "get axes", "delete axes"]
    assert [s.attributes["db.operation.name"] for s in spans] == ["upsert", "get", "delete"]
    assert spans[0].attributes["o11ylab.vectorstore.record_count"] == 1
    assert spans[1].attributes["db.response.returned_rows"] == 1
    assert spans[2].attributes["o11ylab.vectorstore.record_count"] == 1
    assert "secret memo" not in all_attribute_text(spans)


def test_no_query_or_document_text_on_spans_by_default(texts: VectorStore) -> None:
    assert not get_telemetry().settings.capture_content.on_spans
    with capture_spans() as spans:
        texts.search("what does Loki index?", top_k=2)
        texts.add(["A private note about salaries."], ids=["private"])

    recorded = all_attribute_text(spans)
    assert "Loki" not in recorded and "labels" not in recorded and "salaries" not in recorded
    span = only(spans, "retrieval notes")
    assert semconv.GEN_AI_RETRIEVAL_QUERY_TEXT not in span.attributes
    assert semconv.GEN_AI_RETRIEVAL_DOCUMENTS not in span.attributes


def test_query_and_documents_on_the_span_when_content_capture_is_on(
    texts: VectorStore, content_capture: None
) -> None:
    with capture_spans() as spans:
        hits = texts.search("what does Loki index?", top_k=2)

    span = only(spans, "retrieval notes")
    assert span.attributes["gen_ai.retrieval.query.text"] == "what does Loki index?"
    documents = json.loads(span.attributes["gen_ai.retrieval.documents"])
    assert documents == [{"id": h.id, "score": h.score, "content": h.document} for h in hits]
    assert documents[0]["id"] == "loki" and documents[0]["content"] == DOCS["loki"]


def test_an_unsampled_span_costs_no_attribute_work(
    vectors: VectorStore, content_capture: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    from o11ylab.instrumentation.chromadb import ChromaInstrumentor

    def must_not_run(*args: Any) -> None:
        raise AssertionError("content capture read for a span nobody records")

    monkeypatch.setattr("o11ylab.config.content_capture", must_not_run)
    instrumentor = ChromaInstrumentor()  # the store's spans come from it: sample them out
    instrumentor.uninstrument()
    instrumentor.instrument(tracer_provider=TracerProvider(sampler=ALWAYS_OFF))
    try:
        with capture_spans() as spans, capture_metrics() as metrics:
            hits = vectors.search(embedding=AXES["w"], top_k=1)
    finally:
        instrumentor.uninstrument()
        instrumentor.instrument()  # back on the global providers

    assert [h.id for h in hits] == ["w"]
    assert spans == []
    assert metrics.count("gen_ai.client.operation.duration", **{"db.collection.name": "axes"}) == 1


# --- bad input: each gets an error that says what to do ------------------------------------------


def test_dimension_mismatch_with_the_collection(vectors: VectorStore, minilm: Any) -> None:
    with capture_spans() as spans, pytest.raises(DimensionMismatchError) as adding:
        vectors.add(["too long"], ids=["t"], embeddings=[[1.0, 0.0, 0.0, 0.0, 0.0]])
    assert "holds 4-dimensional vectors, but got 5-dimensional" in str(adding.value)
    assert "new collection" in str(adding.value)
    # The span is Chroma's call, failed as Chroma raised it; the store's error is clearer.
    assert spans[-1].name == "add axes" and not spans[-1].status.is_ok
    assert spans[-1].attributes["error.type"] == "InvalidArgumentError"
    assert vectors.count() == 4

    with pytest.raises(DimensionMismatchError, match=r"4-dimensional.*3-dimensional"):
        vectors.search(embedding=[1.0, 0.0, 0.0])

    # The same collection opened with a 384-dimensional text model.
    as_text = VectorStore("axes", path=Path(vectors.location), embedder="default")
    with capture_spans() as spans, pytest.raises(DimensionMismatchError) as searching:
        as_text.search("x axis")
    assert "all-MiniLM-L6-v2 makes 384" in str(searching.value)
    span = only(spans, "retrieval axes")
    assert span.attributes["error.type"] == "InvalidArgumentError"
    assert not span.status.is_ok

    with pytest.raises(DimensionMismatchError, match="different lengths"):
        vectors.add(ids=["a", "b"], embeddings=[[1.0, 0.0, 0.0, 0.0], [1.0, 0.0]])


def test_duplicate_ids(vectors: VectorStore, texts: VectorStore) -> None:
    with pytest.raises(DuplicateIdError, match=r"already in collection 'axes'.*'x'.*upsert"):
        vectors.add(["again"], ids=["x"], embeddings=[AXES["x"]])
    with pytest.raises(DuplicateIdError, match=r"more than once.*'q'"):
        vectors.add(ids=["q", "q"], embeddings=[AXES["x"], AXES["y"]])
    assert vectors.count() == 4
    assert [r.document for r in vectors.get(["x"])] == ["the x axis"]  # not overwritten

    # Without ids, a document's id is a hash of its text: adding the same text twice is caught.
    with pytest.raises(DuplicateIdError, match="document text given more than once"):
        texts.add(["same words", "same words"])
    first = texts.add(["a brand new note"])
    with pytest.raises(DuplicateIdError, match="already in collection 'notes'"):
        texts.add(["a brand new note"])
    assert texts.upsert(["a brand new note"]) == first


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.search(""),
        lambda s: s.search("   \n"),
        lambda s: s.search(),
        lambda s: s.query([]),
        lambda s: s.query(["fine", ""]),
        lambda s: s.query(query_embeddings=[]),
        lambda s: s.search(embedding=[]),
    ],
    ids=["empty", "blank", "nothing", "no-texts", "one-empty", "no-vectors", "empty-vector"],
)
def test_empty_query(vectors: VectorStore, call: Any) -> None:
    with capture_spans() as spans, pytest.raises(EmptyQueryError) as caught:
        call(vectors)
    assert "pass" in str(caught.value) or "write the question" in str(caught.value)
    # Refused before Chroma is asked anything: no retrieval span.
    assert [s.name for s in spans if s.name.startswith("retrieval")] == []


@pytest.mark.parametrize("top_k", [0, -3, 2.5, True, "4"])
def test_top_k_must_be_a_positive_whole_number(vectors: VectorStore, top_k: Any) -> None:
    with capture_spans() as spans, pytest.raises(TopKError, match="at least one result"):
        vectors.search(embedding=AXES["x"], top_k=top_k)
    assert [s.name for s in spans if s.name.startswith("retrieval")] == []  # Chroma not asked


def test_top_k_larger_than_the_collection_returns_what_there_is(vectors: VectorStore) -> None:
    assert len(vectors.search(embedding=AXES["x"], top_k=50)) == 4


def test_a_store_path_that_cannot_be_written(tmp_path: Path) -> None:
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    with pytest.raises(StorePathError, match=r"is a file, not a folder.*CHROMA_PATH"):
        VectorStore("docs", path=a_file, embedder=None)
    with pytest.raises(StorePathError, match=r"Cannot create.*CHROMA_PATH"):
        VectorStore("docs", path=a_file / "chroma", embedder=None)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders anyway")
def test_a_read_only_store_folder(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(StorePathError, match=r"Cannot write to.*CHROMA_PATH"):
            VectorStore("docs", path=locked, embedder=None)
    finally:
        locked.chmod(0o700)


def test_chroma_path_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHROMA_PATH", str(tmp_path / "from-env"))
    store = VectorStore("env-path", embedder=None)
    assert store.location == str(tmp_path / "from-env")
    assert (tmp_path / "from-env" / "chroma.sqlite3").exists()


@pytest.mark.parametrize(
    "name",
    ["ab", "a" * 513, "has space", "-leading", "trailing_", "two..dots", "10.0.0.1", "naïve", ""],
)
def test_collection_names_chroma_rejects(chroma_dir: Path, name: str) -> None:
    with pytest.raises(CollectionNameError) as caught:
        VectorStore(name, path=chroma_dir, embedder=None)
    assert "cannot be used" in str(caught.value) and "Pick a name like" in str(caught.value)
    assert not chroma_dir.exists()  # refused before anything was created


@pytest.mark.parametrize("name", ["abc", "a" * 512, "rag-notes_v2.1"])
def test_collection_names_at_the_limits(chroma_dir: Path, name: str) -> None:
    assert VectorStore(name, path=chroma_dir, embedder=None).count() == 0


def test_a_collection_keeps_its_distance(chroma_dir: Path) -> None:
    VectorStore("euclid", path=chroma_dir, embedder=None, space="l2").add(
        ids=["o", "far"], embeddings=[[0.0, 0.0], [3.0, 4.0]]
    )

    reopened = VectorStore("euclid", path=chroma_dir, embedder=None)
    assert reopened.space == "l2"
    hits = reopened.search(embedding=[0.0, 0.0], top_k=2)
    # Chroma's l2 is the squared distance; the score is its negative (higher is closer).
    assert [(h.id, h.distance, h.score) for h in hits] == [("o", 0.0, 0.0), ("far", 25.0, -25.0)]
    with pytest.raises(ModelMismatchError, match="measures l2 distance, not cosine"):
        VectorStore("euclid", path=chroma_dir, embedder=None, space="cosine")


def test_a_collection_refuses_another_embedding_model(
    texts: VectorStore, minilm: Any, tmp_path: Path
) -> None:
    other = tmp_path / "my-other-model"  # the same files under another name: a different model
    for source in minilm.ref.path.rglob("*"):
        target = other / source.relative_to(minilm.ref.path)
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(source, target)
    with pytest.raises(ModelMismatchError) as caught:
        VectorStore("notes", path=Path(texts.location), embedder=str(other))
    assert "built with the embedding model all-MiniLM-L6-v2" in str(caught.value)
    assert "embeds with my-other-model" in str(caught.value)


def test_text_without_a_model(vectors: VectorStore) -> None:
    with pytest.raises(NoEmbedderError, match=r"no embedding model.*embedder='default'"):
        vectors.search("x axis")
    with pytest.raises(NoEmbedderError, match="precomputed vectors"):
        vectors.add(["a text and no vector"])
    assert vectors.count() == 4


def test_blank_documents_are_refused_before_embedding(texts: VectorStore) -> None:
    with pytest.raises(ValueError, match="Document 1 is empty or blank"):
        texts.add(["fine", "  "])
    assert texts.count() == len(DOCS)


def test_no_chroma_server_at_chroma_host(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("CHROMA_HOST", "127.0.0.1")
    monkeypatch.setenv("CHROMA_PORT", str(port))
    started = time.monotonic()
    with pytest.raises(ChromaConnectionError) as caught:
        VectorStore("docs", embedder=None)
    assert f"http://127.0.0.1:{port}" in str(caught.value)
    assert "chroma run" in str(caught.value) and "unset CHROMA_HOST" in str(caught.value)
    assert time.monotonic() - started < 10


def test_every_error_is_a_vector_store_error() -> None:
    for error in (
        ChromaConnectionError,
        CollectionNameError,
        DimensionMismatchError,
        DuplicateIdError,
        EmptyQueryError,
        ModelMismatchError,
        NoEmbedderError,
        StorePathError,
        TopKError,
    ):
        assert issubclass(error, VectorStoreError)


# --- the scale-out path: a real Chroma server -----------------------------------------------------


@pytest.fixture
def chroma_server(tmp_path: Path) -> Iterator[int]:
    chroma = Path(sys.executable).parent / "chroma"
    if not chroma.exists():
        pytest.skip("the chroma CLI (from the chromadb wheel) is not installed")
    port = free_port()
    log = (tmp_path / "chroma-server.log").open("w")
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
        import chromadb

        deadline = time.monotonic() + 90
        while True:
            try:
                chromadb.HttpClient(host="127.0.0.1", port=port).heartbeat()
                break
            except Exception:  # noqa: BLE001 - any failure to connect means "not up yet"
                if server.poll() is not None or time.monotonic() > deadline:
                    log_text = (tmp_path / "chroma-server.log").read_text()
                    pytest.fail(f"chroma run did not start: {log_text[-2000:]}")
                time.sleep(0.2)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()


@pytest.mark.integration
def test_chroma_server_through_chroma_host(
    chroma_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHROMA_HOST", "127.0.0.1")
    monkeypatch.setenv("CHROMA_PORT", str(chroma_server))
    store = VectorStore("remote", embedder=None)
    assert store.location == f"http://127.0.0.1:{chroma_server}"
    store.add(["over http"], ids=["h"], embeddings=[[0.0, 1.0, 0.0]], metadatas=[{"via": "http"}])

    with capture_spans() as spans:
        hits = VectorStore("remote", embedder=None).search(embedding=[0.1, 0.9, 0.0], top_k=2)

    assert [(h.id, h.document, h.metadata) for h in hits] == [("h", "over http", {"via": "http"})]
    span = only(spans, "retrieval remote")
    assert span.attributes["server.address"] == "127.0.0.1"
    assert span.attributes["server.port"] == chroma_server
    with pytest.raises(DimensionMismatchError):
        store.search(embedding=[1.0, 0.0])


# Each refused input: (what it is, the call, the store's error, the built-in its callers caught).
REFUSED: list[tuple[str, Any, type[VectorStoreError], type[Exception]]] = [
    ("unknown space", lambda s: VectorStore("axes", path=s.location, space="manhattan"),
     vs.OptionError, ValueError),
    ("batch size 0", lambda s: VectorStore("axes", path=s.location, batch_size=0),
     vs.OptionError, ValueError),
    ("embedder 3", lambda s: VectorStore("axes", path=s.location, embedder=3),
     vs.EmbedderTypeError, TypeError),
    ("nothing", lambda s: s.add(), vs.NothingToAddError, ValueError),
    ("empty list", lambda s: s.add([]), vs.NothingToAddError, ValueError),
    ("bytes", lambda s: s.add([b"bytes"]), vs.DocumentTypeError, TypeError),
    ("vectors, no ids", lambda s: s.add(embeddings=[[1.0, 0.0]]), vs.MissingIdError, ValueError),
    ("empty id", lambda s: s.add(ids=[""], embeddings=[[1.0, 0.0]]), vs.MissingIdError, ValueError),
    ("2 ids, 1 vector", lambda s: s.add(ids=["a", "b"], embeddings=[[1.0, 0.0]]),
     vs.LengthMismatchError, ValueError),
    ("2 metadatas", lambda s: s.add(ids=["a"], embeddings=[[1.0, 0.0]], metadatas=[{}, {}]),
     vs.LengthMismatchError, ValueError),
    ("1 vector, 2 docs", lambda s: s.add(["x", "y"], ids=["a", "b"], embeddings=[[1.0, 0.0]]),
     vs.LengthMismatchError, ValueError),
    ("blank document", lambda s: s.add(["x", " "]), vs.EmptyDocumentError, ValueError),
    ("delete all?", lambda s: s.delete(), vs.DeleteFilterError, ValueError),
    ("text and vector", lambda s: s.search("q", embedding=[1.0, 0.0]),
     vs.QueryArgumentError, ValueError),
    ("texts and vectors", lambda s: s.query(["q"], query_embeddings=[[1.0, 0.0]]),
     vs.QueryArgumentError, ValueError),
    ("search two texts", lambda s: s.search(["a", "b"]), vs.QueryTypeError, TypeError),
    ("one flat vector", lambda s: s.query(query_embeddings=[1.0, 0.0]),
     vs.QueryTypeError, TypeError),
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "error", "builtin"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_every_refused_input_is_a_documented_store_error_and_still_its_builtin(
    vectors: VectorStore, call: Any, error: type[VectorStoreError], builtin: type[Exception]
) -> None:
    from o11ylab.errors import O11yLabError

    with pytest.raises(error) as caught:
        call(vectors)
    assert isinstance(caught.value, VectorStoreError)
    assert isinstance(caught.value, O11yLabError)
    assert isinstance(caught.value, builtin)  # code that caught ValueError/TypeError still does
    assert error.__name__ in vs.__all__


def test_the_two_model_not_found_errors_are_told_apart() -> None:
    from o11ylab import ai, models

    # A missing local model folder; the old name is the same class.
    assert models.ModelNotFoundError is models.LocalModelNotFoundError
    assert issubclass(models.LocalModelNotFoundError, FileNotFoundError)
    # An endpoint that does not serve the model: another error, another family.
    assert issubclass(ai.ModelNotFound, ai.AIError)
    assert not issubclass(ai.ModelNotFound, models.LocalModelNotFoundError)
    assert "LocalModelNotFoundError" in (ai.ModelNotFound.__doc__ or "")
    assert "ModelNotFound" in (models.LocalModelNotFoundError.__doc__ or "")


def test_one_embedding_result_for_remote_and_local_embeddings() -> None:
    from o11ylab.ai import EmbeddingResult, embeddings, local_model

    assert local_model.EmbeddingResult is embeddings.EmbeddingResult is EmbeddingResult
    result = EmbeddingResult([[0.6, 0.8]], "m", 2, cost_usd=0.0)
    assert (result.dimensions, len(result)) == (2, 1)


def test_chroma_settings_come_from_config(tmp_path: Path) -> None:
    from o11ylab.config import ConfigError, load_chroma

    settings = load_chroma({"CHROMA_PATH": str(tmp_path), "CHROMA_HOST": "db", "CHROMA_SSL": "1"})
    assert (settings.path, settings.host, settings.port, settings.ssl) == (
        tmp_path,
        "db",
        8000,
        True,
    )
    assert load_chroma({}).path == Path("~/.o11ylab/chroma").expanduser()
    with pytest.raises(ConfigError, match="CHROMA_PORT='0' is not a port"):
        load_chroma({"CHROMA_PORT": "0"})
