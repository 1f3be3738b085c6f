"""What reads and searches return: ``Record`` and ``Hit``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Record:
    """One stored item: its id, its text (None when only a vector was stored), its metadata."""

    id: str
    document: str | None
    metadata: dict[str, Any]


@dataclass(slots=True)
class Hit(Record):
    """One search result. ``score`` grows with similarity (cosine similarity in a cosine space)."""

    distance: float
    score: float
