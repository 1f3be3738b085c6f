"""The extension in a real IPython shell: %%traced, %o11y, hooks, load/unload/reload."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError

import o11ylab
from o11ylab import semconv
from o11ylab.config import ContentCapture
from o11ylab.telemetry import get_telemetry
from o11ylab.testing import capture_logs, capture_metrics, capture_spans, span_tree


def by_name(spans: list[Any], name: str) -> Any:
    matches = [s for s in spans if s.name == name]
    assert matches, f"no span {name!r} in {[s.name for s in spans]}"
    return matches[-1]


@pytest.fixture
def capture_content() -> Iterator[None]:
    telemetry = get_telemetry()
    saved = telemetry.settings
    telemetry.settings = dataclasses.replace(saved, capture_content=ContentCapture.SPAN_ONLY)
    yield
    telemetry.settings = saved


def test_traced_cell_is_a_span_and_everything_inside_nests_under_it(shell: Any) -> None:
    source = (
        "%%traced load-data --attr team=search --attr stage=1\n"
        "import o11ylab\n"
        "with o11ylab.span('read'):\n"
        "    with o11ylab.span('parse'):\n"
        "        rows = [1, 2, 3]\n"
        "len(rows)\n"
    )
    with capture_spans() as spans:
        result = shell.run_cell(source, store_history=True, cell_id="cell-abc")
    assert result.success
    assert span_tree(spans) == [(0, "load-data"), (1, "read"), (2, "parse")]
    cell = by_name(spans, "load-data")
    attributes = cell.attributes
    assert attributes["team"] == "search" and attributes["stage"] == "1"
    assert attributes[semconv.CELL_ID] == "cell-abc"
    assert isinstance(attributes[semconv.CELL_EXECUTION_COUNT], int)
    assert len(attributes[semconv.CELL_SOURCE_SHA256]) == 64
    assert semconv.CELL_SOURCE not in attributes, "cell text is recorded only when opted in"
    assert attributes[semconv.CELL_SPAN_COUNT] == 2
    assert shell.user_ns["rows"] == [1, 2, 3], "the body ran in the user's namespace"


def test_default_name_is_the_execution_count(shell: Any) -> None:
    with capture_spans() as spans:
        shell.run_cell("%%traced\nx = 1", store_history=True)
    (cell,) = spans
    assert cell.name == f"cell [{cell.attributes[semconv.CELL_EXECUTION_COUNT]}]"


def test_the_source_hash_is_the_bodys_however_the_cell_is_laid_out(shell: Any) -> None:
    with capture_spans() as spans:
        assert shell.run_cell("%%traced flush-left --quiet\nx = 1").success
        assert shell.run_cell("\n  %%traced indented --quiet\n  x = 1\n").success
    body = hashlib.sha256(b"x = 1\n").hexdigest()
    assert [(s.name, s.attributes[semconv.CELL_SOURCE_SHA256]) for s in spans] == [
        ("flush-left", body),
        ("indented", body),
    ]


def test_cell_source_is_recorded_only_with_content_capture(
    shell: Any, capture_content: None
) -> None:
    with capture_spans() as spans:
        shell.run_cell("%%traced\nsecret_prompt = 'tell me'", store_history=True)
        shell.run_cell("%%traced\nraise ValueError('x') # quoted", store_history=True)
    assert spans[0].attributes[semconv.CELL_SOURCE].strip() == "secret_prompt = 'tell me'"
    stack = spans[1].events[0].attributes["exception.stacktrace"]
    assert "raise ValueError('x') # quoted" in stack


def test_failing_cell_marks_the_span_and_fails_the_outer_cell_with_one_traceback(
    shell: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    with capture_spans() as spans:
        result = shell.run_cell("%%traced risky\n1 / 0", store_history=True)
    out = capsys.readouterr().out
    assert not result.success, "papermill must see the cell as failed"
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    assert out.count("Traceback (most recent call last)") == 1
    span = by_name(spans, "risky")
    assert span.status.status_code.name == "ERROR"
    assert span.attributes[semconv.ERROR_TYPE] == "ZeroDivisionError"
    assert [e.name for e in span.events] == ["exception"]
    stack = span.events[0].attributes["exception.stacktrace"]
    assert "ZeroDivisionError: division by zero" in stack and ", line 1, in <module>" in stack
    assert "1 / 0" not in stack, "the traceback quotes no cell source unless content capture is on"
    assert "✗ risky failed (ZeroDivisionError)" in out


def test_keyboard_interrupt_ends_the_span(shell: Any) -> None:
    with capture_spans() as spans:
        result = shell.run_cell("%%traced long\nraise KeyboardInterrupt", store_history=True)
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    span = by_name(spans, "long")
    assert span.end_time is not None and span.attributes[semconv.ERROR_TYPE] == "KeyboardInterrupt"


def test_top_level_await_runs_in_a_traced_cell_and_nests_under_it(shell: Any) -> None:
    source = (
        "%%traced awaiting\n"
        "import asyncio, o11ylab\n"
        "async def fetch():\n"
        "    with o11ylab.span('fetch'):\n"
        "        await asyncio.sleep(0)\n"
        "        return 7\n"
        "await fetch()\n"
    )
    with capture_spans() as spans:
        result = shell.run_cell(source, store_history=True)
    assert result.success and result.result == 7, "the awaited value is the cell's value"
    assert span_tree(spans) == [(0, "awaiting"), (1, "fetch")]


def test_traceback_names_the_cell_by_its_execution_count(
    shell: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    with capture_spans() as spans:
        result = shell.run_cell("%%traced --quiet\nx = 1\n1 / 0", store_history=True)
    out = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)
    count = result.execution_count
    assert f"Cell In[{count}], line 2" in out, out
    assert out.count("Traceback (most recent call last)") == 1
    (cell,) = spans
    assert cell.name == f"cell [{count}]" and cell.attributes[semconv.CELL_EXECUTION_COUNT] == count


def test_a_traced_body_keeps_its_magics_display_and_output(
    shell: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    with capture_spans() as spans:
        result = shell.run_cell(
            "%%traced shown --quiet\n%env O11YLAB_TEST_MAGIC=1\nprint('out')\n6 * 7",
            store_history=True,
        )
    assert result.success and result.result == 42
    assert "out" in capsys.readouterr().out
    assert shell.user_ns["_"] == 42, "the last value is displayed as for any cell"
    assert [s.name for s in spans] == ["shown"]


def test_only_the_executed_cell_opens_a_span(shell: Any) -> None:
    """Transformers also run for text that is never executed: no span comes from those."""
    with capture_spans() as spans:
        assert shell.transform_cell("%%traced ghost\nx = 1") == "x = 1\n"
        assert shell.run_cell("%%time\n%%traced ghost\nx = 1", store_history=True).success
        shell.input_transformer_manager.check_complete("%%traced ghost\nx = 1")  # is_complete
        captured = shell.run_cell("%%capture\n%%traced inner --quiet\ny = 2")
    assert captured.success
    assert [s.name for s in spans] == ["inner"]


def test_traced_help_shows_the_cell_magic_usage(
    shell: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    shell.run_cell("%%traced?")
    out = capsys.readouterr().out
    assert "%%traced [--attr KEY=VALUE] [--quiet] [name]" in out, out
    assert "::" not in out and "  %traced" not in out
    assert "Span name (default: cell [N])." in out


def test_bare_o11y_prints_help_and_a_typo_gets_a_suggestion(
    shell: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert shell.run_line_magic("o11y", "") is None
    help_text = capsys.readouterr().out
    assert "%o11y status" in help_text and "%o11y open" in help_text
    with pytest.raises(UsageError, match=r"Did you mean status\?"):
        shell.run_line_magic("o11y", "stauts")
    with pytest.raises(UsageError, match=r"Did you mean open\?"):
        shell.run_line_magic("o11y", "opne")


def test_o11y_open_links_the_run_folder_from_the_working_folder(
    shell: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run folder under the working folder: a relative link. Outside it: a link
    ``o11ylab-runs`` made in the working folder (only by %o11y open), and the link through it."""
    from o11ylab.status import open_run

    run_dir = get_telemetry().run_dir
    monkeypatch.chdir(tmp_path)
    shown = shell.run_line_magic("o11y", "open")
    assert str(run_dir.resolve()).startswith(str(get_telemetry().settings.runs_dir.resolve()))
    link = tmp_path / "o11ylab-runs"
    assert link.is_symlink() and link.resolve() == get_telemetry().settings.runs_dir.resolve()
    assert (tmp_path / shown.href).resolve() == run_dir.resolve(), shown.href
    assert shown.href.startswith("o11ylab-runs/")
    assert f"<code>{shown.href}/</code>" in shown._repr_html_(), "no Jupyter server: the path"
    served = open_run(run_dir, get_telemetry().settings.runs_dir, tmp_path, ("/j/", tmp_path))
    assert served.url == f"/j/lab/tree/{shown.href}"
    assert f"<a href='{served.url}'" in served._repr_html_()
    assert "Made the link o11ylab-runs" in repr(shown)
    again = shell.run_line_magic("o11y", "open")
    assert again.href == shown.href and "Made" not in repr(again), "made once, then reused"

    inside = tmp_path / "project" / "runs" / "r1"
    inside.mkdir(parents=True)
    near = open_run(inside, tmp_path / "elsewhere", tmp_path / "project")
    assert near.href == "runs/r1" and near.note == ""
    assert not (tmp_path / "project" / "o11ylab-runs").exists(), "no link when none is needed"

    taken = tmp_path / "taken"
    (taken / "o11ylab-runs").mkdir(parents=True)
    refused = open_run(run_dir, get_telemetry().settings.runs_dir, taken)
    assert refused.href is None and "leaves it alone" in refused.note
    assert (taken / "o11ylab-runs").is_dir() and not (taken / "o11ylab-runs").is_symlink()


def test_a_direct_run_cell_magic_call_is_traced_too(shell: Any) -> None:
    with capture_spans() as spans:
        shell.run_cell_magic(
            "traced", "direct --quiet", "import o11ylab\nwith o11ylab.span('x'):\n    pass"
        )
    assert span_tree(spans) == [(0, "direct"), (1, "x")]


def test_summary_line_and_quiet(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    shell.run_cell("%%traced loud\nimport o11ylab\nwith o11ylab.span('x'):\n    pass")
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("✓ loud · ") and "1 span inside" in line and "trace " in line
    shell.run_cell("%%traced quiet --quiet\npass")
    assert "quiet" not in capsys.readouterr().out


def test_bad_magic_arguments_are_usage_errors(shell: Any) -> None:
    for source in ("%%traced --attr novalue\npass", "%%traced --bogus\npass"):
        result = shell.run_cell(source)
        assert isinstance(result.error_in_exec, UsageError), source
    for line in ("bogus", "autotrace maybe", "trace --nope"):
        with pytest.raises(UsageError):
            shell.run_line_magic("o11y", line)


def test_autotrace_traces_every_cell_once(shell: Any) -> None:
    shell.run_line_magic("o11y", "autotrace on")
    try:
        with capture_spans() as spans:
            shell.run_cell("a = 1", store_history=True)
            shell.run_cell("", store_history=True)  # post_run_cell without pre_run_cell
            shell.run_cell("%%traced mine\nb = 2", store_history=True)
            shell.run_cell("1/0", store_history=True)
    finally:
        shell.run_line_magic("o11y", "autotrace off")
    names = [s.name for s in spans]
    assert len(names) == 3 and names[1] == "mine", names
    auto = [s for s in spans if s.attributes.get(semconv.CELL_AUTOTRACED)]
    assert len(auto) == 2
    assert auto[1].status.status_code.name == "ERROR"
    with capture_spans() as after:
        shell.run_cell("c = 3", store_history=True)
    assert after == []


def test_spans_from_other_threads_nest_when_the_context_travels(shell: Any) -> None:
    source = (
        "%%traced fan-out\n"
        "import contextvars, o11ylab\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "def work(i):\n"
        "    with o11ylab.span(f'worker {i}'):\n"
        "        return i\n"
        "with ThreadPoolExecutor(4) as pool:\n"
        "    futures = [pool.submit(contextvars.copy_context().run, work, i) for i in range(4)]\n"
        "    results = [f.result() for f in futures]\n"
    )
    with capture_spans() as spans:
        shell.run_cell(source)
    cell = by_name(spans, "fan-out")
    workers = [s for s in spans if s.name.startswith("worker")]
    assert len(workers) == 4
    assert all(w.parent.span_id == cell.context.span_id for w in workers)
    assert cell.attributes[semconv.CELL_SPAN_COUNT] == 4


def test_tokens_and_cost_of_operations_roll_up_onto_the_cell(
    shell: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    source = (
        "%%traced ask\n"
        "from o11ylab.telemetry import get_telemetry\n"
        "tracer = get_telemetry().tracer\n"
        "for n in (10, 30):\n"
        "    with tracer.start_as_current_span('chat m', attributes={\n"
        "        'gen_ai.operation.name': 'chat', 'gen_ai.usage.input_tokens': n,\n"
        f"        'gen_ai.usage.output_tokens': 5, '{semconv.GEN_AI_USAGE_COST}': 0.001}}):\n"
        "        pass\n"
        "with tracer.start_as_current_span('workflow', attributes={\n"
        "    'gen_ai.operation.name': 'invoke_workflow', 'gen_ai.usage.input_tokens': 40}):\n"
        "    pass\n"
    )
    with capture_spans() as spans:
        shell.run_cell(source)
    cell = by_name(spans, "ask").attributes
    assert cell[semconv.CELL_INPUT_TOKENS] == 40, "the workflow's own total is not counted twice"
    assert cell[semconv.CELL_OUTPUT_TOKENS] == 10
    assert cell[semconv.CELL_COST] == pytest.approx(0.002)
    assert "40 in / 10 out tokens · $0.002000" in capsys.readouterr().out


def test_logs_carry_the_cell_trace_and_span_ids(shell: Any) -> None:
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    keep = Keep()
    logging.getLogger("demo.logs").addHandler(keep)
    try:
        with capture_spans() as spans, capture_logs() as logs:
            shell.run_cell(
                "%%traced logging-cell\nimport logging\n"
                "logging.getLogger('demo.logs').info('hello %s', 'there')"
            )
    finally:
        logging.getLogger("demo.logs").removeHandler(keep)
    cell = by_name(spans, "logging-cell").context
    exported = [r for r in logs if r.log_record.body == "hello there"]
    assert exported and exported[0].log_record.trace_id == cell.trace_id
    assert exported[0].log_record.span_id == cell.span_id
    assert seen[0].otelTraceID == format(cell.trace_id, "032x")


def test_cell_metrics_count_ok_and_failed_cells(shell: Any) -> None:
    with capture_metrics() as m:
        shell.run_cell("%%traced\npass")
        shell.run_cell("%%traced\nraise ValueError('no')")
    assert m.count(semconv.METRIC_CELL_DURATION, status="ok") == 1
    assert m.count(semconv.METRIC_CELL_DURATION, status="error") == 1
    assert m.count(semconv.METRIC_CELL_DURATION) == 2


def test_o11y_trace_shows_the_last_cell_and_escapes_html(shell: Any) -> None:
    shell.run_cell(
        "%%traced <script>alert('x')</script> --quiet\n"
        "import o11ylab\nwith o11ylab.span('child \"quoted\"'):\n    pass"
    )
    view = shell.run_line_magic("o11y", "trace")
    text, page = repr(view), view._repr_html_()
    assert "<script>alert('x')</script>" in text.splitlines()[1]
    assert "<script>alert(" not in page and "&lt;script&gt;" in page
    assert "child &quot;quoted&quot;" in page
    assert text.splitlines()[2].startswith("  child")


def test_spans_dataframe_has_a_row_per_span_and_attribute_columns(shell: Any) -> None:
    import o11ylab
    from o11ylab.traceview import spans_dataframe

    shell.run_cell("%%traced frame-me --attr colour=blue --quiet\npass")
    df = shell.run_line_magic("o11y", "spans")  # the readable default
    row = df[df["name"] == "frame-me"].iloc[-1]
    assert row["status"] == "OK" and row["duration_ms"] >= 0 and row["kind"] == "internal"
    assert {"trace_id", "parent", "start"} <= set(df.columns) and "colour" not in df.columns
    raw = spans_dataframe(o11ylab.recent_spans(), raw=True)  # everything, as recorded
    row = raw[raw["name"] == "frame-me"].iloc[-1]
    assert row["colour"] == "blue" and row["status"] == "UNSET" and row["duration_ms"] >= 0
    assert {"trace_id", "parent_span_id", "start"} <= set(raw.columns)


def test_status_lists_exporters_and_never_a_secret(
    shell: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sentinel = "Bearer SENTINEL-TOKEN-123"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization={sentinel}")
    view = shell.run_line_magic("o11y", "status")
    text = repr(view) + view._repr_html_()
    assert "file traces" in text and "exported" in text
    assert "SENTINEL" not in text
    from o11ylab.telemetry import safe_url

    assert safe_url("https://user:pw@otlp.example:4318/v1/traces?token=t") == (
        "https://otlp.example:4318/v1/traces"
    )


def test_load_twice_unload_and_reload(shell: Any) -> None:
    def ours(event: str) -> int:
        return sum(
            getattr(cb, "__self__", None).__class__.__name__ == "CellTracer"
            for cb in shell.events.callbacks[event]
        )

    shell.run_line_magic("load_ext", "o11ylab")
    o11ylab.load_ipython_extension(shell)
    assert ours("pre_run_cell") == 1 and ours("post_run_cell") == 1
    cleanup = shell.input_transformers_cleanup
    assert sum(getattr(t, "__name__", "") == "strip_traced_line" for t in cleanup) == 1
    shell.run_line_magic("unload_ext", "o11ylab")
    assert ours("post_run_cell") == 0
    assert not any(getattr(t, "__name__", "") == "strip_traced_line" for t in cleanup)
    assert "traced" not in shell.magics_manager.magics["cell"]
    assert "o11y" not in shell.magics_manager.magics["line"]
    assert not shell.run_cell("%%traced\npass").success
    shell.run_line_magic("load_ext", "o11ylab")
    shell.run_line_magic("reload_ext", "o11ylab")
    assert ours("post_run_cell") == 1
    assert sum(getattr(t, "__name__", "") == "strip_traced_line" for t in cleanup) == 1
    with capture_spans() as spans:
        assert shell.run_cell("%%traced again\npass").success
    assert [s.name for s in spans] == ["again"]


def test_o11y_trace_under_autotrace_shows_the_users_last_cell(shell: Any) -> None:
    shell.run_line_magic("o11y", "autotrace on")
    try:
        users = shell.run_cell(
            "import o11ylab\nwith o11ylab.span('users-work'):\n    pass", store_history=True
        )
        first = shell.run_cell("%o11y trace", store_history=True)
        again = shell.run_cell("%o11y trace", store_history=True)
    finally:
        shell.run_line_magic("o11y", "autotrace off")
    for asked in (first, again):
        lines = repr(asked.result).splitlines()
        assert lines[1].startswith(f"cell [{users.execution_count}]"), lines
        assert lines[2].strip().startswith("users-work"), lines


def test_loading_says_in_one_line_where_the_telemetry_goes(
    shell: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from o11ylab.telemetry import get_telemetry

    shell.run_line_magic("unload_ext", "o11ylab")
    capsys.readouterr()
    shell.run_line_magic("load_ext", "o11ylab")
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("o11ylab: telemetry to run files in ")
    assert str(get_telemetry().run_dir) in line and "%o11y status" in line
    shell.run_line_magic("unload_ext", "o11ylab")
    o11ylab.load_ipython_extension(shell, quiet=True)  # how `o11ylab run` loads it unasked
    assert capsys.readouterr().out == ""
    # Loaded behind IPython's extension manager's back: undo it the same way, then load it as
    # the other tests expect (%unload_ext would skip an extension the manager never loaded).
    o11ylab.unload_ipython_extension(shell)
    shell.run_line_magic("load_ext", "o11ylab")
