"""Cells as spans: the span life cycle shared by ``%%traced`` and ``%o11y autotrace``.

A cell span's parent is the ``TRACEPARENT`` the kernel inherited (``o11ylab run`` sets it, so
every cell of every notebook joins the run's trace), otherwise it starts a trace of its own.
While it is open it is the current span, so anything the cell calls nests under it, in any
thread that carries the context. When it ends it gets the roll-ups of what ran under it
(span and error counts, tokens, cost), feeds the cell metrics and wakes the flusher.
"""

from __future__ import annotations

import hashlib
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.trace import Status, StatusCode

from . import semconv
from .telemetry import Rollup, Telemetry

__all__ = ["CellObserver", "CellRun", "CellSummary", "CellTracer", "observers"]


class CellObserver(Protocol):
    """Something that measures a cell (the hardware sampler does): one call at each end."""

    def cell_started(self, span: trace.Span) -> Any: ...

    def cell_ended(self, span: trace.Span, state: Any) -> dict[str, str]:
        """Set attributes on the span; return summary fragments, label -> text."""
        ...


observers: list[CellObserver] = []


@dataclass
class CellSummary:
    name: str
    trace_id: str
    duration_s: float
    spans: int
    errors: int
    error: str | None
    sums: dict[str, float] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        mark = "✗" if self.error else "✓"
        parts = [f"{mark} {self.name}", _duration(self.duration_s)]
        if self.error:
            parts[0] += f" failed ({self.error})"
        parts.append(f"{self.spans} span{'s' if self.spans != 1 else ''} inside")
        tokens_in = self.sums.get(semconv.GEN_AI_USAGE_INPUT_TOKENS)
        tokens_out = self.sums.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS)
        if tokens_in or tokens_out:
            parts.append(f"{int(tokens_in or 0)} in / {int(tokens_out or 0)} out tokens")
        cost = self.sums.get(semconv.GEN_AI_USAGE_COST)
        if cost is not None:
            parts.append(f"${cost:.6f}")
        parts.extend(self.extra.values())
        parts.append(f"trace {self.trace_id}")
        return " · ".join(parts)


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"


def stacktrace(error: BaseException, with_source: bool) -> str:
    """The exception's traceback; without the quoted code lines unless content capture is on."""
    if with_source:
        return "".join(traceback.format_exception(error))
    lines = ["Traceback (most recent call last):\n"]
    for frame in traceback.extract_tb(error.__traceback__):
        lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}\n')
    lines.extend(traceback.format_exception_only(error))
    return "".join(lines)


def source_hash(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()


class CellRun:
    """One open cell span. ``end()`` exactly once."""

    def __init__(
        self,
        telemetry: Telemetry,
        name: str,
        attributes: dict[str, Any],
        parent: otel_context.Context | None,
    ) -> None:
        self.telemetry = telemetry
        self.name = name
        self.started = time.perf_counter()
        self.span = telemetry.tracer.start_span(name, context=parent, attributes=attributes)
        self._token = otel_context.attach(trace.set_span_in_context(self.span))
        self.rollup: Rollup = telemetry.rollups.open(self.span.get_span_context().span_id)
        self._observed = [(o, _safe(o.cell_started, self.span)) for o in observers]

    def end(self, error: BaseException | None) -> CellSummary:
        span = self.span
        try:
            otel_context.detach(self._token)
        except Exception:  # noqa: BLE001 - detached from another context (a cell that swapped contexts)
            pass
        duration = time.perf_counter() - self.started
        extra: dict[str, str] = {}
        for observer, state in self._observed:
            extra.update(_safe(observer.cell_ended, span, state) or {})
        rollup = self.rollup
        span.set_attribute(semconv.CELL_SPAN_COUNT, rollup.spans)
        span.set_attribute(semconv.CELL_ERROR_COUNT, rollup.errors)
        for source, target in semconv.ROLLUP_SUMS:
            if source in rollup.sums:
                span.set_attribute(target, rollup.sums[source])
        error_name = None
        if error is not None:
            error_name = type(error).__name__
            # A traceback quotes the cell's source lines: content, like the source itself.
            with_source = self.telemetry.settings.capture_content.on_spans
            span.record_exception(
                error, attributes={"exception.stacktrace": stacktrace(error, with_source)}
            )
            span.set_attribute(semconv.ERROR_TYPE, type(error).__qualname__)
            span.set_status(Status(StatusCode.ERROR, f"{error_name}: {error}"[:500]))
        span.end()
        self.telemetry.rollups.close(rollup)
        self.telemetry.record_cell(duration, error is not None)
        self.telemetry.request_flush()
        return CellSummary(
            name=self.name,
            trace_id=format(span.get_span_context().trace_id, "032x"),
            duration_s=duration,
            spans=rollup.spans,
            errors=rollup.errors,
            error=error_name,
            sums=dict(rollup.sums),
            extra=extra,
        )


def _safe(call: Callable[..., Any], *args: Any) -> Any:
    try:
        return call(*args)
    except Exception as exc:  # noqa: BLE001 - an observer must never break a user's cell
        print(f"o11ylab: {type(exc).__name__} in a cell observer: {exc}")
        return None


class CellTracer:
    """The IPython side: hooks, nesting, autotrace, and the error hand-off to the outer cell."""

    def __init__(self, shell: Any, telemetry: Telemetry) -> None:
        self.shell = shell
        self.telemetry = telemetry
        self.autotrace = telemetry.settings.autotrace
        self.summary = telemetry.settings.summary
        self.nesting = 0  # >0 while %%traced runs its body through a nested run_cell
        self.last_info: Any = None
        self.pending_error: BaseException | None = None
        self._auto_run: CellRun | None = None
        self.last_summary: CellSummary | None = None
        self._parent = self._inherited_parent()

    def _inherited_parent(self) -> otel_context.Context | None:
        traceparent = self.telemetry.settings.traceparent
        if not traceparent:
            return None
        parent = extract({"traceparent": traceparent})
        if not trace.get_current_span(parent).get_span_context().is_valid:
            print("o11ylab: TRACEPARENT is not a W3C traceparent; cells start their own traces.")
            return None
        return parent

    def parent_context(self) -> otel_context.Context | None:
        # Inside another span (a cell run from a traced function, say), nest under it.
        if trace.get_current_span().get_span_context().is_valid:
            return None
        return self._parent

    def cell_attributes(self, source: str, autotraced: bool) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            semconv.CELL_EXECUTION_COUNT: self.shell.execution_count,
            semconv.CELL_SOURCE_SHA256: source_hash(source),
        }
        cell_id = getattr(self.last_info, "cell_id", None)
        if cell_id:
            attributes[semconv.CELL_ID] = cell_id
        if self.telemetry.settings.notebook_path:
            attributes[semconv.NOTEBOOK_PATH] = self.telemetry.settings.notebook_path
        if autotraced:
            attributes[semconv.CELL_AUTOTRACED] = True
        if self.telemetry.settings.capture_content.on_spans:
            attributes[semconv.CELL_SOURCE] = source
        return attributes

    def default_name(self) -> str:
        return f"{semconv.CELL_SPAN_PREFIX} [{self.shell.execution_count}]"

    def start(self, name: str, attributes: dict[str, Any]) -> CellRun:
        return CellRun(self.telemetry, name, attributes, self.parent_context())

    def finish(self, run: CellRun, error: BaseException | None, quiet: bool) -> CellSummary:
        summary = run.end(error)
        self.last_summary = summary
        if self.summary and not quiet:
            print(summary.line())
        return summary

    # -- IPython event callbacks ------------------------------------------------------------------

    def pre_run_cell(self, info: Any) -> None:
        if self.nesting:
            return
        self.last_info = info
        self.pending_error = None
        if not self.autotrace or self._auto_run is not None:
            return
        source = getattr(info, "raw_cell", "") or ""
        if source.lstrip().startswith("%%traced"):
            return  # the cell traces itself; one span per cell
        try:
            self._auto_run = self.start(self.default_name(), self.cell_attributes(source, True))
        except Exception as exc:  # noqa: BLE001 - a hook must never break the user's cell
            print(f"o11ylab: autotrace could not start a span ({type(exc).__name__}: {exc})")

    def post_run_cell(self, result: Any) -> None:
        if self.nesting:
            return
        if self.pending_error is not None and result is not None:
            # The traced body failed inside a nested run_cell, which showed the traceback and
            # swallowed the error; failing the outer cell makes the kernel reply "error", so
            # papermill and nbclient stop here exactly as for an untraced cell.
            if result.error_in_exec is None and result.error_before_exec is None:
                result.error_in_exec = self.pending_error
            self.pending_error = None
        run, self._auto_run = self._auto_run, None
        if run is None:
            return  # a post without a pre: an empty cell, or autotrace switched on mid-cell
        error = None
        if result is not None:
            error = result.error_before_exec or result.error_in_exec
        try:
            self.finish(run, error, quiet=True)
        except Exception as exc:  # noqa: BLE001 - a hook must never break the user's cell
            print(f"o11ylab: autotrace could not end its span ({type(exc).__name__}: {exc})")

    def close(self) -> None:
        """End an autotrace span left open (unload in the middle of a cell)."""
        run, self._auto_run = self._auto_run, None
        if run is not None:
            run.end(None)
