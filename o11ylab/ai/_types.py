"""Result types shared by the remote and the in-process paths."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["EmbeddingResult"]


@dataclass
class EmbeddingResult:
    """One vector per input text, in order, with the model, the tokens and the cost.

    ``o11ylab.ai.embed`` returns it (an OpenAI-compatible endpoint; ``responses`` holds the raw
    replies, one per batch) and so does ``LocalEmbedder.embed`` (in-process; cost 0).
    """

    vectors: list[list[float]]
    model: str
    input_tokens: int
    cost_usd: float | None = None  # None: no price is known for the model
    responses: list[Any] = field(default_factory=list, repr=False)

    @property
    def dimensions(self) -> int:
        return len(self.vectors[0]) if self.vectors else 0

    def __len__(self) -> int:
        return len(self.vectors)
