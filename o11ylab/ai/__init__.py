"""The instrumented AI services: chat, embeddings, vector search, local inference, RAG.

Each module imports its heavy dependencies (openai, chromadb, torch) lazily.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # What the lazy names are, for type checkers; at run time they stay lazy (__getattr__).
    from .client import (
        AIError,
        AuthenticationFailed,
        BadRequest,
        ContextTooLong,
        Endpoint,
        EndpointTimeout,
        EndpointUnreachable,
        InvalidInput,
        ModelNotFound,
        RateLimited,
        ServerError,
        get_async_client,
        get_client,
        instrument,
        resolve_endpoint,
        uninstrument,
    )
    from .embeddings import (
        EmbeddingResult,
        aembed,
        embed,
    )
    from .pipeline import (
        RagAnswer,
        Source,
        ask,
        index_documents,
        load_documents,
    )
    from .vectorstore import (
        ChromaConnectionError,
        CollectionNameError,
        DeleteFilterError,
        DimensionMismatchError,
        DocumentTypeError,
        DuplicateIdError,
        EmbedderTypeError,
        EmptyDocumentError,
        EmptyQueryError,
        Hit,
        LengthMismatchError,
        MissingIdError,
        ModelMismatchError,
        NoEmbedderError,
        NothingToAddError,
        OptionError,
        QueryArgumentError,
        QueryTypeError,
        Record,
        StorePathError,
        TopKError,
        VectorStore,
        VectorStoreError,
    )

# Public names -> the module that defines them; imported on first use so that
# ``import o11ylab.ai`` stays cheap. Add yours here, to __all__, and to the TYPE_CHECKING
# imports above (tests/test_typing.py checks the three agree).
_LAZY: dict[str, str] = {
    # chat and embeddings over the instrumented openai SDK (chat is imported below)
    "embed": "embeddings",
    "aembed": "embeddings",
    "EmbeddingResult": "embeddings",
    # clients, endpoint choice, instrumentation and errors
    "get_client": "client",
    "get_async_client": "client",
    "resolve_endpoint": "client",
    "Endpoint": "client",
    "instrument": "client",
    "uninstrument": "client",
    "AIError": "client",
    "InvalidInput": "client",
    "AuthenticationFailed": "client",
    "ModelNotFound": "client",
    "RateLimited": "client",
    "ServerError": "client",
    "EndpointTimeout": "client",
    "EndpointUnreachable": "client",
    "ContextTooLong": "client",
    "BadRequest": "client",
    # the vector store on Chroma
    **dict.fromkeys(
        (
            "VectorStore",
            "Hit",
            "Record",
            "VectorStoreError",
            "CollectionNameError",
            "StorePathError",
            "ChromaConnectionError",
            "NoEmbedderError",
            "DimensionMismatchError",
            "ModelMismatchError",
            "DuplicateIdError",
            "EmptyQueryError",
            "TopKError",
            "DeleteFilterError",
            "DocumentTypeError",
            "EmbedderTypeError",
            "EmptyDocumentError",
            "LengthMismatchError",
            "MissingIdError",
            "NothingToAddError",
            "OptionError",
            "QueryArgumentError",
            "QueryTypeError",
        ),
        "vectorstore",
    ),
    # the RAG pipeline
    "ask": "pipeline",
    "RagAnswer": "pipeline",
    "Source": "pipeline",
    "index_documents": "pipeline",
    "load_documents": "pipeline",
}

# The function `chat` shares its name with its module, and importing a submodule sets the
# package attribute of that name, so it cannot be lazy: importing it here is cheap (no openai).
from .chat import AsyncChatStream, ChatResult, ChatStream, Usage, achat, chat  # noqa: E402

# Every public name, written out so that type checkers and linters read it; a test checks it
# against _LAZY (tests/test_typing.py).
__all__ = [
    "AIError",
    "AsyncChatStream",
    "AuthenticationFailed",
    "BadRequest",
    "ChatResult",
    "ChatStream",
    "ChromaConnectionError",
    "CollectionNameError",
    "ContextTooLong",
    "DeleteFilterError",
    "DimensionMismatchError",
    "DocumentTypeError",
    "DuplicateIdError",
    "EmbedderTypeError",
    "EmbeddingResult",
    "EmptyDocumentError",
    "EmptyQueryError",
    "Endpoint",
    "EndpointTimeout",
    "EndpointUnreachable",
    "Hit",
    "InvalidInput",
    "LengthMismatchError",
    "MissingIdError",
    "ModelMismatchError",
    "ModelNotFound",
    "NoEmbedderError",
    "NothingToAddError",
    "OptionError",
    "QueryArgumentError",
    "QueryTypeError",
    "RagAnswer",
    "RateLimited",
    "Record",
    "ServerError",
    "Source",
    "StorePathError",
    "TopKError",
    "Usage",
    "VectorStore",
    "VectorStoreError",
    "achat",
    "aembed",
    "ask",
    "chat",
    "embed",
    "get_async_client",
    "get_client",
    "index_documents",
    "instrument",
    "load_documents",
    "resolve_endpoint",
    "uninstrument",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'o11ylab.ai' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
