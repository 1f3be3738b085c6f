"""o11ylab: OpenTelemetry traces, metrics and logs for AI work in Jupyter.

In a notebook::

    %load_ext o11ylab

    %%traced embed-docs --attr team=search
    vectors = embed(docs)

    %o11y trace

Everything here imports lazily, so ``%load_ext o11ylab`` stays fast.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import MissingDependency, O11yLabError

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from .extension import O11yLabExtension
    from .traceview import TraceView

__all__ = [
    "MissingDependency",
    "O11yLabError",
    "__version__",
    "init",
    "load_ipython_extension",
    "recent_spans",
    "recent_trace",
    "span",
    "spans_df",
    "unload_ipython_extension",
]

_EXTENSIONS: dict[int, O11yLabExtension] = {}


def load_ipython_extension(ipython: Any, *, quiet: bool = False) -> None:
    """``%load_ext o11ylab``: start telemetry, register ``%%traced`` / ``%o11y`` and the hooks,
    and say in one line where the telemetry goes (``quiet``: say nothing, as ``o11ylab run``
    does when it loads the extension into a notebook that never asked for it)."""
    if id(ipython) in _EXTENSIONS:
        return  # loading twice does nothing twice
    from .extension import O11yLabExtension

    extension = O11yLabExtension(ipython)
    try:
        extension.load()
    except BaseException:
        extension.unload()  # what was installed before the failure comes off again
        raise
    _EXTENSIONS[id(ipython)] = extension
    if not quiet:
        print(extension.describe())


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext o11ylab``: remove every hook and magic, stop /metrics, flush."""
    extension = _EXTENSIONS.pop(id(ipython), None)
    if extension is not None:
        extension.unload()


def init(*, local_endpoint: bool = True, hardware: bool = True) -> None:
    """Trace a plain Python process or script the way ``%load_ext o11ylab`` traces a kernel.

    Starts telemetry from the environment (``OTEL_*`` / ``O11YLAB_*``), activates every
    installed GenAI instrumentor (each when its library is first imported), puts cost and,
    with ``hardware``, GPU/CPU attribution on GenAI spans, and, with ``local_endpoint`` and no
    ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` set, points the openai SDK at the local endpoint.
    Idempotent. Telemetry is flushed when the process exits.
    """
    from . import activation
    from . import hardware as hw
    from .config import ConfigError, load_all
    from .telemetry import get_telemetry

    try:
        telemetry = get_telemetry(load_all().telemetry)  # every section checked first
    except ConfigError as exc:
        raise ConfigError(f"o11ylab: {exc}") from None
    activation.activate(telemetry, local_endpoint=local_endpoint)
    if hardware:
        hw.attach(telemetry)


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[Span]:
    """A span around a block, nested under the current cell; works with ``await`` inside.

    It uses the global tracer provider (o11ylab's after ``%load_ext o11ylab`` or
    ``o11ylab.init()``) and installs nothing: in a process with no provider it is a no-op span.
    """
    from opentelemetry import trace

    from . import semconv

    tracer = trace.get_tracer(semconv.SCOPE, __version__)
    with tracer.start_as_current_span(name, attributes=attributes or None) as s:
        yield s


def recent_spans() -> list[dict[str, Any]]:
    """Recently ended spans of this process as flat records (oldest first)."""
    from .telemetry import peek_telemetry
    from .traceview import span_record

    telemetry = peek_telemetry()
    return [] if telemetry is None else [span_record(s) for s in telemetry.buffer.snapshot()]


def recent_trace(trace_id: str | None = None, whole: bool = False) -> TraceView:
    """The last traced cell and everything under it (or a whole trace) as a ``TraceView``."""
    from .traceview import TraceView, subtree

    records = recent_spans()
    if trace_id is None:
        cells = [r for r in records if r["attributes"].get("jupyter.cell.source.sha256")]
        if not cells:
            return TraceView([])
        root = cells[-1]
        trace_id = root["trace_id"]
        if not whole:
            return TraceView(subtree(records, root), title=f"trace {trace_id}")
    return TraceView([r for r in records if r["trace_id"] == trace_id], title=f"trace {trace_id}")


def spans_df(raw: bool = False) -> Any:
    """Recent spans as a pandas DataFrame, one row per span: a readable table, or with ``raw``
    every field and every attribute as its own column."""
    from .traceview import spans_dataframe

    return spans_dataframe(recent_spans(), raw=raw)
