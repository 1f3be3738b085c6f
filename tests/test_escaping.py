"""Hostile text in the HTML o11ylab renders: the trace view, ``%o11y status``, the monitor.

Span names, attribute values, the service name, a run folder's path and GPU names from the
driver are all text o11ylab did not write. Rendered, each must stay text: the page parses to
exactly the tags the view itself makes, with no event-handler attribute, no comment opened by
the data, and the hostile string readable, whole, as text (escaped, not stripped).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from o11ylab import semconv
from o11ylab.hardware import HardwareSettings, Sampler
from o11ylab.status import StatusView
from o11ylab.telemetry import get_telemetry
from o11ylab.traceview import TraceView, span_record
from o11ylab.widgets import HardwareMonitor

from .conftest import ROOT
from .fake_nvml import FakeGpu, FakeNvml

pytestmark = pytest.mark.timeout(120)

HOSTILE = [
    "<script>alert('x')</script>",
    "</td></tr></table><script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    '" onmouseover="alert(1)" x="',
    "' onerror='alert(1)",
    "<!-- an open comment",
    "<svg/onload=alert(1)>",
    "<style>*{display:none}</style>",
    "&lt;already escaped&gt; & raw &amp;",
    "javascript:alert(document.cookie)",
    "</div></b><iframe src=//evil>",
]
fragments = st.sampled_from([*HOSTILE, "<", ">", '"', "'", "&", "`", "=", "/", "</", "-->"])
hostile_text = (
    st.lists(
        st.one_of(fragments, st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=6)),
        min_size=1,
        max_size=5,
    )
    .map("".join)
    .filter(str.strip)
)


class Page(HTMLParser):
    """What a browser would build from the HTML: tags, attributes, text and comments."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str]] = []
        self.texts: list[str] = []
        self.comments: list[str] = []
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend((name, value or "") for name, value in attrs)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        self.texts.append(data)

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)

    def handle_decl(self, decl: str) -> None:
        self.comments.append(decl)

    def unknown_decl(self, data: str) -> None:
        self.comments.append(data)

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def titles(self) -> list[str]:
        return [value for name, value in self.attributes if name == "title"]


def assert_inert(markup: str, allowed_tags: set[str], allowed_attributes: set[str]) -> Page:
    page = Page(markup)
    assert set(page.tags) <= allowed_tags, f"tags {set(page.tags) - allowed_tags} in {markup}"
    names = {name for name, _ in page.attributes}
    assert names <= allowed_attributes, f"attributes {names - allowed_attributes} in {markup}"
    assert not any(name.startswith("on") for name in names), markup
    assert page.comments == [], f"the data opened a comment or declaration: {page.comments}"
    for name, value in page.attributes:  # the view's own CSS only: nothing spliced into it
        if name == "style":
            assert re.fullmatch(r"([a-z-]+:[#%.\w -]+;?)*", value), value
    return page


# --- the trace view (%o11y trace) ----------------------------------------------------------------

# The explorer's own markup: rows are <details>/<summary>, the detail pane holds tables; its CSS
# and script are constants (test_the_trace_views_css_and_script_are_constants checks that).
TRACE_TAGS = {
    "div",
    "b",
    "span",
    "style",
    "script",
    "details",
    "summary",
    "h4",
    "table",
    "tr",
    "td",
}
TRACE_ATTRIBUTES = {"class", "style", "data-id", "data-parent", "data-collapsed", "data-kids"}


def hostile_spans(name: str, value: str) -> list[dict[str, Any]]:
    """Real SDK spans (not hand-made records) named and attributed with ``name`` / ``value``."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("escaping-test")
    child_attributes = {semconv.GEN_AI_REQUEST_MODEL: value, semconv.ERROR_TYPE: value}
    with (
        tracer.start_as_current_span(name, attributes={"team": value, value: "as a key"}),
        tracer.start_as_current_span(f"chat {value}", attributes=child_attributes) as child,
    ):
        child.set_status(Status(StatusCode.ERROR, value))
    provider.shutdown()
    return [span_record(span) for span in exporter.get_finished_spans()]


@settings(max_examples=80, deadline=None)
@given(name=hostile_text, value=hostile_text)
def test_trace_view_shows_hostile_names_and_attributes_as_text(name: str, value: str) -> None:
    view = TraceView(hostile_spans(name, value), title=f"trace {name}")
    page = assert_inert(view._repr_html_(), TRACE_TAGS, TRACE_ATTRIBUTES)
    assert page.tags.count("summary") == 2, "one row per span: nothing closed a row early"
    assert name in page.text and f"chat {value}" in page.text, "names are shown, whole"
    # The detail pane: each attribute a key cell then its whole value
    assert f"{semconv.GEN_AI_REQUEST_MODEL}{value}" in page.text, "the model attribute too"
    assert f"team{value}" in page.text, "the detail pane keeps every attribute"


def test_the_trace_views_css_and_script_are_constants() -> None:
    """Hostile names never reach the explorer's <style> or <script>: both are fixed text."""
    from o11ylab import traceview

    hostile = "</style></script><script>alert(1)</script>"
    markup = TraceView(hostile_spans(hostile, hostile), title=hostile)._repr_html_()
    styles = re.findall(r"<style>(.*?)</style>", markup, re.S)
    scripts = re.findall(r"<script>(.*?)</script>", markup, re.S)
    assert styles == [traceview._CSS] and scripts == [traceview._JS]


def test_percent_o11y_trace_in_the_shell_escapes_what_the_cell_named(shell: Any) -> None:
    hostile = '<img src=x onerror="alert(1)">'
    source = (
        f"%%traced '{hostile}' --quiet --attr 'note=</td><script>alert(2)</script>'\n"
        "import o11ylab\n"
        f"with o11ylab.span({hostile!r}, model={hostile!r}):\n    pass"
    )
    assert shell.run_cell(source).success
    view = shell.run_line_magic("o11y", "trace")
    markup = shell.display_formatter.format(view)[0]["text/html"]  # what the notebook gets
    page = assert_inert(markup, TRACE_TAGS, TRACE_ATTRIBUTES)
    assert hostile in page.text and page.tags.count("summary") == 2
    assert "note</td><script>alert(2)</script>" in page.text


# --- %o11y status --------------------------------------------------------------------------------

STATUS_TAGS = {"table", "tr", "th", "td"}
STATUS_ATTRIBUTES = {"class", "style"}


@settings(max_examples=60, deadline=None)
@given(text=hostile_text)
def test_status_shows_hostile_service_folder_targets_and_notes_as_text(
    shell: Any, text: str
) -> None:
    status = get_telemetry().status()  # the real shape, then every free-text field made hostile
    status.update(
        service=text,
        run_dir=f"/tmp/{text}",
        prometheus=f"http://127.0.0.1:9464/{text}",
        otlp={"traces": f"http://{text}/v1/traces"},
        notes=[*status["notes"], f"hardware: 1 GPU ({text})"],
    )
    status["exporters"] = [
        *status["exporters"],
        {"name": text, "target": text, "exported": 1, "failed": 0},
    ]
    page = assert_inert(
        StatusView(status, autotrace=False)._repr_html_(), STATUS_TAGS, STATUS_ATTRIBUTES
    )
    rows = page.tags.count("tr")
    assert rows == len(StatusView(status, autotrace=False)._lines()), "no row added or lost"
    for shown in (text, f"/tmp/{text}", f"hardware: 1 GPU ({text})", f"http://{text}/v1/traces"):
        assert shown in page.text


# --- the hardware monitor ------------------------------------------------------------------------

WIDGET_TAGS = {"b", "span", "svg", "polyline", "line", "text"}
WIDGET_ATTRIBUTES = {
    "style",
    "class",
    "width",
    "height",
    "viewbox",
    "fill",
    "fill-opacity",
    "stroke",
    "stroke-opacity",
    "stroke-width",
    "points",
    "x",
    "y",
    "x1",
    "y1",
    "x2",
    "y2",
    "font-size",
    "text-anchor",
    "dominant-baseline",
}


def html_values(monitor: HardwareMonitor) -> list[str]:
    import ipywidgets as widgets

    return [w.value for w in monitor._all_widgets() if isinstance(w, widgets.HTML)]


def test_the_monitor_shows_hostile_gpu_names_from_the_driver_as_text() -> None:
    gpus = [
        FakeGpu(name=name, uuid=f"GPU-{i:08d}-0000-0000-0000-000000000000")
        for i, name in enumerate(HOSTILE)
    ]
    sampler = Sampler(FakeNvml(gpus), interval_s=0.2, settings=HardwareSettings())
    monitor = HardwareMonitor(sampler)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
            len(monitor._panels) == len(HOSTILE) and sampler.samples_taken >= 2
        ):
            time.sleep(0.05)
        assert len(monitor._panels) == len(HOSTILE), "one panel per GPU"
        for markup in html_values(monitor):
            assert_inert(markup, WIDGET_TAGS, WIDGET_ATTRIBUTES)
        for panel, name in zip(monitor._panels, HOSTILE, strict=True):
            assert name in Page(panel.title.value).text, "the GPU's name is shown, whole"
        # The still copy shown where the widget cannot render: the same names, as text.
        copy = assert_inert(
            monitor.snapshot_html(),
            WIDGET_TAGS | {"div", "style", "script", "table", "tr", "td"},
            WIDGET_ATTRIBUTES,
        )
        assert all(name in copy.text for name in HOSTILE)
        # The same names reach %o11y status through the sampler's notes and description.
        notes = [*sampler.notes, sampler.describe()]
        status = {**get_telemetry().status(), "notes": notes}
        page = assert_inert(
            StatusView(status, autotrace=False)._repr_html_(), STATUS_TAGS, STATUS_ATTRIBUTES
        )
        assert all(name in page.text for name in HOSTILE)
    finally:
        monitor.close()
        sampler.stop()


# --- all of it in a fresh kernel-like process, as a notebook receives it -------------------------


def test_a_hostile_service_name_run_folder_gpu_and_cell_reach_the_notebook_escaped(
    run_env: dict[str, str], tmp_path: Path
) -> None:
    hostile = "<script>alert('o11y')</script>"
    run_dir = tmp_path / f"run-{hostile.replace('/', '_')}"
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(ROOT)!r})
        from IPython.core.interactiveshell import InteractiveShell
        from o11ylab import hardware
        from tests.fake_nvml import FakeGpu, FakeNvml
        hostile = {hostile!r}
        sampler = hardware.Sampler(FakeNvml([FakeGpu(name=hostile)]), interval_s=0.2,
                                   settings=hardware.HardwareSettings())
        hardware.set_sampler(sampler)
        ip = InteractiveShell.instance()
        assert ip.run_cell("%load_ext o11ylab").success
        sampler.ready.wait(10)
        assert ip.run_cell("%%traced " + repr(hostile) + " --quiet\\nx = 1").success
        pages = {{}}
        for command in ("status", "trace"):
            shown = ip.run_cell("%o11y " + command).result
            pages[command] = ip.display_formatter.format(shown)[0]["text/html"]
        print("PAGES " + json.dumps(pages))
    """)
    env = {
        **run_env,
        "OTEL_SERVICE_NAME": hostile,
        "O11YLAB_RUN_DIR": str(run_dir),
        "O11YLAB_TRACE_FILE": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    pages = json.loads(done.stdout.split("PAGES ", 1)[1])
    status = assert_inert(pages["status"], STATUS_TAGS, STATUS_ATTRIBUTES)
    assert hostile in status.text, "the service name, as text"
    assert str(run_dir) in status.text, "the run folder, as text"
    assert f"({hostile})" in status.text, "the GPU's name from the driver, as text"
    trace = assert_inert(pages["trace"], TRACE_TAGS, TRACE_ATTRIBUTES)
    assert hostile in trace.text and trace.tags.count("summary") == 1
