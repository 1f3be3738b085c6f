"""``%o11y status``: where telemetry goes and what happened to it, as text and as HTML."""

from __future__ import annotations

import html
from typing import Any

__all__ = ["StatusView"]


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
            ("content capture", s["content_capture"]),
            ("queued", str(s["queued"])),
            ("spans in memory", str(s["buffered_spans"])),
        ]
        for exporter in s["exporters"]:
            dropped = exporter.get("dropped", 0)
            failed = f"{exporter['failed']} failed" + (
                f" ({dropped} dropped: queue full)" if dropped else ""
            )
            rows.append(
                (
                    exporter["name"],
                    f"{exporter['exported']} exported, {failed} → {exporter['target']}",
                )
            )
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
