"""The live hardware panel, in-process (the browser test is tests/test_jupyterlab_ui.py).

GPU panels are driven by ``tests/fake_nvml.py`` (a stated test double: no GPU here); the
no-GPU panel by the real ``pynvml`` on this machine.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from o11ylab import hardware
from o11ylab.hardware import HardwareSettings, Sampler
from o11ylab.widgets import HardwareMonitor, sparkline_svg

from .fake_nvml import GIB, FakeGpu, FakeNvml, two_gpus


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


@pytest.fixture(autouse=True)
def fresh_kernel_memory() -> Iterator[None]:
    """Each test is a fresh kernel as far as "the no-GPU reason was already said" goes."""
    from o11ylab import widgets

    saved = dict(widgets._EXPLAINED_BY)
    widgets._EXPLAINED_BY.clear()
    yield
    widgets._EXPLAINED_BY.clear()
    widgets._EXPLAINED_BY.update(saved)


@pytest.fixture
def fake_sampler() -> Iterator[Sampler]:
    sampler = Sampler(two_gpus(), interval_s=0.2, settings=HardwareSettings())
    yield sampler
    sampler.stop()


def texts(monitor: HardwareMonitor, css: str) -> list[str]:
    """The value labels of every row with this CSS class."""
    found = []
    stack = list(monitor.children)
    while stack:
        widget = stack.pop(0)
        if css in getattr(widget, "_dom_classes", ()):
            found.append(widget.children[2].value)
        stack.extend(getattr(widget, "children", ()))
    return found


def test_one_panel_per_gpu_with_values_a_user_reads(fake_sampler: Sampler) -> None:
    fake = fake_sampler.nvml._module
    fake.gpus[0].utilization, fake.gpus[0].memory_used = 73, 12 * GIB
    monitor = HardwareMonitor(fake_sampler)
    try:
        assert wait_for(lambda: len(monitor._panels) == 2 and fake_sampler.samples_taken >= 2)
        assert wait_for(lambda: texts(monitor, "o11y-gpu-utilization")[0] == "73%")
        assert texts(monitor, "o11y-gpu-memory") == ["12.0 GiB / 80.0 GiB", "1.0 GiB / 24.0 GiB"]
        assert texts(monitor, "o11y-gpu-power") == ["70 W / 700 W", "70 W / 300 W"]
        assert texts(monitor, "o11y-gpu-temperature") == ["35 °C", "35 °C"]
        titles = [p.title.value for p in monitor._panels]
        assert "GPU0 · NVIDIA H100 80GB HBM3" in titles[0] and "NVIDIA A10G" in titles[1]
        assert monitor._panels[0].rows["utilization"].bar.value == pytest.approx(0.73)
        assert monitor._panels[0].rows["utilization"].bar.bar_style == "warning"
        cpu = texts(monitor, "o11y-kernel-cpu")[0]
        assert re.fullmatch(r"\d+% of \d+ CPUs?", cpu)
        assert texts(monitor, "o11y-kernel-memory")[0].endswith("resident")
        assert monitor._why.value == ""  # GPUs present: no "why" line
    finally:
        monitor.close()


def test_values_follow_the_gpu_while_the_kernel_is_busy(fake_sampler: Sampler) -> None:
    fake = fake_sampler.nvml._module
    monitor = HardwareMonitor(fake_sampler)
    try:
        assert wait_for(lambda: texts(monitor, "o11y-gpu-utilization")[:1] == ["0%"])
        spark_before = monitor._panels[0].rows["utilization"].spark.value
        fake.gpus[0].utilization = 95
        # The main thread is busy; the sampler thread still updates the panel.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and texts(monitor, "o11y-gpu-utilization")[0] != "95%":
            sum(range(10_000))
        assert texts(monitor, "o11y-gpu-utilization")[0] == "95%"
        assert monitor._panels[0].rows["utilization"].bar.bar_style == "danger"
        assert monitor._panels[0].rows["utilization"].spark.value != spark_before
    finally:
        monitor.close()


def test_missing_fields_show_na(fake_sampler: Sampler) -> None:
    sampler = Sampler(
        FakeNvml(
            [
                FakeGpu(
                    unsupported={
                        "nvmlDeviceGetPowerUsage",
                        "nvmlDeviceGetEnforcedPowerLimit",
                        "nvmlDeviceGetTemperature",
                    }
                )
            ]
        ),
        interval_s=0.2,
        settings=HardwareSettings(),
    )
    monitor = HardwareMonitor(sampler)
    try:
        assert wait_for(lambda: texts(monitor, "o11y-gpu-power") == ["n/a"])
        assert texts(monitor, "o11y-gpu-temperature") == ["n/a"]
        assert texts(monitor, "o11y-gpu-memory") == ["1.0 GiB / 80.0 GiB"]
    finally:
        monitor.close()
        sampler.stop()


def test_text_from_the_driver_is_escaped() -> None:
    hostile = '<img src=x onerror="alert(1)">'
    sampler = Sampler(
        FakeNvml([FakeGpu(name=hostile)]), interval_s=0.2, settings=HardwareSettings()
    )
    monitor = HardwareMonitor(sampler)
    try:
        assert wait_for(lambda: bool(monitor._panels) and "img" in monitor._panels[0].title.value)
        title = monitor._panels[0].title.value
        assert "<img" not in title and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in title
    finally:
        monitor.close()
        sampler.stop()
    broken = Sampler(FakeNvml(init_error=999), settings=HardwareSettings())  # odd error text
    broken.open()
    broken.no_gpu_reason = "driver said <b>nope</b> & left"
    monitor = HardwareMonitor(broken, start=False)
    monitor._show_status()
    assert "&lt;b&gt;nope&lt;/b&gt; &amp; left" in monitor._why.value
    monitor.close()


def test_without_a_gpu_it_shows_cpu_memory_and_one_line_why() -> None:
    sampler = Sampler(interval_s=0.2, settings=HardwareSettings())  # real pynvml: no GPU here
    monitor = HardwareMonitor(sampler)
    try:
        assert wait_for(lambda: sampler.samples_taken >= 2 and "No GPU" in monitor._why.value)
        assert "no NVIDIA driver on this machine" in monitor._why.value
        assert monitor._why.value.count("No GPU") == 1
        assert monitor._panels == [] and monitor._gpus.children == ()
        assert wait_for(lambda: texts(monitor, "o11y-host-memory")[0] != "n/a")
        assert re.fullmatch(r"[\d.]+ [GM]iB / [\d.]+ GiB", texts(monitor, "o11y-host-memory")[0])
    finally:
        monitor.close()
        sampler.stop()


def test_the_no_gpu_reason_is_given_once_per_kernel() -> None:
    sampler = Sampler(interval_s=0.2, settings=HardwareSettings())  # real pynvml: no GPU here
    first, second = HardwareMonitor(sampler), HardwareMonitor(sampler)
    try:
        # The first one created explains, even when the second met the reason first (CI saw
        # the second refresh first once the sampler was ready, and explain above the first).
        assert wait_for(lambda: sampler.samples_taken >= 2 and "said above" in second._why.value)
        second._show_status()  # the second refreshes first...
        first._show_status()
        second._show_status()  # ...and hands the explanation back to the first
        assert "no NVIDIA driver on this machine" in first._why.value
        assert "driver" not in second._why.value
        first._show_status()  # the first keeps its explanation on every refresh
        assert "no NVIDIA driver on this machine" in first._why.value
        third = HardwareMonitor(sampler)
        second._show_status()
        third._show_status()
        assert "said above" in second._why.value and "said above" in third._why.value
        first.close()  # cleared from the notebook: the next one down explains it now
        second._show_status()
        assert "no NVIDIA driver on this machine" in second._why.value
        third._show_status()
        assert "said above" in third._why.value
        third.close()
    finally:
        first.close()
        second.close()
        sampler.stop()


def test_sparklines_have_a_scale_and_time_labels(fake_sampler: Sampler) -> None:
    monitor = HardwareMonitor(fake_sampler)
    try:
        assert wait_for(lambda: fake_sampler.samples_taken >= 4 and len(monitor._panels) == 2)
        assert wait_for(lambda: "now" in monitor._panels[0].rows["memory"].spark.value)
        memory = monitor._panels[0].rows["memory"].spark.value
        labels = re.findall(r"<text[^>]*>([^<]*)</text>", memory)
        assert labels[:2] == ["80.0 GiB", "0"], labels  # the scale: the GPU's memory, and zero
        assert re.fullmatch(r"−\d+ s", labels[2]) and labels[3] == "now", labels
        power = monitor._panels[0].rows["power"].spark.value
        assert re.findall(r"<text[^>]*>([^<]*)</text>", power)[0] == "700 W"
    finally:
        monitor.close()


def test_stop_and_restart(fake_sampler: Sampler) -> None:
    monitor = HardwareMonitor(fake_sampler)
    try:
        assert wait_for(lambda: "live" in monitor._header.value)
        monitor.stop()
        assert not monitor.running and "stopped" in monitor._header.value
        assert fake_sampler.subscribers == 0
        frozen = monitor._header.value
        time.sleep(0.5)
        assert monitor._header.value == frozen  # no updates while stopped
        monitor._toggle.click()  # the panel's own button
        assert monitor.running
        assert wait_for(lambda: monitor._header.value != frozen and "live" in monitor._header.value)
    finally:
        monitor.close()
    assert fake_sampler.subscribers == 0


def test_several_monitors_share_one_sampler_thread(fake_sampler: Sampler) -> None:
    first, second = HardwareMonitor(fake_sampler), HardwareMonitor(fake_sampler)
    try:
        assert fake_sampler.subscribers == 2
        threads = [t for t in threading.enumerate() if t.name == "o11ylab-hardware"]
        assert len([t for t in threads if t is fake_sampler._thread]) == 1
        assert wait_for(
            lambda: (
                texts(first, "o11y-gpu-utilization") != []
                and texts(second, "o11y-gpu-utilization") != []
            )
        )
        taken = fake_sampler.samples_taken
        time.sleep(0.5)
        # Two monitors do not double the sampling rate.
        assert fake_sampler.samples_taken - taken <= 4
        first.stop()
        assert fake_sampler.running  # the other monitor still needs it
        seen = second._header.value
        assert wait_for(lambda: second._header.value != seen)
    finally:
        first.close()
        second.close()


def test_a_standalone_monitor_starts_and_stops_the_process_sampler(shell: Any) -> None:
    shell.run_line_magic("unload_ext", "o11ylab")
    try:
        sampler = hardware.get_sampler()
        assert not sampler.running
        monitor = HardwareMonitor()
        assert sampler.running
        monitor.stop()
        assert not sampler.running  # nothing else needed it
        monitor.close()
    finally:
        shell.run_line_magic("load_ext", "o11ylab")


def test_unloading_the_extension_shows_on_open_monitors(shell: Any) -> None:
    monitor = shell.run_line_magic("o11y", "monitor")
    try:
        assert wait_for(lambda: "live" in monitor._header.value)
        shell.run_line_magic("unload_ext", "o11ylab")
        assert "the sampler stopped" in monitor._header.value
        assert monitor._toggle.description == "Start"
        monitor._toggle.click()  # resumes on its own sampler thread
        assert hardware.get_sampler().running
        assert wait_for(lambda: "live" in monitor._header.value)
    finally:
        monitor.close()
        shell.run_line_magic("load_ext", "o11ylab")
    assert hardware.get_sampler().running and hardware.attached()


def test_o11y_monitor_magic(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    monitor = shell.run_line_magic("o11y", "monitor")
    try:
        assert isinstance(monitor, HardwareMonitor) and monitor.running
        assert monitor.sampler is hardware.get_sampler()
        shell.run_line_magic("o11y", "monitor stop")
        assert not monitor.running
        assert hardware.get_sampler().running  # the extension still samples for attribution
        shell.run_line_magic("o11y", "monitor start")
        assert monitor.running
        out = capsys.readouterr().out
        assert "o11ylab: stopped" in out and "o11ylab: started" in out
        with pytest.raises(Exception, match="Use %o11y monitor"):
            shell.run_line_magic("o11y", "monitor loudly")
    finally:
        monitor.close()
    assert "%o11y monitor" in shell.find_line_magic("o11y").__doc__


def test_sparkline_is_numbers_only_and_breaks_at_gaps() -> None:
    svg = sparkline_svg([0.0, 0.5, None, 1.0, 2.0], 1.0, width=40, height=22)
    lines = re.findall(r'points="([^"]+)"', svg)
    assert lines == ["0.0,21.0 10.0,11.0", "30.0,1.0 40.0,1.0"]  # a gap; 2.0 clipped to the top
    assert re.fullmatch(r"[\d.,\s]+", " ".join(lines))
    assert "<polyline" not in sparkline_svg([None, 1.0], 1.0)


def test_displayed_with_a_still_copy_for_where_the_widget_cannot_render(
    fake_sampler: Sampler,
) -> None:
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    InteractiveShell.instance()
    monitor = HardwareMonitor(fake_sampler)
    try:
        assert wait_for(lambda: fake_sampler.samples_taken >= 3)  # a line needs two points
        with capture_output() as shown:
            monitor._ipython_display_()
        live, still = (output.data for output in shown.outputs)
        assert live["application/vnd.jupyter.widget-view+json"]["model_id"] == monitor.model_id
        copy = still["text/html"]
        # The copy holds what the panel showed: both GPUs (one sample was waited for), the
        # kernel's rows with their values and sparklines, and says it is not live.
        assert "NVIDIA H100 80GB HBM3" in copy and "NVIDIA A10G" in copy
        assert "kernel memory" in copy and "resident" in copy and "<polyline" in copy
        assert "still copy" in copy and "run the cell again" in copy
    finally:
        monitor.close()
