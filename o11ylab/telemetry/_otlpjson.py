"""The local telemetry files: OTLP-JSON lines, one export request per line.

This is the format of the OpenTelemetry Collector's file exporter and of OTLP/HTTP with JSON
bodies (ids as hex, enums as numbers), so any OTLP tool can replay a run's files. Each process
writes its own file per signal (``traces.<pid>.jsonl``) in the run folder, so kernels sharing a
run under ``o11ylab run`` never interleave half-lines; readers take every file in the folder.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

__all__ = [
    "SIGNAL_FILES",
    "attributes",
    "iter_lines",
    "read_logs",
    "read_metric_names",
    "read_spans",
    "to_json_line",
]

_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId"})
SIGNAL_FILES = {"traces": "traces", "metrics": "metrics", "logs": "logs"}


def _ids_to_hex(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: (
                base64.b64decode(value).hex()
                if key in _ID_KEYS and isinstance(value, str)
                else _ids_to_hex(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_ids_to_hex(item) for item in node]
    return node


def to_json_line(message: Message) -> bytes:
    as_dict = json_format.MessageToDict(message, use_integers_for_enums=True)
    return (json.dumps(_ids_to_hex(as_dict), separators=(",", ":")) + "\n").encode()


def iter_lines(folder: Path, signal: str) -> Iterator[dict[str, Any]]:
    """Every export request of one signal written into ``folder`` (all processes)."""
    for path in sorted(Path(folder).glob(f"{SIGNAL_FILES[signal]}.*.jsonl")):
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                if not line:
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a full disk or a killed process


def _value(any_value: dict[str, Any]) -> Any:
    if not any_value:
        return None
    ((kind, value),) = any_value.items()
    if kind == "intValue":
        return int(value)
    if kind == "arrayValue":
        return [_value(v) for v in value.get("values", [])]
    if kind == "kvlistValue":
        return {kv["key"]: _value(kv.get("value", {})) for kv in value.get("values", [])}
    return value


def attributes(items: Sequence[dict[str, Any]] | None) -> dict[str, Any]:
    return {item["key"]: _value(item.get("value", {})) for item in items or ()}


def read_spans(folder: Path) -> list[dict[str, Any]]:
    """Flat span records from a run folder: ids as hex, attributes as a dict, times in ns."""
    spans: list[dict[str, Any]] = []
    for request in iter_lines(folder, "traces"):
        for resource_spans in request.get("resourceSpans", []):
            resource = attributes(resource_spans.get("resource", {}).get("attributes"))
            for scope_spans in resource_spans.get("scopeSpans", []):
                scope = scope_spans.get("scope", {}).get("name", "")
                for span in scope_spans.get("spans", []):
                    spans.append(
                        {
                            "trace_id": span.get("traceId", ""),
                            "span_id": span.get("spanId", ""),
                            "parent_span_id": span.get("parentSpanId", "") or None,
                            "name": span.get("name", ""),
                            "kind": span.get("kind", 0),
                            "start_ns": int(span.get("startTimeUnixNano", 0)),
                            "end_ns": int(span.get("endTimeUnixNano", 0)),
                            "status": {0: "UNSET", 1: "OK", 2: "ERROR"}[
                                span.get("status", {}).get("code", 0)
                            ],
                            "attributes": attributes(span.get("attributes")),
                            "events": [
                                {
                                    "name": e.get("name", ""),
                                    "attributes": attributes(e.get("attributes")),
                                }
                                for e in span.get("events", [])
                            ],
                            "resource": resource,
                            "scope": scope,
                        }
                    )
    return spans


def read_logs(folder: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for request in iter_lines(folder, "logs"):
        for resource_logs in request.get("resourceLogs", []):
            for scope_logs in resource_logs.get("scopeLogs", []):
                for record in scope_logs.get("logRecords", []):
                    records.append(
                        {
                            "body": _value(record.get("body", {})),
                            "severity": record.get("severityText", ""),
                            "trace_id": record.get("traceId", "") or None,
                            "span_id": record.get("spanId", "") or None,
                            "attributes": attributes(record.get("attributes")),
                        }
                    )
    return records


def read_metric_names(folder: Path) -> set[str]:
    names: set[str] = set()
    for request in iter_lines(folder, "metrics"):
        for resource_metrics in request.get("resourceMetrics", []):
            for scope_metrics in resource_metrics.get("scopeMetrics", []):
                names.update(m.get("name", "") for m in scope_metrics.get("metrics", []))
    return names
