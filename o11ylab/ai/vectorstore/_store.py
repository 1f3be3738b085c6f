"""``VectorStore``: one Chroma collection, its writes, reads and searches."""

from __future__ import annotations

import hashlib
import numbers
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ._client import open_client
from ._embedders import (
    _default_folder,
    _Embedder,
    _local_embedder,
    _readable,
    _resolve_embedder,
    _Saved,
    _saved_configuration,
)
from ._errors import (
    CollectionNameError,
    DeleteFilterError,
    DimensionMismatchError,
    DocumentTypeError,
    DuplicateIdError,
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
    TopKError,
    VectorStoreError,
)
from ._instrument import _ensure_instrumented
from ._names import check_collection_name
from ._results import Hit, Record

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection
    from chromadb.api.types import Space, WhereDocument

DEFAULT_COLLECTION = "o11ylab"
DEFAULT_BATCH_SIZE = 256
DEFAULT_TOP_K = 4
SPACES = ("cosine", "l2", "ip")

_DIMENSION_RE = re.compile(r"dimension of (\d+), got (\d+)")


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
        tracer_provider: Any = None,
        meter_provider: Any = None,
    ) -> None:
        self.name = check_collection_name(collection)
        if space is not None and space not in SPACES:
            raise OptionError(f"space={space!r} is not one of {', '.join(SPACES)}.")
        self.batch_size = self._check_batch_size(batch_size)
        self.space = space or "cosine"
        # Chroma reads this when a client is built; it is a no-op in 1.5 but documents intent.
        os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
        # Used when this store switches an instrumentor on (o11ylab.ai._otel).
        self._providers = {"tracer_provider": tracer_provider, "meter_provider": meter_provider}
        _ensure_instrumented(tracer_provider, meter_provider)

        if client is not None:
            self._client = client
            self.location = f"(your chromadb {type(client).__name__})"
        else:
            self._client, self.location = open_client(path, host, port, ssl)

        self._embedder = _resolve_embedder(embedder, self._providers)
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
            raise OptionError(f"batch_size must be a whole number ≥ 1, not {batch_size!r}.")
        return batch_size

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
            raise NothingToAddError("Nothing to add: pass documents, embeddings, or both.")
        n = len(docs) if docs is not None else len(embeddings)
        if n == 0:
            raise NothingToAddError("Nothing to add: the list of documents or embeddings is empty.")
        if docs is not None:
            bad = [i for i, d in enumerate(docs) if not isinstance(d, str)]
            if bad:
                raise DocumentTypeError(
                    f"documents must be strings; item {bad[0]} is {type(docs[bad[0]]).__name__}."
                )
        if ids is None:
            if docs is None:
                raise MissingIdError("Pass ids=[...] with embeddings that have no documents.")
            id_list = [hashlib.sha256(d.encode("utf-8")).hexdigest()[:32] for d in docs]
        else:
            id_list = [ids] if isinstance(ids, str) else [str(i) for i in ids]
        if len(id_list) != n:
            raise LengthMismatchError(
                f"Got {len(id_list)} ids for {n} records: give one id per record."
            )
        if any(not i for i in id_list):
            raise MissingIdError("An id is empty: every record needs a non-empty id.")
        self._refuse_repeats(id_list, generated=ids is None)
        metas: list[Any] | None = None
        if metadatas is not None:
            metas = [dict(m) if m else None for m in metadatas]
            if len(metas) != n:
                raise LengthMismatchError(
                    f"Got {len(metas)} metadatas for {n} records: give one each."
                )
            if all(m is None for m in metas):
                metas = None
        vectors = None
        if embeddings is not None:
            if len(embeddings) != n:
                raise LengthMismatchError(
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
                raise EmptyDocumentError(
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
            embedder = _local_embedder(
                None if same_as_default else self._saved_model, self._providers
            )
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
            raise DeleteFilterError(
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
            raise QueryArgumentError("Pass a query text or an embedding, not both.")
        if query is not None and not isinstance(query, str):
            raise QueryTypeError(
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
            raise QueryArgumentError("Pass query_texts or query_embeddings, not both.")
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
                raise QueryTypeError(
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
