"""The openai SDK's HTTP exchange, for every client: trace context out, status and retries in.

The official GenAI instrumentation makes the ``chat`` / ``embeddings`` spans but does not
propagate them: a server never learns which trace its request belongs to. This instrumentor
wraps the SDK's one send method (``SyncAPIClient._send_request`` and its async twin), so that
for every client, the user's own ``openai.OpenAI()`` and those built by Chroma or LangChain
included:

- the W3C ``traceparent`` (and ``tracestate``) of the current span goes out on the request, so
  a server that continues traces (``o11ylab serve``, vLLM, a gateway) joins the caller's trace;
- the GenAI span current while the request is sent gets ``http.response.status_code``, and a
  ``retry`` event plus ``http.request.resend_count`` for each retry the SDK makes (the SDK
  numbers its attempts in ``x-stainless-retry-count``).

Only the instrumentation's own call spans are touched: a workflow span that happens to be
current while a helper request (say, ``/v1/models``) goes out is left alone. Registered under
``opentelemetry_instrumentor`` as ``openai_http``; ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=
openai_http`` turns it off.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.propagate import inject

from .. import semconv
from .._compat import OPENAI_CLIENT_MODULE, OPENAI_SEND_METHODS, raw_attributes, set_attributes

__all__ = ["OpenAIHTTPInstrumentor"]


def _genai_span() -> Any:
    span = trace.get_current_span()
    if not span.is_recording():
        return None
    operation = raw_attributes(span).get(semconv.GEN_AI_OPERATION_NAME)
    return span if operation in semconv.ROLLUP_OPERATIONS else None


def on_request(request: Any) -> None:
    inject(request.headers)
    retry = request.headers.get("x-stainless-retry-count")
    if retry and retry != "0":
        span = _genai_span()
        if span is not None:
            try:
                count = int(retry)
            except ValueError:
                return
            previous = raw_attributes(span).get(semconv.HTTP_RESPONSE_STATUS_CODE)
            event: dict[str, Any] = {semconv.HTTP_REQUEST_RESEND_COUNT: count}
            if previous is not None:
                event[semconv.HTTP_RESPONSE_STATUS_CODE] = previous
            span.add_event(semconv.RETRY_EVENT, event)
            span.set_attribute(semconv.HTTP_REQUEST_RESEND_COUNT, count)


def on_response(response: Any) -> None:
    span = _genai_span()
    if span is not None:
        set_attributes(span, {semconv.HTTP_RESPONSE_STATUS_CODE: response.status_code})


def _send(wrapped: Any, _instance: Any, args: Any, kwargs: Any) -> Any:
    request = args[0] if args else kwargs.get("request")
    if request is not None:
        on_request(request)
    response = wrapped(*args, **kwargs)
    on_response(response)
    return response


async def _send_async(wrapped: Any, _instance: Any, args: Any, kwargs: Any) -> Any:
    request = args[0] if args else kwargs.get("request")
    if request is not None:
        on_request(request)
    response = await wrapped(*args, **kwargs)
    on_response(response)
    return response


class OpenAIHTTPInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Trace context on every openai SDK request; status and retries on its GenAI span."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("openai >= 1.0",)

    def _instrument(self, **kwargs: Any) -> None:
        from wrapt import wrap_function_wrapper

        sync, asynchronous = OPENAI_SEND_METHODS
        wrap_function_wrapper(OPENAI_CLIENT_MODULE, sync, _send)
        wrap_function_wrapper(OPENAI_CLIENT_MODULE, asynchronous, _send_async)

    def _uninstrument(self, **kwargs: Any) -> None:
        import importlib

        base = importlib.import_module(OPENAI_CLIENT_MODULE)
        for method in OPENAI_SEND_METHODS:
            owner, name = method.split(".")
            unwrap(getattr(base, owner), name)
