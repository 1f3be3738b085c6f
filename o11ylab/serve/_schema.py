"""The request bodies, as pydantic models: FastAPI validates against them and the OpenAPI
schema (which the schema fuzz test reads) is made from them. Unknown fields are allowed, as
OpenAI's clients send fields this server ignores."""

# No `from __future__ import annotations`: pydantic and FastAPI read the annotations at run time.
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ChatRequest", "EmbeddingRequest", "Message", "StreamOptions"]


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[Any] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[Message]
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: str | None = "float"
    dimensions: int | None = None
