"""`o11ylab run` on Dask: a real `dask scheduler` and `dask worker`s on loopback, one trace.

The notebooks are tiny ones written here (no models), so the time goes to kernels and Dask.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.sign import NotebookNotary

from o11ylab import semconv
from o11ylab.otlpjson import read_spans

from .conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.notebook]

distributed = pytest.importorskip("distributed")

# The notebook a sweep runs: `n` and `label` in its parameters cell, `fail_at` to make one
# combination fail, `hold` to keep its first attempt running until the test kills its worker.
TINY = {
    "parameters": "n = 1\nlabel = 'a'\nfail_at = -1\nhold = ''\nask_endpoint = False",
    "work": (
        "import os, pathlib, time\n"
        "if hold:\n"
        "    first = pathlib.Path(hold)\n"
        "    if not first.exists():  # the first attempt: say where it runs, then wait\n"
        "        first.write_text(str(os.getppid()))\n"
        "        deadline = time.monotonic() + 120\n"
        "        while time.monotonic() < deadline:\n"
        "            time.sleep(0.1)  # until the test kills this worker\n"
        "if ask_endpoint:  # the local endpoint the runner passed down, through plain openai\n"
        "    import openai\n"
        "    print(os.environ['OPENAI_BASE_URL'], [m.id for m in openai.OpenAI().models.list()])\n"
        "if n == fail_at:\n"
        "    raise ValueError(f'n={n} is the one that fails')\n"
        "print(label, sum(range(n)))"
    ),
}


def tiny_notebook(folder: Path, name: str = "tiny.ipynb") -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(TINY["parameters"], metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(TINY["work"]),
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path = folder / name
    nbformat.write(nb, path)
    return path


def o11ylab_run(
    env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "o11ylab", "run", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class DaskProcesses:
    """A `dask scheduler` and `dask worker`s, each in its own process group, on loopback."""

    def __init__(self, env: dict[str, str], workers: int) -> None:
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.env = env
        self.scheduler = self._start(
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            self.address.rsplit(":", 1)[1],
            "--no-dashboard",
        )
        self.workers = [
            self._start(
                "worker",
                self.address,
                "--nthreads",
                "1",
                "--no-dashboard",
                "--name",
                f"w{i}",
                "--host",
                "127.0.0.1",
            )
            for i in range(workers)
        ]

    def _start(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "dask"), *args],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # so a test can kill a worker with everything under it
        )

    def wait_for_workers(self, count: int, timeout: float = 90) -> list[str]:
        with distributed.Client(self.address, timeout=timeout) as client:
            client.wait_for_workers(count, timeout=timeout)
            return sorted(client.scheduler_info()["workers"])

    def kill_group(self, process: subprocess.Popen[bytes]) -> None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def stop(self) -> None:
        for process in [*self.workers, self.scheduler]:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in [*self.workers, self.scheduler]:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


@pytest.fixture
def dask_env(run_env: dict[str, str]) -> dict[str, str]:
    env = dict(run_env)
    # A worker that dies mid-notebook: the scheduler runs its task once more, then gives up.
    env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    return env


@pytest.fixture
def cluster(dask_env: dict[str, str]) -> Iterator[DaskProcesses]:
    processes = DaskProcesses(dask_env, workers=2)
    try:
        processes.wait_for_workers(2)
        yield processes
    finally:
        processes.stop()


def span_tree_checks(out: Path, expected_tasks: int) -> dict[str, Any]:
    """The run folder's spans are one trace: root → task → notebook → cells."""
    spans = read_spans(out)
    assert len({s["trace_id"] for s in spans}) == 1, "one trace for the whole run"
    by_id = {s["span_id"]: s for s in spans}
    (root,) = [s for s in spans if s["name"] == semconv.RUN_SPAN]
    assert root["parent_span_id"] is None
    tasks = [s for s in spans if s["name"].startswith(semconv.RUN_TASK_SPAN_PREFIX + " ")]
    assert len(tasks) == expected_tasks
    assert all(t["parent_span_id"] == root["span_id"] for t in tasks)
    notebooks = [s for s in spans if s["name"].startswith(semconv.NOTEBOOK_SPAN_PREFIX + " ")]
    for notebook in notebooks:
        task = by_id[notebook["parent_span_id"]]
        assert task["name"] == "task " + notebook["name"].split(" ", 1)[1]
    cells = [s for s in spans if semconv.CELL_SOURCE_SHA256 in s["attributes"]]
    assert cells and all(
        by_id[c["parent_span_id"]]["name"].startswith("notebook ") for c in cells
    ), "every cell span sits under a notebook span"
    return {"root": root, "tasks": tasks, "notebooks": notebooks, "cells": cells, "by_id": by_id}


def test_a_sweep_of_six_runs_over_two_workers_is_one_trace(
    tmp_path: Path, dask_env: dict[str, str], cluster: DaskProcesses
) -> None:
    notebook = tiny_notebook(tmp_path)
    out = tmp_path / "out"
    done = o11ylab_run(
        dask_env,
        str(notebook),
        "--grid",
        "n=1,2,3",
        "--grid",
        "label=x,y",
        "--scheduler",
        cluster.address,
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6/6 notebooks ok" in done.stdout
    names = sorted(p.name for p in out.glob("*.ipynb"))
    assert names == [f"tiny__n={n}__label={label}.ipynb" for n in (1, 2, 3) for label in "xy"]
    executed = nbformat.read(out / "tiny__n=3__label=y.ipynb", as_version=4)
    assert executed.cells[-1].outputs[0]["text"] == "y 3\n", "the parameters reached the kernel"
    assert executed.metadata[semconv.NOTEBOOK_METADATA_KEY]["parameters"] == {
        "n": 3,
        "label": "y",
    }

    tree = span_tree_checks(out, expected_tasks=6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trace_id"] == tree["root"]["trace_id"]
    assert executed.metadata[semconv.NOTEBOOK_METADATA_KEY]["trace_id"] == summary["trace_id"]
    runs = summary["notebooks"]
    assert [r["parameters"] for r in runs] == [
        {"n": n, "label": label} for n in (1, 2, 3) for label in "xy"
    ]
    workers = cluster.wait_for_workers(2)
    assert {r["worker"] for r in runs} == set(workers), "both workers took runs"
    assert all(r["status"] == "ok" and r["spans"] >= 3 for r in runs)
    assert summary["totals"]["notebooks"] == 6
    assert summary["totals"]["spans"] == sum(r["spans"] for r in runs)
    assert len(tree["notebooks"]) == 6
    assert 0 < summary["totals"]["wall_s"] < summary["totals"]["duration_s"], "in parallel"
    assert f"on the Dask scheduler at {cluster.address}" in done.stdout


def test_a_worker_killed_mid_run_loses_nothing_that_finished(
    tmp_path: Path, dask_env: dict[str, str], cluster: DaskProcesses
) -> None:
    notebook = tiny_notebook(tmp_path)
    hold = tmp_path / "first-attempt"
    params = tmp_path / "sets.yaml"
    params.write_text(
        f"- {{n: 1, hold: '{hold}'}}\n- {{n: 2}}\n- {{n: 3}}\n- {{n: 4}}\n", encoding="utf-8"
    )
    out = tmp_path / "out"
    runner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "o11ylab",
            "run",
            str(notebook),
            "--parameters-file",
            str(params),
            "--scheduler",
            cluster.address,
            "--out",
            str(out),
        ],
        env=dask_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not (hold.exists() and hold.read_text().strip()) and runner.poll() is None:
            assert time.monotonic() < deadline, "the held run never started"
            time.sleep(0.1)
        worker_pid = int(hold.read_text())
        (victim,) = [w for w in cluster.workers if os.getpgid(worker_pid) == w.pid]
        cluster.kill_group(victim)
        stdout, stderr = runner.communicate(timeout=240)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 0, stdout + stderr
    summary = json.loads((out / "summary.json").read_text())
    runs = {r["parameters"]["n"]: r for r in summary["notebooks"]}
    assert all(r["status"] == "ok" for r in runs.values())
    assert runs[1]["attempts"] == 2, "Dask ran the killed task again"
    (survivor,) = [w for w in cluster.workers if w is not victim]
    assert "ok (try 2)" in stdout
    names = sorted(p.name for p in out.glob("*.ipynb"))
    assert len(names) == 4
    tree = span_tree_checks(out, expected_tasks=4)
    # The retry's notebook span (the first attempt died with its worker) sits under the task.
    held = [
        n
        for n in tree["notebooks"]
        if json.loads(n["attributes"][semconv.RUN_TASK_PARAMETERS]).get("hold") == str(hold)
    ]
    assert len(held) == 1
    assert tree["by_id"][held[0]["parent_span_id"]]["name"] == held[0]["name"].replace(
        "notebook", "task", 1
    )
    assert survivor.poll() is None


def test_ctrl_c_cancels_the_rest_and_writes_what_finished(
    tmp_path: Path, dask_env: dict[str, str], cluster: DaskProcesses
) -> None:
    notebook = tiny_notebook(tmp_path)
    held = [tmp_path / "held-2", tmp_path / "held-3"]
    params = tmp_path / "sets.yaml"
    params.write_text(
        f"- {{n: 1}}\n- {{n: 2, hold: '{held[0]}'}}\n- {{n: 3, hold: '{held[1]}'}}\n- {{n: 4}}\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    # Ctrl-C as a terminal sends it; a shell's background job would start with SIGINT ignored.
    runner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from o11ylab.cli import main; sys.exit(main(sys.argv[1:]))",
            "run",
            str(notebook),
            "--parameters-file",
            str(params),
            "--scheduler",
            cluster.address,
            "--out",
            str(out),
        ],
        env=dask_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not all(h.exists() for h in held) and runner.poll() is None:
            assert time.monotonic() < deadline, "the held runs never started"
            time.sleep(0.1)
        # Both workers hold a run; n=1 finished before the second of them started.
        runner.send_signal(signal.SIGINT)
        stdout, stderr = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 130, stdout + stderr
    assert "interrupted; cancelling the runs that have not finished" in stdout
    summary = json.loads((out / "summary.json").read_text())
    status = {r["parameters"]["n"]: r["status"] for r in summary["notebooks"]}
    assert status == {1: "ok", 2: "cancelled", 3: "cancelled", 4: "cancelled"}
    assert [p.name for p in out.glob("*.ipynb")] == ["tiny__n=1.ipynb"]
    spans = read_spans(out)
    assert len({s["trace_id"] for s in spans}) == 1
    assert any(s["name"] == "notebook tiny__n=1" for s in spans)


def test_two_local_workers_run_a_sweep_and_a_failure_does_not_stop_the_others(
    tmp_path: Path, dask_env: dict[str, str]
) -> None:
    notebook = tiny_notebook(tmp_path)
    out = tmp_path / "out"
    jupyter_data = tmp_path / "jupyter-data"  # its runtime folder is too long for a socket
    done = o11ylab_run(
        {**dask_env, "JUPYTER_DATA_DIR": str(jupyter_data)},
        str(notebook),
        "--workers",
        "2",
        "--grid",
        "n=1,2,3",
        "-p",
        "fail_at",
        "2",
        "-p",
        "ask_endpoint",
        "true",
        "--out",
        str(out),
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "a Dask LocalCluster of 2 worker processes" in done.stdout
    # Issue 12: the workers' kernels run over IPC too (in a short private folder here), and
    # the runner signs what comes back with the user's Jupyter secret.
    assert "without encryption" not in done.stderr, done.stderr[-2000:]
    with NotebookNotary(data_dir=str(jupyter_data)) as notary:
        assert notary.check_signature(nbformat.read(out / "tiny__n=1.ipynb", as_version=4))
    summary = json.loads((out / "summary.json").read_text())
    status = {r["parameters"]["n"]: r["status"] for r in summary["notebooks"]}
    assert status == {1: "ok", 2: "failed", 3: "ok"}
    (failed,) = [r for r in summary["notebooks"] if r["status"] == "failed"]
    assert "ValueError: n=2 is the one that fails" in failed["error"]
    assert "✗ tiny__n=2.ipynb: ValueError: n=2 is the one that fails" in done.stdout
    assert summary["totals"]["by_status"] == {"ok": 2, "failed": 1}
    tree = span_tree_checks(out, expected_tasks=3)
    failed_task = [t for t in tree["tasks"] if t["name"] == "task tiny__n=2"]
    assert failed_task[0]["status"] == "ERROR"
    assert all(r["worker"].startswith("tcp://127.0.0.1:") for r in summary["notebooks"])
    # Both workers' kernels reached the runner's one local endpoint, and its server spans nest
    # under their cells in the run's trace.
    (endpoint,) = re.findall(r"local OpenAI-compatible endpoint at (\S+)", done.stdout)
    for n in (1, 3):
        executed = nbformat.read(out / f"tiny__n={n}.ipynb", as_version=4)
        assert executed.cells[-1].outputs[0]["text"].startswith(endpoint + " ['")
    served = [s for s in read_spans(out) if s["name"] == "GET /v1/models"]
    assert len(served) == 3
    assert {s["resource"]["service.name"] for s in served} == {semconv.SERVE_SERVICE_NAME}
    assert all(
        semconv.CELL_SOURCE_SHA256 in tree["by_id"][s["parent_span_id"]]["attributes"]
        for s in served
    )


def test_an_unreachable_scheduler_is_one_line_naming_it(
    tmp_path: Path, dask_env: dict[str, str]
) -> None:
    notebook = tiny_notebook(tmp_path)
    address = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    env = dict(dask_env, O11YLAB_RUN_CONNECT_TIMEOUT="2")
    started = time.monotonic()
    done = o11ylab_run(env, str(notebook), "--scheduler", address, "--out", str(out), timeout=60)
    assert done.returncode == 1
    assert time.monotonic() - started < 30
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"o11ylab run: cannot reach the Dask scheduler at {address}")
    assert not out.exists(), "nothing ran"
    # DASK_SCHEDULER_ADDRESS is the same path.
    done = o11ylab_run(dict(env, DASK_SCHEDULER_ADDRESS=address), str(notebook), timeout=60)
    assert f"cannot reach the Dask scheduler at {address}" in done.stderr


def test_bad_sweeps_stop_before_anything_runs(tmp_path: Path, dask_env: dict[str, str]) -> None:
    notebook = tiny_notebook(tmp_path)
    out = tmp_path / "out"
    done = o11ylab_run(dask_env, str(notebook), "--grid", "n", "--out", str(out), timeout=60)
    assert done.returncode == 1
    assert "--grid 'n' is not NAME=V1,V2" in done.stderr
    params = tmp_path / "sets.json"
    params.write_text(json.dumps([{"n": 1}, {"temperature": 0.2}]), encoding="utf-8")
    done = o11ylab_run(
        dask_env, str(notebook), "--parameters-file", str(params), "--out", str(out), timeout=60
    )
    assert done.returncode == 1
    assert "names temperature, which no notebook's parameters cell assigns" in done.stderr
    assert not out.exists(), "nothing ran"
