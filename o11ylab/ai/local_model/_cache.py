"""One engine per model per process: ``get_local_model`` and ``get_local_embedder``."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from ._embedder import LocalEmbedder
from ._engine import LocalModel

_ENGINES: dict[tuple[str, str], Any] = {}
_ENGINES_LOCK = threading.Lock()


def _shared(kind: str, model: str | Path | None, factory: Any) -> Any:
    key = (kind, str(model) if model is not None else "")
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _ENGINES[key] = factory()
        return engine


def get_local_model(model: str | Path | None = None, **options: Any) -> LocalModel:
    """The process's shared ``LocalModel`` (default: ``LOCAL_MODEL_NAME``, else SmolLM2)."""
    model = model if model is not None else (os.environ.get("LOCAL_MODEL_NAME", "").strip() or None)
    return _shared("chat", model, lambda: LocalModel(model, **options))  # type: ignore[no-any-return]


def get_local_embedder(model: str | Path | None = None, **options: Any) -> LocalEmbedder:
    """The process's shared ``LocalEmbedder`` (default: ``EMBEDDING_MODEL`` or all-MiniLM-L6-v2)."""
    model = model if model is not None else (os.environ.get("EMBEDDING_MODEL", "").strip() or None)
    return _shared("embedding", model, lambda: LocalEmbedder(model, **options))  # type: ignore[no-any-return]
