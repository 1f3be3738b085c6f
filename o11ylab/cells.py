"""Cells as spans: the span life cycle shared by ``%%traced`` and ``%o11y autotrace``.

A cell span's parent is the ``TRACEPARENT`` the kernel inherited (``o11ylab run`` sets it, so
every cell of every notebook joins the run's trace), otherwise it starts a trace of its own.
While the extension is loaded that context is the kernel's current one, so any span without a
parent of its own (an untraced cell's calls) joins the notebook's span as well.
While it is open it is the current span, so anything the cell calls nests under it, in any
thread that carries the context. When it ends it gets the roll-ups of what ran under it
(span and error counts, tokens, cost), feeds the cell metrics and wakes the flusher.
"""

from __future__ import annotations

import contextvars
import hashlib
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.trace import Status, StatusCode

from . import semconv
from ._compat import set_attributes
from .telemetry import Rollup, Telemetry

__all__ = [
    "CellRun",
    "CellSummary",
    "CellTracer",
    "TracedArgs",
    "traced_line",
]


@dataclass
class CellSummary:
    name: str
    trace_id: str
    duration_s: float
    spans: int
    errors: int
    error: str | None
    sums: dict[str, float] = field(default_factory=dict)
    # The ended cell span's attributes: the hardware fragments of the line are made from them
    # only when a line is printed (10 µs a cell that --quiet and O11YLAB_SUMMARY=0 cells save).
    attributes: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def extra(self) -> dict[str, str]:
        return _measured(self.attributes)

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
        if cost:  # local models cost 0: saying "$0.000000" after every local call is noise
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


# Set with the cell span's context and read back when it ends: tells "the same context the span
# was attached in" from the kernel's own, where an async cell's post_run_cell runs (the cell
# itself ran in an asyncio task, a copy of the context; detaching there would log an error).
_OPEN_CELL: contextvars.ContextVar[CellRun | None] = contextvars.ContextVar(
    "o11ylab_open_cell", default=None
)


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
        self._mark = _OPEN_CELL.set(self)
        self.rollup: Rollup = telemetry.rollups.open(self.span.get_span_context().span_id)

    def _detach(self) -> None:
        if _OPEN_CELL.get() is not self:
            return  # another context (an async cell's task): nothing of ours is attached here
        try:
            _OPEN_CELL.reset(self._mark)
            otel_context.detach(self._token)
        except Exception:  # noqa: BLE001 - a cell that swapped contexts under us; nothing to undo
            pass

    def end(self, error: BaseException | None) -> CellSummary:
        span = self.span
        self._detach()
        rollup = self.rollup
        rolled: dict[str, Any] = {
            semconv.CELL_SPAN_COUNT: rollup.spans,
            semconv.CELL_ERROR_COUNT: rollup.errors,
        }
        for source, target in semconv.ROLLUP_SUMS:
            if source in rollup.sums:
                rolled[target] = rollup.sums[source]
        set_attributes(span, rolled)  # one pass, not one per attribute
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
        # The span's own clock, so the summary says what the trace view says for the same cell
        # (a provider of the user's whose spans keep no times: our own clock).
        start_ns, end_ns = getattr(span, "start_time", None), getattr(span, "end_time", None)
        if start_ns and end_ns:
            duration = (end_ns - start_ns) / 1e9
        else:
            duration = time.perf_counter() - self.started
        self.telemetry.record_cell(duration, error is not None)
        _wake_flusher(self.telemetry)
        return CellSummary(
            name=self.name,
            trace_id=format(span.get_span_context().trace_id, "032x"),
            duration_s=duration,
            spans=rollup.spans,
            errors=rollup.errors,
            error=error_name,
            sums=dict(rollup.sums),
            attributes=getattr(span, "attributes", None) or {},
        )


def _measured(attributes: Mapping[str, Any]) -> dict[str, str]:
    """Summary fragments from what the enrichers put on the ended cell span (GPU energy and
    memory, CPU time: the hardware enricher, whose module is loaded when it ran)."""
    if semconv.CELL_PROCESS_CPU_SECONDS not in attributes:
        return {}
    from .hardware import cell_summary

    return cell_summary(attributes)


# The span processors export on their own every second; waking the flusher after a cell makes a
# slow cell's spans visible at once, but after every cell of a quick run it cost 46 µs of
# process CPU per cell in bench_extension.py (a 50 ms-coalesced export cycle per ~100 cells).
_FLUSH_EVERY_S = 1.0
_last_wake = 0.0


def _wake_flusher(telemetry: Telemetry) -> None:
    global _last_wake
    now = time.monotonic()
    if now - _last_wake >= _FLUSH_EVERY_S:
        _last_wake = now
        telemetry.request_flush()


# --- %%traced: the first line of a cell ----------------------------------------------------------


class TracedArgs(NamedTuple):
    """A ``%%traced`` line, parsed."""

    name: str | None
    attributes: dict[str, Any]
    quiet: bool


TRACED_MAGIC = "traced"


def traced_line(lines: list[str]) -> str | None:
    """The argument text when ``lines`` start a ``%%traced`` cell, else None.

    The same test as IPython's own cell-magic transform (first line ``%%NAME`` up to the first
    space), so ``%%traced?`` (help) and ``%%tracedx`` are left to IPython.
    """
    if not lines or not lines[0].startswith("%%"):
        return None
    magic, _, arguments = lines[0][2:].rstrip().partition(" ")
    return arguments if magic == TRACED_MAGIC else None


@dataclass
class _OpenCell:
    run: CellRun | None  # None: a cell with no span (untraced, or a refused %%traced line)
    quiet: bool = True


class CellTracer:
    """The IPython side: a cell is a span between ``pre_run_cell`` and ``post_run_cell``.

    A ``%%traced`` cell is not run by its magic. An input transformer in IPython's cleanup
    stage takes the ``%%traced ...`` line off, so the kernel runs the body as the ordinary cell
    it is: display of the last value, top-level ``await``, magics, tracebacks (``Cell In[N]``),
    KeyboardInterrupt and the cell's failure are IPython's own. Transformers also run for text
    that is never executed (history, ``%time``'s body, completion, inspection), so the
    transformer only strips; the span is opened by ``pre_run_cell``, which reads the executed
    cell's own text again. In benchmarks/bench_extension.py (process CPU per cell, exports
    included) the magic running its body through a nested ``run_cell`` added 567 µs to a cell,
    this way 233 µs, beside 50 µs for a bare span and 190 µs for ``%%time`` (later cuts to the
    span pipeline: 92, 28 and 153 µs). Executing the body
    as ``%%time`` does (compile under ``In[N]``, exec) would still pay the magic's dispatch and
    could not ``await``. IPython fires no pre/post_run_cell for silent runs (``%run x.ipynb``):
    there the line is taken off and the body runs untraced.

    The magic itself runs only when the transformer left the line in place: a line its parser
    refuses (the magic then says the one-line UsageError) or a direct ``run_cell_magic`` call.
    """

    def __init__(self, shell: Any, telemetry: Telemetry) -> None:
        self.shell = shell
        self.telemetry = telemetry
        self.autotrace = telemetry.settings.autotrace
        self.summary = telemetry.settings.summary
        self.last_info: Any = None
        self.last_summary: CellSummary | None = None
        self.magics: Any = None
        # IPython fires pre/post_run_cell again for a run_cell inside a cell: one entry per level.
        self._open: list[_OpenCell] = []
        self._count = 0
        self._parent = self._inherited_parent()
        self._base_token: contextvars.Token[otel_context.Context] | None = None
        self.parse_traced: Callable[[str], TracedArgs] | None = None

    # -- install / uninstall: what %load_ext and %unload_ext switch ------------------------------

    def install(self) -> None:
        """Register the magics, the ``%%traced`` transformer and the cell hooks on the shell."""
        from .magics import O11yMagics, parse_traced

        self.parse_traced = parse_traced
        self.magics = O11yMagics(self.shell, self)
        self.shell.register_magics(self.magics)
        # Last in the cleanup stage: after IPython has dropped leading blank lines and indent.
        self.shell.input_transformers_cleanup.append(self.strip_traced_line)
        self.shell.events.register("pre_run_cell", self.pre_run_cell)
        self.shell.events.register("post_run_cell", self.post_run_cell)
        self._attach_base()

    def uninstall(self) -> None:
        """Remove everything ``install`` registered, and end a span left open."""
        shell = self.shell
        for event, callback in (
            ("pre_run_cell", self.pre_run_cell),
            ("post_run_cell", self.post_run_cell),
        ):
            try:
                shell.events.unregister(event, callback)
            except ValueError:
                pass
        transformers = shell.input_transformers_cleanup
        transformers[:] = [t for t in transformers if t != self.strip_traced_line]
        if self.magics is not None:
            registry = shell.magics_manager
            for kind, names in self.magics.magics.items():
                for name in names:
                    registry.magics[kind].pop(name, None)
            registry.registry.pop(type(self.magics).__name__, None)
            if self.magics in shell.configurables:  # register_magics put it there
                shell.configurables.remove(self.magics)
        self.close()
        self._detach_base()

    # -- the %%traced line ------------------------------------------------------------------------

    def _traced(self, lines: list[str]) -> TracedArgs | None:
        arguments = traced_line(lines)
        if arguments is None or self.parse_traced is None:
            return None
        try:
            return self.parse_traced(arguments)
        except Exception:  # noqa: BLE001 - refused: the magic runs and says why, once
            return None

    def strip_traced_line(self, lines: list[str]) -> list[str]:
        """IPython cleanup transform: a ``%%traced`` cell becomes its body, the span aside."""
        return lines[1:] if self._traced(lines) is not None else lines

    def _cleaned(self, raw_cell: str) -> list[str]:
        """The lines our transformer sees: the cleanup transforms before it, applied."""
        lines = _lines(raw_cell)
        for transform in self.shell.input_transformers_cleanup:
            if transform == self.strip_traced_line:
                break
            lines = transform(lines)
        return lines

    # -- spans ------------------------------------------------------------------------------------

    def _inherited_parent(self) -> otel_context.Context | None:
        traceparent = self.telemetry.settings.traceparent
        if not traceparent:
            return None
        parent = extract({"traceparent": traceparent})
        if not trace.get_current_span(parent).get_span_context().is_valid:
            print("o11ylab: TRACEPARENT is not a W3C traceparent; cells start their own traces.")
            return None
        return parent

    def _attach_base(self) -> None:
        """In a run's kernel, the inherited ``TRACEPARENT`` becomes the kernel's current context.

        Then whatever starts a span with no current span of its own (an untraced cell's openai
        or Chroma call) joins the notebook's span instead of starting a trace of its own, as the
        cells do. The kernel runs every cell
        and its hooks in this one context, so it holds until unload; asyncio tasks copy it.
        Threads start with an empty context (``threading``, ``concurrent.futures``): their
        spans stay roots unless the code hands the context over. An explicit ``context=``
        (07's simulated users pass an empty one) is the caller's choice and stays untouched.
        """
        if self._parent is None or trace.get_current_span().get_span_context().is_valid:
            return
        self._base_token = otel_context.attach(self._parent)

    def _detach_base(self) -> None:
        token, self._base_token = self._base_token, None
        # Only where it is still the current context: under another attach (a cell that left
        # its own context on) resetting would pull that one off too, or the SDK logs an error.
        if token is not None and otel_context.get_current() is self._parent:
            otel_context.detach(token)

    def parent_context(self) -> otel_context.Context | None:
        # Inside another span (a cell run from a traced function, say), nest under it.
        if trace.get_current_span().get_span_context().is_valid:
            return None
        return self._parent

    def cell_attributes(self, source: str, autotraced: bool) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            semconv.CELL_EXECUTION_COUNT: self._count,
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
        return f"{semconv.CELL_SPAN_PREFIX} [{self._count}]"

    def start(self, name: str, attributes: dict[str, Any]) -> CellRun:
        return CellRun(self.telemetry, name, attributes, self.parent_context())

    def start_traced(self, body: str, args: TracedArgs) -> CellRun:
        attributes = {**self.cell_attributes(body, autotraced=False), **args.attributes}
        return self.start(args.name or self.default_name(), attributes)

    def finish(self, run: CellRun, error: BaseException | None, quiet: bool) -> CellSummary:
        summary = run.end(error)
        self.last_summary = summary
        if self.summary and not quiet:
            print(summary.line())
        return summary

    # -- IPython event callbacks ------------------------------------------------------------------

    def pre_run_cell(self, info: Any) -> None:
        opened = _OpenCell(None)
        try:
            opened = self._open_cell(info)
        except Exception as exc:  # noqa: BLE001 - a hook must never break the user's cell
            print(f"o11ylab: could not start a cell span ({type(exc).__name__}: {exc})")
        finally:
            self._open.append(opened)

    def _open_cell(self, info: Any) -> _OpenCell:
        self.last_info = info
        # The number IPython gives this run (Cell In[N]): it has already counted a stored cell.
        self._count = self.shell.execution_count - (1 if info.store_history else 0)
        raw_cell: str = info.raw_cell or ""
        if "%%" + TRACED_MAGIC in raw_cell:
            # The usual cell starts with its magic, where IPython's cleanup changes nothing that
            # matters here; only an indented or pasted one pays for those transforms (~20 µs).
            lines = _lines(raw_cell) if raw_cell.startswith("%%") else self._cleaned(raw_cell)
            if traced_line(lines) is not None:
                args = self._traced(lines)
                if args is None:
                    return _OpenCell(None)  # the magic refuses the line: no span, one error
                return _OpenCell(self.start_traced("".join(lines[1:]), args), args.quiet)
        if not self.autotrace or self._open or _only_o11y_commands(raw_cell):
            return _OpenCell(None)
        return _OpenCell(self.start(self.default_name(), self.cell_attributes(raw_cell, True)))

    def post_run_cell(self, result: Any) -> None:
        info = getattr(result, "info", None)
        raw_cell = getattr(info, "raw_cell", None)
        if info is not None and (not raw_cell or raw_cell.isspace()):
            return  # IPython fires no pre_run_cell for an empty cell, only this
        if not self._open:
            return  # a post without our pre: the extension was loaded in this very cell
        opened = self._open.pop()
        if opened.run is None:
            return
        error = None
        if result is not None:
            error = result.error_before_exec or result.error_in_exec
        try:
            self.finish(opened.run, error, quiet=opened.quiet)
        except Exception as exc:  # noqa: BLE001 - a hook must never break the user's cell
            print(f"o11ylab: could not end a cell span ({type(exc).__name__}: {exc})")

    def close(self) -> None:
        """End the spans of cells still running (unload in the middle of a cell)."""
        while self._open:
            opened = self._open.pop()
            if opened.run is not None:
                opened.run.end(None)


def _lines(cell: str) -> list[str]:
    # As IPython's TransformerManager splits a cell: with a final newline, so the body (and its
    # SHA-256) is the text the %%traced magic was given when it ran the body itself.
    return (cell if cell.endswith("\n") else cell + "\n").splitlines(keepends=True)


def _only_o11y_commands(source: str) -> bool:
    """A cell of nothing but ``%o11y ...`` lines: o11ylab's own commands, not the user's work.

    Not autotraced, so ``%o11y trace`` shows the cell the user ran before it, not an earlier
    ``%o11y`` cell.
    """
    lines = [line.strip() for line in source.splitlines() if line.strip()]
    return bool(lines) and all(line.startswith("%o11y") for line in lines)
