"""Looking at spans in the notebook: an inline trace explorer and a pandas DataFrame.

Both work on flat span records (``span_record`` for live spans, ``otlpjson.read_spans`` for a
run's files), so a trace looks the same whether it comes from memory or from disk. Every
name and value is HTML-escaped: span names and attributes are user data.

The explorer is one self-contained piece of HTML (inline CSS, a little inline JavaScript, no
server round-trip), so a saved notebook shows it again when reopened without a kernel. Without
JavaScript (an untrusted notebook, a static viewer) every row is still a ``<details>`` element
that opens its detail pane; the script only adds collapsing of subtrees and copy buttons.
Colours come from JupyterLab's CSS variables, with light fallbacks elsewhere.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from . import semconv

__all__ = ["TraceView", "log_record", "remember_logs", "span_record", "spans_dataframe"]

_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}
# SDK SpanKind values (span_record) and OTLP's numbering (run files, one more) differ, so
# span_record writes the name too; a record without one came from OTLP JSON.
_SDK_KINDS = {0: "internal", 1: "server", 2: "client", 3: "producer", 4: "consumer"}
_OTLP_KINDS = {0: "unspecified", **{value + 1: name for value, name in _SDK_KINDS.items()}}
_SERVICE = "service.name"

# A trace this big starts with only its top two levels open (a 1,000-span trace stays readable);
# below _OPEN_DEPTH every subtree starts collapsed whatever the size.
_COLLAPSE_BEYOND_SPANS = 60
_OPEN_DEPTH = 4


def span_record(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    assert context is not None  # Optional only for a ReadableSpan built by hand; the SDK's have one
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "parent_span_id": format(span.parent.span_id, "016x") if span.parent else None,
        "name": span.name,
        "kind": span.kind.value,
        "kind_name": _SDK_KINDS.get(span.kind.value, str(span.kind.value)),
        "start_ns": span.start_time or 0,
        "end_ns": span.end_time or 0,
        "status": _STATUS[span.status.status_code.value],
        "status_message": span.status.description or "",
        "attributes": dict(span.attributes or {}),
        "events": [
            {"name": e.name, "time_ns": e.timestamp, "attributes": dict(e.attributes or {})}
            for e in span.events
        ],
        "resource": dict(span.resource.attributes),
        "scope": span.instrumentation_scope.name if span.instrumentation_scope else "",
    }


# --- log records next to their spans ---------------------------------------------------------

_LOGS: deque[Any] | None = None


def _children(records: list[dict[str, Any]]) -> dict[str | None, list[dict[str, Any]]]:
    """Records by parent span id; a record whose parent is not among them is a root (None)."""
    ids = {r["span_id"] for r in records}
    children: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        parent = record["parent_span_id"]
        children[parent if parent in ids else None].append(record)
    return children


def tree_rows(records: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """(depth, record) in tree order, children in the order given (start order for a view)."""
    children = _children(records)
    rows: list[tuple[int, dict[str, Any]]] = []
    stack = [(0, r) for r in reversed(children.get(None, []))]
    while stack:  # not recursive: a deep trace must not hit the recursion limit
        depth, record = stack.pop()
        rows.append((depth, record))
        stack.extend((depth + 1, c) for c in reversed(children.get(record["span_id"], [])))
    return rows


def subtree(records: list[dict[str, Any]], root: dict[str, Any]) -> list[dict[str, Any]]:
    """``root`` and every record below it."""
    children = _children(records)
    chosen, frontier, seen = [root], [root["span_id"]], {root["span_id"]}
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child["span_id"] not in seen:  # a span listed twice is walked once
                seen.add(child["span_id"])
                chosen.append(child)
                frontier.append(child["span_id"])
    return chosen


def remember_logs(telemetry: Any, maxlen: int = 5_000) -> None:
    """Keep the last ``maxlen`` log records of ``telemetry`` so the explorer shows them per span.

    The records come through the telemetry's log tap (the one ``capture_logs()`` uses); call it
    once after the telemetry is set up. Idempotent.
    """
    global _LOGS
    sinks = telemetry.log_tap.sinks
    if _LOGS is not None and any(sink is _LOGS for sink in sinks):
        return
    _LOGS = deque(maxlen=maxlen)
    sinks.append(_LOGS)


def forget_logs(telemetry: Any) -> None:
    """Undo ``remember_logs`` (``%unload_ext``): the records kept so far stay readable."""
    sinks = telemetry.log_tap.sinks
    sinks[:] = [sink for sink in sinks if sink is not _LOGS]


def log_record(record: Any) -> dict[str, Any]:
    """An SDK log record (``ReadableLogRecord`` or a plain one) as the flat shape read_logs gives."""
    inner = getattr(record, "log_record", record)
    span_id = getattr(inner, "span_id", 0) or 0
    return {
        "body": inner.body,
        "severity": inner.severity_text or "",
        "trace_id": format(inner.trace_id, "032x") if getattr(inner, "trace_id", 0) else None,
        "span_id": format(span_id, "016x") if span_id else None,
        "time_ns": inner.timestamp or inner.observed_timestamp or 0,
        "attributes": dict(inner.attributes or {}),
    }


def _remembered_logs() -> list[dict[str, Any]]:
    if not _LOGS:
        return []
    out = []
    for record in list(_LOGS):
        try:
            out.append(log_record(record))
        except Exception:  # noqa: BLE001 - a foreign record shape must not break the view
            continue
    return out


# --- formatting ------------------------------------------------------------------------------


def _ms(record: dict[str, Any]) -> float:
    elapsed_ns: int = record["end_ns"] - record["start_ns"]
    return max(0, elapsed_ns) / 1e6


def _fmt_ms(ms: float) -> str:
    if ms < 1:
        return f"{ms * 1000:.0f} µs"
    return f"{ms:.1f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def _fmt_tick(ms: float) -> str:
    """A tick label: round values without a trailing ".0" (50 ms, 1.5 s)."""
    if ms == 0:
        return "0"
    if ms < 1:
        return f"{ms * 1000:g} µs"
    return f"{ms:g} ms" if ms < 1000 else f"{ms / 1000:g} s"


def _kind(record: Mapping[str, Any]) -> str:
    name = record.get("kind_name")
    if name:
        return str(name)
    kind = record.get("kind", 0)
    return _OTLP_KINDS.get(kind, str(kind)) if isinstance(kind, int) else str(kind)


def _service(record: Mapping[str, Any]) -> str:
    return str((record.get("resource") or {}).get(_SERVICE, ""))


def _ticks(total_ms: float) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) from 0 across ``total_ms``."""
    if total_ms <= 0:
        return [0.0]
    raw = total_ms / 6
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    count = int(total_ms // step)
    return [i * step for i in range(count + 1)]


def _value_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(repr(v) if isinstance(v, str) else str(v) for v in value) + "]"
    return str(value)


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


_CSS = """
.o11yt{--o11yt-fg:var(--jp-ui-font-color1,#1f1f1f);--o11yt-muted:var(--jp-ui-font-color2,#5f6368);
--o11yt-line:var(--jp-border-color2,#e0e0e0);--o11yt-soft:var(--jp-layout-color2,#f0f0f0);
--o11yt-bar:var(--jp-brand-color1,#1976d2);--o11yt-err:var(--jp-error-color1,#d32f2f);
font-family:var(--jp-code-font-family,monospace);font-size:12px;line-height:1.45;
color:var(--o11yt-fg);text-align:left;max-width:100%}
.o11yt .o11yt-head{display:flex;flex-wrap:wrap;gap:4px 12px;align-items:baseline;margin:0 0 4px 0}
.o11yt .o11yt-meta{color:var(--o11yt-muted)}
.o11yt .o11yt-grid{display:grid;grid-template-columns:minmax(9em,30%) 10em 5.5em minmax(8em,1fr);
column-gap:10px;align-items:center}
.o11yt .o11yt-axis{font-size:10px;color:var(--o11yt-muted);padding:0 4px;
border-bottom:1px solid var(--o11yt-line)}
.o11yt .o11yt-ticks{position:relative;height:16px}
.o11yt .o11yt-tick{position:absolute;bottom:0;padding-left:3px;white-space:nowrap;
border-left:1px solid var(--o11yt-muted);line-height:14px}
.o11yt .o11yt-tick-end{padding-left:0;padding-right:3px;border-left:none;
border-right:1px solid var(--o11yt-muted);transform:translateX(-100%)}
.o11yt details.o11yt-span{margin:0;padding:0}
.o11yt details.o11yt-span>summary{display:grid;list-style:none;cursor:pointer;padding:2px 4px;
border-bottom:1px solid var(--o11yt-line)}
.o11yt details.o11yt-span>summary::-webkit-details-marker{display:none}
.o11yt details.o11yt-span>summary::marker{content:""}
.o11yt details.o11yt-span>summary:hover{background:var(--o11yt-soft)}
.o11yt details.o11yt-span[open]>summary{background:var(--o11yt-soft);font-weight:bold}
.o11yt .o11yt-name,.o11yt .o11yt-kind{overflow:hidden;text-overflow:ellipsis;white-space:nowrap;
min-width:0}
.o11yt .o11yt-kind{color:var(--o11yt-muted)}
.o11yt .o11yt-dur{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.o11yt .o11yt-lane{position:relative;height:12px;min-width:0}
.o11yt .o11yt-bar{position:absolute;top:1px;height:10px;border-radius:2px;
margin-left:0!important;min-width:2px!important;max-width:none!important;
background:var(--o11yt-bar)!important}
.o11yt .o11yt-error .o11yt-bar{background:var(--o11yt-err)!important}
.o11yt .o11yt-error .o11yt-label{color:var(--o11yt-err)}
.o11yt .o11yt-tw{display:inline-block;width:1.2em;color:var(--o11yt-muted)}
.o11yt .o11yt-hidden{display:none}
.o11yt .o11yt-detail{margin:0 0 6px 0;padding:6px 10px;border-left:3px solid var(--o11yt-bar);
border-bottom:1px solid var(--o11yt-line);cursor:auto;user-select:text}
.o11yt .o11yt-error .o11yt-detail{border-left-color:var(--o11yt-err)}
.o11yt .o11yt-detail h4{font-size:11px;margin:6px 0 2px 0;color:var(--o11yt-muted);font-weight:bold}
.o11yt .o11yt-detail table{border-collapse:collapse;width:100%;table-layout:auto;margin:0}
.o11yt .o11yt-detail tr,.o11yt .o11yt-detail tr:nth-child(odd),.o11yt .o11yt-detail tr:hover{
background:transparent}
.o11yt .o11yt-detail td{vertical-align:top;text-align:left;padding:1px 12px 1px 0;border:none;
font-size:12px}
.o11yt .o11yt-k{white-space:nowrap;color:var(--o11yt-muted);width:1%}
.o11yt .o11yt-v{white-space:pre-wrap;word-break:break-all;user-select:text}
.o11yt .o11yt-tools{margin-left:auto;white-space:nowrap}
.o11yt .o11yt-copy,.o11yt .o11yt-all{font:inherit;font-size:11px;cursor:pointer;
color:var(--o11yt-fg);background:var(--o11yt-soft);border:1px solid var(--o11yt-line);
border-radius:3px;padding:0 6px;margin-left:6px}
"""

# Reads only the page's own DOM (ids, classes): no data is spliced into the script.
_JS = """
(function(){
var script=document.currentScript,root=script&&script.parentNode;
if(!root||root.getAttribute('data-live')==='1')return;
root.setAttribute('data-live','1');
var rows=Array.prototype.slice.call(root.querySelectorAll('details.o11yt-span'));
var byId={};
rows.forEach(function(r){byId[r.getAttribute('data-id')]=r;});
function shut(r){return r.getAttribute('data-collapsed')==='1';}
function apply(){
  var hidden={};
  rows.forEach(function(r){
    var p=r.getAttribute('data-parent'),up=p&&byId[p];
    var h=!!(up&&(hidden[p]||shut(up)));
    hidden[r.getAttribute('data-id')]=h;
    r.classList.toggle('o11yt-hidden',h);
    var tw=r.querySelector('.o11yt-tw[data-kids]');
    if(tw)tw.textContent=shut(r)?'\\u25b8':'\\u25be';
  });
}
function copy(text,button){
  var done=function(){button.textContent='copied';};
  if(navigator.clipboard&&navigator.clipboard.writeText){
    navigator.clipboard.writeText(text).then(done,function(){});
  }
}
root.querySelectorAll('table.o11yt-attrs').forEach(function(t){
  var b=document.createElement('button');
  b.className='o11yt-copy';b.type='button';b.textContent='copy';
  var h=t.previousElementSibling;if(h)h.appendChild(b);
});
var head=root.querySelector('.o11yt-head');
if(head&&root.querySelector('.o11yt-tw[data-kids]')){
  var tools=document.createElement('span');tools.className='o11yt-tools';
  [['expand all','0'],['collapse all','1']].forEach(function(x){
    var b=document.createElement('button');
    b.className='o11yt-all';b.type='button';b.textContent=x[0];b.setAttribute('data-to',x[1]);
    tools.appendChild(b);
  });
  head.appendChild(tools);
}
root.addEventListener('click',function(e){
  var t=e.target;if(!t||!t.closest)return;
  var tw=t.closest('.o11yt-tw[data-kids]');
  if(tw){e.preventDefault();var r=tw.closest('details');
    r.setAttribute('data-collapsed',shut(r)?'0':'1');apply();return;}
  var all=t.closest('.o11yt-all');
  if(all){rows.forEach(function(r){if(r.querySelector('.o11yt-tw[data-kids]'))
    r.setAttribute('data-collapsed',all.getAttribute('data-to'));});apply();return;}
  var c=t.closest('.o11yt-copy');
  if(c){e.preventDefault();var table=c.parentNode.nextElementSibling;
    var lines=Array.prototype.map.call(table.rows,function(tr){
      return tr.cells[0].textContent+'='+tr.cells[1].textContent;});
    copy(lines.join('\\n'),c);}
});
apply();
})();
"""


class TraceView:
    """A trace (or a subtree) as a tree with durations: HTML in a notebook, text in a terminal.

    In a notebook it is a waterfall: a time axis, one row per span (name, kind and service,
    duration, bar, in columns that never overlap), subtrees that collapse, and a detail pane per
    row (click it) with every attribute whole and copyable, the span's events and the log
    records emitted under it. ``logs`` are flat log records (``otlpjson.read_logs`` or
    ``log_record``); by default those kept by ``remember_logs``.
    """

    _SHOWN = (
        semconv.GEN_AI_REQUEST_MODEL,
        semconv.GEN_AI_USAGE_INPUT_TOKENS,
        semconv.GEN_AI_USAGE_OUTPUT_TOKENS,
        semconv.GEN_AI_USAGE_COST,
        semconv.ERROR_TYPE,
        semconv.HW_ENERGY_SPAN,
    )

    def __init__(
        self,
        records: Sequence[dict[str, Any]],
        title: str = "",
        logs: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        self.records = sorted(records, key=lambda r: r["start_ns"])
        self.title = title
        self._logs = logs
        self._shared_resource = False
        self._resource_said = False

    def _rows(self) -> list[tuple[int, dict[str, Any]]]:
        return tree_rows(self.records)

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

    # -- the HTML explorer

    def _logs_by_span(self) -> dict[str, list[dict[str, Any]]]:
        logs = self._logs if self._logs is not None else _remembered_logs()
        ids = {r["span_id"] for r in self.records}
        found: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for log in logs:
            if log.get("span_id") in ids:
                found[log["span_id"]].append(log)
        return found

    def _repr_html_(self) -> str:
        if not self.records:
            return "<p><em>No spans yet: run a <code>%%traced</code> cell first.</em></p>"
        start = min(r["start_ns"] for r in self.records)
        end = max(r["end_ns"] for r in self.records)
        total = max(end - start, 1)
        rows = self._rows()
        # One process's spans share one resource: its table goes in the first row's pane only
        # (14 rows repeated on every span made a 1,000-span view 2 MB).
        resources = [r.get("resource") or {} for r in self.records]
        self._shared_resource = all(r == resources[0] for r in resources)
        self._resource_said = False
        has_children = {r["parent_span_id"] for _, r in rows}
        big = len(rows) > _COLLAPSE_BEYOND_SPANS
        logs = self._logs_by_span()
        services = sorted({s for s in (_service(r) for r in self.records) if s})
        errors = sum(r["status"] == "ERROR" for r in self.records)
        started = _dt.datetime.fromtimestamp(start / 1e9).strftime("%Y-%m-%d %H:%M:%S")

        out = ['<div class="o11yt">', f"<style>{_CSS}</style>", '<div class="o11yt-head">']
        if self.title:
            out.append(f"<b>{_esc(self.title)}</b> ")
        meta = [
            f"{len(rows)} span{'s' if len(rows) != 1 else ''}",
            _fmt_ms(total / 1e6),
            f"started {started}",
        ]
        if services:
            meta.append("service " + ", ".join(services))
        if errors:
            meta.append(f"{errors} error{'s' if errors != 1 else ''}")
        out.append(f'<span class="o11yt-meta">{_esc(" · ".join(meta))}</span></div>')

        total_ms = total / 1e6
        # Spaces between the pieces: where a sanitizer drops the <style>, the text still parts.
        ticks = " ".join(
            f'<span class="o11yt-tick{" o11yt-tick-end" if t / total_ms > 0.9 else ""}" '
            f'style="left:{100 * t / total_ms:.2f}%">{_esc(_fmt_tick(t))}</span>'
            for t in _ticks(total_ms)
        )
        out.append(
            '<div class="o11yt-axis o11yt-grid"><span>span</span> <span>kind · service</span> '
            f'<span class="o11yt-dur">duration</span> <div class="o11yt-ticks">{ticks}</div></div>'
        )
        for depth, record in rows:
            kids = record["span_id"] in has_children
            collapsed = kids and (depth >= _OPEN_DEPTH or (big and depth >= 1))
            out.append(self._row_html(record, depth, start, total, kids, collapsed, logs, services))
            self._resource_said = True
        out.append(f"<script>{_JS}</script></div>")
        return "".join(out)

    def _row_html(
        self,
        record: dict[str, Any],
        depth: int,
        start: int,
        total: int,
        kids: bool,
        collapsed: bool,
        logs: Mapping[str, list[dict[str, Any]]],
        services: list[str],
    ) -> str:
        left = 100 * (record["start_ns"] - start) / total
        width = max(0.2, 100 * (record["end_ns"] - record["start_ns"]) / total)
        width = min(width, 100 - left)
        error = record["status"] == "ERROR"
        kind = _kind(record)
        service = _service(record)
        where = kind + (f" · {service}" if service and len(services) > 1 else "")
        twisty = (
            '<span class="o11yt-tw" data-kids="1">▾</span>'
            if kids
            else '<span class="o11yt-tw"> </span>'
        )
        parent = record["parent_span_id"] or ""
        # Where a sanitizer drops the <style> (an untrusted notebook), the row still reads:
        # spaces part name, kind and duration, and the bar (a block on its own line) is placed
        # with margin-left/min-width, properties such sanitizers keep. The stylesheet, when
        # present, overrides them.
        colour = "#d9534f" if error else "#4a90d9"
        return (
            f'<details class="o11yt-span{" o11yt-error" if error else ""}" '
            f'data-id="{_esc(record["span_id"])}" data-parent="{_esc(parent)}" '
            f'data-collapsed="{"1" if collapsed else "0"}">'
            f'<summary class="o11yt-grid">'
            f'<span class="o11yt-name" style="padding-left:{depth * 14}px">{twisty}'
            f'<span class="o11yt-label">{"✗ " if error else ""}{_esc(record["name"])}</span></span> '
            f'<span class="o11yt-kind">{_esc(where)}</span> '
            f'<span class="o11yt-dur">{_fmt_ms(_ms(record))}</span> '
            f'<div class="o11yt-lane"><div class="o11yt-bar" style="left:{left:.2f}%;'
            f"width:{width:.2f}%;margin-left:{left:.2f}%;min-width:{width:.2f}%;"
            f'max-width:{width:.2f}%;min-height:8px;background-color:{colour}"></div></div>'
            f"</summary>{self._detail_html(record, start, logs.get(record['span_id'], []))}"
            "</details>"
        )

    def _detail_html(
        self, record: dict[str, Any], trace_start: int, logs: list[dict[str, Any]]
    ) -> str:
        def table(pairs: Iterable[tuple[str, Any]], css: str = "o11yt-attrs") -> str:
            body = "".join(
                f'<tr><td class="o11yt-k">{_esc(k)}</td><td class="o11yt-v">{_esc(_value_text(v))}</td></tr>'
                for k, v in pairs
            )
            return f'<table class="{css}">{body}</table>'

        def offset(ns: Any) -> str:
            if not ns:
                return ""
            return "+" + _fmt_ms(max(0, int(ns) - trace_start) / 1e6)

        status = record["status"] if record["status"] != "UNSET" else "OK (unset)"
        if record.get("status_message"):
            status += f": {record['status_message']}"
        span_rows = [
            ("name", record["name"]),
            ("status", status),
            ("kind", _kind(record)),
            ("service", _service(record) or "—"),
            ("scope", record.get("scope") or "—"),
            ("start", f"{offset(record['start_ns']) or '+0 µs'} into the trace"),
            ("duration", _fmt_ms(_ms(record))),
            ("span id", record["span_id"]),
            ("parent id", record["parent_span_id"] or "—"),
            ("trace id", record["trace_id"]),
        ]
        parts = ['<div class="o11yt-detail">', table(span_rows, "o11yt-span-info")]
        attributes = sorted(record["attributes"].items())
        parts.append(f"<h4>attributes ({len(attributes)})</h4>")
        parts.append(table(attributes))
        events = record.get("events") or []
        if events:
            parts.append(f"<h4>events ({len(events)})</h4>")
            for event in events:
                when = offset(event.get("time_ns"))
                parts.append(f"<div><b>{_esc(event['name'])}</b> {_esc(when)}</div>")
                if event.get("attributes"):
                    parts.append(table(sorted(event["attributes"].items())))
        if logs:
            parts.append(f"<h4>logs ({len(logs)})</h4>")
            parts.append(
                table(
                    (
                        f"{offset(log.get('time_ns'))} {log.get('severity') or ''}".strip(),
                        log.get("body", ""),
                    )
                    for log in logs
                )
            )
        resource = sorted((record.get("resource") or {}).items())
        if resource and not (self._shared_resource and self._resource_said):
            shared = ", the same for every span" if self._shared_resource else ""
            parts.append(f"<h4>resource ({len(resource)}{shared})</h4>")
            parts.append(table(resource))
        parts.append("</div>")
        return "".join(parts)


# --- the DataFrame ---------------------------------------------------------------------------

# The few gen_ai attributes worth a column by default, under short names.
_FRIENDLY_ATTRIBUTES = (
    ("model", (semconv.GEN_AI_RESPONSE_MODEL, semconv.GEN_AI_REQUEST_MODEL)),
    ("input_tokens", (semconv.GEN_AI_USAGE_INPUT_TOKENS,)),
    ("output_tokens", (semconv.GEN_AI_USAGE_OUTPUT_TOKENS,)),
    ("cost_usd", (semconv.GEN_AI_USAGE_COST,)),
    ("error", (semconv.ERROR_TYPE,)),
)


def spans_dataframe(records: Iterable[dict[str, Any]], raw: bool = False) -> Any:
    """Recent spans as a pandas DataFrame, one row per span.

    By default a readable table: ``name``, ``kind``, ``status`` (OK or ERROR; OpenTelemetry's
    UNSET means the span ended without an error, so it reads OK), ``start`` in local time to the
    millisecond, ``duration_ms`` rounded as the trace view shows it, ``parent`` (the parent's
    name), the main gen_ai columns that any span has (``model``, ``input_tokens``,
    ``output_tokens``, ``cost_usd`` only where some span cost money, ``error``) and
    ``trace_id``, indexed by ``span_id``.

    ``raw=True`` gives everything: ids, nanosecond UTC start, unrounded duration, the status as
    recorded and one column per attribute.
    """
    import pandas as pd

    records = list(records)
    if raw:
        return _raw_dataframe(records)
    names = {r["span_id"]: r["name"] for r in records}
    rows = []
    for record in records:
        attributes = record["attributes"]
        row: dict[str, Any] = {
            "span_id": record["span_id"],
            "name": record["name"],
            "kind": _kind(record),
            "status": "ERROR" if record["status"] == "ERROR" else "OK",
            "start": record["start_ns"],
            "duration_ms": round(_ms(record), 1),
            "parent": names.get(record["parent_span_id"] or "", record["parent_span_id"] or ""),
        }
        for column, keys in _FRIENDLY_ATTRIBUTES:
            row[column] = next((attributes[k] for k in keys if k in attributes), None)
        row["trace_id"] = record["trace_id"]
        rows.append(row)
    columns = ["span_id", "name", "kind", "status", "start", "duration_ms", "parent"]
    columns += [c for c, _ in _FRIENDLY_ATTRIBUTES] + ["trace_id"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["start"] = (
        pd.to_datetime(frame["start"], unit="ns", utc=True)
        .dt.tz_convert(_dt.datetime.now().astimezone().tzinfo)
        .dt.tz_localize(None)
        .dt.floor("ms")
    )
    optional = [c for c, _ in _FRIENDLY_ATTRIBUTES]
    # Local models cost 0 and say so on the span; a column of zeros is noise, so it shows only
    # when some span cost money.
    costs = pd.to_numeric(frame["cost_usd"], errors="coerce")
    if not (costs.fillna(0) > 0).any():
        frame = frame.drop(columns=["cost_usd"])
        optional.remove("cost_usd")
    else:
        frame["cost_usd"] = costs.round(6)
    empty = [c for c in optional if frame[c].isna().all()]
    for column in ("model", "error"):
        if column not in empty:
            frame[column] = frame[column].fillna("")
    for column in ("input_tokens", "output_tokens"):
        if column not in empty:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    return frame.drop(columns=empty).set_index("span_id")


def _raw_dataframe(records: list[dict[str, Any]]) -> Any:
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
