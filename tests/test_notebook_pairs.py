"""Each notebook and its jupytext source agree: ``notebooks/NN_name.py`` is what people edit.

``jupytext --sync notebooks/*.py`` writes the ``.ipynb`` from the ``.py`` (keeping the
notebook's cell ids and metadata); these checks fail when someone edited one side and did not
sync, when a notebook was committed with outputs, or when a pair lost its pairing. No kernel
runs here: the notebooks themselves run in tests/test_notebooks.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import jupytext
import nbformat
import pytest

from .conftest import NOTEBOOKS

PAIRING = "ipynb,py:percent"
NOTEBOOK_PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
SOURCE_PATHS = sorted(NOTEBOOKS.glob("*.py"))
# Cell metadata jupytext keeps in the .ipynb only, never in the text file (its default filter):
# a difference there is not a disagreement between the two.
NOTEBOOK_ONLY_METADATA = {
    "autoscroll",
    "collapsed",
    "scrolled",
    "trusted",
    "execution",
    "ExecuteTime",
}


def cell_summary(cell: nbformat.NotebookNode) -> dict[str, Any]:
    metadata = {k: v for k, v in cell.metadata.items() if k not in NOTEBOOK_ONLY_METADATA}
    return {"cell_type": cell.cell_type, "source": cell.source, "metadata": metadata}


def pair_differences(ipynb: Path, py: Path) -> list[str]:
    """How the notebook ``ipynb`` and its percent source ``py`` disagree; empty when they agree."""
    if not py.exists():
        return [f"{py.name} is missing: run `jupytext --set-formats {PAIRING} {ipynb.name}`"]
    notebook = nbformat.read(ipynb, as_version=4)
    text = jupytext.read(py)
    problems = []
    for name, nb in ((ipynb.name, notebook), (py.name, text)):
        formats = nb.metadata.get("jupytext", {}).get("formats")
        if formats != PAIRING:
            problems.append(f"{name}: jupytext formats {formats!r}, expected {PAIRING!r}")
    if text.metadata.get("kernelspec") != notebook.metadata.get("kernelspec"):
        problems.append(f"{py.name}: kernelspec differs from {ipynb.name}'s")
    ours, theirs = [cell_summary(c) for c in notebook.cells], [cell_summary(c) for c in text.cells]
    if len(ours) != len(theirs):
        problems.append(f"{ipynb.name} has {len(ours)} cells, {py.name} {len(theirs)}")
    for index, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        for key in ("cell_type", "metadata", "source"):
            if a[key] != b[key]:
                problems.append(
                    f"cell {index}: {key} differs\n  {ipynb.name}: {a[key]!r}\n  {py.name}: {b[key]!r}"
                )
                break
    return problems


def sync_hint(problems: list[str]) -> str:
    return "\n".join([*problems, "edit the .py, then run `jupytext --sync notebooks/*.py`"])


# --- the committed pairs ---------------------------------------------------------------------------


def test_there_are_notebooks() -> None:
    assert NOTEBOOK_PATHS, f"no notebooks in {NOTEBOOKS}"


@pytest.mark.parametrize("ipynb", NOTEBOOK_PATHS, ids=lambda p: p.name)
def test_notebook_and_its_source_agree(ipynb: Path) -> None:
    problems = pair_differences(ipynb, ipynb.with_suffix(".py"))
    assert not problems, sync_hint(problems)


@pytest.mark.parametrize("py", SOURCE_PATHS, ids=lambda p: p.name)
def test_every_source_is_a_paired_percent_file(py: Path) -> None:
    assert py.with_suffix(".ipynb").exists(), f"{py.name} has no notebook: run jupytext --sync"
    header = jupytext.read(py).metadata.get("jupytext", {})
    assert header.get("formats") == PAIRING, f"{py.name}: no `formats: {PAIRING}` in its header"
    assert header.get("text_representation", {}).get("format_name") == "percent"


@pytest.mark.parametrize("ipynb", NOTEBOOK_PATHS, ids=lambda p: p.name)
def test_committed_notebook_has_no_outputs_and_a_parameters_cell(ipynb: Path) -> None:
    notebook = nbformat.read(ipynb, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    dirty = [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None]
    assert not dirty, f"{ipynb.name}: code cells {dirty} have outputs or execution counts"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{ipynb.name} needs exactly one cell tagged 'parameters'"


# --- the comparison itself, on copies that disagree -------------------------------------------------


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    source = NOTEBOOKS / "00_quickstart.ipynb"
    ipynb = Path(shutil.copy(source, tmp_path / source.name))
    py = Path(shutil.copy(source.with_suffix(".py"), tmp_path / f"{source.stem}.py"))
    assert pair_differences(ipynb, py) == []
    return ipynb, py


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_an_edited_source_disagrees(pair: tuple[Path, Path]) -> None:
    ipynb, py = pair
    edit(py, 'log = logging.getLogger("quickstart")', 'log = logging.getLogger("elsewhere")')
    (problem,) = pair_differences(ipynb, py)
    assert "source differs" in problem and "elsewhere" in problem


def test_an_edited_notebook_disagrees(pair: tuple[Path, Path]) -> None:
    ipynb, py = pair
    notebook = nbformat.read(ipynb, as_version=4)
    notebook.cells[-1].source += "\nprint('only in the notebook')"
    nbformat.write(notebook, ipynb)
    assert any("source differs" in p for p in pair_differences(ipynb, py))


def test_a_lost_tag_disagrees(pair: tuple[Path, Path]) -> None:
    ipynb, py = pair
    edit(py, '# %% tags=["parameters"]', "# %%")
    (problem,) = pair_differences(ipynb, py)
    assert "metadata differs" in problem and "parameters" in problem


def test_a_removed_cell_disagrees(pair: tuple[Path, Path]) -> None:
    ipynb, py = pair
    notebook = nbformat.read(ipynb, as_version=4)
    del notebook.cells[2]
    nbformat.write(notebook, ipynb)
    assert any("cells" in p and "13" in p for p in pair_differences(ipynb, py))


def test_a_markdown_cell_turned_code_disagrees(pair: tuple[Path, Path]) -> None:
    ipynb, py = pair
    edit(py, "# %% [markdown]\n", "# %%\n")
    assert any("cell_type differs" in p for p in pair_differences(ipynb, py))


def test_an_uncommented_magic_is_the_same_cell(pair: tuple[Path, Path]) -> None:
    """The .py keeps magics commented out (`# %load_ext o11ylab`); the notebook runs them."""
    ipynb, py = pair
    assert "\n# %load_ext o11ylab\n" in py.read_text(encoding="utf-8")
    cells = nbformat.read(ipynb, as_version=4).cells
    (cell,) = [c for c in cells if c.source.startswith("%load_ext o11ylab\n")]
    assert cell.source in [c.source for c in jupytext.read(py).cells if c.cell_type == "code"]


def test_a_missing_source_or_pairing_is_reported(pair: tuple[Path, Path]) -> None:
    ipynb, py = pair
    edit(py, "#     formats: ipynb,py:percent\n", "")
    assert any("jupytext formats None" in p for p in pair_differences(ipynb, py))
    py.unlink()
    (problem,) = pair_differences(ipynb, py)
    assert "is missing" in problem
