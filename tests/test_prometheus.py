"""A real Prometheus (Debian's package) scrapes a kernel's /metrics and can query o11ylab's metrics."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from .conftest import free_port

pytestmark = pytest.mark.integration

KERNEL = """
import sys
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "o11ylab")
ip.run_cell("%%traced scraped-cell\\nx = 1")
ip.run_cell("%%traced failing-cell\\nraise ValueError('x')")
print("ready", flush=True)
sys.stdin.read()
"""


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed: .ci/run installs Debian's package")
        pytest.skip("Debian's prometheus package is not installed (apt-get install prometheus)")
    return path


def query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as response:
        return list(json.load(response)["data"]["result"])


def test_prometheus_scrapes_the_kernel_metrics(tmp_path: Path, run_env: dict[str, str]) -> None:
    binary = prometheus_binary()
    metrics_port, prom_port = free_port(), free_port()
    env = dict(run_env, O11YLAB_PROMETHEUS_PORT=str(metrics_port))
    kernel = subprocess.Popen(
        [sys.executable, "-c", KERNEL],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: o11ylab\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
    )
    prometheus = None
    try:
        assert kernel.stdout is not None
        for line in kernel.stdout:
            if line.strip() == "ready":
                break
        prometheus = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline, ok, failed = time.monotonic() + 60, [], []
        while time.monotonic() < deadline and not (ok and failed):
            time.sleep(1)
            try:
                ok = query(prom_port, 'o11ylab_cell_duration_seconds_count{status="ok"}')
                failed = query(prom_port, 'o11ylab_cell_duration_seconds_count{status="error"}')
            except OSError:
                continue
        assert ok and failed, "Prometheus never saw o11ylab_cell_duration_seconds_count"
        assert float(ok[0]["value"][1]) == 1 and float(failed[0]["value"][1]) == 1
        assert ok[0]["metric"]["job"] == "o11ylab"
        durations = query(prom_port, "o11ylab_cell_duration_seconds_count")
        assert sum(float(d["value"][1]) for d in durations) == 2
        target = query(prom_port, "target_info")
        assert target and target[0]["metric"].get("service_name") == "o11ylab"
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(10)
        kernel.communicate(timeout=20)
