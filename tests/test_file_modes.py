"""What o11ylab creates is the user's alone: folders 0700, files 0600, under the usual umask 022.

With content capture on, the run files hold prompts and completions, and a Chroma folder holds
the documents; a folder the user made beforehand keeps the mode they gave it.
"""

from __future__ import annotations

import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run(code: str, env: dict[str, str]) -> None:
    script = "import os\nos.umask(0o022)\n" + textwrap.dedent(code)
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o755)  # made by the user, readable by all on purpose
    return folder


def test_run_files_and_the_chroma_folder_are_private(shared: Path, run_env: dict[str, str]) -> None:
    run_env["O11YLAB_RUN_DIR"] = str(shared / "runs" / "one")
    run(
        f"""
        from o11ylab.telemetry import get_telemetry
        telemetry = get_telemetry()
        with telemetry.tracer.start_as_current_span("a prompt lives here"):
            pass
        telemetry.shutdown()
        from o11ylab.ai.vectorstore import VectorStore
        store = VectorStore("docs", path={str(shared / "chroma" / "store")!r}, embedder=None)
        store.add(["a private document"], ids=["d"], embeddings=[[1.0, 0.0]])
        """,
        run_env,
    )
    assert mode(shared) == 0o755, "a folder the user made keeps its mode"
    for folder in (
        shared / "runs",
        shared / "runs" / "one",
        shared / "chroma",
        shared / "chroma" / "store",
    ):
        assert mode(folder) == 0o700, f"{folder}: {oct(mode(folder))}"
    files = sorted((shared / "runs" / "one").iterdir())
    assert any(f.name.startswith("traces.") for f in files), files
    assert any(f.name.startswith("exports.") for f in files), files
    for file in files:
        assert mode(file) == 0o600, f"{file.name}: {oct(mode(file))}"


@pytest.mark.notebook
def test_a_runs_output_folder_is_private(shared: Path, run_env: dict[str, str]) -> None:
    notebook = shared / "tiny.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, notebook)
    out = shared / "out"
    run(
        f"""
        from o11ylab.cli import main
        assert main(["run", {str(notebook)!r}, "--out", {str(out)!r}]) == 0
        """,
        run_env,
    )
    assert mode(out) == 0o700
    assert mode(out / "summary.json") == 0o600
    traces = list(out.glob("traces.*.jsonl"))
    assert traces and all(mode(t) == 0o600 for t in traces)
