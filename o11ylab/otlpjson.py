"""The run files' OTLP-JSON lines format; it lives in ``o11ylab.telemetry._otlpjson`` now.

Kept so that ``from o11ylab.otlpjson import read_spans`` (notebooks, the runner, users' own
scripts) keeps working.
"""

from __future__ import annotations

from .telemetry._file_export import JsonLinesWriter
from .telemetry._otlpjson import (
    SIGNAL_FILES,
    attributes,
    iter_lines,
    read_logs,
    read_metric_names,
    read_spans,
    to_json_line,
)

__all__ = [
    "SIGNAL_FILES",
    "JsonLinesWriter",
    "attributes",
    "iter_lines",
    "read_logs",
    "read_metric_names",
    "read_spans",
    "to_json_line",
]
