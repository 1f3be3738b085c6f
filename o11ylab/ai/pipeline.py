"""Retrieval-augmented generation as one traced workflow.

    from o11ylab.ai.pipeline import index_documents, ask

    index_documents()                          # the bundled notes, once (re-running is cheap)
    answer = ask("What does traceparent carry?")
    print(answer.answer)
    [s.id for s in answer.sources]             # what the answer was built from

``ask`` runs question -> embed -> retrieve -> build prompt -> chat under one GenAI workflow
span, ``invoke_workflow rag`` (opentelemetry-util-genai's workflow invocation), whose children
are one span per stage::

    invoke_workflow rag
      embeddings {model}        the question, through the instrumented openai SDK
      retrieval {collection}    Chroma, through o11ylab.ai.vectorstore
      rag prompt                which sources went into the prompt, and its size
      chat {model}              the answer, through the instrumented openai SDK

The workflow span carries the totals of its operations: input and output tokens and the
cost (or ``o11ylab.cost.unknown`` when a model has no price). Cell roll-ups count the
operation spans only, so nothing is counted twice. The question and the answer go on the
workflow span only with content capture on.

Vectors come from the same OpenAI-compatible endpoint as chat (the local endpoint serves
all-MiniLM-L6-v2), so the collection is opened without an embedding function of its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from .. import semconv
from .chat import ChatResult, Usage, chat
from .client import InvalidInput, get_client
from .embeddings import embed

if TYPE_CHECKING:
    from .vectorstore import VectorStore

__all__ = [
    "DEFAULT_COLLECTION",
    "Document",
    "RagAnswer",
    "Source",
    "ask",
    "build_prompt",
    "index_documents",
    "load_documents",
    "open_store",
]

DEFAULT_COLLECTION = "o11ylab-docs"
DEFAULT_TOP_K = 3
DEFAULT_MAX_CONTEXT_CHARS = 3000
SYSTEM_PROMPT = (
    "You answer questions about observability using only the context given. "
    "Cite the sources you use by their [id]. If the context does not answer the question, "
    "say that you do not know."
)


# --- documents -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    topic: str
    text: str


def load_documents(path: str | Path | None = None) -> list[Document]:
    """The bundled notes on observability, OpenTelemetry and GPUs (or a file of the same shape:
    ``{"documents": [{"id", "title", "topic", "text"}, ...]}``)."""
    if path is None:
        raw = resources.files("o11ylab").joinpath("data/docs.json").read_text(encoding="utf-8")
        where = "o11ylab/data/docs.json"
    else:
        where = str(path)
        raw = Path(path).read_text(encoding="utf-8")
    data = json.loads(raw)
    documents = []
    for index, item in enumerate(data.get("documents", [])):
        missing = [key for key in ("id", "title", "topic", "text") if not item.get(key)]
        if missing:
            raise ValueError(f"{where}: documents[{index}] has no {', '.join(missing)}.")
        documents.append(Document(item["id"], item["title"], item["topic"], item["text"]))
    if not documents:
        raise ValueError(f"{where} has no documents.")
    return documents


def open_store(collection: str = DEFAULT_COLLECTION, **options: Any) -> VectorStore:
    """The collection the pipeline reads: vectors only come from ``embed()``, never Chroma's."""
    from .vectorstore import VectorStore

    return VectorStore(collection, embedder=None, **options)


def index_documents(
    store: VectorStore | None = None,
    documents: list[Document] | None = None,
    *,
    embedding_model: str | None = None,
    batch_size: int = 64,
    tracer_provider: Any = None,
    meter_provider: Any = None,
) -> int:
    """Embed ``documents`` (default: the bundled set) and upsert them into ``store``.

    Returns how many documents were indexed. Re-running replaces them (ids are stable). The
    spans go to the providers passed, else the global ones (none is installed here).
    """
    providers = {"tracer_provider": tracer_provider, "meter_provider": meter_provider}
    store = store if store is not None else open_store(**providers)
    documents = documents if documents is not None else load_documents()
    tracer = _tracer(tracer_provider)
    with tracer.start_as_current_span(
        f"{semconv.RAG_STAGE_SPAN_PREFIX} index",
        attributes={
            semconv.DB_COLLECTION_NAME: store.name,
            semconv.RAG_CONTEXT_DOCUMENTS: len(documents),
        },
    ):
        vectors = embed(
            [f"{d.title}. {d.text}" for d in documents],
            embedding_model,
            batch_size=batch_size,
            client=get_client(**providers),
        )
        store.upsert(
            [d.text for d in documents],
            ids=[d.id for d in documents],
            metadatas=[
                {"title": d.title, "topic": d.topic, "embedding_model": vectors.model}
                for d in documents
            ],
            embeddings=vectors.vectors,
        )
    return len(documents)


# --- answers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    id: str
    title: str
    topic: str
    score: float
    text: str


@dataclass
class RagAnswer:
    question: str
    answer: str
    sources: list[Source]
    model: str
    usage: Usage
    cost_usd: float | None
    trace_id: str
    chat_result: ChatResult | None = field(default=None, repr=False)

    def __str__(self) -> str:
        cited = ", ".join(f"[{s.id}]" for s in self.sources)
        return f"{self.answer}\n\nSources: {cited}"


def build_prompt(
    question: str, sources: list[Source], max_context_chars: int = DEFAULT_MAX_CONTEXT_CHARS
) -> tuple[str, list[Source]]:
    """The user message for the chat stage, and the sources that fit into it (best first)."""
    used: list[Source] = []
    blocks: list[str] = []
    budget = max_context_chars
    for source in sources:
        block = f"[{source.id}] {source.title}: {source.text}"
        if len(block) > budget:
            if not used and budget > 80:
                block = block[: budget - 1] + "…"  # the best source, shortened, beats none
            else:
                break
        blocks.append(block)
        used.append(source)
        budget -= len(block) + 2
    context = "\n\n".join(blocks)
    return f"Context:\n{context}\n\nQuestion: {question}\nAnswer:", used


def ask(
    question: str,
    *,
    store: VectorStore | None = None,
    top_k: int = DEFAULT_TOP_K,
    where: dict[str, Any] | None = None,
    model: str | None = None,
    embedding_model: str | None = None,
    max_tokens: int = 200,
    temperature: float | None = 0.0,
    max_context_chars: int = DEFAULT_MAX_CONTEXT_CHARS,
    system: str = SYSTEM_PROMPT,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    logger_provider: Any = None,
) -> RagAnswer:
    """Answer ``question`` from the documents in ``store`` (default: the bundled collection).

    The spans go to the providers passed, else the global ones (none is installed here).
    """
    if not isinstance(question, str) or not question.strip():
        raise InvalidInput("The question is empty", hint="Ask something, e.g. 'What is a span?'.")
    providers = {"tracer_provider": tracer_provider, "meter_provider": meter_provider}
    store = store if store is not None else open_store(**providers)
    client = get_client(**providers)
    if store.count() == 0:
        raise InvalidInput(
            f"The collection {store.name!r} at {store.location} has no documents",
            hint="Index some first: o11ylab.ai.pipeline.index_documents(store).",
        )
    from opentelemetry.util.genai.types import InputMessage, OutputMessage, TextPart

    handler = _handler(tracer_provider, meter_provider, logger_provider)
    invocation = handler.workflow(semconv.RAG_WORKFLOW_NAME)
    with invocation:
        invocation.input_messages = [InputMessage(role="user", parts=[TextPart(question)])]
        vectors = embed([question], embedding_model, client=client)
        hits = store.search(embedding=vectors.vectors[0], top_k=top_k, where=where)
        found = [
            Source(
                hit.id,
                str(hit.metadata.get("title", hit.id)),
                str(hit.metadata.get("topic", "")),
                float(hit.score),
                hit.document or "",
            )
            for hit in hits
        ]
        with _tracer(tracer_provider).start_as_current_span(
            f"{semconv.RAG_STAGE_SPAN_PREFIX} prompt"
        ) as span:
            prompt, used = build_prompt(question, found, max_context_chars)
            if span.is_recording():
                span.set_attribute(semconv.RAG_CONTEXT_DOCUMENTS, len(used))
                span.set_attribute(semconv.RAG_SOURCE_IDS, [s.id for s in used])
                span.set_attribute(semconv.RAG_PROMPT_CHARS, len(prompt))
        reply = chat(
            prompt,
            model,
            system=system,
            max_tokens=max_tokens,
            temperature=temperature,
            client=client,
        )
        invocation.output_messages = [
            OutputMessage(
                role="assistant",
                parts=[TextPart(reply.text)],
                finish_reason=reply.finish_reason or "stop",
            )
        ]
        chat_usage = reply.usage or Usage(0, 0)
        usage = Usage(
            vectors.input_tokens + chat_usage.input_tokens,
            chat_usage.output_tokens,
            chat_usage.cached_input_tokens,
        )
        cost = (
            None
            if vectors.cost_usd is None or reply.cost_usd is None
            else vectors.cost_usd + reply.cost_usd
        )
        totals: dict[str, Any] = {
            semconv.GEN_AI_USAGE_INPUT_TOKENS: usage.input_tokens,
            semconv.GEN_AI_USAGE_OUTPUT_TOKENS: usage.output_tokens,
            semconv.RAG_SOURCE_IDS: [s.id for s in used],
            semconv.RAG_SOURCE_COUNT: len(used),
            semconv.GEN_AI_REQUEST_MODEL: reply.model,
        }
        if cost is None:
            totals[semconv.COST_UNKNOWN] = True
        else:
            totals[semconv.GEN_AI_USAGE_COST] = cost
            totals[semconv.GEN_AI_USAGE_COST_CURRENCY] = "USD"
            totals[semconv.GEN_AI_USAGE_COST_SOURCE] = semconv.COST_SOURCE_COMPUTED
        invocation.attributes.update(totals)
        trace_id = format(invocation.span.get_span_context().trace_id, "032x")
    return RagAnswer(
        question=question,
        answer=reply.text,
        sources=used,
        model=reply.model,
        usage=usage,
        cost_usd=cost,
        trace_id=trace_id,
        chat_result=reply,
    )


# --- telemetry plumbing --------------------------------------------------------------------------

# One handler per set of providers (the globals are None, None, None): opentelemetry-util-genai
# builds its instruments when the handler is made.
_HANDLERS: dict[tuple[int, int, int], tuple[Any, ...]] = {}


def _tracer(tracer_provider: Any = None) -> trace.Tracer:
    from .._version import __version__

    return trace.get_tracer(semconv.SCOPE, __version__, tracer_provider)


def _handler(
    tracer_provider: Any = None, meter_provider: Any = None, logger_provider: Any = None
) -> Any:
    """opentelemetry-util-genai's handler for the workflow span, on the providers passed, else
    the global ones (the API's proxies until an application sets them)."""
    key = (id(tracer_provider), id(meter_provider), id(logger_provider))
    entry = _HANDLERS.get(key)
    if entry is None:
        from opentelemetry.util.genai.handler import TelemetryHandler

        from .._version import __version__

        handler = TelemetryHandler(
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            logger_provider=logger_provider,
            instrumentation_scope_name=f"{semconv.SCOPE}.ai.pipeline",
            instrumentation_scope_version=__version__,
        )
        # The providers are kept with it, so that their ids stay theirs.
        entry = _HANDLERS[key] = (handler, tracer_provider, meter_provider, logger_provider)
    return entry[0]
