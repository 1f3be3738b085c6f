"""Collection names Chroma accepts, checked before Chroma is asked."""

from __future__ import annotations

import re

from ._errors import CollectionNameError

_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{1,510})[A-Za-z0-9]$")
_IPV4_RE = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")


def check_collection_name(name: object) -> str:
    """``name`` if Chroma accepts it as a collection name, else ``CollectionNameError``."""
    if not isinstance(name, str):
        raise CollectionNameError(f"A collection name must be a string, not {type(name).__name__}.")
    problem = None
    if not 3 <= len(name) <= 512:
        problem = f"it has {len(name)} characters; Chroma needs 3 to 512"
    elif not _NAME_RE.match(name):
        problem = (
            "Chroma allows only letters, digits, '.', '_' and '-', starting and ending with a "
            "letter or digit"
        )
    elif ".." in name:
        problem = "Chroma does not allow two periods in a row"
    elif _IPV4_RE.match(name):
        problem = "Chroma does not allow a name that looks like an IP address"
    if problem:
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise CollectionNameError(
            f"Collection name {shown!r} cannot be used: {problem}. "
            "Pick a name like 'docs', 'rag-notes' or 'papers_v2'."
        )
    return name
