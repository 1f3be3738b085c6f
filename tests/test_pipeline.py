"""The RAG pipeline end to end: local endpoint (chat + MiniLM) and a real Chroma store on disk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.trace import StatusCode

from o11ylab import semconv
from o11ylab.ai import ContextTooLong, InvalidInput
from o11ylab.ai.pipeline import ask, build_prompt, index_documents, load_documents, open_store
from o11ylab.testing import capture_spans, span_tree

from .ai_support import LocalServer, local_fixture, local_server_fixture  # noqa: F401

pytestmark = pytest.mark.integration

COLLECTION = "rag-test"


@pytest.fixture(scope="module")
def indexed(local_server: LocalServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Chroma folder with the bundled documents, indexed once for this module."""
    from o11ylab.ai.client import reset_clients
    from o11ylab.serve import API_KEY_ENV, LOCAL_ENDPOINT_ENV

    folder = tmp_path_factory.mktemp("chroma")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(LOCAL_ENDPOINT_ENV, local_server.base_url)
        patch.setenv(API_KEY_ENV, local_server.api_key)
        reset_clients()
        with capture_spans() as spans:
            count = index_documents(open_store(COLLECTION, path=folder))
        reset_clients()
    assert count == len(load_documents()) >= 20
    tree = span_tree(spans)
    assert tree[0] == (0, "rag index")
    assert (1, "embeddings all-MiniLM-L6-v2") in tree and (1, f"upsert {COLLECTION}") in tree
    return folder


@pytest.fixture
def store(indexed: Path, local: LocalServer) -> Iterator[object]:
    yield open_store(COLLECTION, path=indexed)


def test_bundled_documents_have_ids_topics_and_text() -> None:
    documents = load_documents()
    assert len({d.id for d in documents}) == len(documents)
    assert {"tracing", "metrics", "genai", "gpu"} <= {d.topic for d in documents}


def test_index_persists_and_reindexing_replaces(indexed: Path, local: LocalServer) -> None:
    store = open_store(COLLECTION, path=indexed)  # a fresh client on the same folder
    assert store.count() == len(load_documents())
    index_documents(store, load_documents()[:3])
    assert store.count() == len(load_documents())


def test_ask_is_one_workflow_span_with_a_child_per_stage(store: object, local: LocalServer) -> None:
    with capture_spans() as spans:
        answer = ask(
            "What does the W3C traceparent header carry?", store=store, top_k=3, max_tokens=8
        )
    assert span_tree(spans) == [
        (0, "invoke_workflow rag"),
        (1, "embeddings all-MiniLM-L6-v2"),
        (1, f"retrieval {COLLECTION}"),
        (1, "rag prompt"),
        (1, f"chat {local.chat_model}"),
    ]
    by_name = {s.name: s for s in spans}
    workflow = by_name["invoke_workflow rag"]
    embedding = by_name["embeddings all-MiniLM-L6-v2"]
    generation = by_name[f"chat {local.chat_model}"]
    assert format(workflow.context.trace_id, "032x") == answer.trace_id

    # The answer and where it came from: real retrieval puts the traceparent note first.
    assert answer.sources[0].id == "w3c-traceparent"
    assert answer.model == local.chat_model and answer.answer == answer.chat_result.text
    assert answer.usage.output_tokens == 8
    assert "[w3c-traceparent]" in str(answer)

    attributes = workflow.attributes
    assert attributes[semconv.GEN_AI_OPERATION_NAME] == semconv.WORKFLOW_OPERATION
    assert attributes[semconv.GEN_AI_WORKFLOW_NAME] == "rag"
    assert (
        attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS]
        == (
            embedding.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS]
            + generation.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS]
        )
        == answer.usage.input_tokens
    )
    assert attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 8
    assert attributes[semconv.GEN_AI_USAGE_COST] == 0.0 == answer.cost_usd
    assert list(attributes[semconv.RAG_SOURCE_IDS]) == [s.id for s in answer.sources]
    prompt_span = by_name["rag prompt"]
    assert prompt_span.attributes[semconv.RAG_CONTEXT_DOCUMENTS] == len(answer.sources)
    # Content capture is off: neither the question nor the answer is on any span.
    for span in spans:
        assert not any("traceparent header carry" in str(v) for v in span.attributes.values())


def test_filters_restrict_the_sources(store: object, local: LocalServer) -> None:
    answer = ask(
        "How is energy measured?", store=store, where={"topic": "gpu"}, top_k=2, max_tokens=2
    )
    assert answer.sources and {s.topic for s in answer.sources} == {"gpu"}


def test_a_cell_running_the_pipeline_counts_each_token_once(
    shell: object, store: object, local: LocalServer
) -> None:
    shell.push({"rag_store": store})  # type: ignore[attr-defined]
    with capture_spans() as spans:
        shell.run_cell_magic(  # type: ignore[attr-defined]
            "traced",
            "rag-cell",
            "from o11ylab.ai.pipeline import ask\n"
            "rag_answer = ask('What is a span?', store=rag_store, max_tokens=3)\n",
        )
    answer = shell.user_ns["rag_answer"]  # type: ignore[attr-defined]
    (cell,) = [s for s in spans if s.name == "rag-cell"]
    assert cell.attributes["o11ylab.cell.input_tokens"] == answer.usage.input_tokens
    assert cell.attributes["o11ylab.cell.output_tokens"] == 3
    assert cell.attributes["o11ylab.cell.cost_usd"] == 0.0


def test_empty_question(store: object, local: LocalServer) -> None:
    with capture_spans() as spans, pytest.raises(InvalidInput, match="question is empty"):
        ask("  ", store=store)
    assert spans == []


def test_empty_collection_says_how_to_fill_it(tmp_path: Path, local: LocalServer) -> None:
    with pytest.raises(InvalidInput, match="index_documents"):
        ask("What is a span?", store=open_store("rag-empty", path=tmp_path))


def test_a_failing_stage_fails_the_workflow_span(store: object, local: LocalServer) -> None:
    with capture_spans() as spans, pytest.raises(ContextTooLong):
        ask("Tell me everything", store=store, top_k=12, max_context_chars=20_000, max_tokens=2)
    workflow = next(s for s in spans if s.name == "invoke_workflow rag")
    assert workflow.status.status_code is StatusCode.ERROR
    assert workflow.attributes[semconv.ERROR_TYPE].endswith("ContextTooLong")
    generation = next(s for s in spans if s.name.startswith("chat "))
    assert generation.attributes[semconv.HTTP_RESPONSE_STATUS_CODE] == 400


def test_vectors_of_another_model_are_refused(tmp_path: Path, local: LocalServer) -> None:
    from o11ylab.ai.vectorstore import DimensionMismatchError

    other = open_store("rag-other-model", path=tmp_path)
    other.upsert(["an 8-dimensional note"], ids=["n1"], embeddings=[[0.1] * 8])
    with pytest.raises(DimensionMismatchError):
        ask("What is a span?", store=other)


def test_prompt_keeps_the_best_sources_that_fit() -> None:
    from o11ylab.ai.pipeline import Source

    sources = [Source(f"d{i}", f"T{i}", "t", 1.0 - i / 10, "x" * 200) for i in range(5)]
    prompt, used = build_prompt("Q?", sources, max_context_chars=500)
    assert [s.id for s in used] == ["d0", "d1"]
    assert prompt.endswith("Question: Q?\nAnswer:") and "[d1]" in prompt and "[d2]" not in prompt
