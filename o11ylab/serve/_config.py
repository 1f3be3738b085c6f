"""The options of one ``o11ylab serve`` server (what ``create_app`` and ``serve`` take)."""

from __future__ import annotations

import dataclasses

from ..config import SERVE_DEFAULT_MAX_BODY_MB, SERVE_DEFAULT_MAX_QUEUE

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8008
API_KEY_ENV = "O11YLAB_SERVE_API_KEY"
MAX_BODY_ENV = "O11YLAB_SERVE_MAX_BODY_MB"
MAX_QUEUE_ENV = "O11YLAB_SERVE_MAX_QUEUE"
LOCAL_ENDPOINT_ENV = "O11YLAB_LOCAL_ENDPOINT"
START_TIMEOUT_ENV = "O11YLAB_SERVE_START_TIMEOUT"
DEFAULT_MAX_BODY_MB = int(SERVE_DEFAULT_MAX_BODY_MB)


@dataclasses.dataclass
class ServeConfig:
    model: str | None = None  # None: LOCAL_MODEL_NAME, else the default chat model
    embedding_model: str | None = None  # None: EMBEDDING_MODEL, else all-MiniLM-L6-v2
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key: str | None = None
    device: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_MB * 1024 * 1024  # 0: no limit
    max_queue: int = SERVE_DEFAULT_MAX_QUEUE  # generations waiting or running; more get a 503
