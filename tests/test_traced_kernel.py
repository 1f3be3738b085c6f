"""%%traced in a real ipykernel, executed by nbclient: the kernel's own async path and numbering.

The in-process shell runs an async cell through IPython's own loop runner; a kernel runs it as an
asyncio task on its running event loop, where a magic that ran its body through a nested
``run_cell`` could not ``await`` at all. So top-level ``await`` is tested here, in a kernel.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from o11ylab import semconv
from o11ylab.otlpjson import read_spans

ANSI = re.compile(r"\x1b\[[0-9;]*m")

READ_SPANS = """
import json, o11ylab
print(json.dumps([{"name": r["name"], "span_id": r["span_id"], "parent": r["parent_span_id"],
                   "status": r["status"], "attributes": r["attributes"]}
                  for r in o11ylab.recent_spans()]))
"""


@pytest.mark.timeout(180)
def test_await_and_tracebacks_in_traced_cells_of_a_real_kernel(
    tmp_path: Path, run_env: dict[str, str]
) -> None:
    env = dict(run_env, IPYTHONDIR=str(tmp_path / "ipython"), HOME=str(tmp_path))
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "runtime")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext o11ylab"),
        nbformat.v4.new_code_cell(
            "%%traced awaiting --quiet\n"
            "import asyncio, o11ylab\n"
            "async def fetch(i):\n"
            "    with o11ylab.span(f'fetch {i}'):\n"
            "        await asyncio.sleep(0.01)\n"
            "        return i\n"
            "sum(await asyncio.gather(fetch(1), fetch(2)))"
        ),
        nbformat.v4.new_code_cell("%%traced failing --quiet\nx = 1\nraise ValueError('bad')"),
        nbformat.v4.new_code_cell(READ_SPANS),
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    client = NotebookClient(
        nb, timeout=120, kernel_name="python3", allow_errors=True, resources={"metadata": {}}
    )
    client.execute(env=env, cwd=str(tmp_path))

    awaited, failing, reader = nb.cells[1], nb.cells[2], nb.cells[3]
    assert [o["output_type"] for o in awaited.outputs] == ["execute_result"], awaited.outputs
    assert awaited.outputs[0]["data"]["text/plain"] == "3", "the awaited value is displayed"

    (error,) = [o for o in failing.outputs if o["output_type"] == "error"]
    traceback = ANSI.sub("", "\n".join(error["traceback"]))
    assert f"Cell In[{failing.execution_count}], line 2" in traceback, traceback

    spans = json.loads(reader.outputs[-1]["text"].strip().splitlines()[-1])
    by_name = {s["name"]: s for s in spans}
    cell = by_name["awaiting"]
    assert cell["attributes"][semconv.CELL_EXECUTION_COUNT] == awaited.execution_count
    assert cell["attributes"][semconv.CELL_SPAN_COUNT] == 2
    for name in ("fetch 1", "fetch 2"):
        assert by_name[name]["parent"] == cell["span_id"], f"{name} nests under the cell"
    assert by_name["failing"]["status"] == "ERROR"
    assert by_name["failing"]["attributes"][semconv.CELL_EXECUTION_COUNT] == (
        failing.execution_count
    )


@pytest.mark.timeout(180)
def test_a_run_kernels_spans_without_a_parent_join_the_notebooks_span(
    tmp_path: Path, run_env: dict[str, str]
) -> None:
    """Issue 11: in a kernel ``o11ylab run`` started (``TRACEPARENT`` = the notebook's span), an
    untraced cell's spans and a task's join the notebook's span, not traces of their own."""
    trace_id, notebook_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    env = dict(run_env, IPYTHONDIR=str(tmp_path / "ipython"), HOME=str(tmp_path))
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "runtime")
    env["TRACEPARENT"] = f"00-{trace_id}-{notebook_span}-01"
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(source)
        for source in (
            "%load_ext o11ylab",
            "from opentelemetry import context, trace\n"
            "tracer = trace.get_tracer('probe')\n"
            "tracer.start_span('untraced').end()",
            "import asyncio\n"
            "async def work():\n"
            "    tracer.start_span('in a task').end()\n"
            "await asyncio.create_task(work())",
            "%%traced named --quiet\ntracer.start_span('in the cell').end()",
            # An explicit empty context (07's simulated users) still starts a trace of its own.
            "tracer.start_span('on purpose', context=context.Context()).end()",
            "%unload_ext o11ylab",
            "tracer.start_span('after unload').end()",
        )
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {}})
    client.execute(env=env, cwd=str(tmp_path))

    spans = {s["name"]: s for s in read_spans(Path(run_env["O11YLAB_RUN_DIR"]))}
    for name in ("untraced", "in a task", "named"):
        assert spans[name]["trace_id"] == trace_id, f"{name} left the run's trace"
        assert spans[name]["parent_span_id"] == notebook_span, f"{name} is not under the notebook"
    assert spans["in the cell"]["parent_span_id"] == spans["named"]["span_id"]
    assert spans["on purpose"]["trace_id"] != trace_id
    assert spans["on purpose"]["parent_span_id"] is None
    # %unload_ext undoes what the load did, the base context included.
    assert spans["after unload"]["parent_span_id"] is None
