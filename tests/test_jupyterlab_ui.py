"""The hardware monitor in a real JupyterLab, in a real browser, run through the UI.

Starts ``jupyter lab`` on loopback (a free port, a token, every Jupyter/IPython/home folder in a
temporary directory), opens a notebook that loads o11ylab and shows two monitors, and runs it
with JupyterLab's own "Run > Run All Cells" menu in Debian's chromium driven by Playwright:

* the process's monitor: no GPU here, so it must say why, show the kernel's CPU and memory bars,
  and keep changing (live status, sparklines, CPU rising while a cell keeps the kernel busy);
* a monitor over ``tests/fake_nvml.py`` (a stated test double: two "live" GPUs whose readings
  follow the clock), so the GPU panels are rendered and seen changing in a browser too.

A screenshot lands in ``test-artifacts/`` (gitignored). Skipped only when /usr/bin/chromium is
missing (``apt-get install -y chromium``); CI installs it, so there it always runs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from .conftest import PYTHON, ROOT, free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian chromium is not installed at /usr/bin/chromium "
        "(apt-get install -y chromium)",
    ),
]

FAKE_GPUS = f"""\
# A test double (no GPU on this machine): two GPUs whose readings follow the clock.
import sys
sys.path.insert(0, {str(ROOT)!r})
from tests.fake_nvml import FakeGpu, FakeNvml
from o11ylab.hardware import Sampler
from o11ylab.widgets import HardwareMonitor

fake = FakeNvml([
    FakeGpu(name="Fake H100 (test double)", uuid="GPU-aaaaaaaa", live=True),
    FakeGpu(name="Fake A10G (test double)", uuid="GPU-bbbbbbbb", live=True,
            memory_total=24 * 1024**3, power_limit_mw=300_000),
])
HardwareMonitor(Sampler(fake, interval_s=0.5))
"""

BUSY = """\
import time
until = time.time() + 6
while time.time() < until:
    sum(i * i for i in range(20_000))
"""


def write_notebook(path: Path) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    notebook.cells = [
        nbformat.v4.new_code_cell("%load_ext o11ylab"),
        nbformat.v4.new_code_cell("%o11y monitor"),
        nbformat.v4.new_code_cell(FAKE_GPUS),
        nbformat.v4.new_code_cell(BUSY),
    ]
    nbformat.write(notebook, path)


@pytest.fixture
def jupyter_lab(tmp_path: Path) -> Iterator[tuple[str, str]]:
    home = tmp_path / "home"
    work = tmp_path / "notebooks"
    for folder in (home, work):
        folder.mkdir()
    write_notebook(work / "monitor.ipynb")
    token = "o11ylab-ui-test-" + os.urandom(8).hex()
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "HOME": str(home),
            "IPYTHONDIR": str(tmp_path / "ipython"),
            "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
            "JUPYTER_DATA_DIR": str(tmp_path / "jupyter-data"),
            "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "XDG_DATA_HOME": str(tmp_path / "data"),
            "O11YLAB_RUNS_DIR": str(tmp_path / "runs"),
            "O11YLAB_PROMETHEUS_PORT": "0",
            "O11YLAB_HARDWARE_INTERVAL": "0.5",
        }
    )
    env.pop("O11YLAB_RUN_DIR", None)
    log = (tmp_path / "jupyter.log").open("wb")
    lab = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={work}",
            f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
        ],
        env=env,
        cwd=work,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if lab.poll() is not None:
                pytest.fail(
                    "jupyter lab exited:\n" + (tmp_path / "jupyter.log").read_text()[-3000:]
                )
            try:
                request = urllib.request.Request(
                    f"{base}/api/status", headers={"Authorization": f"token {token}"}
                )
                with urllib.request.urlopen(request, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    "jupyter lab did not answer within 90 s:\n"
                    + (tmp_path / "jupyter.log").read_text()[-3000:]
                )
            time.sleep(0.5)
        yield base, token
    finally:
        try:
            os.killpg(lab.pid, signal.SIGTERM)
            lab.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(lab.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            lab.wait(5)
        log.close()


def value_text(monitor: Any, css: str, index: int = 0) -> str:
    return str(monitor.locator(f".{css} .o11y-value").nth(index).inner_text()).strip()


def sparkline(monitor: Any, css: str, index: int = 0) -> str:
    line = monitor.locator(f".{css} polyline").nth(index)
    return str(line.get_attribute("points")) if line.count() else ""


def test_the_monitor_renders_and_changes_in_jupyterlab(jupyter_lab: tuple[str, str]) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright

    base, token = jupyter_lab
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.set_default_timeout(60_000)
            page.goto(f"{base}/lab/tree/monitor.ipynb?token={token}")
            expect(page.locator(".jp-NotebookPanel .jp-Cell").first).to_be_visible()
            # A fresh JupyterLab asks which kernel to start; answer as a user would.
            select = page.locator(".jp-Dialog").get_by_role("button", name="Select")
            try:
                select.click(timeout=20_000)
            except PlaywrightTimeout:
                pass  # no dialog: the kernel started by itself
            news = page.locator(".jp-Notification-Toast").get_by_role("button", name="No")
            if news.count():
                news.click()
            # Wait until the kernel is up, then run everything through JupyterLab's menu.
            expect(page.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle"))).to_be_visible(
                timeout=90_000
            )
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()

            monitors = page.locator(".o11y-monitor")
            expect(monitors).to_have_count(2, timeout=90_000)
            real, fake = monitors.nth(0), monitors.nth(1)

            # The process's monitor: no GPU here, and it says so once, with the reason.
            expect(real.locator(".o11y-no-gpu")).to_contain_text("No GPU: no NVIDIA driver")
            expect(real.locator(".o11y-gpu")).to_have_count(0)
            for row in (
                "o11y-kernel-cpu",
                "o11y-kernel-memory",
                "o11y-host-cpu",
                "o11y-host-memory",
            ):
                expect(real.locator(f".{row} .widget-hprogress")).to_be_visible()
            expect(real.locator(".o11y-kernel-memory .o11y-value")).to_contain_text("resident")

            # The fake-GPU monitor: a panel per GPU, every row a progress bar.
            expect(fake.locator(".o11y-gpu")).to_have_count(2)
            expect(fake.locator(".o11y-gpu").nth(0)).to_contain_text("Fake H100 (test double)")
            expect(fake.locator(".o11y-gpu .widget-hprogress")).to_have_count(8)
            expect(fake.locator(".o11y-gpu-utilization .o11y-value").first).to_have_text(
                re.compile(r"^\d+%$")
            )

            # Values change over time, while the busy cell keeps the kernel's main thread busy.
            status_before = real.locator(".o11y-status").inner_text()
            spark_before = sparkline(real, "o11y-kernel-cpu")
            gpu_before = [
                value_text(fake, "o11y-gpu-power"),
                sparkline(fake, "o11y-gpu-utilization"),
            ]
            cpu_seen: list[int] = []
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                text = value_text(real, "o11y-kernel-cpu")
                match = re.match(r"(\d+)% of", text)
                if match:
                    cpu_seen.append(int(match.group(1)))
                time.sleep(0.5)
            assert real.locator(".o11y-status").inner_text() != status_before
            assert sparkline(real, "o11y-kernel-cpu") != spark_before
            assert [
                value_text(fake, "o11y-gpu-power"),
                sparkline(fake, "o11y-gpu-utilization"),
            ] != gpu_before
            assert cpu_seen and max(cpu_seen) >= 20, cpu_seen  # the busy cell shows up
            page.screenshot(path=str(ARTIFACTS / "jupyterlab-hardware-monitor.png"), full_page=True)

            # Stop through the panel's own button: the status says so and stops changing.
            real.get_by_role("button", name="Stop").click()
            expect(real.locator(".o11y-status")).to_contain_text("stopped")
            frozen = sparkline(real, "o11y-kernel-cpu")
            time.sleep(1.5)
            assert sparkline(real, "o11y-kernel-cpu") == frozen
            real.get_by_role("button", name="Start").click()
            expect(real.locator(".o11y-status")).to_contain_text("live")
        except BaseException:
            page.screenshot(
                path=str(ARTIFACTS / "jupyterlab-hardware-monitor-failure.png"), full_page=True
            )
            raise
        finally:
            browser.close()
