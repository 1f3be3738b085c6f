"""Headless runs through real kernels: `o11ylab run` (papermill) and `pytest --nbmake`."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest
from nbformat.sign import NotebookNotary

from o11ylab import semconv
from o11ylab.otlpjson import read_logs, read_spans

from .conftest import NOTEBOOKS

pytestmark = pytest.mark.notebook


def write_notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(source) for source in sources]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)
    return path


def o11ylab_run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "o11ylab", "run", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_run_is_one_trace_root_then_notebook_then_cells(
    tmp_path: Path, run_env: dict[str, str]
) -> None:
    out = tmp_path / "out"
    jupyter_data = tmp_path / "jupyter-data"  # the user's Jupyter folder: secret, signatures
    # A runtime folder short enough for Unix socket paths (tmp_path is not), for the kernel's.
    runtime = Path(tempfile.mkdtemp(prefix="o11y-rt-"))
    done = o11ylab_run(
        {**run_env, "JUPYTER_DATA_DIR": str(jupyter_data), "JUPYTER_RUNTIME_DIR": str(runtime)},
        str(NOTEBOOKS / "00_quickstart.ipynb"),
        "--out",
        str(out),
        "-p",
        "n_items",
        "7",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1/1 notebooks ok" in done.stdout
    assert "without encryption" not in done.stderr, "the kernel ran over IPC"
    assert list(runtime.iterdir()) == [], "the kernel's connection file and sockets are gone"
    runtime.rmdir()
    spans = read_spans(out)
    trace_ids = {s["trace_id"] for s in spans}
    assert len(trace_ids) == 1
    (trace_id,) = trace_ids
    executed = nbformat.read(out / "00_quickstart.ipynb", as_version=4)
    assert executed.metadata[semconv.NOTEBOOK_METADATA_KEY]["trace_id"] == trace_id
    # Trusted, as after `jupyter trust`: JupyterLab keeps its trace views' styles.
    with NotebookNotary(data_dir=str(jupyter_data)) as notary:
        assert notary.check_signature(executed), "the executed notebook is signed"
    assert len(trace_id) == 32 and int(trace_id, 16)

    by_id = {s["span_id"]: s for s in spans}
    (root,) = [s for s in spans if s["name"] == semconv.RUN_SPAN]
    assert root["parent_span_id"] is None
    (notebook,) = [s for s in spans if s["name"] == "notebook 00_quickstart"]
    assert notebook["parent_span_id"] == root["span_id"]
    cells = [s for s in spans if semconv.CELL_SOURCE_SHA256 in s["attributes"]]
    assert [c["name"] for c in cells] == ["prepare-data", "summarise"]
    assert all(c["parent_span_id"] == notebook["span_id"] for c in cells)
    squares = [s for s in spans if s["name"] == "compute squares"]
    assert by_id[squares[0]["parent_span_id"]]["name"] == "prepare-data"
    assert squares[0]["attributes"]["items"] == 7, "the -p parameter reached the kernel"
    assert cells[0]["resource"][semconv.NOTEBOOK_PATH].endswith("00_quickstart.ipynb")

    logs = [r for r in read_logs(out) if r["body"] == "computed 7 squares for quickstart"]
    assert logs and logs[0]["trace_id"] == trace_id and logs[0]["span_id"] == cells[0]["span_id"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trace_id"] == trace_id
    assert summary["notebooks"][0]["status"] == "ok" and summary["notebooks"][0]["spans"] >= 5


def test_with_no_short_socket_path_the_kernel_stays_on_tcp_without_its_warning(
    tmp_path: Path, run_env: dict[str, str]
) -> None:
    """Runtime and temporary folders too deep for a Unix socket: TCP, and the kernel's stderr
    reaches the terminal without ipykernel's TCP warning (and only without it)."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    (deep / "tmp").mkdir(parents=True)
    notebook = write_notebook(
        tmp_path / "tcp.ipynb", "import os\nos.write(2, b'straight to the kernel stderr\\n')"
    )
    env = {**run_env, "JUPYTER_RUNTIME_DIR": str(deep / "runtime"), "TMPDIR": str(deep / "tmp")}
    done = o11ylab_run(env, str(notebook), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "straight to the kernel stderr" in done.stderr, done.stderr[-2000:]
    assert "without encryption" not in done.stderr


def test_a_notebook_of_plain_library_code_is_traced_without_loading_o11ylab(
    tmp_path: Path,
    run_env: dict[str, str],
) -> None:
    # No %load_ext, no o11ylab import: the runner's kernel loads the extension with autotrace.
    notebook = tmp_path / "plain.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(source)
        for source in (
            "import chromadb\n"
            "collection = chromadb.EphemeralClient().get_or_create_collection('notes', "
            "embedding_function=None)\n"
            "collection.add(ids=['a', 'b'], embeddings=[[1.0, 0.0], [0.0, 1.0]])",
            "hits = collection.query(query_embeddings=[[0.9, 0.1]], n_results=1)\nhits['ids']",
        )
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, notebook)
    out = tmp_path / "out"
    done = o11ylab_run(run_env, str(notebook), "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr

    executed = nbformat.read(out / "plain.ipynb", as_version=4)
    assert executed.cells[1].outputs[0]["data"]["text/plain"] == "[['a']]"
    assert [c.execution_count for c in executed.cells] == [1, 2], "nothing ran as a cell"
    assert executed.cells[0].outputs == [], "loading o11ylab printed nothing into the notebook"
    spans = read_spans(out)
    assert len({s["trace_id"] for s in spans}) == 1
    by_name = {s["name"]: s for s in spans}
    cells = [s for s in spans if semconv.CELL_SOURCE_SHA256 in s["attributes"]]
    assert len(cells) == 2
    assert {c["parent_span_id"] for c in cells} == {by_name["notebook plain"]["span_id"]}
    assert by_name["add notes"]["parent_span_id"] == cells[0]["span_id"]
    assert by_name["retrieval notes"]["parent_span_id"] == cells[1]["span_id"]


def test_a_failing_traced_cell_stops_the_run_there(tmp_path: Path, run_env: dict[str, str]) -> None:
    notebook = write_notebook(
        tmp_path / "broken.ipynb",
        "%load_ext o11ylab",
        "%%traced fine\nvalue = 41",
        "%%traced boom\nraise RuntimeError('the model fell over')",
        "print('never printed')",
    )
    out = tmp_path / "out"
    done = o11ylab_run(run_env, str(notebook), "--out", str(out))
    assert done.returncode == 1
    assert "RuntimeError: the model fell over" in done.stdout
    executed = nbformat.read(out / "broken.ipynb", as_version=4)
    code = {c.source.splitlines()[-1]: c for c in executed.cells if c.cell_type == "code"}
    boom, after = code["raise RuntimeError('the model fell over')"], code["print('never printed')"]
    errors = [o for o in boom.outputs if o.output_type == "error"]
    assert len(errors) == 1, "one traceback, not two"
    assert after.execution_count is None and not after.outputs, "papermill stopped at the cell"
    assert executed.metadata[semconv.NOTEBOOK_METADATA_KEY]["status"] == "failed"
    spans = {s["name"]: s for s in read_spans(out)}
    assert spans["boom"]["status"] == "ERROR", "what the run had was still exported"
    assert spans["boom"]["attributes"][semconv.ERROR_TYPE] == "RuntimeError"
    assert spans["fine"]["status"] == "UNSET"
    assert spans["notebook broken"]["status"] == "ERROR"


def test_nbmake_kernels_join_the_callers_trace(tmp_path: Path, run_env: dict[str, str]) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    env = dict(run_env, TRACEPARENT=f"00-{trace_id}-{parent_id}-01")
    notebook = write_notebook(
        tmp_path / "nbmake_me.ipynb", "%load_ext o11ylab", "%%traced under-ci\ny = 2"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbmake", "-q", "-p", "no:cacheprovider", str(notebook)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (cell,) = [s for s in read_spans(Path(run_env["O11YLAB_RUN_DIR"])) if s["name"] == "under-ci"]
    assert cell["trace_id"] == trace_id and cell["parent_span_id"] == parent_id


def test_the_summary_says_0_for_free_models_and_dash_for_unpriced_ones(tmp_path: Path) -> None:
    from o11ylab.runner import NotebookResult, format_summary

    results = [
        NotebookResult("local.ipynb", "local.ipynb", cost_usd=0.0),
        NotebookResult("cloud.ipynb", "cloud.ipynb", cost_usd=0.0000069),
        NotebookResult("plain.ipynb", "plain.ipynb"),
    ]
    lines = format_summary(results, tmp_path, "t").splitlines()
    column = lines[0].index("cost $")
    cost = {line.split()[0]: line[column:].split()[0] for line in lines[2:5]}
    assert cost == {"local.ipynb": "0", "cloud.ipynb": "0.000007", "plain.ipynb": "-"}
