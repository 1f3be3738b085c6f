"""`o11ylab run`'s sweeps and Dask options, checked before anything runs (no kernels here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest

from o11ylab._sweep import SweepError, load_parameters_file, notebook_parameters, parse_grid, plan
from o11ylab.config import ConfigError, load_run
from o11ylab.errors import MissingDependency, O11yLabError


def notebook(path: Path, parameters: str | None) -> Path:
    nb = nbformat.v4.new_notebook()
    if parameters is not None:
        nb.cells.append(nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    nb.cells.append(nbformat.v4.new_code_cell("print(1)"))
    nbformat.write(nb, path)
    return path


def test_a_grid_is_names_and_json_values() -> None:
    assert parse_grid(["model=tiny,small", "n=5, 10", "hot=true,0.5"]) == {
        "model": ["tiny", "small"],
        "n": [5, 10],
        "hot": [True, 0.5],
    }


@pytest.mark.parametrize(
    ("item", "says"),
    [
        ("n_items", "is not NAME=V1,V2"),
        ("=1,2", "is not NAME=V1,V2"),
        ("2x=1", "is not NAME=V1,V2"),
        ("n=", "has an empty value"),
        ("n=1,,2", "has an empty value"),
    ],
)
def test_a_malformed_grid_says_what_to_write(item: str, says: str) -> None:
    with pytest.raises(SweepError, match=says) as caught:
        parse_grid([item])
    assert isinstance(caught.value, O11yLabError) and isinstance(caught.value, ValueError)


def test_a_grid_naming_one_parameter_twice_is_refused() -> None:
    with pytest.raises(SweepError, match="names n twice"):
        parse_grid(["n=1", "n=2"])


def test_parameters_files_in_yaml_and_json(tmp_path: Path) -> None:
    yaml_file = tmp_path / "sets.yaml"
    yaml_file.write_text("- {model: tiny, n: 5}\n- model: small\n  n: 10\n", encoding="utf-8")
    json_file = tmp_path / "sets.json"
    json_file.write_text(json.dumps([{"n": 1}]), encoding="utf-8")
    assert load_parameters_file(yaml_file) == [
        {"model": "tiny", "n": 5},
        {"model": "small", "n": 10},
    ]
    assert load_parameters_file(json_file) == [{"n": 1}]
    for text, says in (
        ("{n: 1}", "non-empty list"),
        ("[]", "non-empty list"),
        ("- 5", "entry 1 is not a mapping"),
        ("- {n: [1}", "not valid JSON or YAML"),
        ("- {'a b': 1}", "not a Python identifier"),
    ):
        yaml_file.write_text(text, encoding="utf-8")
        with pytest.raises(SweepError, match=says):
            load_parameters_file(yaml_file)
    with pytest.raises(SweepError, match="cannot read it"):
        load_parameters_file(tmp_path / "missing.yaml")


def test_the_parameters_cell_is_read_without_running_it(tmp_path: Path) -> None:
    path = notebook(tmp_path / "a.ipynb", "%matplotlib inline\nn: int = 5\nmodel, seed = 'x', 1")
    assert notebook_parameters(path) == {"n", "model", "seed"}
    assert notebook_parameters(notebook(tmp_path / "b.ipynb", None)) is None


def test_a_sweep_is_the_product_named_by_its_parameters(tmp_path: Path) -> None:
    quick = notebook(tmp_path / "quick.ipynb", "n = 1\nmodel = 'a'")
    other = notebook(tmp_path / "other.ipynb", "model = 'a'")
    tasks = plan(
        [quick, other],
        {"verbose": True},
        {"n": [1, 2], "model": ["tiny/v1", "b"]},
    )
    names = [t.output_name for t in tasks]
    assert names == [
        "quick__n=1__model=tiny-v1.ipynb",
        "quick__n=1__model=b.ipynb",
        "quick__n=2__model=tiny-v1.ipynb",
        "quick__n=2__model=b.ipynb",
        # other.ipynb has no n: it runs once per model, not once per (n, model)
        "other__model=tiny-v1.ipynb",
        "other__model=b.ipynb",
    ]
    assert tasks[0].parameters == {"verbose": True, "n": 1, "model": "tiny/v1"}
    assert tasks[-1].parameters == {"verbose": True, "model": "b"}


def test_without_a_sweep_each_notebook_runs_once_under_its_own_name(tmp_path: Path) -> None:
    quick = notebook(tmp_path / "quick.ipynb", "n = 1")
    (task,) = plan([quick], {"n": 3})
    assert task.output_name == "quick.ipynb" and task.parameters == {"n": 3} and not task.swept


def test_a_parameter_no_notebook_has_is_refused_with_the_names(tmp_path: Path) -> None:
    quick = notebook(tmp_path / "quick.ipynb", "n = 1")
    with pytest.raises(SweepError, match=r"names temperature, which no notebook's parameters"):
        plan([quick], {}, {}, [{"n": 1}, {"temperature": 0.2}])
    with pytest.raises(SweepError, match=r"quick\.ipynb"):
        plan([quick], {}, {"temp": [1, 2]})


def test_values_that_look_alike_in_a_file_name_keep_apart(tmp_path: Path) -> None:
    quick = notebook(tmp_path / "quick.ipynb", "model = 'a'")
    names = [t.output_name for t in plan([quick], {}, {"model": ["a/b", "a:b"]})]
    assert names == ["quick__model=a-b.ipynb", "quick__model=a-b__2.ipynb"]


def test_run_settings_come_from_config() -> None:
    config = load_run({"DASK_SCHEDULER_ADDRESS": " tcp://10.0.0.5:8786 ", "OPENAI_API_KEY": "k"})
    assert config.scheduler_address == "tcp://10.0.0.5:8786"
    assert config.openai_configured and not config.autotrace_set
    assert config.connect_timeout_s == 10.0
    assert load_run({"O11YLAB_AUTOTRACE": "0"}).autotrace_set
    with pytest.raises(ConfigError, match="O11YLAB_RUN_CONNECT_TIMEOUT"):
        load_run({"O11YLAB_RUN_CONNECT_TIMEOUT": "soon"})


def test_without_distributed_the_option_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from o11ylab._dask import connect

    monkeypatch.setitem(sys.modules, "distributed", None)  # as if it were not installed
    with pytest.raises(MissingDependency, match=r"pip install 'o11ylab\[dask\]'") as caught:
        connect(2, None, 1.0, echo=False)
    assert "o11ylab run --workers needs distributed" in str(caught.value)


def test_ctrl_c_keeps_a_run_recorded_just_before_it_and_cancels_the_rest(tmp_path: Path) -> None:
    """The Dask result loop takes a run off its to-do list only once recorded; a Ctrl-C that
    lands between the two finds it recorded and leaves its result, cancelling only the rest."""
    pytest.importorskip("distributed")
    from o11ylab._dask import _cancel, _Progress
    from o11ylab._sweep import Task
    from o11ylab.runner import NotebookResult

    class Client:
        def __init__(self) -> None:
            self.cancelled: list[str] = []

        def cancel(self, futures: list[str], force: bool) -> None:
            self.cancelled.extend(futures)

    tasks = {key: Task(tmp_path / f"{key}.ipynb", {}, {}, f"{key}.ipynb") for key in "ab"}
    progress = _Progress(started={"a": 1, "b": 1}, finished={"a"})
    recorded: dict[str, NotebookResult] = {"a": NotebookResult("a.ipynb", "a.ipynb")}
    remaining = {"a": "future-a", "b": "future-b"}
    client = Client()
    _cancel(client, remaining, progress, recorded.__setitem__, tasks, tmp_path, started_too=True)
    assert remaining == {} and client.cancelled == ["future-b"]
    assert recorded["a"].status == "ok" and recorded["b"].status == "cancelled"
