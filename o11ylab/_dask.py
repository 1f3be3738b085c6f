"""``o11ylab run --workers N`` / ``--scheduler ADDRESS``: the runs as Dask tasks, one trace.

One code path for both: ``--workers N`` starts a ``distributed.LocalCluster`` of N worker
processes and connects to it exactly as ``--scheduler`` connects to an existing cluster
(``dask scheduler``, dask-gateway, dask-jobqueue, dask-kubernetes).

The trace: the runner opens a ``task NAME`` span per run under its root span and hands its
``traceparent`` to the task. The worker opens the ``notebook NAME`` span under it and starts the
kernel with ``TRACEPARENT`` set to that, so the cells join as they do in a serial run. A task
writes its telemetry into a folder of its own on the worker; when no OTLP endpoint is set
there, the executed notebook and those files come back with the result and land in the run
folder, so the folder is complete wherever the work ran. With an endpoint set, the worker's
kernels export there directly and only the executed notebook comes back.

Faults: a notebook that fails is a result like any other (marked failed, the rest go on). A
worker that dies mid-run is Dask's business: the scheduler runs the task again elsewhere until
``distributed.scheduler.allowed-failures`` deaths (1 on the LocalCluster we start), then the run
is marked failed with the reason. A task that raises (the worker cannot write a temporary
folder, say) is retried once (``retries=1``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from . import semconv
from ._files import PRIVATE_FILE
from ._sweep import Task
from .errors import O11yLabError, require
from .runner import (
    NotebookResult,
    _autoload,
    _collect,
    _stamp,
    execute,
    notebook_span_attributes,
    notebook_span_name,
    record_failure,
)

__all__ = ["DaskCluster", "SchedulerUnreachable", "TaskOutcome", "TaskSpec", "connect", "run_task"]

# The variables that point a kernel at the runner's local endpoint; a worker on another
# machine cannot reach the runner's loopback, so it drops them and starts its own.
_ENDPOINT_KEYS = ("OPENAI_BASE_URL", "O11YLAB_LOCAL_ENDPOINT", "OPENAI_API_KEY")
_TELEMETRY_FILES = ("traces.*.jsonl", "metrics.*.jsonl", "logs.*.jsonl", "exports.*.json")


class SchedulerUnreachable(O11yLabError, RuntimeError):
    """The Dask scheduler did not answer within the connect timeout."""


# --- where the work runs ------------------------------------------------------------------


class DaskCluster:
    """A connected ``distributed.Client`` (and the LocalCluster behind it, when we made one)."""

    def __init__(self, client: Any, cluster: Any, where: str, owned: bool = True) -> None:
        self.client = client
        self.cluster = cluster
        self.where = where
        self.owned = owned  # a client the caller passed in stays open

    def __enter__(self) -> DaskCluster:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if not self.owned:
            return
        with contextlib.suppress(Exception):
            self.client.close(timeout=10)
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close(timeout=10)


def connect(
    workers: int | None, scheduler: str | None, timeout_s: float, echo: bool = True
) -> DaskCluster:
    """A client on a new LocalCluster of ``workers`` processes, or on ``scheduler``."""
    what = "o11ylab run --workers" if workers is not None else "o11ylab run --scheduler"
    distributed = require("distributed", "dask", what)
    import logging

    import dask

    if workers is not None:
        # A worker that dies mid-notebook: run the task once more elsewhere, then report it.
        with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
            cluster = distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=1,  # a notebook per worker process at a time
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
        client = distributed.Client(cluster, set_as_default=False)
        where = f"a Dask LocalCluster of {workers} worker processes"
        if echo:
            print(f"o11ylab run: {where}", flush=True)
        return DaskCluster(client, cluster, where)
    assert scheduler is not None
    shown = _display_address(scheduler)
    quiet = logging.getLogger("distributed")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # its retry warnings say less than our one line
    try:
        client = distributed.Client(scheduler, timeout=timeout_s, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SchedulerUnreachable(
            f"cannot reach the Dask scheduler at {shown} within {timeout_s:g} s ({reason[:160]}). "
            "Start one (dask scheduler), or check --scheduler / DASK_SCHEDULER_ADDRESS "
            "(O11YLAB_RUN_CONNECT_TIMEOUT sets the wait)."
        ) from None
    finally:
        quiet.setLevel(level)
    where = f"the Dask scheduler at {shown}"
    if echo:
        count = len(client.scheduler_info().get("workers", {}))
        print(f"o11ylab run: {where} ({count} worker(s) now)", flush=True)
    return DaskCluster(client, None, where)


def _display_address(address: str) -> str:
    """The address as typed, without user info a gateway URL might carry."""
    if "@" in address and "://" in address:
        scheme, rest = address.split("://", 1)
        return f"{scheme}://{rest.rsplit('@', 1)[1]}"
    return address


def _host_id() -> str:
    """This machine: the host name and, where Linux says, the boot id (containers share it)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


# --- the task, as it runs on a worker -------------------------------------------------------


@dataclass
class TaskSpec:
    key: str
    index: int
    topic: str
    notebook: str  # the path as the runner knows it: the kernel's notebook label
    notebook_bytes: bytes
    output_name: str
    parameters: dict[str, Any]
    swept: dict[str, Any]
    kernel: str | None
    cell_timeout: float | None
    extra_arguments: list[str]
    env: dict[str, str]  # for the kernel, beside the worker's own environment
    traceparent: str  # the runner's task span
    trace_id: str
    runner_host: str


@dataclass
class TaskOutcome:
    result: NotebookResult
    notebook_span_id: str
    files: dict[str, bytes] = field(default_factory=dict)  # name in the run folder → content


def _kernel_manager(env: dict[str, str]) -> type[Any]:
    """A kernel manager that starts its kernel over IPC with ``env`` added to this process's
    environment (``_kernels.kernel_manager_class``: a worker runs tasks in threads, so the
    environment goes to the kernel's launch, not ``os.environ``)."""
    from ._kernels import kernel_manager_class

    return kernel_manager_class(env)


def _span_provider(folder: Path, otlp: bool, export_timeout_s: float, protocol: str) -> Any:
    """A tracer provider for this task's notebook span alone: its folder, and OTLP when set."""
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from .otlpjson import JsonLinesWriter
    from .telemetry import FileSpanExporter

    attributes: dict[str, Any] = {"host.name": socket.gethostname(), "process.pid": os.getpid()}
    if "service.name" not in OTELResourceDetector().detect().attributes:
        attributes["service.name"] = semconv.SERVICE_NAME_DEFAULT
    resource = Resource.create(attributes).merge(OTELResourceDetector().detect())
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    writer = JsonLinesWriter(folder / f"traces.{os.getpid()}.jsonl")
    provider.add_span_processor(SimpleSpanProcessor(FileSpanExporter(writer)))
    if otlp:
        exporter: Any
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(timeout=export_timeout_s)
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HTTPSpanExporter,
            )

            exporter = HTTPSpanExporter(timeout=export_timeout_s)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def _own_endpoint(env: dict[str, str]) -> None:
    """On a machine other than the runner's: this worker's own local endpoint, shared by its
    tasks (``ensure_local_endpoint`` keeps one per process, or uses ``O11YLAB_LOCAL_ENDPOINT``
    when the machine already runs one)."""
    wanted = any(key in env for key in _ENDPOINT_KEYS)
    for key in _ENDPOINT_KEYS:
        env.pop(key, None)
    if not wanted:
        return  # the runner was given a real endpoint (OPENAI_*): the worker's own env says
    from .config import load_run
    from .local_openai import PLACEHOLDER_KEY
    from .serve import ensure_local_endpoint

    base_url = ensure_local_endpoint()
    env.update(
        {
            "OPENAI_BASE_URL": base_url,
            "O11YLAB_LOCAL_ENDPOINT": base_url,
            "OPENAI_API_KEY": load_run().serve_api_key or PLACEHOLDER_KEY,
        }
    )


def run_task(spec: TaskSpec) -> TaskOutcome:
    """Run one notebook on this worker; the result, and the files the run folder needs."""
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from .config import load_run, load_settings

    worker_address = _announce(spec)
    folder = Path(tempfile.mkdtemp(prefix="o11ylab-task-"))
    try:
        env = dict(spec.env)
        if spec.runner_host != _host_id():
            _own_endpoint(env)
        # Batch kernels in parallel on one machine would fight over one /metrics port; their
        # metrics reach the files or OTLP. A worker's own O11YLAB_PROMETHEUS_PORT wins.
        if not load_run().prometheus_port_set:
            env["O11YLAB_PROMETHEUS_PORT"] = "0"
        env["O11YLAB_RUN_DIR"] = str(folder)
        settings = load_settings({**os.environ, **env})
        otlp = "traces" in settings.otlp_signals
        provider = _span_provider(
            folder, otlp, settings.export_timeout_s, settings.otlp_protocol.get("traces", "")
        )
        source = Path(spec.notebook)
        inputs = folder / "input"
        inputs.mkdir()
        notebook = inputs / source.name
        notebook.write_bytes(spec.notebook_bytes)
        # Relative paths in the notebook (data files) resolve where it lives, when this machine
        # sees the same folder (the same machine, a shared file system); else beside the copy.
        cwd = source.parent.resolve() if source.is_file() else inputs
        output = folder / spec.output_name
        task = Task(source, spec.parameters, spec.swept, spec.output_name)
        result = NotebookResult(
            notebook=spec.notebook,
            output=spec.output_name,
            parameters=spec.parameters,
            worker=worker_address,
        )
        parent = TraceContextTextMapPropagator().extract({"traceparent": spec.traceparent})
        tracer = provider.get_tracer(semconv.SCOPE)
        started = time.perf_counter()
        span = tracer.start_span(
            notebook_span_name(task), context=parent, attributes=notebook_span_attributes(task)
        )
        try:
            carrier: dict[str, str] = {}
            TraceContextTextMapPropagator().inject(carrier, trace.set_span_in_context(span))
            env["TRACEPARENT"] = carrier["traceparent"]
            failure = execute(
                notebook,
                output,
                spec.parameters,
                spec.kernel,
                cwd,
                spec.cell_timeout,
                spec.extra_arguments,
                kernel_manager_class=_kernel_manager(env),
            )
            record_failure(span, result, failure)
        finally:
            span.end()
            provider.shutdown()
        result.duration_s = time.perf_counter() - started
        span_id = format(span.get_span_context().span_id, "016x")
        _stamp(output, spec.trace_id, result.status, spec.parameters)
        _collect(folder, {span_id: result})
        files: dict[str, bytes] = {}
        if output.exists():
            files[spec.output_name] = output.read_bytes()
        if not otlp:
            for pattern in _TELEMETRY_FILES:
                for path in folder.glob(pattern):
                    kind, rest = path.name.split(".", 1)
                    # traces.<pid>.jsonl → traces.task007-<pid>.jsonl: pids repeat across machines.
                    files[f"{kind}.task{spec.index:03d}-{rest}"] = path.read_bytes()
        return TaskOutcome(result, span_id, files)
    finally:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def _announce(spec: TaskSpec) -> str | None:
    """Tell the runner this task started here (for its progress and retry count)."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None  # called outside a worker (tests, a debugger)
    with contextlib.suppress(Exception):
        worker.log_event(spec.topic, {"key": spec.key, "worker": worker.address})
    return str(worker.address)


# --- the runner's side ------------------------------------------------------------------------


@dataclass
class _Progress:
    started: dict[str, int] = field(default_factory=dict)  # key → attempts seen
    workers: dict[str, str] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def running(self) -> int:
        with self.lock:
            return len(set(self.started) - self.finished)


def run_on_dask(
    client: Any,
    tasks: list[Task],
    out: Path,
    kernel: str | None,
    cell_timeout: float | None,
    endpoint_env: dict[str, str],
    trace_id: str,
    stop_on_error: bool,
    echo: bool,
    autotrace_set: bool,
) -> tuple[list[NotebookResult], bool]:
    """Submit every task, follow them to the end; the results in task order, and whether the
    user interrupted (the rest were cancelled then)."""
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    from tqdm import tqdm  # type: ignore[import-untyped]  # papermill brings it; no types

    tracer = trace.get_tracer(semconv.SCOPE)
    topic = f"o11ylab-run-{uuid.uuid4().hex[:8]}"
    progress = _Progress()
    wake = threading.Event()

    def on_event(event: Any) -> None:
        message = event[1] if isinstance(event, tuple) else event
        if isinstance(message, dict) and "key" in message:
            with progress.lock:
                progress.started[message["key"]] = progress.started.get(message["key"], 0) + 1
                progress.workers[message["key"]] = str(message.get("worker"))
            wake.set()

    client.subscribe_topic(topic, on_event)
    runner_host = _host_id()
    spans: dict[str, Any] = {}
    futures: dict[str, Any] = {}
    results: dict[str, NotebookResult] = {}
    order: list[str] = []
    by_key: dict[str, Task] = {}
    for index, task in enumerate(tasks):
        key = f"o11ylab-{Path(task.output_name).stem[:60]}-{uuid.uuid4().hex[:8]}"
        span = tracer.start_span(
            f"{semconv.RUN_TASK_SPAN_PREFIX} {Path(task.output_name).stem}",
            attributes={
                semconv.NOTEBOOK_PATH: str(task.notebook),
                **(
                    {semconv.RUN_TASK_PARAMETERS: json.dumps(task.swept, default=str)}
                    if task.swept
                    else {}
                ),
            },
        )
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier, trace.set_span_in_context(span))
        env = {"O11YLAB_NOTEBOOK": str(task.notebook), **endpoint_env}
        spec = TaskSpec(
            key=key,
            index=index,
            topic=topic,
            notebook=str(task.notebook),
            notebook_bytes=task.notebook.read_bytes(),
            output_name=task.output_name,
            parameters=task.parameters,
            swept=task.swept,
            kernel=kernel,
            cell_timeout=cell_timeout,
            extra_arguments=_autoload(task.notebook, kernel, env, autotrace_set),
            env=env,
            traceparent=carrier["traceparent"],
            trace_id=trace_id,
            runner_host=runner_host,
        )
        future = client.submit(run_task, spec, key=key, retries=1, pure=False)
        future.add_done_callback(lambda _: wake.set())
        spans[key], futures[key], by_key[key] = span, future, task
        order.append(key)

    bar = tqdm(total=len(tasks), unit="nb", file=sys.stderr, disable=not echo, dynamic_ncols=True)

    shown = [""]

    def refresh() -> None:
        text = f"running {progress.running()}, failed {progress.failed}"
        if text != shown[0]:  # a log file gets a line per change, not one a second
            shown[0] = text
            bar.set_postfix_str(text)

    def finish(key: str, result: NotebookResult) -> None:
        span = spans[key]
        with progress.lock:
            progress.finished.add(key)
            attempts = progress.started.get(key, 0)
            result.worker = result.worker or progress.workers.get(key)
        result.attempts = max(attempts, 1)
        if result.status == "failed":
            progress.failed += 1
        if result.status != "ok":
            span.set_status(Status(StatusCode.ERROR, result.error or result.status))
        span.set_attribute(semconv.RUN_TASK_STATUS, result.status)
        span.set_attribute(semconv.RUN_TASK_ATTEMPTS, result.attempts)
        if result.worker:
            span.set_attribute(semconv.RUN_TASK_WORKER, result.worker)
        span.end()
        results[key] = result
        bar.update(1)
        mark = "✓" if result.status == "ok" else "✗"
        where = f" on {result.worker}" if result.worker else ""
        bar.write(f"  {mark} {Path(result.output).name}{where} ({result.status})", file=sys.stdout)
        sys.stdout.flush()

    interrupted = False
    remaining = dict(futures)
    try:
        while remaining:
            wake.wait(1.0)
            wake.clear()
            for key, future in list(remaining.items()):
                if key not in remaining or not future.done():
                    continue  # cancelled meanwhile (--stop-on-error), or still running
                result = _result_of(future, by_key[key], out)
                finish(key, result)
                # Off the list only once recorded: a Ctrl-C in between then finds the run
                # either still listed (and cancels it) or recorded, never lost.
                del remaining[key]
                if result.status == "failed" and stop_on_error:
                    _cancel(client, remaining, progress, finish, by_key, out, started_too=False)
            refresh()
    except KeyboardInterrupt:
        interrupted = True
        bar.write(
            "o11ylab run: interrupted; cancelling the runs that have not finished",
            file=sys.stdout,
        )
        _cancel(client, remaining, progress, finish, by_key, out, started_too=True)
    finally:
        bar.close()
        with contextlib.suppress(Exception):
            client.unsubscribe_topic(topic)
    return [results[key] for key in order], interrupted


def _cancel(
    client: Any,
    remaining: dict[str, Any],
    progress: _Progress,
    finish: Callable[[str, NotebookResult], None],
    by_key: dict[str, Task],
    out: Path,
    started_too: bool,
) -> None:
    """Cancel what has not started (and, on Ctrl-C, what runs too); each marked cancelled."""
    with progress.lock:
        started = set(progress.started)
        finished = set(progress.finished)
    for key in [key for key in remaining if key in finished]:
        del remaining[key]  # recorded just before the interrupt: its result stands
    chosen = [key for key in remaining if started_too or key not in started]
    if not chosen:
        return
    with contextlib.suppress(Exception):
        client.cancel([remaining[key] for key in chosen], force=True)
    reason = (
        "interrupted" if started_too else "not started: an earlier run failed (--stop-on-error)"
    )
    for key in chosen:
        del remaining[key]
        task = by_key[key]
        finish(
            key,
            NotebookResult(
                notebook=str(task.notebook),
                output=str(out / task.output_name),
                status="cancelled",
                parameters=task.parameters,
                error=f"cancelled: {reason}",
            ),
        )


def _result_of(future: Any, task: Task, out: Path) -> NotebookResult:
    """The run's result from its finished future; its files written into ``out``."""
    output = out / task.output_name
    if future.status == "finished":
        outcome: TaskOutcome = future.result()
        for name, content in outcome.files.items():
            write_private_bytes(out / name, content)
        outcome.result.output = str(output)
        return outcome.result
    result = NotebookResult(
        notebook=str(task.notebook), output=str(output), parameters=task.parameters
    )
    if future.status == "cancelled":
        result.status, result.error = "cancelled", "cancelled"
        return result
    exc = future.exception()
    result.status = "failed"
    name = type(exc).__name__
    if name == "KilledWorker":
        # Its workers died while running it (a crash, the memory limit), on every try Dask
        # allows (distributed.scheduler.allowed-failures + 1).
        result.error = (
            "KilledWorker: the worker running it died on every try; see the workers' logs "
            "(a crash, the memory limit)"
        )
    else:
        text = str(exc).strip().splitlines()
        result.error = f"{name}: {text[0] if text else ''}"
    return result


def write_private_bytes(path: Path, content: bytes) -> None:
    """``write_private`` for bytes: notebooks and telemetry files may hold prompts, so 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
