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

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap

from .. import semconv
from .._compat import (
    OPENAI_CLIENT_MODULE,
    OPENAI_SEND_METHODS,
    current_context,
    raw_attributes,
    set_attributes,
    span_in,
    w3c_headers,
)

__all__ = ["OpenAIHTTPInstrumentor"]


# Span ids of GenAI spans whose last send raised (a timeout, a refused connection): the SDK's
# next attempt under the same span is a retry. Rarely more than a few; bounded all the same.
_FAILED: dict[int, bool] = {}
_FAILED_MAX = 1024


def _before(request: Any) -> Any:
    """Trace context onto the request; back, the GenAI span it is sent for, or None.

    One read of the current context serves both (issue 13: the API's way, ``inject`` and
    ``get_current_span`` twice, was ~30 Python calls a chat call). The retry header is read
    only when the span already saw an attempt: a response, or a send that raised."""
    context = current_context()
    span = w3c_headers(context, request.headers) if request is not None else span_in(context)
    if span is None or not span.is_recording():
        return None
    attributes = raw_attributes(span)
    if attributes.get(semconv.GEN_AI_OPERATION_NAME) not in semconv.ROLLUP_OPERATIONS:
        return None
    previous = attributes.get(semconv.HTTP_RESPONSE_STATUS_CODE)
    if request is not None and (
        previous is not None or (_FAILED and _FAILED.pop(span.get_span_context().span_id, False))
    ):
        _retried(span, request, previous)
    return span


def _retried(span: Any, request: Any, previous: Any) -> None:
    """A ``retry`` event and ``http.request.resend_count`` (the SDK numbers its attempts in
    ``x-stainless-retry-count``), with the status the attempt before got, if any."""
    try:
        count = int(request.headers.get("x-stainless-retry-count") or 0)
    except ValueError:
        return
    if count <= 0:
        return
    event: dict[str, Any] = {semconv.HTTP_REQUEST_RESEND_COUNT: count}
    if previous is not None:
        event[semconv.HTTP_RESPONSE_STATUS_CODE] = previous
    span.add_event(semconv.RETRY_EVENT, event)
    span.set_attribute(semconv.HTTP_REQUEST_RESEND_COUNT, count)


def _failed(span: Any) -> None:
    if len(_FAILED) >= _FAILED_MAX:
        _FAILED.clear()
    _FAILED[span.get_span_context().span_id] = True


def _send(wrapped: Any, _instance: Any, args: Any, kwargs: Any) -> Any:
    span = _before(args[0] if args else kwargs.get("request"))
    try:
        response = wrapped(*args, **kwargs)
    except BaseException:
        if span is not None:
            _failed(span)
        raise
    if span is not None:
        set_attributes(span, {semconv.HTTP_RESPONSE_STATUS_CODE: response.status_code})
    return response


async def _send_async(wrapped: Any, _instance: Any, args: Any, kwargs: Any) -> Any:
    span = _before(args[0] if args else kwargs.get("request"))
    try:
        response = await wrapped(*args, **kwargs)
    except BaseException:
        if span is not None:
            _failed(span)
        raise
    if span is not None:
        set_attributes(span, {semconv.HTTP_RESPONSE_STATUS_CODE: response.status_code})
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
