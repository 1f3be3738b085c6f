"""The instrumented AI services: chat, embeddings, vector search, local inference, RAG.

Each module imports its heavy dependencies (openai, chromadb, torch) lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public names -> the module that defines them; imported on first use so that
# ``import o11ylab.ai`` stays cheap. Add yours here.
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

# Built from _LAZY so that a name added there is public at once (hence the noqa).
__all__ = [
    *_LAZY,
    "AsyncChatStream",
    "ChatResult",
    "ChatStream",
    "Usage",
    "achat",
    "chat",
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
