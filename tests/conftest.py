"""Shared test set-up: every test runs offline, on loopback, with its files in temp folders.

The environment is set before o11ylab starts its telemetry (once per process), so the
in-process shell writes its run files under a temporary folder and serves no /metrics
unless a test asks. Tests that need a fresh telemetry set-up run a real kernel instead.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="o11ylab-tests-"))
for key, value in {
    "O11YLAB_RUNS_DIR": str(_SESSION_DIR / "runs"),
    "O11YLAB_RUN_DIR": str(_SESSION_DIR / "runs" / "pytest"),
    "O11YLAB_PROMETHEUS_PORT": "0",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "ANONYMIZED_TELEMETRY": "False",
    "IPYTHONDIR": str(_SESSION_DIR / "ipython"),
    "MPLBACKEND": "Agg",
    # `o11ylab run` signs what it executes and keeps kernel sockets in the runtime folder.
    "JUPYTER_DATA_DIR": str(_SESSION_DIR / "jupyter"),
    "TOKENIZERS_PARALLELISM": "false",
    # The in-process shell must not point this process's openai SDK at a relay of its own:
    # tests choose their endpoint. tests/test_instrumentation.py runs the default in a kernel.
    "O11YLAB_LOCAL_OPENAI": "0",
}.items():
    os.environ[key] = value
for key in ("OTEL_EXPORTER_OTLP_ENDPOINT", "TRACEPARENT", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
    os.environ.pop(key, None)

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
PYTHON = sys.executable


def readme_server_config() -> str:
    """The ``jupyter_server_config.py`` lines README.md gives for JupyterLab's status bar."""
    after = (ROOT / "README.md").read_text().split("`jupyter_server_config.py`", 1)[1]
    match = re.search(r"```python\n(.*?)```", after, re.S)
    assert match, "README.md gives jupyter_server_config.py lines in a python block"
    return match.group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session", autouse=True)
def telemetry() -> object:
    """This process's o11ylab telemetry, set up once as a kernel's would be. o11ylab.testing's
    helpers read the providers in place and install none themselves."""
    from o11ylab.telemetry import get_telemetry

    return get_telemetry()


@pytest.fixture(scope="session")
def shell() -> Iterator[object]:
    """A real IPython shell with o11ylab loaded, shared by the in-process tests."""
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "o11ylab")
    yield ip
    ip.run_line_magic("unload_ext", "o11ylab")


@pytest.fixture
def run_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a subprocess or kernel: its own run folder, no /metrics, offline."""
    env = dict(os.environ)
    env["O11YLAB_RUN_DIR"] = str(tmp_path / "run")
    env["O11YLAB_PROMETHEUS_PORT"] = "0"
    return env
