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

import contextlib
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

from o11ylab.serve import API_KEY_ENV, LOCAL_ENDPOINT_ENV

from .ai_support import LocalServer, local_server_fixture  # noqa: F401
from .conftest import PYTHON, ROOT, free_port, readme_server_config

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
# Every wait is on a condition, with room for two loaded cores (Playwright's default is 5 s).
UI_TIMEOUT = 60_000
STDOUT = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stdout"]'
STDERR = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'

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

END_BUSY = "end-busy"  # in the notebook's folder, the kernel's working folder
# Busy until the test has pressed Stop and says so (END_BUSY), or two minutes at most: a fixed
# 25 s could run out on a loaded machine before the test got to the Stop button. The file is
# looked for 4 times a second, not every round: with a stat every millisecond (each releases
# and retakes the GIL) the monitor's sampler thread starved, both panels stuck at "sample 2"
# for the whole cell; the GIL's forced switch seems never to come for it then.
BUSY = f"""\
import os, time
until = time.time() + 120
look = 0.0
while time.time() < until:
    sum(i * i for i in range(20_000))
    if time.time() > look:
        if os.path.exists({END_BUSY!r}):
            break
        look = time.time() + 0.25
"""


def new_notebook(*cells: str) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    notebook.cells = [nbformat.v4.new_code_cell(cell) for cell in cells]
    return notebook


def monitor_notebook() -> nbformat.NotebookNode:
    return new_notebook("%load_ext o11ylab", "%o11y monitor", FAKE_GPUS, BUSY)


@contextlib.contextmanager
def running_lab(
    tmp_path: Path, notebooks: dict[str, nbformat.NotebookNode], env_extra: dict[str, str]
) -> Iterator[tuple[str, str]]:
    """``jupyter lab`` on a free loopback port over ``notebooks``; yields (base URL, token)."""
    home = tmp_path / "home"
    work = tmp_path / "notebooks"
    for folder in (home, work):
        folder.mkdir()
    for name, notebook in notebooks.items():
        nbformat.write(notebook, work / name)
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
            **env_extra,
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


def switch_to_the_dark_theme(page: Any) -> None:
    """Settings > Theme > JupyterLab Dark, as a user picks it; returns once it has applied."""
    from playwright.sync_api import expect

    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Settings$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Theme$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^JupyterLab Dark$")).click()
    expect(page.locator("body[data-jp-theme-light='false']")).to_have_count(1, timeout=UI_TIMEOUT)
    expect(page.locator("#jupyterlab-splash")).to_have_count(0, timeout=UI_TIMEOUT)


@contextlib.contextmanager
def lab_page(
    tmp_path: Path,
    notebooks: dict[str, nbformat.NotebookNode],
    env_extra: dict[str, str],
    *,
    height: int,
    failure: str,
) -> Iterator[tuple[Any, str, str]]:
    """A Chromium page beside ``running_lab``: yields (page, base URL, token); on a failure it
    saves ``test-artifacts/<failure>-failure.png`` first."""
    from playwright.sync_api import sync_playwright

    with running_lab(tmp_path, notebooks, env_extra) as (base, token), sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True
        )
        page = browser.new_page(viewport={"width": 1400, "height": height})
        page.set_default_timeout(UI_TIMEOUT)
        try:
            yield page, base, token
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / f"{failure}-failure.png"), full_page=True)
            raise
        finally:
            browser.close()


@pytest.fixture
def jupyter_lab(tmp_path: Path) -> Iterator[tuple[str, str]]:
    with running_lab(tmp_path, {"monitor.ipynb": monitor_notebook()}, {}) as lab:
        yield lab


def open_and_run_all(page: Any, base: str, token: str, name: str) -> None:
    """Open a notebook as a user would, wait for its kernel, then Run > Run All Cells."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    page.goto(f"{base}/lab/tree/{name}?token={token}")
    expect(page.locator(".jp-NotebookPanel .jp-Cell").first).to_be_visible(timeout=UI_TIMEOUT)
    # A fresh JupyterLab asks which kernel to start; answer as a user would.
    select = page.locator(".jp-Dialog").get_by_role("button", name="Select")
    try:
        select.click(timeout=20_000)
    except PlaywrightTimeout:
        pass  # no dialog: the kernel started by itself
    news = page.locator(".jp-Notification-Toast").get_by_role("button", name="No")
    if news.count():
        news.click()
    expect(page.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle"))).to_be_visible(
        timeout=90_000
    )
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


def value_text(monitor: Any, css: str, index: int = 0) -> str:
    return str(monitor.locator(f".{css} .o11y-value").nth(index).inner_text()).strip()


def sparkline(monitor: Any, css: str, index: int = 0) -> str:
    line = monitor.locator(f".{css} polyline").nth(index)
    return str(line.get_attribute("points")) if line.count() else ""


def test_the_monitor_renders_and_changes_in_jupyterlab(
    jupyter_lab: tuple[str, str], tmp_path: Path
) -> None:
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
            open_and_run_all(page, base, token, "monitor.ipynb")

            monitors = page.locator(".o11y-monitor")
            expect(monitors).to_have_count(2, timeout=90_000)
            # %load_ext's one line, as plain output: not a red stderr block.
            expect(page.locator(STDOUT, has_text="o11ylab: telemetry to")).to_be_visible(
                timeout=UI_TIMEOUT
            )
            assert page.locator(STDERR, has_text="o11ylab").count() == 0
            real, fake = monitors.nth(0), monitors.nth(1)

            # The process's monitor: no GPU here, and it says so once, with the reason.
            expect(real.locator(".o11y-no-gpu")).to_contain_text(
                "No GPU: no NVIDIA driver", timeout=UI_TIMEOUT
            )
            expect(real.locator(".o11y-gpu")).to_have_count(0, timeout=UI_TIMEOUT)
            for row in (
                "o11y-kernel-cpu",
                "o11y-kernel-memory",
                "o11y-host-cpu",
                "o11y-host-memory",
            ):
                expect(real.locator(f".{row} .widget-hprogress")).to_be_visible(timeout=UI_TIMEOUT)
            expect(real.locator(".o11y-kernel-memory .o11y-value")).to_contain_text(
                "resident", timeout=UI_TIMEOUT
            )

            # The fake-GPU monitor: a panel per GPU, every row a progress bar.
            expect(fake.locator(".o11y-gpu")).to_have_count(2, timeout=UI_TIMEOUT)
            expect(fake.locator(".o11y-gpu").nth(0)).to_contain_text(
                "Fake H100 (test double)", timeout=UI_TIMEOUT
            )
            expect(fake.locator(".o11y-gpu .widget-hprogress")).to_have_count(8, timeout=UI_TIMEOUT)
            expect(fake.locator(".o11y-gpu-utilization .o11y-value").first).to_have_text(
                re.compile(r"^\d+%$"), timeout=UI_TIMEOUT
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

            # Stop through the panel's own button while the busy cell still runs: the kernel
            # hears the click only when it is free, so the front end freezes the panel at once.
            # The busy cell's own prompt says it runs. The status bar is no witness: when the
            # widget manager's subshell request comes after this cell started (a slow machine),
            # JupyterLab says Idle for the whole cell (see the test after this one).
            busy = page.locator(".jp-NotebookPanel:visible .jp-CodeCell").last
            running = busy.locator(".jp-InputArea-prompt")
            expect(running).to_have_text(re.compile(r"^\[\*\]:?$"), timeout=UI_TIMEOUT)
            copy_at_display = page.locator(".o11y-snapshot").first.text_content()
            real.get_by_role("button", name="Stop").click()
            clicked = time.monotonic()
            still = page.locator(".o11y-monitor-frozen")
            expect(still).to_be_visible(timeout=2_000)
            expect(still.locator(".o11y-status")).to_contain_text("stopped", timeout=2_000)
            assert time.monotonic() - clicked < 2.0, "the panel froze within 2 s"
            assert re.match(r"^\[\*\]:?$", running.inner_text()), "the cell still runs"
            shown = still.inner_text(), sparkline(still, "o11y-kernel-cpu")
            time.sleep(1.5)  # a span of time in which a live panel would have changed 3 times
            assert (still.inner_text(), sparkline(still, "o11y-kernel-cpu")) == shown
            assert real.is_hidden(), "the live panel is out of sight while stopped"
            page.screenshot(
                path=str(ARTIFACTS / "jupyterlab-hardware-monitor-stopped.png"), full_page=True
            )
            # Once the cell ends the kernel takes the click: its panel says stopped, and Start
            # (on the still copy) brings the live panel back and running.
            (tmp_path / "notebooks" / END_BUSY).touch()
            expect(running).to_have_text(re.compile(r"^\[\d+\]:?$"), timeout=90_000)
            expect(real.locator(".o11y-status")).to_contain_text("stopped", timeout=UI_TIMEOUT)
            # The kernel stopped it: the still copy (out of sight under the live panel, saved
            # with the notebook) was refreshed to the panel at the stop.
            expect(page.locator(".o11y-snapshot").first).not_to_have_text(
                copy_at_display or "", timeout=UI_TIMEOUT
            )
            still.get_by_role("button", name="Start").click()
            expect(still).to_have_count(0, timeout=UI_TIMEOUT)
            expect(real.locator(".o11y-status")).to_contain_text("live", timeout=UI_TIMEOUT)
            expect(real).to_be_visible(timeout=UI_TIMEOUT)
            # The scale and the time span of every sparkline.
            labels = real.locator(".o11y-host-memory text").all_text_contents()
            assert labels[:2] == ["100%", "0"] and labels[-1] == "now", labels
            # The dark theme: the labels take the theme's text colour.
            switch_to_the_dark_theme(page)
            label = real.locator(".o11y-host-memory text").first
            colour = label.evaluate("t => getComputedStyle(t).fill")
            red, green, blue = (int(x) for x in re.findall(r"\d+", colour)[:3])
            assert red + green + blue > 3 * 160, f"light labels on the dark theme, got {colour}"
            page.screenshot(
                path=str(ARTIFACTS / "jupyterlab-hardware-monitor-dark.png"), full_page=True
            )

            # Saved, the kernel gone, reopened: a still copy, never "Error displaying widget".
            page.keyboard.press("Control+s")
            expect(page.locator(".jp-mod-dirty")).to_have_count(0, timeout=UI_TIMEOUT)
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Kernel$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Shut Down Kernel$")).click()
            confirm = page.locator(".jp-Dialog").get_by_role("button", name="Shut Down")
            with contextlib.suppress(PlaywrightTimeout):
                confirm.click(timeout=5_000)  # JupyterLab may ask first
            expect(page.get_by_text("No Kernel").first).to_be_visible(timeout=UI_TIMEOUT)
            page.reload()
            expect(page.locator(".jp-NotebookPanel .jp-Cell").first).to_be_visible(
                timeout=UI_TIMEOUT
            )
            copies = page.locator(".o11y-snapshot")
            expect(copies).to_have_count(2, timeout=UI_TIMEOUT)
            expect(copies.first).to_be_visible(timeout=UI_TIMEOUT)
            expect(copies.first).to_contain_text("kernel memory", timeout=UI_TIMEOUT)
            expect(copies.nth(1)).to_contain_text("Fake H100 (test double)", timeout=UI_TIMEOUT)
            # With a fresh kernel the widget manager gives up on the old models and writes its
            # error; the still copy's CSS keeps it out of sight.
            with contextlib.suppress(PlaywrightTimeout):
                page.locator(".jp-Dialog").get_by_role("button", name="Select").click(
                    timeout=10_000
                )
            expect(page.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle"))).to_be_visible(
                timeout=90_000
            )
            errors = page.get_by_text("Error displaying widget")
            expect(errors).to_have_count(2, timeout=UI_TIMEOUT)
            visible_errors = [e for e in errors.all() if e.is_visible()]
            assert visible_errors == [], "no widget error in sight"
            assert page.get_by_text("Loading widget").count() == 0 or not any(
                e.is_visible() for e in page.get_by_text("Loading widget").all()
            )
            page.screenshot(
                path=str(ARTIFACTS / "jupyterlab-hardware-monitor-reopened.png"), full_page=True
            )
        except BaseException:
            page.screenshot(
                path=str(ARTIFACTS / "jupyterlab-hardware-monitor-failure.png"), full_page=True
            )
            raise
        finally:
            browser.close()


# The monitor appears while its cell keeps working: the widget manager asks for its subshell
# after the cell started, the case that turns JupyterLab's status bar to Idle.
MONITOR_THEN_WORK = f"""\
display(get_ipython().run_line_magic("o11y", "monitor"))
{BUSY}"""


def test_the_status_bar_says_busy_with_the_readmes_server_setting(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    config = tmp_path / "jupyter-config"
    config.mkdir()
    (config / "jupyter_server_config.py").write_text(readme_server_config())
    notebook = new_notebook("%load_ext o11ylab", MONITOR_THEN_WORK)
    with (
        running_lab(tmp_path, {"work.ipynb": notebook}, {}) as (base, token),
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            open_and_run_all(page, base, token, "work.ipynb")
            expect(page.locator(".o11y-monitor")).to_have_count(1, timeout=UI_TIMEOUT)
            prompt = page.locator(".jp-NotebookPanel:visible .jp-CodeCell").last.locator(
                ".jp-InputArea-prompt"
            )
            status = page.locator("#jp-main-statusbar").get_by_text(
                re.compile(r"Python 3 \(ipykernel\) \| \w+")
            )
            seen = []
            for _ in range(6):  # the monitor's subshell request has come and gone by now
                seen.append((status.inner_text(), prompt.inner_text()))
                time.sleep(0.5)
            (tmp_path / "notebooks" / END_BUSY).touch()
            assert all(p.startswith("[*]") for _, p in seen), seen  # the cell ran throughout
            assert all(s.endswith("| Busy") for s, _ in seen), seen
            expect(prompt).to_have_text(re.compile(r"^\[\d+\]:?$"), timeout=90_000)
            expect(status).to_have_text(re.compile(r"\| Idle$"), timeout=UI_TIMEOUT)
        finally:
            browser.close()


# --- the trace explorer (%o11y trace) ------------------------------------------------------------

LONG_NOTE = "a long attribute value that the row never shows " + "0123456789" * 12 + " (end)"
RAG_SETUP = """\
import logging
import o11ylab
from o11ylab.ai.pipeline import ask, index_documents, open_store
from o11ylab.telemetry import get_telemetry
from o11ylab.traceview import remember_logs

remember_logs(get_telemetry())  # log records beside their spans in the explorer
store = open_store("ui-rag", path="chroma")
index_documents(store)
"""
RAG_QUESTION = f"""\
%%traced rag-question
from opentelemetry import trace
trace.get_current_span().set_attribute("note", {LONG_NOTE!r})
answer = ask("What does the W3C traceparent header carry?", store=store, top_k=3, max_tokens=8)
logging.getLogger("rag-demo").warning("answered with %d sources", len(answer.sources))
try:
    with o11ylab.span("flaky-step"):
        raise TimeoutError("upstream timed out")
except TimeoutError:
    pass
"""


def rects(page: Any, explorer: Any) -> list[dict[str, Any]]:
    """Bounding boxes of each visible row's name, duration and bar, as the browser laid them out."""
    boxes: list[dict[str, Any]] = explorer.evaluate(
        """root => Array.from(root.querySelectorAll('details.o11yt-span > summary'))
            .filter(s => s.offsetParent !== null)
            .map(s => {
              const box = el => { const r = (el ? s.querySelector(el) : s)
                                                .getBoundingClientRect();
                                  return [r.left, r.top, r.right, r.bottom]; };
              return {name: s.querySelector('.o11yt-label').textContent,
                      label: box('.o11yt-name'), duration: box('.o11yt-dur'),
                      bar: box('.o11yt-bar'), row: box(null),
                      nameFits: s.querySelector('.o11yt-name').scrollWidth
                                <= s.querySelector('.o11yt-name').clientWidth + 1};
            })"""
    )
    return boxes


def overlap(a: list[float], b: list[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.timeout(600)
def test_the_trace_explorer_shows_a_rag_question_in_jupyterlab(
    tmp_path: Path, local_server: LocalServer
) -> None:
    from playwright.sync_api import expect

    notebook = new_notebook("%load_ext o11ylab", RAG_SETUP, RAG_QUESTION, "%o11y trace")
    env = {
        LOCAL_ENDPOINT_ENV: local_server.base_url,
        API_KEY_ENV: local_server.api_key,
        "ANONYMIZED_TELEMETRY": "False",
        "HF_HUB_OFFLINE": "1",
    }
    ARTIFACTS.mkdir(exist_ok=True)
    with lab_page(
        tmp_path, {"trace.ipynb": notebook}, env, height=1000, failure="jupyterlab-trace-explorer"
    ) as (page, base, token):
        open_and_run_all(page, base, token, "trace.ipynb")
        explorer = page.locator(".o11yt")
        expect(explorer).to_be_visible(timeout=240_000)
        rows = explorer.locator("details.o11yt-span")
        expect(rows.first).to_contain_text("rag-question", timeout=UI_TIMEOUT)
        expect(explorer.locator(".o11yt-tick")).not_to_have_count(0, timeout=UI_TIMEOUT)
        names = [t.strip() for t in explorer.locator(".o11yt-label").all_inner_texts()]
        assert "invoke_workflow rag" in names and "embeddings all-MiniLM-L6-v2" in names
        assert any(n.startswith("retrieval ") for n in names), names
        assert any(n.startswith("chat ") for n in names), names
        assert "✗ flaky-step" in names, names
        chat = rows.filter(has=page.locator(".o11yt-label", has_text=re.compile("^chat ")))
        expect(chat.locator(".o11yt-kind")).to_have_text("client", timeout=UI_TIMEOUT)

        # Name, duration and bar never overlap, on any row; the rows stay one line high.
        boxes = rects(page, explorer.element_handle())
        assert len(boxes) == len(names)
        for box in boxes:
            for a, b in (("label", "duration"), ("label", "bar"), ("duration", "bar")):
                assert not overlap(box[a], box[b]), (box["name"], a, b, box)
            assert box["row"][3] - box["row"][1] < 30, box  # one line, not four or five
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-trace-explorer.png"), full_page=True)

        # Opening a row shows every attribute whole, as selectable text, and its events.
        cell = rows.first
        cell.locator("summary").click()
        detail = cell.locator(".o11yt-detail").first
        expect(detail).to_be_visible(timeout=UI_TIMEOUT)
        expect(detail).to_contain_text(LONG_NOTE, timeout=UI_TIMEOUT)
        assert detail.evaluate("d => getComputedStyle(d).userSelect") != "none"
        flaky = rows.filter(has=page.locator(".o11yt-label", has_text="flaky-step"))
        flaky.locator("summary").click()
        expect(flaky.locator(".o11yt-detail")).to_contain_text(
            "upstream timed out", timeout=UI_TIMEOUT
        )
        expect(flaky.locator(".o11yt-detail")).to_contain_text("exception", timeout=UI_TIMEOUT)
        expect(cell.locator(".o11yt-detail")).to_contain_text(
            "answered with 3 sources", timeout=UI_TIMEOUT
        )
        page.screenshot(
            path=str(ARTIFACTS / "jupyterlab-trace-explorer-detail.png"), full_page=True
        )

        # Collapsing the workflow hides its stages; expanding shows them again.
        workflow = rows.filter(
            has=page.locator(".o11yt-label", has_text=re.compile("^invoke_workflow rag$"))
        )
        retrieval = rows.filter(
            has=page.locator(".o11yt-label", has_text=re.compile("^retrieval "))
        )
        expect(retrieval).to_be_visible(timeout=UI_TIMEOUT)
        workflow.locator(".o11yt-tw").first.click()
        expect(retrieval).to_be_hidden(timeout=UI_TIMEOUT)
        workflow.locator(".o11yt-tw").first.click()
        expect(retrieval).to_be_visible(timeout=UI_TIMEOUT)

        # The dark theme: the explorer follows JupyterLab's colours.
        switch_to_the_dark_theme(page)
        colour = explorer.evaluate("e => getComputedStyle(e).color")
        red, green, blue = (int(x) for x in re.findall(r"\d+", colour)[:3])
        assert red + green + blue > 3 * 160, f"light text on the dark theme, got {colour}"
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-trace-explorer-dark.png"), full_page=True)

        # Saved and reopened: the explorer is plain HTML in the notebook and works again.
        page.keyboard.press("Control+s")
        expect(page.locator(".jp-mod-dirty")).to_have_count(0, timeout=UI_TIMEOUT)
        page.reload()
        explorer = page.locator(".o11yt")
        expect(explorer).to_be_visible(timeout=UI_TIMEOUT)
        rows = explorer.locator("details.o11yt-span")
        rows.first.locator("summary").click()
        expect(rows.first.locator(".o11yt-detail").first).to_contain_text(
            LONG_NOTE, timeout=UI_TIMEOUT
        )


def explorer_output_notebook() -> nbformat.NotebookNode:
    """A notebook holding an explorer output, written here and never signed: JupyterLab opens
    it untrusted, as a notebook from someone else, and sanitizes the HTML (no <style>, no
    script)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from o11ylab.traceview import TraceView, span_record

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("ui-test")
    with tracer.start_as_current_span("a cell with a rather long name that must not run on"):
        with tracer.start_as_current_span("embeddings all-MiniLM-L6-v2", kind=SpanKind.CLIENT):
            pass
        with tracer.start_as_current_span("chat SmolLM2-135M-Instruct", kind=SpanKind.CLIENT):
            pass
    provider.shutdown()
    view = TraceView([span_record(s) for s in exporter.get_finished_spans()], title="trace")
    notebook = new_notebook("%o11y trace")
    notebook.cells[0].outputs = [
        nbformat.v4.new_output(
            "execute_result",
            data={"text/html": view._repr_html_(), "text/plain": repr(view)},
            execution_count=1,
        )
    ]
    return notebook


def test_the_trace_explorer_reads_in_an_untrusted_notebook(tmp_path: Path) -> None:
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    notebooks = {"untrusted.ipynb": explorer_output_notebook()}
    with lab_page(
        tmp_path, notebooks, {}, height=900, failure="jupyterlab-trace-explorer-untrusted"
    ) as (page, base, token):
        page.goto(f"{base}/lab/tree/untrusted.ipynb?token={token}")
        explorer = page.locator(".o11yt")
        expect(explorer).to_be_visible(timeout=UI_TIMEOUT)
        assert explorer.locator("style").count() == 0, "sanitized, as an untrusted notebook"
        rows = explorer.locator("details.o11yt-span > summary")
        expect(rows).to_have_count(3, timeout=UI_TIMEOUT)
        for row in rows.all():
            name = row.locator(".o11yt-label").bounding_box()
            duration = row.locator(".o11yt-dur").bounding_box()
            bar = row.locator(".o11yt-bar").bounding_box()
            assert name and duration and bar
            assert name["x"] + name["width"] < duration["x"], "name, then the duration"
            assert bar["width"] > 1, "the bar is still drawn"
        # Every row still opens to its detail pane (plain <details>).
        rows.nth(1).click()
        detail = explorer.locator("details.o11yt-span").nth(1).locator(".o11yt-detail")
        expect(detail).to_contain_text("embeddings all-MiniLM-L6-v2", timeout=UI_TIMEOUT)
        page.screenshot(
            path=str(ARTIFACTS / "jupyterlab-trace-explorer-untrusted.png"), full_page=True
        )


def test_a_headless_executed_monitor_notebook_reopens_without_a_widget_error(
    tmp_path: Path, run_env: dict[str, str]
) -> None:
    """Executed by nbclient (as ``o11ylab run`` and papermill do), never signed: JupyterLab
    opens it untrusted. The still copy shows; no widget error and no widget-tree repr."""
    import nbclient
    from playwright.sync_api import expect

    notebook = new_notebook("%load_ext o11ylab", "%o11y monitor")
    nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute(env={**run_env, "O11YLAB_HARDWARE_INTERVAL": "0.5"})
    ARTIFACTS.mkdir(exist_ok=True)
    with lab_page(
        tmp_path,
        {"executed.ipynb": notebook},
        {},
        height=900,
        failure="jupyterlab-monitor-executed-reopened",
    ) as (page, base, token):
        page.goto(f"{base}/lab/tree/executed.ipynb?token={token}")
        copy = page.locator(".o11y-snapshot")
        expect(copy).to_be_visible(timeout=UI_TIMEOUT)
        expect(copy).to_contain_text("kernel memory", timeout=UI_TIMEOUT)
        expect(copy).to_contain_text("No GPU", timeout=UI_TIMEOUT)
        with contextlib.suppress(Exception):
            page.locator(".jp-Dialog").get_by_role("button", name="Select").click(timeout=10_000)
        expect(page.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle"))).to_be_visible(
            timeout=90_000
        )
        expect(page.get_by_text("HardwareMonitor(children")).to_have_count(0, timeout=UI_TIMEOUT)
        errors = [e for e in page.get_by_text("Error displaying widget").all() if e.is_visible()]
        assert errors == [], "no widget error in sight"
        page.screenshot(
            path=str(ARTIFACTS / "jupyterlab-monitor-executed-reopened.png"), full_page=True
        )


# --- the run folder from the notebook (%o11y open) ------------------------------------------------


def test_o11y_open_shows_the_run_folder_in_the_file_browser(tmp_path: Path) -> None:
    """The run folders live outside the Jupyter root (O11YLAB_RUNS_DIR, as ~/.o11ylab/runs
    does); %o11y open links the working folder to them and the link opens the run's files."""
    from playwright.sync_api import expect

    notebook = new_notebook(
        "%load_ext o11ylab", "%%traced hello\nprint('hello')", "%o11y flush", "%o11y open"
    )
    ARTIFACTS.mkdir(exist_ok=True)
    with lab_page(
        tmp_path, {"open.ipynb": notebook}, {}, height=900, failure="jupyterlab-o11y-open"
    ) as (page, base, token):
        open_and_run_all(page, base, token, "open.ipynb")
        link = page.locator(".o11ylab-open a")
        expect(link).to_be_visible(timeout=120_000)
        expect(link).to_have_text(re.compile(r"^o11ylab-runs/[^/]+/$"), timeout=UI_TIMEOUT)
        assert (tmp_path / "notebooks" / "o11ylab-runs").is_symlink()
        # In the notebook's own folder the link shows up in the file browser at once...
        expect(page.locator(".jp-DirListing-item", has_text="o11ylab-runs")).to_be_visible(
            timeout=UI_TIMEOUT
        )
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-o11y-open.png"), full_page=True)
        # ... and the run's address opens JupyterLab's file browser in the run folder.
        with page.context.expect_page(timeout=UI_TIMEOUT) as opened:
            link.click()
        tab = opened.value
        tab.set_default_timeout(UI_TIMEOUT)
        listing = tab.locator(".jp-DirListing-item")
        expect(listing.filter(has_text=re.compile(r"^traces\..*\.jsonl"))).to_have_count(
            1, timeout=120_000
        )
        expect(tab.locator(".jp-BreadCrumbs")).to_contain_text("o11ylab-runs", timeout=UI_TIMEOUT)
        tab.screenshot(
            path=str(ARTIFACTS / "jupyterlab-o11y-open-file-browser.png"), full_page=True
        )


# --- notebooks 04 and 05 run in JupyterLab: no red stderr block but real warnings ------------------

# What o11ylab says as information (a model loaded, the endpoint starting, where telemetry goes,
# why there is no GPU): plain output, never a stderr block (tests/test_notebooks.py says the same
# of the headless run).
INFORMATION = re.compile(
    r"^o11ylab[\w ]*: .*(loaded in|starting the local model endpoint|telemetry to|"
    r"endpoint at|[Nn]o GPU|ready in)|^o11ylab: \[\d+/\d+ ",  # the last: model preparation
    re.MULTILINE,
)
# Smaller values in their parameters cells, injected as papermill injects them: the same cells
# run, with less generation (the full 04 and 05 take minutes on two loaded cores).
SMALL = {
    "04_gpu_inference.ipynb": {"generations": 1, "max_new_tokens": 4},
    "05_rag_pipeline.ipynb": {
        "questions": ["What does the traceparent header carry?"],
        "max_tokens": 4,
    },
}


def small_copy(name: str) -> nbformat.NotebookNode:
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    notebook = load_notebook_node(str(ROOT / "notebooks" / name))
    return parameterize_notebook(notebook, SMALL[name])


def run_to_the_end(page: Any, base: str, token: str, name: str) -> float:
    """Run All in a notebook and wait until its last code cell has run; the seconds it took."""
    from playwright.sync_api import expect

    started = time.monotonic()
    open_and_run_all(page, base, token, name)
    last = page.locator(".jp-NotebookPanel:visible .jp-CodeCell").last
    expect(last.locator(".jp-InputArea-prompt")).to_have_text(
        re.compile(r"\[\d+\]"), timeout=420_000
    )
    expect(page.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle"))).to_be_visible(
        timeout=UI_TIMEOUT
    )
    return time.monotonic() - started


def stderr_blocks(page: Any) -> list[str]:
    panel = page.locator(".jp-NotebookPanel:visible")
    # text_content: a block scrolled out of sight has no inner text (content-visibility)
    return [str(t) for t in panel.locator(STDERR).all_text_contents()]


@pytest.mark.timeout(1200)
def test_notebooks_04_and_05_show_no_information_as_an_error_block(tmp_path: Path) -> None:
    """Issue 12: "Run All" on 04 and 05 in JupyterLab; a stderr block (JupyterLab's red one)
    only for a real warning, never for o11ylab's information (model loaded, endpoint starting)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    notebooks = {name: small_copy(name) for name in SMALL}
    # No OPENAI_* (conftest removed them): 05's kernel starts its own local endpoint, as on a
    # user's machine (conftest turns that off for the test process itself).
    env = {"ANONYMIZED_TELEMETRY": "False", "HF_HUB_OFFLINE": "1", "O11YLAB_LOCAL_OPENAI": "1"}
    ARTIFACTS.mkdir(exist_ok=True)
    timings: dict[str, float] = {}
    with lab_page(tmp_path, notebooks, env, height=1000, failure="jupyterlab-04-05-run-all") as (
        page,
        base,
        token,
    ):
        for name in SMALL:
            timings[name] = run_to_the_end(page, base, token, name)
            blocks = stderr_blocks(page)
            print(f"\n{name}: {timings[name]:.0f} s, stderr blocks: {blocks!r}"[:2000])
            information = [m.group(0) for b in blocks for m in INFORMATION.finditer(b)]
            assert information == [], f"{name}: information in a stderr block"
            # 04 prepares the model (a fresh cache here): o11ylab's steps, no third-party bar.
            bars = page.locator(".jp-NotebookPanel:visible").get_by_text("de-quantizing")
            assert bars.count() == 0, f"{name}: transformers' GGUF bar in o11ylab's step"
            # The screenshot shows the first stderr block (the real warning it is), else
            # o11ylab's first line of information, plain output.
            panel = page.locator(".jp-NotebookPanel:visible")
            shown = panel.locator(STDERR) if blocks else panel.locator(STDOUT, has_text="o11ylab")
            if shown.count():
                shown.first.scroll_into_view_if_needed()
                expect(shown.first).to_be_in_viewport(timeout=UI_TIMEOUT)
            page.screenshot(
                path=str(ARTIFACTS / f"jupyterlab-{Path(name).stem}-run-all.png"),
                full_page=True,
            )
            # Its kernel (and the model it holds) goes before the next notebook runs.
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Kernel$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Shut Down Kernel$")).click()
            with contextlib.suppress(PlaywrightTimeout):
                page.locator(".jp-Dialog").get_by_role("button", name="Shut Down").click(
                    timeout=5_000
                )
            expect(page.get_by_text("No Kernel").first).to_be_visible(timeout=UI_TIMEOUT)
