"""``o11ylab run``: notebooks headless with papermill, the whole run as one trace.

The runner opens a root span (``o11ylab run``) and, per notebook, a child span
(``notebook NAME``). Kernels inherit the runner's environment, so setting ``TRACEPARENT`` to
the notebook span before starting each kernel makes every cell span of that kernel join the
run's trace, and ``O11YLAB_RUN_DIR`` makes every kernel write its telemetry files into the
run's folder. The trace id goes into each executed notebook's metadata, and a summary per
notebook is printed at the end (and written to ``summary.json``).
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
from typing import Any

from . import semconv
from ._files import private_folder, write_private

__all__ = ["NotebookResult", "add_arguments", "run_command", "run_notebooks"]


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
        help="Do not run the remaining notebooks after a failure.",
    )


def run_command(args: argparse.Namespace) -> int:
    notebooks = find_notebooks(args.paths)
    parameters = {name: _parse_value(value) for name, value in args.parameter}
    results, _ = run_notebooks(
        notebooks,
        out=args.out,
        parameters=parameters,
        kernel=args.kernel,
        cell_timeout=args.cell_timeout,
        stop_on_error=args.stop_on_error,
    )
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


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


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
) -> tuple[list[NotebookResult], str]:
    """Run ``notebooks`` in one trace; return a result per notebook and the trace id."""
    from .config import load_settings

    settings = load_settings()
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
    out = (out or settings.runs_dir / run_id).expanduser().resolve()
    private_folder(out)  # 0700: executed notebooks and traces may hold prompts
    # The runner's own telemetry goes to the same folder; it serves no /metrics (kernels do).
    with _environ({"O11YLAB_RUN_DIR": str(out), "O11YLAB_PROMETHEUS_PORT": "0"}):
        from .telemetry import get_telemetry

        telemetry = get_telemetry(load_settings())
    results: list[NotebookResult] = []
    with (
        _local_endpoint(echo, out) as endpoint_env,
        telemetry.tracer.start_as_current_span(
            semconv.RUN_SPAN,
            attributes={semconv.RUN_ID: run_id, semconv.RUN_NOTEBOOK_COUNT: len(notebooks)},
        ) as root,
    ):
        trace_id = format(root.get_span_context().trace_id, "032x")
        if echo:
            print(f"o11ylab run {run_id}: {len(notebooks)} notebook(s), trace {trace_id}")
        for notebook in notebooks:
            result = _run_one(
                notebook, out, parameters or {}, kernel, cell_timeout, endpoint_env, trace_id, echo
            )
            results.append(result)
            if result.status != "ok" and stop_on_error:
                break
        if any(r.status != "ok" for r in results):
            from opentelemetry.trace import Status, StatusCode

            failed = [r.notebook for r in results if r.status != "ok"]
            root.set_status(Status(StatusCode.ERROR, f"failed: {', '.join(failed)}"))
    telemetry.shutdown()
    _collect(out, results)
    summary = {
        "run_id": run_id,
        "trace_id": trace_id,
        "out": str(out),
        "notebooks": [asdict(r) for r in results],
    }
    write_private(out / "summary.json", json.dumps(summary, indent=2))
    if echo:
        print(format_summary(results, out, trace_id))
    return results, trace_id


@contextmanager
def _local_endpoint(echo: bool, out: Path) -> Iterator[dict[str, str]]:
    """One local OpenAI-compatible endpoint for the whole run, when no real one is configured."""
    if os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"):
        yield {}
        return
    try:
        from .serve import LocalEndpoint
    except ImportError:
        yield {}
        return
    # Its spans (the server side of every kernel's calls) belong in the run folder too.
    with LocalEndpoint(env=dict(os.environ, O11YLAB_RUN_DIR=str(out))) as endpoint:
        if echo:
            print(f"o11ylab run: local OpenAI-compatible endpoint at {endpoint.base_url}")
        from .local_openai import PLACEHOLDER_KEY

        # Both variables, so a plain openai.OpenAI() in a kernel (and Chroma's or LangChain's
        # clients, which insist on a key) reaches the shared endpoint without code changes.
        yield {
            "OPENAI_BASE_URL": endpoint.base_url,
            "O11YLAB_LOCAL_ENDPOINT": endpoint.base_url,
            "OPENAI_API_KEY": os.environ.get("O11YLAB_SERVE_API_KEY", "").strip()
            or PLACEHOLDER_KEY,
        }


def _run_one(
    notebook: Path,
    out: Path,
    parameters: dict[str, Any],
    kernel: str | None,
    cell_timeout: float | None,
    endpoint_env: dict[str, str],
    trace_id: str,
    echo: bool,
) -> NotebookResult:
    import papermill
    from opentelemetry import trace
    from opentelemetry.propagate import inject
    from opentelemetry.trace import Status, StatusCode

    tracer = trace.get_tracer(semconv.SCOPE)
    output = out / notebook.name
    result = NotebookResult(notebook=str(notebook), output=str(output))
    started = time.perf_counter()
    with tracer.start_as_current_span(
        f"{semconv.NOTEBOOK_SPAN_PREFIX} {notebook.stem}",
        attributes={semconv.NOTEBOOK_PATH: str(notebook)},
    ) as span:
        carrier: dict[str, str] = {}
        inject(carrier)
        env = {
            "TRACEPARENT": carrier["traceparent"],
            "O11YLAB_NOTEBOOK": str(notebook),
            "O11YLAB_RUN_DIR": str(out),
            **endpoint_env,
        }
        extra_arguments = _autoload(notebook, kernel, env)
        if echo:
            print(f"  ▶ {notebook.name} …", flush=True)
        failure: Exception | None = None
        try:
            with _environ(env):
                papermill.execute_notebook(
                    str(notebook),
                    str(output),
                    parameters=parameters,
                    kernel_name=kernel,
                    cwd=str(notebook.parent.resolve()),
                    progress_bar=False,
                    log_output=False,
                    execution_timeout=cell_timeout,
                    extra_arguments=extra_arguments,
                )
        except Exception as exc:  # noqa: BLE001 - papermill's execution errors and kernel deaths alike
            failure = None if _only_expected_errors(exc, output) else exc
        if failure is not None:
            result.status = "failed"
            result.error = _first_line(failure)
            span.set_status(Status(StatusCode.ERROR, result.error))
            span.set_attribute(semconv.ERROR_TYPE, type(failure).__qualname__)
        span.set_attribute(semconv.NOTEBOOK_STATUS, result.status)
    result.duration_s = time.perf_counter() - started
    _stamp(output, trace_id, result.status)
    return result


# Run by the kernel before the first cell, outside the history and the user's namespace.
_AUTOLOAD = "__import__('o11ylab').load_ipython_extension(get_ipython())"


def _autoload(notebook: Path, kernel: str | None, env: dict[str, str]) -> list[str]:
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
    if "O11YLAB_AUTOTRACE" not in os.environ:
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


def _stamp(output: Path, trace_id: str, status: str) -> None:
    """Write the run's W3C trace id into the executed notebook's metadata."""
    if not output.exists():
        return
    import nbformat

    nb = nbformat.read(output, as_version=4)
    nb.metadata[semconv.NOTEBOOK_METADATA_KEY] = {"trace_id": trace_id, "status": status}
    nbformat.write(nb, output)


def _collect(out: Path, results: list[NotebookResult]) -> None:
    """Per-notebook totals from the run's span files (every kernel wrote into ``out``)."""
    from .otlpjson import read_spans

    by_notebook = {r.notebook: r for r in results}
    for report_path in out.glob("exports.*.json"):
        try:
            report = json.loads(report_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        owner = by_notebook.get(report.get("notebook"))
        if owner is not None:
            owner.lost += report.get("stranded", 0) + sum(
                e.get("failed", 0) for e in report.get("exporters", [])
            )
    for span in read_spans(out):
        result = by_notebook.get(span["resource"].get(semconv.NOTEBOOK_PATH))
        if result is None:
            continue
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


def _is_cell(span: dict[str, Any]) -> bool:
    return semconv.CELL_SOURCE_SHA256 in span["attributes"]


def format_summary(results: list[NotebookResult], out: Path, trace_id: str) -> str:
    header = (
        "notebook",
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
                Path(r.notebook).name,
                r.status,
                f"{r.duration_s:.1f} s",
                str(r.spans),
                str(r.errors),
                f"{r.input_tokens}/{r.output_tokens}",
                "-" if r.cost_usd is None else f"{r.cost_usd:.6f}",
                "-" if r.gpu_energy_j is None else f"{r.gpu_energy_j:.1f}",
                str(r.lost),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    failed = [r for r in results if r.status != "ok"]
    for r in failed:
        lines.append(f"✗ {Path(r.notebook).name}: {r.error}")
    lost = sum(r.lost for r in results)
    if lost:
        lines.append(
            f"⚠ {lost} telemetry items could not be exported (a collector down or slow, "
            "or a full disk); each kernel said why once in its output."
        )
    total = sum(r.duration_s for r in results)
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
