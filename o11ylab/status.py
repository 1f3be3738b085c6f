"""``%o11y status``: where telemetry goes and what happened to it, as text and as HTML."""

from __future__ import annotations

import html
from typing import Any

__all__ = ["StatusView", "capture_words", "export_words"]

# OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT's values, in words a user acts on.
_CAPTURE = {
    "NO_CONTENT": (
        "off: prompts and answers are not recorded "
        "(set OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=SPAN_ONLY to record them)"
    ),
    "SPAN_ONLY": "on: prompts and answers are recorded on the spans",
    "EVENT_ONLY": "on: prompts and answers are recorded as log events",
    "SPAN_AND_EVENT": "on: prompts and answers are recorded on the spans and as log events",
}


def capture_words(mode: str) -> str:
    """The content-capture mode in plain words (an unknown value is shown as it is)."""
    return _CAPTURE.get(str(mode).upper(), str(mode))


def export_words(exporter: dict[str, Any]) -> str:
    """One exporter's counts; before its first export it says so rather than "0 exported"."""
    exported, failed, target = exporter["exported"], exporter["failed"], exporter["target"]
    dropped = exporter.get("dropped", 0)
    if not exported and not failed and not dropped:
        when = (
            "at the next export interval"
            if "metric" in str(exporter["name"])
            else "when the next batch leaves"
        )
        return f"nothing exported yet ({when}, or now with %o11y flush) → {target}"
    lost = f"{failed} failed" + (f" ({dropped} dropped: queue full)" if dropped else "")
    return f"{exported} exported, {lost} → {target}"


class StatusView:
    def __init__(self, status: dict[str, Any], autotrace: bool) -> None:
        self.status = status
        self.autotrace = autotrace

    def _lines(self) -> list[tuple[str, str]]:
        s = self.status
        rows = [
            ("service", str(s["service"])),
            ("run folder", s["run_dir"] or "off (O11YLAB_TRACE_FILE=0)"),
            (
                "OTLP",
                ", ".join(f"{k} → {v}" for k, v in s["otlp"].items())
                or "off (set OTEL_EXPORTER_OTLP_ENDPOINT)",
            ),
            ("/metrics", s["prometheus"] or "off"),
            ("autotrace", "on" if self.autotrace else "off"),
            ("content capture", capture_words(s["content_capture"])),
            ("queued", str(s["queued"])),
            ("spans in memory", str(s["buffered_spans"])),
        ]
        for exporter in s["exporters"]:
            rows.append((exporter["name"], export_words(exporter)))
        for row in s.get("instrumentation", ()):
            state = row["state"]
            detail = f"{row['library']} {row['library_version']}".strip()
            text = f"{state}: {detail} by {row['instrumentor']}"
            if row["reason"] and state not in ("instrumented", "waiting"):
                text += f" ({row['reason']})"
            elif state == "waiting":
                text = f"waiting for `import {row['library']}` ({row['instrumentor']})"
            rows.append((f"traced: {row['name']}", text))
        if s.get("openai_default"):
            rows.append(("openai SDK", s["openai_default"]))
        if s.get("prices"):
            rows.append(("prices", s["prices"]))
        if s.get("hardware"):
            rows.append(("hardware", s["hardware"]))
        rows.extend(("note", note) for note in s["notes"])
        return rows

    def __repr__(self) -> str:
        rows = self._lines()
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)

    def _repr_html_(self) -> str:
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
            f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
            for k, v in self._lines()
        )
        return f"<table class='o11ylab-status'>{body}</table>"
