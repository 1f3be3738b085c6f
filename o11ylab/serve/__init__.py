"""``o11ylab serve``: a local OpenAI-compatible endpoint over local models, instrumented.

    o11ylab serve                      # http://127.0.0.1:8008/v1, SmolLM2 + all-MiniLM-L6-v2
    o11ylab serve --model ./my-model --port 9000
    o11ylab serve --host 0.0.0.0 --api-key-file ~/.o11ylab/serve.key   # off loopback a key is required
    O11YLAB_SERVE_API_KEY=... o11ylab serve --host 0.0.0.0              # or from the environment

(``--api-key KEY`` works too, but every local user can read a command line: it warns.)

Routes: ``POST /v1/chat/completions`` (streaming and not; ``usage`` always in a whole answer,
and in a last chunk of a stream when ``stream_options.include_usage`` asks for it),
``POST /v1/embeddings`` (384-dimension MiniLM vectors, float or base64), ``GET /v1/models``,
``GET /health`` and ``GET /metrics`` (Prometheus text of this server's metrics).

Every request is one SERVER span that continues the caller's trace from its ``traceparent``
header; the generation inside it is the engine's ``chat {model}`` span (see
``o11ylab.ai.local_model``). The GenAI model-server metrics ``gen_ai.server.request.duration``,
``gen_ai.server.time_to_first_token`` and ``gen_ai.server.time_per_output_token`` are
recorded per request. Requests run on a thread pool and take turns on the model's lock, so two
threads are never inside one model. Errors are OpenAI-style JSON with the matching status
(unknown model 404 ``model_not_found``, bad body 400, context too long 400
``context_length_exceeded``, wrong key 401); an unexpected failure is a 500 whose body names
the exception type and never carries a traceback.

From Python: ``ensure_local_endpoint()`` returns a base URL ending in ``/v1`` (the healthy
``O11YLAB_LOCAL_ENDPOINT`` if set, else a server started for this process and stopped at
exit); ``LocalEndpoint`` is the same as a context manager for runs that own their server.

Layout: ``_config`` (a server's options), ``_errors`` (OpenAI-style errors and the request
limits), ``_schema`` (request bodies), ``_gate`` (loopback Host check, API key),
``_bodylimit``, ``_telemetry`` (server spans and metrics), ``_sse`` (streamed chunks), ``_app``
(``create_app`` and the routes), ``_cli`` (the command) and ``_launcher`` (starting one from
Python). Only ``_app`` and ``_cli.serve`` import the web stack, and only when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..telemetry import is_loopback
from ._cli import add_arguments, api_key_from, max_body_bytes_from, run_command, serve
from ._config import (
    API_KEY_ENV,
    DEFAULT_HOST,
    DEFAULT_MAX_BODY_MB,
    DEFAULT_PORT,
    LOCAL_ENDPOINT_ENV,
    MAX_BODY_ENV,
    START_TIMEOUT_ENV,
    ServeConfig,
)
from ._errors import (
    MAX_ATTRIBUTE_CHARS,
    MAX_EMBEDDING_INPUTS,
    MAX_STOP_CHARS,
    MAX_STOP_SEQUENCES,
    OTHER,
    OpenAIError,
)
from ._launcher import EndpointError, LocalEndpoint, ensure_local_endpoint, new_launch_key

if TYPE_CHECKING:
    from ._app import ServeApp, create_app

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_HOST",
    "DEFAULT_MAX_BODY_MB",
    "DEFAULT_PORT",
    "LOCAL_ENDPOINT_ENV",
    "MAX_ATTRIBUTE_CHARS",
    "MAX_BODY_ENV",
    "MAX_EMBEDDING_INPUTS",
    "MAX_STOP_CHARS",
    "MAX_STOP_SEQUENCES",
    "OTHER",
    "START_TIMEOUT_ENV",
    "EndpointError",
    "LocalEndpoint",
    "OpenAIError",
    "ServeApp",
    "ServeConfig",
    "add_arguments",
    "api_key_from",
    "create_app",
    "ensure_local_endpoint",
    "is_loopback",
    "max_body_bytes_from",
    "new_launch_key",
    "run_command",
    "serve",
]

# The endpoint ensure_local_endpoint() started for this process (see _launcher).
_SHARED: LocalEndpoint | None = None


def __getattr__(name: str) -> Any:
    # The app pulls in FastAPI and pydantic: only when asked for, so the launcher (what a
    # kernel and `o11ylab run` import) stays light.
    if name in ("create_app", "ServeApp"):
        from . import _app

        return getattr(_app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
