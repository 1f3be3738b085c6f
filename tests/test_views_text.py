"""What ``%o11y status`` and ``%o11y spans`` say, read as a user reads them."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from o11ylab import semconv
from o11ylab.status import StatusView
from o11ylab.telemetry import get_telemetry
from o11ylab.traceview import TraceView, span_record, spans_dataframe


def status_rows(**changes: Any) -> dict[str, str]:
    status = {**get_telemetry().status(), **changes}
    return dict(StatusView(status, autotrace=False)._lines())


def test_status_says_nothing_was_exported_yet_instead_of_zero() -> None:
    exporters = [
        {"name": "file metrics", "target": "/runs/x", "exported": 0, "failed": 0},
        {"name": "file traces", "target": "/runs/x", "exported": 5, "failed": 1},
    ]
    rows = status_rows(exporters=exporters)
    assert rows["file metrics"].startswith("nothing exported yet (at the next export interval")
    assert "0 exported" not in rows["file metrics"]
    assert rows["file traces"] == "5 exported, 1 failed → /runs/x"


def test_status_puts_the_capture_mode_in_words() -> None:
    off = status_rows(content_capture="NO_CONTENT")["content capture"]
    assert off.startswith("off") and "NO_CONTENT" not in off
    assert "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=SPAN_ONLY" in off
    assert status_rows(content_capture="SPAN_ONLY")["content capture"].startswith("on:")


def spans() -> list[dict[str, Any]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("views-test")
    with tracer.start_as_current_span("cell"):
        with tracer.start_as_current_span("chat local", kind=SpanKind.CLIENT) as chat:
            chat.set_attributes(
                {
                    semconv.GEN_AI_REQUEST_MODEL: "SmolLM2",
                    semconv.GEN_AI_USAGE_INPUT_TOKENS: 12,
                    semconv.GEN_AI_USAGE_OUTPUT_TOKENS: 5,
                    semconv.GEN_AI_USAGE_COST: 0.0,
                    "http.url": "http://127.0.0.1/v1",
                }
            )
        with tracer.start_as_current_span("broken") as broken:
            broken.set_status(Status(StatusCode.ERROR, "boom"))
    provider.shutdown()
    return [span_record(s) for s in exporter.get_finished_spans()]


def test_spans_dataframe_is_a_short_readable_table() -> None:
    records = spans()
    df = spans_dataframe(records)
    assert list(df.columns) == [
        "name",
        "kind",
        "status",
        "start",
        "duration_ms",
        "parent",
        "model",
        "input_tokens",
        "output_tokens",
        "trace_id",
    ], "no cost column when nothing cost money, no column per raw attribute"
    by_name = df.set_index("name")
    assert by_name.loc["cell", "status"] == "OK" and by_name.loc["broken", "status"] == "ERROR"
    assert by_name.loc["chat local", "kind"] == "client"
    assert by_name.loc["chat local", "parent"] == "cell" and by_name.loc["cell", "parent"] == ""
    assert by_name.loc["chat local", "input_tokens"] == 12
    assert df["start"].dt.tz is None, "local wall time, no UTC offset to read"
    # The same duration as the trace view shows, to its 0.1 ms.
    view = repr(TraceView(records))
    for name, ms in by_name["duration_ms"].items():
        assert ms == round(ms, 1)
        if ms >= 1:
            assert f"{name}  {ms:.1f} ms" in view
    raw = spans_dataframe(records, raw=True)
    assert "http.url" in raw.columns and set(raw["status"]) == {"UNSET", "ERROR"}


def test_spans_dataframe_shows_cost_only_where_money_was_spent() -> None:
    records = spans()
    for record in records:
        if record["name"] == "chat local":
            record["attributes"][semconv.GEN_AI_USAGE_COST] = 0.0035
    df = spans_dataframe(records)
    assert df.set_index("name").loc["chat local", "cost_usd"] == 0.0035


def big_trace(children: int, grandchildren: int) -> list[dict[str, Any]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("views-test")
    with tracer.start_as_current_span("cell"):
        for i in range(children):
            with tracer.start_as_current_span(f"step {i}"):
                for j in range(grandchildren):
                    with tracer.start_as_current_span(f"call {i}.{j}"):
                        pass
    provider.shutdown()
    return [span_record(s) for s in exporter.get_finished_spans()]


def test_a_thousand_span_trace_opens_with_its_top_levels_only() -> None:
    import re
    import time

    records = big_trace(children=100, grandchildren=9)  # 1,001 spans
    started = time.perf_counter()
    markup = TraceView(records, title="big")._repr_html_()
    elapsed = time.perf_counter() - started
    flags = dict(re.findall(r'data-id="(\w+)" data-parent="\w*" data-collapsed="(\d)"', markup))
    by_name = {r["name"]: r["span_id"] for r in records}
    assert flags[by_name["cell"]] == "0", "the root starts open: its 100 steps show"
    assert flags[by_name["step 7"]] == "1", "each step starts collapsed over its calls"
    assert flags[by_name["call 7.3"]] == "0", "a leaf has nothing to collapse"
    assert elapsed < 2.0, f"rendering 1,001 spans took {elapsed:.2f} s"


def test_a_small_trace_opens_fully() -> None:
    import re

    markup = TraceView(big_trace(children=3, grandchildren=2))._repr_html_()
    assert set(re.findall(r'data-collapsed="(\d)"', markup)) == {"0"}
