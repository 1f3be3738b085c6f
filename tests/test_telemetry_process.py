"""Telemetry set-up in fresh processes: what a kernel gets from its environment.

Each test starts its own Python process, because OpenTelemetry lets a process set its global
providers only once.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from o11ylab.otlpjson import read_spans

from .conftest import free_port

PRELUDE = """
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
"""


def run_python(
    code: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_service_name_and_resource_attributes_come_from_the_environment(
    run_env: dict[str, str],
) -> None:
    env = dict(
        run_env,
        OTEL_SERVICE_NAME="churn-model",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=ci,service.version=7",
    )
    done = run_python(
        """
        ip.run_line_magic("load_ext", "o11ylab")
        ip.run_cell("%%traced resourceful\\npass")
    """,
        env,
    )
    assert done.returncode == 0, done.stderr
    (span,) = read_spans(Path(env["O11YLAB_RUN_DIR"]))
    resource = span["resource"]
    assert resource["service.name"] == "churn-model"
    assert resource["deployment.environment"] == "ci"
    assert resource["service.version"] == "7", "the environment wins over o11ylab's defaults"
    assert resource["process.pid"] > 0 and resource["host.name"]
    assert len(resource["service.instance.id"]) == 36


def test_a_taken_metrics_port_is_one_warning_and_a_working_kernel(run_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = dict(run_env, O11YLAB_PROMETHEUS_PORT=str(port))
        done = run_python(
            """
            ip.run_line_magic("load_ext", "o11ylab")
            result = ip.run_cell("%%traced still-works\\nx = 2 + 2")
            assert result.success
            print("status:", ip.run_line_magic("o11y", "status"))
        """,
            env,
        )
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "o11ylab" in line]
    assert (
        len(warnings) == 1
        and f"port {port}" in warnings[0]
        and "O11YLAB_PROMETHEUS_PORT" in warnings[0]
    )
    assert "Traceback" not in done.stderr
    assert re.search(r"^/metrics +off$", done.stdout, re.MULTILINE), done.stdout


def test_the_users_own_providers_are_used_not_replaced(run_env: dict[str, str]) -> None:
    done = run_python(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        mine = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(mine))
        trace.set_tracer_provider(provider)
        ip.run_line_magic("load_ext", "o11ylab")
        ip.run_cell("%%traced into-my-exporter\\npass")
        assert trace.get_tracer_provider() is provider
        print("names:", [s.name for s in mine.get_finished_spans()])
        print(ip.run_line_magic("o11y", "status"))
    """,
        run_env,
    )
    assert done.returncode == 0, done.stderr
    assert "names: ['into-my-exporter']" in done.stdout
    assert "using the tracer provider you set" in done.stdout
    assert not list(Path(run_env["O11YLAB_RUN_DIR"]).glob("traces.*")), "no second exporter"


def test_an_unwritable_run_folder_warns_once_and_counts(
    tmp_path: Path, run_env: dict[str, str]
) -> None:
    # A path under a regular file cannot be created, even by root (CI runs as root).
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    env = dict(run_env, O11YLAB_RUN_DIR=str(blocker / "run"))
    done = run_python(_UNWRITABLE, env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("cannot write telemetry") == 1
    assert "set O11YLAB_RUNS_DIR" in done.stderr
    status = {line.split("  ")[0]: line for line in done.stdout.splitlines()}
    assert "0 exported, 3 failed" in status["file traces"], done.stdout


_UNWRITABLE = """
    ip.run_line_magic("load_ext", "o11ylab")
    for i in range(3):
        assert ip.run_cell(f"%%traced cell-{i}\\npass").success
    ip.run_line_magic("o11y", "flush")
    print(ip.run_line_magic("o11y", "status"))
"""


def test_a_full_disk_warns_once_and_the_cells_succeed(run_env: dict[str, str]) -> None:
    # /dev/full answers every write with ENOSPC: a disk that is full from the first byte.
    env = dict(run_env, O11YLAB_RUN_DIR="/dev/full-folder")
    code = textwrap.dedent("""
        import os, pathlib
        real_open = os.open
        def full_disk(path, flags, mode=0o777, **kw):
            if str(path).startswith("/dev/full-folder"):
                return real_open("/dev/full", os.O_WRONLY)
            return real_open(path, flags, mode, **kw)
        os.open = full_disk
        pathlib.Path.mkdir = lambda self, *a, **k: None
    """) + textwrap.dedent(_UNWRITABLE)
    done = run_python(code, env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("cannot write telemetry") == 1
    assert "No space left on device" in done.stderr
    status = {line.split("  ")[0]: line for line in done.stdout.splitlines()}
    assert "3 failed" in status["file traces"], done.stdout


def test_exit_flushes_within_a_bound_with_a_hanging_collector(run_env: dict[str, str]) -> None:
    with socket.socket() as hang:
        hang.bind(("127.0.0.1", 0))
        hang.listen(16)
        env = dict(
            run_env,
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{hang.getsockname()[1]}",
            OTEL_EXPORTER_OTLP_TIMEOUT="1",
            O11YLAB_PROMETHEUS_PORT=str(free_port()),
        )
        done = run_python(
            """
            import time
            ip.run_line_magic("load_ext", "o11ylab")
            t0 = time.perf_counter()
            for i in range(5):
                ip.run_cell(f"%%traced cell-{i} --quiet\\npass")
            print(f"cells took {time.perf_counter() - t0:.3f}")
            import atexit, sys
            t_exit = time.perf_counter()
            atexit.register(lambda: print(f"exit flush took {time.perf_counter() - t_exit:.2f}", file=sys.stderr))
        """,
            env,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    cells_s = float(done.stdout.split("cells took ")[1].split()[0])
    assert cells_s < 1.0, "a hanging collector does not slow cells"
    exit_s = float(done.stderr.split("exit flush took ")[1].split()[0])
    assert exit_s < 4.0, "2 × timeout + 1 s at most"
    names = {s["name"] for s in read_spans(Path(run_env["O11YLAB_RUN_DIR"]))}
    assert {f"cell-{i}" for i in range(5)} <= names, "the local file keeps everything"
