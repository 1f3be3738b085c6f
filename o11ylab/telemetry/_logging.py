"""The Python ``logging`` bridge: records to OTel logs, and trace ids on every record."""

from __future__ import annotations

import functools
import logging
import os
import site
import sys
import sysconfig
from collections.abc import Callable
from typing import Any, ClassVar

from opentelemetry import _logs as otel_logs
from opentelemetry import trace
from opentelemetry.context import get_current

__all__ = ["OtelLogHandler", "correlating_factory", "is_library_logger"]


@functools.cache
def _library_folders() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    folders = {paths["stdlib"], paths["platstdlib"], paths["purelib"], paths["platlib"]}
    folders.update(site.getsitepackages())
    folders.add(site.getusersitepackages())
    return tuple(os.path.join(os.path.realpath(f), "") for f in folders if f)


def is_library_logger(name: str) -> bool:
    """Whether a logger belongs to an installed library or the standard library, not to you.

    Loggers are named after their modules (``logging.getLogger(__name__)``), so the logger's
    top-level name is looked up as a module: one loaded from site-packages or the standard
    library is a library's. Anything else is yours: a notebook's ``logging.getLogger("etl")``,
    ``__main__``, a module of your own project (an editable install included). o11ylab's own
    loggers count as yours: what they say is about your session.
    """
    top = name.partition(".")[0]
    if top in ("o11ylab", "root", "__main__"):  # a kernel's __main__ is ipykernel_launcher's
        return False
    if top in sys.stdlib_module_names:
        return True
    module = sys.modules.get(top)
    if module is None:
        return False
    files = [getattr(module, "__file__", None) or "", *getattr(module, "__path__", ())]
    folders = _library_folders()
    return any(f and os.path.realpath(f).startswith(folders) for f in files)


class OtelLogHandler(logging.Handler):
    """Python ``logging`` records to OTel logs, with the active trace and span ids."""

    _SEVERITY: ClassVar[dict[int, tuple[int, str]]] = {
        logging.DEBUG: (5, "DEBUG"),
        logging.INFO: (9, "INFO"),
        logging.WARNING: (13, "WARN"),
        logging.ERROR: (17, "ERROR"),
        logging.CRITICAL: (21, "FATAL"),
    }

    def __init__(
        self,
        provider: otel_logs.LoggerProvider,
        level: int,
        library_level: int | None = None,
        quiet_libraries_below: int | None = None,
    ) -> None:
        library_level = level if library_level is None else library_level
        super().__init__(min(level, library_level))
        self._provider = provider
        self._loggers: dict[str, otel_logs.Logger] = {}
        self._user_level = level
        self._library_level = library_level
        self._lowest: dict[str, int] = {}  # logger name -> lowest level exported from it
        # Set when o11ylab lowered the root logger's level for the user's loggers: a library
        # logger's records below this level exist only because of that, so the first one sets
        # that logger's own level here and the rest are never created (httpx's "HTTP Request"
        # INFO line per call cost ~15 µs to create and drop). Only loggers at NOTSET, restored
        # by ``restore_library_levels``.
        self._quiet_below = quiet_libraries_below
        self._to_quiet: list[str] = []
        self._considered: set[str] = set()
        self._quieted: dict[str, int] = {}

    def _lowest_for(self, name: str) -> int:
        lowest = self._lowest.get(name)
        if lowest is None:
            lowest = self._library_level if is_library_logger(name) else self._user_level
            self._lowest[name] = lowest
        return lowest

    def handle(self, record: logging.LogRecord) -> bool:
        handled = super().handle(record)
        if self._to_quiet:  # outside the handler's lock: setLevel takes logging's module lock
            self._quiet_libraries()
        return handled

    def _quiet_libraries(self) -> None:
        level = self._quiet_below
        while self._to_quiet:
            name = self._to_quiet.pop()
            logger = logging.getLogger(name)
            if level is not None and logger.level == logging.NOTSET and name not in self._quieted:
                self._quieted[name] = level
                logger.setLevel(level)

    def restore_library_levels(self) -> None:
        """Put the library loggers this handler quieted back to NOTSET (unless changed since)."""
        quieted, self._quieted = self._quieted, {}
        for name, level in quieted.items():
            logger = logging.getLogger(name)
            if logger.level == level:
                logger.setLevel(logging.NOTSET)

    def emit(self, record: logging.LogRecord) -> None:
        # The SDK and our own warnings would otherwise feed back into the exporters.
        if record.name.startswith(("opentelemetry", "o11ylab.internal")):
            return
        lowest = self._lowest_for(record.name)
        if record.levelno < lowest:
            quiet = self._quiet_below
            if quiet is not None and record.levelno < quiet and record.name not in self._considered:
                self._considered.add(record.name)  # one look per logger
                if lowest == self._library_level and is_library_logger(record.name):
                    self._to_quiet.append(record.name)
            return
        try:
            logger = self._loggers.get(record.name)
            if logger is None:
                logger = self._loggers[record.name] = self._provider.get_logger(record.name)
            number, text = self._SEVERITY.get(record.levelno, (9, record.levelname))
            attributes: dict[str, Any] = {
                "code.file.path": record.pathname,
                "code.function.name": record.funcName,
                "code.line.number": record.lineno,
                "logger.name": record.name,
            }
            if record.exc_info and record.exc_info[0] is not None:
                attributes["exception.type"] = record.exc_info[0].__name__
                attributes["exception.message"] = str(record.exc_info[1])
            logger.emit(
                timestamp=int(record.created * 1e9),
                context=get_current(),
                severity_number=otel_logs.SeverityNumber(number),
                severity_text=text,
                body=record.getMessage(),
                attributes=attributes,
            )
        except Exception:  # noqa: BLE001 - logging's own contract: handleError, never raise
            self.handleError(record)


def correlating_factory(
    previous: Callable[..., logging.LogRecord],
) -> Callable[..., logging.LogRecord]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.otelTraceID = format(context.trace_id, "032x")
            record.otelSpanID = format(context.span_id, "016x")
        else:
            record.otelTraceID = "0"
            record.otelSpanID = "0"
        return record

    factory.o11ylab_previous = previous  # type: ignore[attr-defined]
    return factory
