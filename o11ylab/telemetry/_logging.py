"""The Python ``logging`` bridge: records to OTel logs, and trace ids on every record."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

from opentelemetry import _logs as otel_logs
from opentelemetry import trace
from opentelemetry.context import get_current

__all__ = ["OtelLogHandler", "correlating_factory"]


class OtelLogHandler(logging.Handler):
    """Python ``logging`` records to OTel logs, with the active trace and span ids."""

    _SEVERITY: ClassVar[dict[int, tuple[int, str]]] = {
        logging.DEBUG: (5, "DEBUG"),
        logging.INFO: (9, "INFO"),
        logging.WARNING: (13, "WARN"),
        logging.ERROR: (17, "ERROR"),
        logging.CRITICAL: (21, "FATAL"),
    }

    def __init__(self, provider: otel_logs.LoggerProvider, level: int) -> None:
        super().__init__(level)
        self._provider = provider
        self._loggers: dict[str, otel_logs.Logger] = {}

    def emit(self, record: logging.LogRecord) -> None:
        # The SDK and our own warnings would otherwise feed back into the exporters.
        if record.name.startswith(("opentelemetry", "o11ylab.internal")):
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
