"""One engine per model and options per process: ``get_local_model`` and ``get_local_embedder``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ._device import _settings, choose_device
from ._embedder import LocalEmbedder
from ._engine import LocalModel

_Engine = TypeVar("_Engine", LocalModel, LocalEmbedder)

_ENGINES: dict[tuple[Any, ...], Any] = {}
_ENGINES_LOCK = threading.Lock()
# Options that leave the loaded engine the same: ``verbose`` prints a start-up line, ``prepare``
# only says whether a missing default model may be prepared first.
_SAME_ENGINE = frozenset({"verbose", "prepare"})


def _option_key(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if type(value).__module__ == "torch":  # a dtype such as torch.float16
        return str(value)
    return ("object", id(value))  # a provider: the cached engine keeps it alive, so its id holds


def _key(kind: str, model: str | Path | None, options: Mapping[str, Any]) -> tuple[Any, ...]:
    """The engine's identity: its kind, its model and the options that shape it, with the
    device resolved (no device and the device ``USE_GPU`` picks are one engine)."""
    shaping = {k: v for k, v in options.items() if k not in _SAME_ENGINE}
    if shaping.get("device") is None:
        shaping["device"] = choose_device()[0]
    return (
        kind,
        str(model) if model is not None else "",
        tuple(sorted((k, _option_key(v)) for k, v in shaping.items())),
    )


def _shared(key: tuple[Any, ...], factory: Callable[[], _Engine]) -> _Engine:
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _ENGINES[key] = factory()
        return engine


def get_local_model(model: str | Path | None = None, **options: Any) -> LocalModel:
    """The process's shared ``LocalModel`` for ``model`` (default: ``LOCAL_MODEL_NAME``, else
    SmolLM2) and ``options`` (``device``, ``dtype``, the providers): another device or dtype is
    another engine."""
    model = model if model is not None else _settings().chat_model
    return _shared(_key("chat", model, options), lambda: LocalModel(model, **options))


def get_local_embedder(model: str | Path | None = None, **options: Any) -> LocalEmbedder:
    """The process's shared ``LocalEmbedder`` for ``model`` (default: ``EMBEDDING_MODEL`` or
    all-MiniLM-L6-v2) and ``options`` (``device``, the providers)."""
    model = model if model is not None else _settings().embedding_model
    return _shared(_key("embedding", model, options), lambda: LocalEmbedder(model, **options))
