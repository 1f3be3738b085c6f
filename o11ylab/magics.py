"""``%%traced`` and ``%o11y``: the notebook's way in.

``%%traced [NAME] [--attr KEY=VALUE ...] [--quiet]`` makes the cell a span. The kernel runs
the body as the ordinary cell it is (``CellTracer`` takes the line off before IPython compiles
the cell and opens the span in ``pre_run_cell``), so display of the last value, magics,
top-level ``await``, tracebacks and a failing cell are IPython's own; papermill stops at a
failing traced cell as at any other. The magic below parses the line and says what is wrong
with one it refuses.

``%o11y`` has sub-commands: ``status``, ``flush``, ``trace``, ``spans``, ``autotrace on|off``,
``monitor`` and ``open``.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import inspect
import shlex
from typing import TYPE_CHECKING, Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .cells import TracedArgs

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from .cells import CellTracer

__all__ = ["O11yMagics", "parse_traced"]

COMMANDS = ("status", "flush", "trace", "spans", "autotrace", "monitor", "open")


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
        # A %%traced first line never gets here: CellTracer takes it off the cell and opens the
        # span around the kernel's own run. Here: a line the parser refuses (a UsageError) or
        # a direct run_cell_magic call, whose body runs as a cell inside the span.
        args = parse_traced(line)
        tracer = self.tracer
        run = tracer.start_traced(cell, args)
        error: BaseException | None = None
        try:
            result = self.shell.run_cell(cell, store_history=False)
            error = result.error_before_exec or result.error_in_exec
        except BaseException as exc:  # KeyboardInterrupt between statements ends the span too
            error = exc
            raise
        finally:
            tracer.finish(run, error, quiet=args.quiet)

    @line_magic
    def o11y(self, line: str) -> Any:
        """o11ylab commands.

        %o11y status              exporters, endpoints, exported / failed / queued counts
        %o11y flush               export everything queued now
        %o11y trace [--all] [ID]  the last traced cell (or trace ID) as a tree with durations
        %o11y spans [--all]       recent spans as a pandas DataFrame (--all: every attribute)
        %o11y autotrace on|off    trace every cell as a span
        %o11y monitor [stop|start] the live GPU / CPU / memory panel (stop or restart them all)
        %o11y open                the run folder as a link to the file browser (outside the
                                  working folder: through a link o11ylab-runs made there)
        """
        try:
            words = shlex.split(line)
        except ValueError as exc:  # an unclosed quote, a trailing backslash
            raise UsageError(f"%o11y: {exc}.") from None
        if not words:
            print(_o11y_help())
            return None
        command, rest = words[0], words[1:]
        handler = getattr(self, f"_cmd_{command}", None) if command in COMMANDS else None
        if handler is None:
            close = difflib.get_close_matches(command, COMMANDS, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise UsageError(
                f"%o11y {command}: unknown command.{hint} "
                "Use status, flush, trace, spans, autotrace, monitor or open."
            )
        return handler(rest)

    def _cmd_status(self, rest: list[str]) -> Any:
        from .status import StatusView

        if rest:
            raise UsageError("%o11y status takes no arguments.")
        status = self.tracer.telemetry.status()
        from . import hardware

        if hardware.attached():
            status["hardware"] = hardware.get_sampler().describe()
        return StatusView(status, autotrace=self.tracer.autotrace)

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

        if rest not in ([], ["--all"]):
            raise UsageError("Use %o11y spans, or %o11y spans --all for every field and attribute.")
        return spans_df(raw=bool(rest))

    def _cmd_monitor(self, rest: list[str]) -> Any:
        from .errors import MissingDependency, require

        try:
            require("ipywidgets", "widgets", "%o11y monitor")
        except MissingDependency as exc:
            raise UsageError(str(exc)) from None
        from .widgets import monitor_command

        return monitor_command(rest)

    def _cmd_open(self, rest: list[str]) -> Any:
        import os
        from pathlib import Path

        from .status import jupyter_server_for, open_run

        if rest:
            raise UsageError("%o11y open takes no arguments.")
        telemetry = self.tracer.telemetry
        run_dir = telemetry.status()["run_dir"]
        cwd = Path(os.getcwd())
        return open_run(
            Path(run_dir) if run_dir else None,
            telemetry.settings.runs_dir,
            cwd,
            jupyter_server_for(cwd),
        )

    def _cmd_autotrace(self, rest: list[str]) -> None:
        if len(rest) != 1 or rest[0] not in ("on", "off"):
            raise UsageError("Use %o11y autotrace on, or %o11y autotrace off.")
        self.tracer.autotrace = rest[0] == "on"
        print(
            f"o11ylab: autotrace {rest[0]}" + (" (from the next cell)" if rest[0] == "on" else "")
        )


def _o11y_help() -> str:
    doc = inspect.cleandoc(O11yMagics.o11y.__doc__ or "")
    return doc.replace("o11ylab commands.", "o11ylab commands (%o11y COMMAND):", 1)


# magic_arguments writes the usage as reStructuredText for the one-% line magic it assumes
# ("::" and "%traced"); %%traced? shows the cell magic's own usage line instead.
_traced_doc = O11yMagics.traced.__doc__ or ""
O11yMagics.traced.__doc__ = _traced_doc.replace("::\n\n  %traced", "%%traced", 1)


@functools.lru_cache(maxsize=256)
def parse_traced(line: str) -> TracedArgs:
    """A ``%%traced`` line's arguments, parsed by the magic's own parser; UsageError if refused.

    Cached: argparse costs ~100 µs and a notebook runs the same magic line again and again (the
    transformer and pre_run_cell both parse the executed cell's line).
    """
    try:
        args = parse_argstring(O11yMagics.traced, line)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - argparse errors that escape magic_arguments
        raise UsageError(f"%%traced: {exc}") from None
    return TracedArgs(args.name, _attributes(args.attr), bool(args.quiet))
