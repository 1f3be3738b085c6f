"""``o11ylab run``: notebooks headless with papermill, the whole run as one trace.

The runner opens a root span (``o11ylab run``) and, per notebook, a child span
(``notebook NAME``). Kernels inherit the runner's environment, so setting ``TRACEPARENT`` to
the notebook span before starting each kernel makes every cell span of that kernel join the
run's trace, and ``O11YLAB_RUN_DIR`` makes every kernel write its telemetry files into the
run's folder. The trace id goes into each executed notebook's metadata, and a summary per
notebook is printed at the end (and written to ``summary.json``).

``--grid`` and ``--parameters-file`` turn one notebook into several runs (``_sweep.py``);
``--workers N`` and ``--scheduler ADDRESS`` hand the runs to Dask (``_dask.py``), where each
run is a task span under the root and the notebook span opens on the worker.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import semconv
from ._files import private_folder, write_private
from ._sweep import SweepError, Task, load_parameters_file, parse_grid, parse_value, plan

if TYPE_CHECKING:
    from .config import RunConfig

__all__ = [
    "NotebookResult",
    "SweepError",
    "add_arguments",
    "find_notebooks",
    "format_summary",
    "run_command",
    "run_notebooks",
    "run_tasks",
]


@dataclass
class NotebookResult:
    notebook: str
    output: str
    status: str = "ok"
    duration_s: float = 0.0
    spans: int = 0
    errors: int = 0
    lost: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    gpu_energy_j: float | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # The parameters papermill injected (-p values and this run's sweep values).
    parameters: dict[str, Any] = field(default_factory=dict)
    # Where it ran: a Dask worker's address (None when the runner ran it itself).
    worker: str | None = None
    attempts: int = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="NOTEBOOK_OR_FOLDER",
        help="Notebooks, or folders whose *.ipynb run in name order.",
    )
    parser.add_argument(
        "--out",
        "-o",
        type=Path,
        default=None,
        help="Folder for executed notebooks and telemetry files "
        "(default: a new folder under O11YLAB_RUNS_DIR).",
    )
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="A papermill parameter for every notebook (VALUE parsed as JSON "
        "when it can be, else a string).",
    )
    parser.add_argument(
        "--kernel",
        "-k",
        default=None,
        help="Kernel name (default: the notebook's own, else python3).",
    )
    parser.add_argument(
        "--cell-timeout", type=float, default=None, help="Seconds a single cell may run."
    )
    parser.add_argument(
        "--stop-on-error",
        action="store_true",
        help="Do not run the remaining notebooks after a failure (with Dask: cancel the runs "
        "that have not started).",
    )
    sweep = parser.add_argument_group("parameter sweeps (one run per combination)")
    sweep.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="Values for one parameter of the notebooks' parameters cell; repeat for a "
        "cartesian product (values parsed as JSON when they can be).",
    )
    sweep.add_argument(
        "--parameters-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="A YAML or JSON list of parameter sets, one run per set (combined with --grid).",
    )
    dask = parser.add_argument_group("Dask (pip install 'o11ylab[dask]')")
    where = dask.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="Run in parallel on a Dask LocalCluster of N worker processes on this machine.",
    )
    where.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="Run on an existing Dask cluster (tcp://host:8786); default: "
        "DASK_SCHEDULER_ADDRESS when it is set.",
    )


def run_command(args: argparse.Namespace) -> int:
    from .config import load_run
    from .errors import O11yLabError

    notebooks = find_notebooks(args.paths)
    parameters = {name: _parse_value(value) for name, value in args.parameter}
    try:
        grid = parse_grid(args.grid)
        sets = load_parameters_file(args.parameters_file) if args.parameters_file else []
        tasks = plan(notebooks, parameters, grid, sets)
        if args.workers is not None and args.workers < 1:
            raise SweepError("--workers must be 1 or more.")
        scheduler = args.scheduler
        if args.workers is None and scheduler is None:
            scheduler = load_run().scheduler_address
        results, _ = run_tasks(
            tasks,
            out=args.out,
            kernel=args.kernel,
            cell_timeout=args.cell_timeout,
            stop_on_error=args.stop_on_error,
            workers=args.workers,
            scheduler=scheduler,
        )
    except O11yLabError as exc:
        raise SystemExit(f"o11ylab run: {exc}") from None
    except KeyboardInterrupt:
        if args.workers is None and not scheduler:
            raise  # the serial runner stops as it always has
        return 130  # the Dask runner cancelled the rest and wrote what finished
    return 0 if results and all(r.status == "ok" for r in results) else 1


def find_notebooks(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.glob("*.ipynb") if not p.name.startswith(".")))
        elif path.suffix == ".ipynb" and path.is_file():
            found.append(path)
        else:
            raise SystemExit(f"o11ylab run: {raw} is neither a notebook nor a folder of them.")
    if not found:
        raise SystemExit("o11ylab run: no notebooks found in " + ", ".join(paths))
    return found


_parse_value = parse_value  # the -p values and the sweep values are read alike


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_notebooks(
    notebooks: list[Path],
    out: Path | None = None,
    parameters: dict[str, Any] | None = None,
    kernel: str | None = None,
    cell_timeout: float | None = None,
    stop_on_error: bool = False,
    echo: bool = True,
    client: Any = None,
) -> tuple[list[NotebookResult], str]:
    """Run ``notebooks`` in one trace; return a result per notebook and the trace id.

    ``client``: a ``distributed.Client`` to run them on (a dask-gateway or dask-jobqueue
    cluster's, say), as ``--scheduler`` does; it stays open afterwards.
    """
    return run_tasks(
        plan(notebooks, parameters or {}),
        out=out,
        kernel=kernel,
        cell_timeout=cell_timeout,
        stop_on_error=stop_on_error,
        echo=echo,
        client=client,
    )


def run_tasks(
    tasks: list[Task],
    out: Path | None = None,
    kernel: str | None = None,
    cell_timeout: float | None = None,
    stop_on_error: bool = False,
    echo: bool = True,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
) -> tuple[list[NotebookResult], str]:
    """Run ``tasks`` in one trace: here one after another, or on Dask (``workers``, a
    ``scheduler`` address or a connected ``client``).

    Returns a result per task (in task order) and the trace id.
    """
    from .config import load_run, load_settings

    settings = load_settings()
    run_config = load_run()
    cluster = None
    if client is not None:
        from ._dask import DaskCluster

        cluster = DaskCluster(client, None, f"the Dask cluster of {client!r}", owned=False)
    elif workers is not None or scheduler:
        from ._dask import connect

        # Before the run folder and the endpoint: an unreachable scheduler is one line, at once.
        cluster = connect(workers, scheduler, run_config.connect_timeout_s, echo=echo)
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
    out = (out or settings.runs_dir / run_id).expanduser().resolve()
    private_folder(out)  # 0700: executed notebooks and traces may hold prompts
    # The runner's own telemetry goes to the same folder; it serves no /metrics (kernels do).
    with _environ({"O11YLAB_RUN_DIR": str(out), "O11YLAB_PROMETHEUS_PORT": "0"}):
        from .telemetry import get_telemetry

        telemetry = get_telemetry(load_settings())
    results: list[NotebookResult] = []
    interrupted = False
    with (
        cluster if cluster is not None else _nothing(),
        _local_endpoint(echo, out, run_config) as endpoint_env,
        telemetry.tracer.start_as_current_span(
            semconv.RUN_SPAN,
            attributes={semconv.RUN_ID: run_id, semconv.RUN_NOTEBOOK_COUNT: len(tasks)},
        ) as root,
    ):
        trace_id = format(root.get_span_context().trace_id, "032x")
        if echo:
            print(f"o11ylab run {run_id}: {len(tasks)} notebook(s), trace {trace_id}")
        began = time.perf_counter()
        if cluster is not None:
            from ._dask import run_on_dask

            results, interrupted = run_on_dask(
                cluster.client,
                tasks,
                out,
                kernel,
                cell_timeout,
                endpoint_env,
                trace_id,
                stop_on_error,
                echo,
                autotrace_set=run_config.autotrace_set,
            )
            # Signed here, with the runner's Jupyter secret (a worker elsewhere has its own),
            # once all are back: not in the loop that follows the tasks and hears Ctrl-C.
            for result in results:
                sign(Path(result.output))
        else:
            owners: dict[str, NotebookResult] = {}
            for task in tasks:
                result, span_id = _run_one(
                    task,
                    out,
                    kernel,
                    cell_timeout,
                    endpoint_env,
                    trace_id,
                    echo,
                    run_config.autotrace_set,
                )
                results.append(result)
                owners[span_id] = result
                if result.status != "ok" and stop_on_error:
                    break
        if any(r.status != "ok" for r in results):
            from opentelemetry.trace import Status, StatusCode

            failed = [_label(r) for r in results if r.status != "ok"]
            root.set_status(Status(StatusCode.ERROR, f"failed: {', '.join(failed)}"))
        wall_s = time.perf_counter() - began
    telemetry.shutdown()
    if cluster is None:
        _collect(out, owners)
    summary = {
        "run_id": run_id,
        "trace_id": trace_id,
        "out": str(out),
        "where": cluster.where if cluster is not None else "this process",
        "notebooks": [asdict(r) for r in results],
        "totals": {**totals(results), "wall_s": wall_s},
    }
    write_private(out / "summary.json", json.dumps(summary, indent=2, default=str))
    if echo:
        print(format_summary(results, out, trace_id))
        if cluster is not None:  # in parallel, the notebooks' time adds up to more than this
            print(f"wall clock {wall_s:.1f} s on {cluster.where}")
    if interrupted:
        raise KeyboardInterrupt
    return results, trace_id


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def totals(results: list[NotebookResult]) -> dict[str, Any]:
    """The run's figures added up, as ``summary.json`` holds them beside the per-run ones."""
    costs = [r.cost_usd for r in results if r.cost_usd is not None]
    energies = [r.gpu_energy_j for r in results if r.gpu_energy_j is not None]
    by_status: dict[str, int] = {}
    for r in results:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    return {
        "notebooks": len(results),
        "by_status": by_status,
        "duration_s": sum(r.duration_s for r in results),
        "spans": sum(r.spans for r in results),
        "errors": sum(r.errors for r in results),
        "input_tokens": sum(r.input_tokens for r in results),
        "output_tokens": sum(r.output_tokens for r in results),
        "cost_usd": sum(costs) if costs else None,
        "gpu_energy_j": sum(energies) if energies else None,
        "lost": sum(r.lost for r in results),
    }


def _dollars(amount: float | None) -> str:
    """A cost column: "-" unpriced, "0" for models that cost nothing (local ones: a row of
    "0.000000" read like a rounding of something), else six decimals, a cheap call's scale."""
    if amount is None:
        return "-"
    return "0" if amount == 0 else f"{amount:.6f}"


def _label(result: NotebookResult) -> str:
    """How a result is named to the user: its executed notebook's name (parameters and all)."""
    return Path(result.output).name


@contextmanager
def _local_endpoint(echo: bool, out: Path, run_config: RunConfig) -> Iterator[dict[str, str]]:
    """One local OpenAI-compatible endpoint for the whole run, when no real one is configured."""
    if run_config.openai_configured:
        yield {}
        return
    try:
        from .serve import LocalEndpoint, new_launch_key
    except ImportError:
        yield {}
        return
    # A key of this run's own unless the user set one: only its kernels can use the endpoint,
    # and the launcher's /health proof tells it from anything else that took its port.
    key = run_config.serve_api_key or new_launch_key()
    # Its spans (the server side of every kernel's calls) belong in the run folder too.
    with LocalEndpoint(env=dict(os.environ, O11YLAB_RUN_DIR=str(out)), api_key=key) as endpoint:
        if echo:
            print(f"o11ylab run: local OpenAI-compatible endpoint at {endpoint.base_url}")
        # Both variables, so a plain openai.OpenAI() in a kernel (and Chroma's or LangChain's
        # clients, which insist on a key) reaches the shared endpoint without code changes.
        yield {
            "OPENAI_BASE_URL": endpoint.base_url,
            "O11YLAB_LOCAL_ENDPOINT": endpoint.base_url,
            "OPENAI_API_KEY": key,
        }


def _run_one(
    task: Task,
    out: Path,
    kernel: str | None,
    cell_timeout: float | None,
    endpoint_env: dict[str, str],
    trace_id: str,
    echo: bool,
    autotrace_set: bool,
) -> tuple[NotebookResult, str]:
    """Run one task in this process; return its result and its notebook span's id (hex)."""
    from opentelemetry import trace
    from opentelemetry.propagate import inject

    notebook = task.notebook
    tracer = trace.get_tracer(semconv.SCOPE)
    output = out / task.output_name
    result = NotebookResult(notebook=str(notebook), output=str(output), parameters=task.parameters)
    started = time.perf_counter()
    with tracer.start_as_current_span(
        notebook_span_name(task), attributes=notebook_span_attributes(task)
    ) as span:
        carrier: dict[str, str] = {}
        inject(carrier)
        env = {
            "TRACEPARENT": carrier["traceparent"],
            "O11YLAB_NOTEBOOK": str(notebook),
            "O11YLAB_RUN_DIR": str(out),
            **endpoint_env,
        }
        extra_arguments = _autoload(notebook, kernel, env, autotrace_set)
        if echo:
            print(f"  ▶ {task.output_name} …", flush=True)
        with _environ(env):
            failure = execute(
                notebook,
                output,
                task.parameters,
                kernel,
                notebook.parent.resolve(),
                cell_timeout,
                extra_arguments,
            )
        record_failure(span, result, failure)
        span_id = format(span.get_span_context().span_id, "016x")
    result.duration_s = time.perf_counter() - started
    _stamp(output, trace_id, result.status, task.parameters)
    sign(output)
    return result, span_id


def notebook_span_name(task: Task) -> str:
    return f"{semconv.NOTEBOOK_SPAN_PREFIX} {Path(task.output_name).stem}"


def notebook_span_attributes(task: Task) -> dict[str, Any]:
    attributes: dict[str, Any] = {semconv.NOTEBOOK_PATH: str(task.notebook)}
    if task.swept:
        attributes[semconv.RUN_TASK_PARAMETERS] = json.dumps(task.swept, default=str)
    return attributes


def execute(
    notebook: Path,
    output: Path,
    parameters: dict[str, Any],
    kernel: str | None,
    cwd: Path,
    cell_timeout: float | None,
    extra_arguments: list[str],
    **engine_options: Any,
) -> Exception | None:
    """papermill on one notebook; the failure to report, None when it ran (expected errors ok).

    The kernel runs over IPC (``_kernels.py``) unless ``engine_options`` names another kernel
    manager class; papermill hands them to nbclient.
    """
    import papermill

    from ._kernels import kernel_manager_class

    engine_options.setdefault("kernel_manager_class", kernel_manager_class())
    try:
        papermill.execute_notebook(
            str(notebook),
            str(output),
            parameters=parameters,
            kernel_name=kernel,
            cwd=str(cwd),
            progress_bar=False,
            log_output=False,
            execution_timeout=cell_timeout,
            extra_arguments=extra_arguments,
            **engine_options,
        )
    except Exception as exc:  # noqa: BLE001 - papermill's execution errors and kernel deaths alike
        return None if _only_expected_errors(exc, output) else exc
    return None


def record_failure(span: Any, result: NotebookResult, failure: Exception | None) -> None:
    from opentelemetry.trace import Status, StatusCode

    if failure is not None:
        result.status = "failed"
        result.error = _first_line(failure)
        span.set_status(Status(StatusCode.ERROR, result.error))
        span.set_attribute(semconv.ERROR_TYPE, type(failure).__qualname__)
    span.set_attribute(semconv.NOTEBOOK_STATUS, result.status)


# Run by the kernel before the first cell, outside the history and the user's namespace.
_AUTOLOAD = "__import__('o11ylab').load_ipython_extension(get_ipython(), quiet=True)"


def _autoload(
    notebook: Path, kernel: str | None, env: dict[str, str], autotrace_set: bool
) -> list[str]:
    """Kernel arguments that trace a Python notebook which does not load o11ylab itself.

    Such a notebook (plain openai, Chroma or transformers code) gets the extension loaded
    before its first cell, so its libraries are instrumented, and autotrace, so each cell is a
    span under the notebook's and the libraries' spans nest in the run's trace. A notebook
    with its own ``%load_ext o11ylab`` runs as written (its ``%%traced`` cells, its options).
    ``O11YLAB_AUTOTRACE`` set by the user wins.
    """
    try:
        nb = json.loads(notebook.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []  # papermill reports an unreadable notebook itself
    language = ((nb.get("metadata") or {}).get("kernelspec") or {}).get("language")
    if not (
        language == "python"
        or (kernel or "").startswith("python")
        or (language is None and kernel is None)
    ):
        return []
    for cell in nb.get("cells") or ():
        source = cell.get("source") or ""
        if "o11ylab" in ("".join(source) if isinstance(source, list) else source):
            return []
    if not autotrace_set:
        env["O11YLAB_AUTOTRACE"] = "1"
    return [f"--InteractiveShellApp.exec_lines={_AUTOLOAD}"]


def _only_expected_errors(exc: BaseException, output: Path) -> bool:
    """True when every failed cell of the executed notebook is tagged ``raises-exception``.

    nbclient runs on past such cells by design, but papermill 2.7 then raises for any error
    output, tagged or not. A run whose only errors were expected succeeded: the error banner
    papermill wrote into the output notebook is removed again.
    """
    from papermill.exceptions import PapermillExecutionError

    if not isinstance(exc, PapermillExecutionError) or not output.exists():
        return False
    import nbformat
    from papermill.execute import remove_error_markers

    nb = remove_error_markers(nbformat.read(output, as_version=4))
    for cell in nb.cells:
        metadata = cell.get("metadata", {})
        failed = metadata.get("papermill", {}).get("exception") is True or any(
            out.get("output_type") == "error" for out in cell.get("outputs", ())
        )
        if failed and "raises-exception" not in metadata.get("tags", ()):
            return False
    nbformat.write(nb, output)
    return True


def _first_line(exc: BaseException) -> str:
    ename = getattr(exc, "ename", None)
    evalue = getattr(exc, "evalue", None)
    cell = getattr(exc, "exec_count", None)
    if ename:
        where = f" in cell [{cell}]" if cell is not None else ""
        return f"{ename}: {evalue}{where}".strip()
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _stamp(output: Path, trace_id: str, status: str, parameters: dict[str, Any]) -> None:
    """Write the run's W3C trace id (and the run's parameters) into the notebook's metadata."""
    if not output.exists():
        return
    import nbformat

    nb = nbformat.read(output, as_version=4)
    stamp: dict[str, Any] = {"trace_id": trace_id, "status": status}
    if parameters:
        stamp["parameters"] = parameters
    nb.metadata[semconv.NOTEBOOK_METADATA_KEY] = stamp
    nbformat.write(nb, output)


def sign(output: Path) -> None:
    """Trust the executed notebook, as ``jupyter trust`` would: the user's own run, on the
    user's machine, under the user's Jupyter secret. Unsigned, JupyterLab would open it
    untrusted and strip the styles of its trace views and monitor copies."""
    if not output.exists():
        return
    import nbformat
    from jupyter_core.paths import jupyter_data_dir
    from nbformat.sign import NotebookNotary

    try:
        data_dir = Path(jupyter_data_dir())  # where `jupyter trust` keeps the secret
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with NotebookNotary(data_dir=str(data_dir)) as notary:
            notary.sign(nbformat.read(output, as_version=4))
    except Exception as exc:  # noqa: BLE001 - a read-only data folder: the run still counts
        print(f"o11ylab run: {output.name} left untrusted ({exc})", file=sys.stderr)


def _collect(out: Path, owners: dict[str, NotebookResult]) -> None:
    """Per-run totals from the span files in ``out``; ``owners`` maps notebook span ids to runs.

    A kernel's spans belong to the run whose notebook span they descend from (one notebook may
    run many times in a sweep, so its path alone does not say which run), and only a kernel's
    own spans count: the local endpoint's server spans of the same calls do not.
    """
    from .otlpjson import read_spans

    spans = read_spans(out)
    by_id = {s["span_id"]: s for s in spans}
    owner_of: dict[str, NotebookResult | None] = {}

    def owner(span_id: str | None, depth: int = 0) -> NotebookResult | None:
        if span_id is None or depth > 200:
            return None
        if span_id in owners:
            return owners[span_id]
        if span_id not in owner_of:
            parent = by_id.get(span_id, {}).get("parent_span_id")
            owner_of[span_id] = owner(parent, depth + 1)
        return owner_of[span_id]

    kernels: dict[tuple[str, int], NotebookResult] = {}  # (notebook path, pid) → its run
    counted: list[tuple[dict[str, Any], NotebookResult]] = []
    unplaced: list[dict[str, Any]] = []
    for span in spans:
        path = span["resource"].get(semconv.NOTEBOOK_PATH)
        if path is None:
            continue  # the runner's and the endpoint's spans
        result = owner(span["span_id"])
        if result is None or result.notebook != path:
            unplaced.append(span)
            continue
        kernels[(path, span["resource"].get("process.pid", -1))] = result
        counted.append((span, result))
    for span in unplaced:  # a span whose parent was lost (a kernel killed mid-cell)
        key = (span["resource"].get(semconv.NOTEBOOK_PATH), span["resource"].get("process.pid", -1))
        if key in kernels:
            counted.append((span, kernels[key]))
    for span, result in counted:
        attributes = span["attributes"]
        result.spans += 1
        if span["status"] == "ERROR":
            result.errors += 1
        if attributes.get(semconv.GEN_AI_OPERATION_NAME) in semconv.ROLLUP_OPERATIONS:
            result.input_tokens += int(attributes.get(semconv.GEN_AI_USAGE_INPUT_TOKENS, 0) or 0)
            result.output_tokens += int(attributes.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS, 0) or 0)
            cost = attributes.get(semconv.GEN_AI_USAGE_COST)
            if isinstance(cost, (int, float)):
                result.cost_usd = (result.cost_usd or 0.0) + cost
        energy = attributes.get(semconv.CELL_GPU_ENERGY)
        if isinstance(energy, (int, float)) and _is_cell(span):
            result.gpu_energy_j = (result.gpu_energy_j or 0.0) + energy
    for report_path in out.glob("exports.*.json"):
        try:
            report = json.loads(report_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        found = kernels.get((report.get("notebook"), report.get("pid", -1)))
        if found is not None:
            found.lost += report.get("stranded", 0) + sum(
                e.get("failed", 0) for e in report.get("exporters", [])
            )


def _is_cell(span: dict[str, Any]) -> bool:
    return semconv.CELL_SOURCE_SHA256 in span["attributes"]


def format_summary(results: list[NotebookResult], out: Path, trace_id: str) -> str:
    on_dask = any(r.worker for r in results)
    header = (
        "notebook",
        *(("worker",) if on_dask else ()),
        "status",
        "time",
        "spans",
        "errors",
        "tokens in/out",
        "cost $",
        "GPU J",
        "lost",
    )
    rows = [header]
    for r in results:
        rows.append(
            (
                _label(r),
                *((r.worker or "-",) if on_dask else ()),
                r.status if r.attempts < 2 else f"{r.status} (try {r.attempts})",
                f"{r.duration_s:.1f} s",
                str(r.spans),
                str(r.errors),
                f"{r.input_tokens}/{r.output_tokens}",
                _dollars(r.cost_usd),
                "-" if r.gpu_energy_j is None else f"{r.gpu_energy_j:.1f}",
                str(r.lost),
            )
        )
    sums = totals(results)
    if len(results) > 1:
        rows.append(
            (
                "total",
                *(("",) if on_dask else ()),
                "",
                f"{sums['duration_s']:.1f} s",
                str(sums["spans"]),
                str(sums["errors"]),
                f"{sums['input_tokens']}/{sums['output_tokens']}",
                _dollars(sums["cost_usd"]),
                "-" if sums["gpu_energy_j"] is None else f"{sums['gpu_energy_j']:.1f}",
                str(sums["lost"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if len(results) > 1:
        lines.insert(len(lines) - 1, lines[1])
    failed = [r for r in results if r.status != "ok"]
    for r in failed:
        lines.append(f"✗ {_label(r)}: {r.error}")
    lost = sums["lost"]
    if lost:
        lines.append(
            f"⚠ {lost} telemetry items could not be exported (a collector down or slow, "
            "or a full disk); each kernel said why once in its output."
        )
    total = sums["duration_s"]
    lines.append(
        f"{len(results) - len(failed)}/{len(results)} notebooks ok in {total:.1f} s · "
        f"trace {trace_id}"
    )
    lines.append(f"executed notebooks and telemetry: {out}")
    lines.append(f"trace files: {out}/traces.*.jsonl (OTLP-JSON lines)")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - use `o11ylab run`
    from .cli import main

    sys.exit(main(["run", *sys.argv[1:]]))
