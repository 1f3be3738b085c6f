"""Folders and files that may hold prompts, completions and documents are the user's alone.

Under the usual umask 022 a plain ``mkdir`` or ``open`` makes folders and files every local
user can read. A run folder holds the OTLP-JSON files (prompts and completions when content
capture is on), the executed notebooks and the summary; a Chroma folder holds the documents.
So what o11ylab creates is 0700 (folders) and 0600 (files). A folder that already exists keeps
the mode its owner gave it: sharing one on purpose stays possible.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = ["PRIVATE_FILE", "PRIVATE_FOLDER", "private_folder", "write_private"]

PRIVATE_FOLDER = 0o700
PRIVATE_FILE = 0o600


def private_folder(path: Path) -> Path:
    """``path.mkdir(parents=True, exist_ok=True)``, each folder it creates made 0700.

    Raises as ``mkdir`` does: ``FileExistsError`` when ``path`` is a file, ``OSError`` when a
    folder cannot be made.
    """
    missing: list[Path] = []
    current = path
    while not current.exists() and current.parent != current:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_FOLDER)
        except FileExistsError:
            pass  # made meanwhile by another process, which chose its mode
    if path.exists() and not path.is_dir():
        raise FileExistsError(errno.EEXIST, "exists and is not a folder", str(path))
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, which is created 0600 (an existing file keeps its mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
