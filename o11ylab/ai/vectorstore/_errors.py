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
