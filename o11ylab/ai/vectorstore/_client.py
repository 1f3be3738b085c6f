"""Where the vectors live: a local folder (``PersistentClient``) or a Chroma server."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..._files import private_folder
from ...config import ChromaSettings, ConfigError, load_chroma
from ._errors import ChromaConnectionError, StorePathError

if TYPE_CHECKING:
    from chromadb.api import ClientAPI

DEFAULT_PORT = 8000


def _settings() -> ChromaSettings:
    """The chroma section of o11ylab's settings; a bad CHROMA_PORT is the store's connection
    error, as it has always been."""
    try:
        return load_chroma()
    except ConfigError as exc:
        if str(exc).startswith("CHROMA_PORT"):
            raise ChromaConnectionError(str(exc)) from None
        raise


def default_path() -> Path:
    """Where the local store lives: ``CHROMA_PATH`` or ``~/.o11ylab/chroma``."""
    return _settings().path


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


def open_client(
    path: str | os.PathLike[str] | None,
    host: str | None,
    port: int | None,
    ssl: bool | None,
) -> tuple[ClientAPI, str]:
    """(the chromadb client, where it keeps the vectors): a Chroma server when ``host`` or
    ``CHROMA_HOST`` is set, else a ``PersistentClient`` on ``path`` (else ``default_path()``)."""
    settings = _settings()
    host = host or settings.host
    if host:
        port = port or settings.port
        if ssl is None:
            ssl = settings.ssl
        return http_client(host, port, ssl), f"{'https' if ssl else 'http'}://{host}:{port}"
    folder = _ensure_writable(Path(path).expanduser() if path else settings.path)
    return persistent_client(folder), str(folder)


def persistent_client(folder: Path) -> ClientAPI:
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


def http_client(host: str, port: int, ssl: bool) -> ClientAPI:
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
