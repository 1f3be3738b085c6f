"""What a generation returns (``Generation``) and what it was asked (``_Request``)."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Generation:
    """One generated answer and what it cost in tokens and time."""

    text: str
    model: str
    input_tokens: int
    output_tokens: int
    finish_reason: str  # "stop" (end of sequence or a stop string), "length", or "cancelled"
    time_to_first_token_s: float | None
    duration_s: float

    @property
    def tokens_per_second(self) -> float:
        return self.output_tokens / self.duration_s if self.duration_s > 0 else 0.0


@dataclasses.dataclass
class _Request:
    operation: str
    prompts: list[str]
    messages: list[dict[str, str]] | None
    input_ids: Any
    attention_mask: Any
    input_tokens: list[int]
    max_new_tokens: int
    temperature: float | None
    top_p: float | None
    seed: int | None
    stop: list[str]
