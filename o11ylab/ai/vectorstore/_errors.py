"""The vector store's errors: all ``VectorStoreError``; bad input is also a ``ValueError``."""

from __future__ import annotations

from ...errors import O11yLabError


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


class OptionError(VectorStoreError, ValueError):
    """A ``VectorStore`` option it cannot use: an unknown distance ``space``, a ``batch_size``
    that is not a positive whole number."""


class EmbedderTypeError(VectorStoreError, TypeError):
    """``embedder=`` is none of: ``"default"``, a model name or folder, a Chroma embedding
    function, or None."""


class NothingToAddError(VectorStoreError, ValueError):
    """``add``/``upsert`` with no documents and no embeddings (or empty lists of them)."""


class DocumentTypeError(VectorStoreError, TypeError):
    """A document that is not a string."""


class EmptyDocumentError(VectorStoreError, ValueError):
    """A blank document to embed: there is nothing to make a vector from."""


class MissingIdError(VectorStoreError, ValueError):
    """A record without an id: vectors stored without documents need ``ids=``, and no id may be
    empty."""


class LengthMismatchError(VectorStoreError, ValueError):
    """``ids``, ``metadatas`` or ``embeddings`` of another length than the records."""


class DeleteFilterError(VectorStoreError, ValueError):
    """``delete()`` with neither ids nor a filter: it would have to guess what to delete."""


class QueryArgumentError(VectorStoreError, ValueError):
    """A search given both a text and a vector to search for."""


class QueryTypeError(VectorStoreError, TypeError):
    """A query of the wrong shape: several texts to ``search()``, one flat vector as
    ``query_embeddings``."""
