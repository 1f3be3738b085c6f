"""The local telemetry files: OTLP-JSON lines, one export request per line.

This is the format of the OpenTelemetry Collector's file exporter and of OTLP/HTTP with JSON
bodies (ids as hex, enums as numbers), so any OTLP tool can replay a run's files. Each process
writes its own file per signal (``traces.<pid>.jsonl``) in the run folder, so kernels sharing a
run under ``o11ylab run`` never interleave half-lines; readers take every file in the folder.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext

from .._compat import raw_attributes

__all__ = [
    "SIGNAL_FILES",
    "attributes",
    "encode_spans_line",
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


# --- spans straight to JSON -----------------------------------------------------------------
# The run file's per-span cost was mostly the round trip: the SDK's protobuf encoder, then
# MessageToDict, then ids rewritten from base64 to hex, then json.dumps (about 450 us a span
# in one measurement: 160 + 180 + 60-80 + 45). The spans are encoded here straight into the
# dicts json.dumps writes, with the same result as that round trip: proto3 JSON, default
# values left out, 64-bit integers as strings, enums as numbers, ids as hex
# (tests/test_otlpjson_encoder.py compares the two; benchmarks/bench_run_file.py the cost).

_INT64 = (-(2**63), 2**63 - 1)


def _json(node: Any) -> bytes:
    return json.dumps(node, separators=(",", ":")).encode()


try:
    # orjson (chromadb's dependency, so there with the ai extra) writes the same JSON, in UTF-8
    # rather than \u escapes, 4-5x faster than json.dumps: 17 of a span's 48 us went to dumps.
    # Nothing it refuses reaches it: ids, 64-bit integers and non-finite floats are strings.
    import orjson

    _dumps: Callable[[Any], bytes] = orjson.dumps
except ImportError:  # pragma: no cover - without the ai extra
    _dumps = _json
_NOT_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def _any_value(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise ValueError(f"{value} does not fit an int64")
        return {"intValue": str(value)}
    if isinstance(value, float):
        if math.isfinite(value):
            return {"doubleValue": value}
        return {"doubleValue": _NOT_FINITE.get(value, "NaN")}
    if value is None:
        return {}
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode()} if value else {"bytesValue": ""}
    if isinstance(value, Sequence):
        values = [_any_value(v) for v in value]
        return {"arrayValue": {"values": values} if values else {}}
    if isinstance(value, Mapping):
        items = [_key_value(str(k), v) for k, v in value.items()]
        return {"kvlistValue": {"values": items} if items else {}}
    raise TypeError(f"invalid type {type(value).__name__} of value")


def _key_value(key: str, value: Any) -> dict[str, Any]:
    return {"key": key, "value": _any_value(value)} if key else {"value": _any_value(value)}


def _attributes(attributes: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if not attributes:
        return []
    encoded: list[dict[str, Any]] = []
    append = encoded.append
    for key, value in attributes.items():
        # The common scalar types inline (a GenAI span's ~20 attributes are nearly all str,
        # int and float): 13.9 against 15.1 us a span through _key_value (bench_run_file's).
        kind = type(value)
        if kind is str and key:
            append({"key": key, "value": {"stringValue": value}})
        elif kind is int and key and _INT64[0] <= value <= _INT64[1]:
            append({"key": key, "value": {"intValue": str(value)}})
        elif kind is float and key and math.isfinite(value):
            append({"key": key, "value": {"doubleValue": value}})
        else:
            try:
                append(_key_value(key, value))
            except (TypeError, ValueError):
                continue  # as the SDK's encoder does: the attribute is left out, the span kept
    return encoded


def _with_attributes(node: dict[str, Any], attributes: Mapping[str, Any] | None) -> None:
    encoded = _attributes(attributes)
    if encoded:
        node["attributes"] = encoded


def _flags(parent: SpanContext | None) -> int:
    # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK (0x100), | IS_REMOTE (0x200) for a remote parent.
    return 0x300 if parent is not None and parent.is_remote else 0x100


def _span(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    assert context is not None  # an ended SDK span always has one
    node: dict[str, Any] = {
        "traceId": format(context.trace_id, "032x"),
        "spanId": format(context.span_id, "016x"),
    }
    if context.trace_state:
        node["traceState"] = ",".join(f"{k}={v}" for k, v in context.trace_state.items())
    parent = span.parent
    if parent is not None:
        node["parentSpanId"] = format(parent.span_id, "016x")
    if span.name:
        node["name"] = span.name
    node["kind"] = span.kind.value + 1  # the SDK's SpanKind starts at INTERNAL = 0
    if span.start_time:
        node["startTimeUnixNano"] = str(span.start_time)
    if span.end_time:
        node["endTimeUnixNano"] = str(span.end_time)
    _with_attributes(node, raw_attributes(span))
    if span.dropped_attributes:
        node["droppedAttributesCount"] = span.dropped_attributes
    if span.events:
        events = []
        for event in span.events:
            encoded: dict[str, Any] = {}
            if event.timestamp:
                encoded["timeUnixNano"] = str(event.timestamp)
            if event.name:
                encoded["name"] = event.name
            _with_attributes(encoded, raw_attributes(event))
            if event.dropped_attributes:
                encoded["droppedAttributesCount"] = event.dropped_attributes
            events.append(encoded)
        node["events"] = events
    if span.dropped_events:
        node["droppedEventsCount"] = span.dropped_events
    if span.links:
        links = []
        for link in span.links:
            linked: dict[str, Any] = {
                "traceId": format(link.context.trace_id, "032x"),
                "spanId": format(link.context.span_id, "016x"),
            }
            _with_attributes(linked, link.attributes)
            if link.dropped_attributes:
                linked["droppedAttributesCount"] = link.dropped_attributes
            linked["flags"] = _flags(link.context)
            links.append(linked)
        node["links"] = links
    if span.dropped_links:
        node["droppedLinksCount"] = span.dropped_links
    status: dict[str, Any] = {}
    if span.status.description:
        status["message"] = span.status.description
    if span.status.status_code.value:
        status["code"] = span.status.status_code.value
    node["status"] = status
    node["flags"] = _flags(parent)
    return node


def encode_spans_line(spans: Sequence[ReadableSpan]) -> bytes:
    """One OTLP-JSON ``ExportTraceServiceRequest`` line for ``spans``, without protobuf."""
    # Each span is written to bytes as soon as its dicts are built, and the line assembled from
    # those bytes. Kept for the whole batch, a batch's ~50 objects a span outlived the young
    # generation and set off full collections of the kernel's heap: in a process holding 211k
    # objects (IPython, openai, the span buffer) a span cost 45 us with the GC on, 10.5 off.
    # Grouped by the resource object first: Resource.__hash__ JSON-dumps its attributes (4 µs
    # and more a span, and every span of a process shares one object). Distinct objects that
    # are equal are merged after, so the grouping is the SDK encoder's (by equality).
    by_object: dict[int, tuple[Resource, dict[InstrumentationScope | None, list[bytes]]]] = {}
    for span in spans:
        resource = span.resource
        held = by_object.get(id(resource))
        if held is None:
            held = by_object[id(resource)] = (resource, {})
        held[1].setdefault(span.instrumentation_scope or None, []).append(_dumps(_span(span)))
    grouped: dict[Resource, dict[InstrumentationScope | None, list[bytes]]] = {}
    for resource, scoped in by_object.values():
        if len(by_object) == 1:
            grouped[resource] = scoped
            break
        by_scope = grouped.setdefault(resource, {})
        for scope, encoded_spans in scoped.items():
            by_scope.setdefault(scope, []).extend(encoded_spans)
    if not grouped:
        return b"{}\n"
    parts = [b'{"resourceSpans":[']
    for index, (resource, by_scope) in enumerate(grouped.items()):
        resource_node: dict[str, Any] = {}
        _with_attributes(resource_node, resource.attributes)
        parts.append(b"," if index else b"")
        parts.append(b'{"resource":' + _dumps(resource_node) + b',"scopeSpans":[')
        for position, (scope, encoded) in enumerate(by_scope.items()):
            scope_node: dict[str, Any] = {}
            if scope is not None:
                if scope.name:
                    scope_node["name"] = scope.name
                if scope.version:
                    scope_node["version"] = scope.version
                _with_attributes(scope_node, scope.attributes)
            parts.append(b"," if position else b"")
            parts.append(b'{"scope":' + _dumps(scope_node) + b',"spans":[')
            parts.append(b",".join(encoded))
            parts.append(b"]")
            if scope is not None and scope.schema_url:
                parts.append(b',"schemaUrl":' + _dumps(scope.schema_url))
            parts.append(b"}")
        parts.append(b"]")
        if resource.schema_url:
            parts.append(b',"schemaUrl":' + _dumps(resource.schema_url))
        parts.append(b"}")
    parts.append(b"]}\n")
    return b"".join(parts)


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
