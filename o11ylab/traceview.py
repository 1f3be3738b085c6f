"""Looking at spans in the notebook: an inline tree/waterfall and a pandas DataFrame.

Both work on flat span records (``span_record`` for live spans, ``otlpjson.read_spans`` for a
run's files), so a trace looks the same whether it comes from memory or from disk. Every
name and value is HTML-escaped: span names and attributes are user data.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from . import semconv

__all__ = ["TraceView", "span_record", "spans_dataframe"]

_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def span_record(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    assert context is not None  # Optional only for a ReadableSpan built by hand; the SDK's have one
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "parent_span_id": format(span.parent.span_id, "016x") if span.parent else None,
        "name": span.name,
        "kind": span.kind.value,
        "start_ns": span.start_time or 0,
        "end_ns": span.end_time or 0,
        "status": _STATUS[span.status.status_code.value],
        "attributes": dict(span.attributes or {}),
        "events": [{"name": e.name, "attributes": dict(e.attributes or {})} for e in span.events],
        "resource": dict(span.resource.attributes),
        "scope": span.instrumentation_scope.name if span.instrumentation_scope else "",
    }


def _ms(record: dict[str, Any]) -> float:
    elapsed_ns: int = record["end_ns"] - record["start_ns"]
    return max(0, elapsed_ns) / 1e6


def _fmt_ms(ms: float) -> str:
    if ms < 1:
        return f"{ms * 1000:.0f} µs"
    return f"{ms:.1f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


class TraceView:
    """A trace (or a subtree) as a tree with durations: HTML in a notebook, text in a terminal."""

    _SHOWN = (
        semconv.GEN_AI_REQUEST_MODEL,
        semconv.GEN_AI_USAGE_INPUT_TOKENS,
        semconv.GEN_AI_USAGE_OUTPUT_TOKENS,
        semconv.GEN_AI_USAGE_COST,
        semconv.ERROR_TYPE,
        semconv.HW_ENERGY_SPAN,
    )

    def __init__(self, records: Sequence[dict[str, Any]], title: str = "") -> None:
        self.records = sorted(records, key=lambda r: r["start_ns"])
        self.title = title

    def _rows(self) -> list[tuple[int, dict[str, Any]]]:
        ids = {r["span_id"] for r in self.records}
        children: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
        for record in self.records:
            parent = record["parent_span_id"]
            children[parent if parent in ids else None].append(record)
        rows: list[tuple[int, dict[str, Any]]] = []

        def walk(parent: str | None, depth: int) -> None:
            for record in children.get(parent, []):
                rows.append((depth, record))
                walk(record["span_id"], depth + 1)

        walk(None, 0)
        return rows

    def _details(self, record: dict[str, Any]) -> str:
        attributes = record["attributes"]
        return ", ".join(f"{k}={attributes[k]}" for k in self._SHOWN if k in attributes)

    def __repr__(self) -> str:
        if not self.records:
            return "(no spans yet: run a %%traced cell first)"
        lines = [self.title] if self.title else []
        for depth, record in self._rows():
            mark = " ✗" if record["status"] == "ERROR" else ""
            details = self._details(record)
            lines.append(
                f"{'  ' * depth}{record['name']}{mark}  {_fmt_ms(_ms(record))}"
                + (f"  [{details}]" if details else "")
            )
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        if not self.records:
            return "<p><em>No spans yet: run a <code>%%traced</code> cell first.</em></p>"
        start = min(r["start_ns"] for r in self.records)
        end = max(r["end_ns"] for r in self.records)
        total = max(end - start, 1)
        out = ['<div class="o11ylab-trace" style="font-family:monospace;font-size:12px">']
        if self.title:
            out.append(f"<div><b>{html.escape(self.title)}</b></div>")
        out.append('<table style="border-collapse:collapse;width:100%">')
        for depth, record in self._rows():
            left = 100 * (record["start_ns"] - start) / total
            width = max(0.3, 100 * (record["end_ns"] - record["start_ns"]) / total)
            error = record["status"] == "ERROR"
            colour = "#d9534f" if error else "#4a90d9"
            tip = html.escape(
                "; ".join(f"{k}={v}" for k, v in record["attributes"].items()), quote=True
            )
            details = html.escape(self._details(record))
            out.append(
                f'<tr title="{tip}">'
                f'<td style="padding-left:{depth * 14 + 2}px;white-space:nowrap;text-align:left">'
                f"{'✗ ' if error else ''}{html.escape(record['name'])}</td>"
                f'<td style="text-align:right;white-space:nowrap">{_fmt_ms(_ms(record))}</td>'
                f'<td style="width:50%"><div style="position:relative;height:10px">'
                f'<div style="position:absolute;left:{left:.2f}%;width:{width:.2f}%;'
                f'height:10px;background:{colour}"></div></div></td>'
                f'<td style="text-align:left;color:#666">{details}</td></tr>'
            )
        out.append("</table></div>")
        return "".join(out)


def spans_dataframe(records: Iterable[dict[str, Any]]) -> Any:
    """One row per span: ids, name, start, duration, status, then one column per attribute."""
    import pandas as pd

    rows = []
    for record in records:
        row = {
            "trace_id": record["trace_id"],
            "span_id": record["span_id"],
            "parent_span_id": record["parent_span_id"],
            "name": record["name"],
            "start": pd.Timestamp(record["start_ns"], unit="ns", tz="UTC"),
            "duration_ms": _ms(record),
            "status": record["status"],
        }
        for key, value in record["attributes"].items():
            row.setdefault(key, value)
        rows.append(row)
    columns = ["trace_id", "span_id", "parent_span_id", "name", "start", "duration_ms", "status"]
    return pd.DataFrame(rows, columns=None if rows else columns)
