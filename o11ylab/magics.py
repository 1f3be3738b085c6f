"""``%%traced`` and ``%o11y``: the notebook's way in.

``%%traced [NAME] [--attr KEY=VALUE ...] [--quiet]`` runs the cell body as a span through a
nested ``run_cell``, so the body behaves exactly like an ordinary cell (display of the last
value, magics, tracebacks). A failure is shown once by that nested run and handed to the
outer cell, which the kernel then reports as failed: papermill stops at it.

``%o11y`` has sub-commands: ``status``, ``flush``, ``trace``, ``spans``, ``autotrace on|off``.
"""

from __future__ import annotations

import argparse
import functools
import shlex
from typing import TYPE_CHECKING, Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .cells import CellTracer

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

__all__ = ["O11yMagics"]

_ASYNC_HINT = (
    "%%traced cannot run top-level `await`: the kernel's event loop is busy running this very "
    'cell. Use `with o11ylab.span("name"):` around the awaits instead (it works in async '
    "cells), or `%o11y autotrace on`, which traces async cells too."
)


def _attributes(pairs: list[str] | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--attr takes KEY=VALUE, got {pair!r}.")
        attributes[key] = value
    return attributes


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse would print its usage to stderr and exit; a magic says one UsageError instead.
        raise argparse.ArgumentError(None, message)


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    return _ArgumentParser(prog=prog, description=description, exit_on_error=False, add_help=False)


@magics_class
class O11yMagics(Magics):
    # Optional on Magics; these magics are only ever built with the kernel's shell.
    shell: InteractiveShell

    def __init__(self, shell: Any, tracer: CellTracer) -> None:
        super().__init__(shell)
        self.tracer = tracer

    @magic_arguments()
    @argument("name", nargs="?", default=None, help="Span name (default: cell [N]).")
    @argument(
        "--attr",
        "-a",
        action="append",
        metavar="KEY=VALUE",
        help="An attribute to put on the cell span; repeat for more.",
    )
    @argument("--quiet", "-q", action="store_true", help="No summary line after the cell.")
    @cell_magic
    def traced(self, line: str, cell: str) -> None:
        """Run the cell as an OpenTelemetry span; every span the cell starts nests under it."""
        args, attributes = self._parse_traced(line)
        if ("await" in cell or "async" in cell) and self._is_async(cell):
            raise UsageError(_ASYNC_HINT)
        tracer = self.tracer
        attributes = {**tracer.cell_attributes(cell, autotraced=False), **attributes}
        run = tracer.start(args.name or tracer.default_name(), attributes)
        error: BaseException | None = None
        tracer.nesting += 1
        try:
            result = self.shell.run_cell(cell, store_history=False)
            error = result.error_before_exec or result.error_in_exec
        except BaseException as exc:  # KeyboardInterrupt between statements ends the span too
            error = exc
            raise
        finally:
            tracer.nesting -= 1
            tracer.finish(run, error, quiet=args.quiet)
            if error is not None:
                tracer.pending_error = error

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one instance per shell; lines repeat
    def _parse_traced(self, line: str) -> tuple[argparse.Namespace, dict[str, Any]]:
        # argparse costs ~100 µs; the same magic line runs again and again in a notebook.
        try:
            args = parse_argstring(self.traced, line)
        except UsageError:
            raise
        except Exception as exc:  # noqa: BLE001 - argparse errors that escape magic_arguments
            raise UsageError(f"%%traced: {exc}") from None
        return args, _attributes(args.attr)

    def _is_async(self, cell: str) -> bool:
        try:
            transformed = self.shell.transform_cell(cell)
            return bool(self.shell.should_run_async(cell, transformed_cell=transformed))
        except Exception:  # noqa: BLE001 - IPython's transforms may raise anything; run it synchronously
            return False

    @line_magic
    def o11y(self, line: str) -> Any:
        """o11ylab commands.

        %o11y status              exporters, endpoints, exported / failed / queued counts
        %o11y flush               export everything queued now
        %o11y trace [--all] [ID]  the last traced cell (or trace ID) as a tree with durations
        %o11y spans               recent spans as a pandas DataFrame
        %o11y autotrace on|off    trace every cell as a span
        %o11y monitor [stop|start] the live GPU / CPU / memory panel (stop or restart them all)
        """
        try:
            words = shlex.split(line)
        except ValueError as exc:  # an unclosed quote, a trailing backslash
            raise UsageError(f"%o11y: {exc}.") from None
        if not words:
            raise UsageError(
                "Use one of: %o11y status | flush | trace | spans | autotrace on|off | monitor."
            )
        command, rest = words[0], words[1:]
        handler = getattr(self, f"_cmd_{command}", None)
        if handler is None:
            raise UsageError(
                f"%o11y {command}: unknown command. "
                "Use status, flush, trace, spans, autotrace or monitor."
            )
        return handler(rest)

    def _cmd_status(self, rest: list[str]) -> Any:
        from .status import StatusView

        if rest:
            raise UsageError("%o11y status takes no arguments.")
        return StatusView(self.tracer.telemetry.status(), autotrace=self.tracer.autotrace)

    def _cmd_flush(self, rest: list[str]) -> None:
        if rest:
            raise UsageError("%o11y flush takes no arguments.")
        telemetry = self.tracer.telemetry
        telemetry.flush()
        telemetry.flush_metrics()
        print(
            f"o11ylab: flushed; {telemetry.lost()} items lost so far, {telemetry.queued()} queued."
        )

    def _cmd_trace(self, rest: list[str]) -> Any:
        from . import recent_trace

        parser = _parser("%o11y trace", "Show a trace as a tree.")
        parser.add_argument("trace_id", nargs="?")
        parser.add_argument("--all", action="store_true")
        try:
            args = parser.parse_args(rest)
        except (argparse.ArgumentError, SystemExit) as exc:
            raise UsageError(f"%o11y trace [--all] [TRACE_ID]: {exc}") from None
        return recent_trace(args.trace_id, whole=args.all)

    def _cmd_spans(self, rest: list[str]) -> Any:
        from . import spans_df

        if rest:
            raise UsageError("%o11y spans takes no arguments.")
        return spans_df()

    def _cmd_monitor(self, rest: list[str]) -> Any:
        from .errors import MissingDependency, require

        try:
            require("ipywidgets", "widgets", "%o11y monitor")
        except MissingDependency as exc:
            raise UsageError(str(exc)) from None
        from .widgets import monitor_command

        return monitor_command(rest)

    def _cmd_autotrace(self, rest: list[str]) -> None:
        if len(rest) != 1 or rest[0] not in ("on", "off"):
            raise UsageError("Use %o11y autotrace on, or %o11y autotrace off.")
        self.tracer.autotrace = rest[0] == "on"
        print(
            f"o11ylab: autotrace {rest[0]}" + (" (from the next cell)" if rest[0] == "on" else "")
        )
