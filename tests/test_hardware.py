"""The hardware sampler, its metrics and per-span GPU attribution.

There is no GPU on the machines these tests run on, so two layers:

* NVML-backed code runs against ``tests/fake_nvml.py``, a stated test double with pynvml's
  surface and pynvml's own exception classes: several GPUs, missing fields, driver errors,
  a lost GPU, the energy counter, and the attribution arithmetic;
* the real no-GPU path runs against the real ``pynvml`` (``NVMLError_LibraryNotFound`` here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from o11ylab import hardware, semconv
from o11ylab.config import ConfigError
from o11ylab.hardware import Attributor, HardwareSettings, Sampler, _TorchPeaks, _visible
from o11ylab.telemetry import get_telemetry
from o11ylab.testing import capture_spans

from .conftest import PYTHON, ROOT, free_port
from .fake_nvml import GIB, FakeGpu, FakeNvml, two_gpus

DEFAULTS = HardwareSettings()


def fake_sampler(fake: FakeNvml, interval_s: float = 1.0) -> Sampler:
    sampler = Sampler(fake, interval_s=interval_s, settings=DEFAULTS)
    sampler.open()
    return sampler


# --- sampling through NVML (fake) -----------------------------------------------------------------


def test_every_gpu_is_sampled_in_convention_units() -> None:
    fake = two_gpus(utilization=37, power_mw=123_400, temperature=61)
    sampler = fake_sampler(fake)
    assert [g.model for g in sampler.gpus] == ["NVIDIA H100 80GB HBM3", "NVIDIA A10G"]
    assert sampler.no_gpu_reason is None

    sample = sampler.sample_once()
    first, second = sample.gpus
    assert first is not None and second is not None
    assert first.utilization == pytest.approx(0.37)  # a fraction, not percent
    assert first.power_w == pytest.approx(123.4)  # watts, not milliwatts
    assert first.energy_j == pytest.approx(1_000_000.0)  # joules, not millijoules
    assert first.energy_source == "counter"
    assert first.temperature_c == 61
    assert first.memory_used == GIB and first.memory_total == 80 * GIB
    assert second.memory_total == 24 * GIB
    assert sample.host is not None and sample.host.rss > 0

    info = sampler.gpus[1]
    assert info.attributes == {
        "hw.type": "gpu",
        "hw.id": "GPU-bbbbbbbb-0000-0000-0000-000000000000",
        "hw.name": "gpu1",
        "hw.model": "NVIDIA A10G",
        "hw.vendor": "NVIDIA",
        "hw.driver_version": "570.86.15",
    }
    assert info.power_limit_w == 300.0


def test_a_field_the_gpu_lacks_is_na_asked_once_and_said_once() -> None:
    gpu = FakeGpu(
        unsupported={
            "nvmlDeviceGetPowerUsage",
            "nvmlDeviceGetTotalEnergyConsumption",
            "nvmlDeviceGetTemperature",
        }
    )
    fake = FakeNvml([gpu])
    sampler = fake_sampler(fake)
    for _ in range(3):
        reading = sampler.sample_once().gpus[0]
        assert reading is not None
        assert reading.power_w is None and reading.temperature_c is None
        assert reading.energy_j is None  # no power to integrate either
        assert reading.utilization == 0.0 and reading.memory_used == GIB  # the rest still works
    assert fake.calls["nvmlDeviceGetPowerUsage"] == 1  # never asked again
    assert fake.calls["nvmlDeviceGetTemperature"] == 1
    said = [n for n in sampler.notes if "power draw is not available" in n]
    assert len(said) == 1 and "NVMLError_NotSupported" in said[0]


def test_a_driver_error_mid_run_is_said_once_and_recovers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    gpu = FakeGpu(utilization=50)
    sampler = fake_sampler(FakeNvml([gpu]))
    assert sampler.sample_once().gpus[0].utilization == 0.5  # type: ignore[union-attr]

    gpu.failing["nvmlDeviceGetUtilizationRates"] = pynvml.NVML_ERROR_UNKNOWN
    for _ in range(3):
        reading = sampler.sample_once().gpus[0]
        assert reading is not None and reading.utilization is None
        assert reading.memory_used == GIB
    err = capsys.readouterr().err
    assert err.count("reading utilization failed (NVMLError_Unknown") == 1

    del gpu.failing["nvmlDeviceGetUtilizationRates"]
    assert sampler.sample_once().gpus[0].utilization == 0.5  # type: ignore[union-attr]


def test_a_lost_gpu_is_dropped_and_the_others_go_on(capsys: pytest.CaptureFixture[str]) -> None:
    fake = two_gpus()
    sampler = fake_sampler(fake)
    fake.gpus[0].failing["nvmlDeviceGetUtilizationRates"] = pynvml.NVML_ERROR_GPU_IS_LOST
    sample = sampler.sample_once()
    assert sample.gpus[0] is None and sample.gpus[1] is not None
    calls = fake.total_calls()
    sampler.sample_once()
    per_sample = fake.total_calls() - calls
    assert per_sample == 6  # the six reads of the surviving GPU only
    assert "is lost (NVMLError_GpuIsLost" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "no NVIDIA driver on this machine"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "the NVIDIA driver is not loaded"),
        (pynvml.NVML_ERROR_NO_PERMISSION, "may not use NVML"),
        (pynvml.NVML_ERROR_UNKNOWN, "NVML could not start (NVMLError_Unknown"),
    ],
)
def test_nvml_start_failures_degrade_to_cpu_with_the_reason(error: int, reason: str) -> None:
    sampler = fake_sampler(FakeNvml(init_error=error))
    assert sampler.gpus == [] and sampler.attributed == ()
    assert reason in (sampler.no_gpu_reason or "")
    assert sampler.sample_once().host is not None  # CPU and memory still sampled


def test_no_gpu_at_all_is_said() -> None:
    sampler = fake_sampler(FakeNvml([]))
    assert sampler.no_gpu_reason == "NVML found no NVIDIA GPU"
    assert sampler.notes == ["CPU only: NVML found no NVIDIA GPU"]


def test_without_nvidia_ml_py_the_reason_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml now fails
    sampler = Sampler(settings=DEFAULTS)
    sampler.open()
    assert "pip install 'o11ylab[gpu]'" in (sampler.no_gpu_reason or "")


# --- the real no-GPU path, real pynvml ------------------------------------------------------------


def test_real_pynvml_on_this_machine_is_cpu_only_and_says_why() -> None:
    sampler = Sampler(interval_s=0.2, settings=DEFAULTS)
    sampler.start()
    try:
        assert sampler.ready.wait(5)
        assert sampler.gpus == []
        assert "no NVIDIA driver on this machine" in (sampler.no_gpu_reason or "")
        assert "libnvidia-ml.so" in (sampler.no_gpu_reason or "")
        deadline = time.monotonic() + 5
        while sampler.samples_taken < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sampler.latest is not None and sampler.latest.host is not None
        assert sampler.latest.gpus == ()
        # Attribution without a GPU: clocks only, not one NVML call.
        attributor = Attributor(sampler)
        before = sampler.nvml.calls
        for _ in range(100):
            measurement = attributor.end(attributor.begin())
        assert sampler.nvml.calls == before == 0
        assert measurement.energy_j is None and measurement.gpu_count == 0
        assert measurement.summary().keys() == {"cpu"}
    finally:
        sampler.stop()
    assert not sampler.running


def test_nvml_can_be_switched_off() -> None:
    sampler = Sampler(FakeNvml(), settings=HardwareSettings(nvml=False))
    # A test double passed explicitly is used anyway; the env switch governs the default.
    assert sampler._use_nvml
    sampler = Sampler(settings=HardwareSettings(nvml=False))
    sampler.open()
    assert sampler.no_gpu_reason == "O11YLAB_NVML=0 turns GPU sampling off"


# --- attribution arithmetic -----------------------------------------------------------------------


def test_energy_comes_from_the_counter_exactly_across_gpus() -> None:
    fake = two_gpus()
    sampler = fake_sampler(fake)
    attributor = Attributor(sampler)
    start = attributor.begin()
    fake.gpus[0].advance(2.0, watts=300)  # 600 J
    fake.gpus[1].advance(2.0, watts=150)  # 300 J
    measurement = attributor.end(start)
    assert measurement.energy_j == pytest.approx(900.0)
    assert measurement.energy_source == "counter"
    assert measurement.gpu_count == 2
    assert measurement.span_attributes()[semconv.GPU_COUNT] == 2
    attributes = measurement.span_attributes(output_tokens=90)
    assert attributes[semconv.HW_ENERGY_SPAN] == pytest.approx(900.0)
    assert attributes[semconv.GPU_ENERGY_PER_OUTPUT_TOKEN] == pytest.approx(10.0)
    assert measurement.summary()["gpu_energy"] == "900.0 J GPU"


def test_a_counter_that_went_backwards_gives_no_energy_rather_than_a_wrong_one() -> None:
    fake = FakeNvml([FakeGpu()])
    attributor = Attributor(fake_sampler(fake))
    start = attributor.begin()
    fake.gpus[0].energy_mj = 5  # the driver reloaded
    assert attributor.end(start).energy_j is None


def test_without_the_counter_energy_is_integrated_from_power() -> None:
    gpu = FakeGpu(power_mw=200_000, unsupported={"nvmlDeviceGetTotalEnergyConsumption"})
    sampler = fake_sampler(FakeNvml([gpu]), interval_s=0.2)
    first = sampler.sample_once().gpus[0]
    time.sleep(0.2)
    second = sampler.sample_once().gpus[0]
    assert first is not None and second is not None
    assert second.energy_source == "power"
    assert second.energy_j - first.energy_j == pytest.approx(  # type: ignore[operator]
        200 * (sampler.history[1].mono - sampler.history[0].mono)
    )

    attributor = Attributor(sampler)
    start = attributor.begin()
    time.sleep(0.3)
    sampler.sample_once()
    time.sleep(0.1)
    measurement = attributor.end(start)
    assert measurement.energy_source == "power"
    assert measurement.span_attributes()[semconv.GPU_ENERGY_SOURCE] == "power"
    # Constant power: energy is power x duration whatever the sample times were.
    assert measurement.energy_j == pytest.approx(200 * measurement.duration_s, rel=0.02)


# --- how good the joules are (issue 13) -------------------------------------------------------------


def wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def test_the_counter_period_is_measured_and_a_shorter_span_gets_no_joules() -> None:
    gpu = FakeGpu(power_mw=200_000, counter_period_s=0.1, unsupported={"NVML_FI_DEV_POWER_INSTANT"})
    sampler = Sampler(FakeNvml([gpu]), interval_s=0.2, settings=DEFAULTS)
    sampler.start()
    try:
        assert sampler.counter_probed.wait(5)
        assert sampler.counter_period_s[0] == pytest.approx(0.1, abs=0.03)
        assert any("the energy counter updates every" in n for n in sampler.notes)
        assert sampler.samples_taken >= 1  # the probe ran between samples, not instead of them
        attributor = Attributor(sampler)

        short = attributor.end(attributor.begin())
        assert short.energy_j is None and short.energy_method == "too_short"
        attributes = short.span_attributes(output_tokens=5)
        assert attributes[semconv.GPU_ENERGY_METHOD] == "too_short"
        assert attributes[semconv.GPU_ENERGY_COUNTER_PERIOD] == pytest.approx(0.1, abs=0.03)
        assert semconv.HW_ENERGY_SPAN not in attributes
        assert semconv.GPU_ENERGY_PER_OUTPUT_TOKEN not in attributes
        assert short.summary()["gpu_energy"].startswith("GPU J n/a (< ")

        start = attributor.begin()
        first = gpu.counter_mj()
        wait_until(lambda: gpu.counter_mj() >= first + 3 * 20_000)  # three 100 ms steps of 200 W
        long = attributor.end(start)
        assert long.energy_method == "counter_delta"
        assert long.span_attributes()[semconv.GPU_ENERGY_METHOD] == "counter_delta"
        # Off by at most one step at each end: that is what the period says.
        assert 200 * (long.duration_s - 0.1) - 1 <= long.energy_j <= 200 * (long.duration_s + 0.1)  # type: ignore[operator]
    finally:
        sampler.stop()


def test_the_probe_times_a_stepping_counter_and_rides_out_a_failed_read() -> None:
    from o11ylab.hardware._energy import CounterProbe

    clock = {"now": 0.0, "fail": False}

    def read(gpu: int) -> float | None:
        if gpu == 1 or clock["fail"]:
            return None  # gpu 1 has no counter; otherwise a driver hiccup
        return float(int(clock["now"] / 0.01))  # steps every 10 ms, as on older GPUs

    probe = CounterProbe([0, 1], read, has_counter=lambda gpu: gpu == 0)
    while not probe.done:
        clock["fail"] = 0.013 < clock["now"] < 0.017
        probe.step(clock["now"])
        clock["now"] += 0.002
    assert probe.periods == {0: pytest.approx(0.01, abs=0.0025)} and probe.unknown == []

    still = CounterProbe([0], lambda gpu: 5.0, has_counter=lambda gpu: True)
    for tick in range(600):
        still.step(tick * 0.002)
    assert still.done and still.periods == {} and still.unknown == [0]  # 1 s without a step


def test_a_short_span_on_a_gpu_with_instant_power_integrates_it() -> None:
    gpu = FakeGpu(power_mw=200_000, counter_period_s=0.1)
    fake = FakeNvml([gpu])
    sampler = fake_sampler(fake)
    sampler.counter_period_s[0] = 0.1  # as the probe in the sampler thread finds it
    attributor = Attributor(sampler)
    start = attributor.begin()
    gpu.power_mw = 300_000
    measurement = attributor.end(start)
    assert measurement.energy_method == "instant_power"
    assert measurement.energy_j == pytest.approx(250 * measurement.duration_s)
    attributes = measurement.span_attributes()
    assert attributes[semconv.GPU_ENERGY_METHOD] == "instant_power"
    assert attributes[semconv.HW_ENERGY_SPAN] == pytest.approx(250 * measurement.duration_s)
    assert measurement.summary()["gpu_energy"].startswith("~")
    assert fake.calls["nvmlDeviceGetFieldValues"] == 2  # one read at each end, no more


def test_an_older_gpu_without_the_counter_or_instant_power_uses_power_samples() -> None:
    gpu = FakeGpu(
        power_mw=150_000,
        unsupported={"nvmlDeviceGetTotalEnergyConsumption", "NVML_FI_DEV_POWER_INSTANT"},
    )
    sampler = Sampler(FakeNvml([gpu]), interval_s=0.2, settings=DEFAULTS)
    sampler.start()
    try:
        assert sampler.counter_probed.wait(5)
        assert sampler.counter_period_s == {}  # no counter to time
        wait_until(lambda: sampler.samples_taken >= 2)
        attributor = Attributor(sampler)
        start = attributor.begin()
        taken = sampler.samples_taken
        wait_until(lambda: sampler.samples_taken >= taken + 1)
        measurement = attributor.end(start)
    finally:
        sampler.stop()
    assert measurement.energy_method == "power_samples"
    assert measurement.energy_j == pytest.approx(150 * measurement.duration_s, rel=0.05)
    attributes = measurement.span_attributes()
    assert attributes[semconv.GPU_ENERGY_METHOD] == "power_samples"
    assert attributes[semconv.GPU_ENERGY_SOURCE] == "power"
    assert semconv.GPU_ENERGY_COUNTER_PERIOD not in attributes
    assert measurement.summary()["gpu_energy"].startswith("~")
    short = attributor.end(attributor.begin())  # no counter, so no "too short" either
    assert short.energy_method == "power_samples" and short.energy_j is not None


def test_peak_memory_and_mean_utilization_come_from_the_samples_inside_the_span() -> None:
    gpu = FakeGpu(memory_used=2 * GIB, utilization=10)
    sampler = fake_sampler(FakeNvml([gpu]))
    sampler.sample_once()  # before the span: must not count
    attributor = Attributor(sampler)
    start = attributor.begin()
    gpu.memory_used, gpu.utilization = 7 * GIB, 80
    sampler.sample_once()
    gpu.memory_used, gpu.utilization = 3 * GIB, 40
    sampler.sample_once()
    measurement = attributor.end(start)
    assert measurement.memory_peak_bytes == 7 * GIB
    assert measurement.memory_peak_source == "nvml"
    assert measurement.utilization_mean == pytest.approx(0.6)
    assert measurement.summary()["gpu_memory"] == "peak 7.0 GiB GPU"
    assert measurement.summary()["gpu_utilization"] == "GPU 60%"


def test_a_span_shorter_than_a_sample_takes_the_latest_utilization_without_asking_nvml() -> None:
    gpu = FakeGpu(utilization=65)
    fake = FakeNvml([gpu])
    sampler = fake_sampler(fake)
    attributor = Attributor(sampler)
    assert attributor.end(attributor.begin()).utilization_mean == pytest.approx(
        0.65
    )  # no sample yet
    sampler.sample_once()
    gpu.utilization = 30
    before = fake.calls["nvmlDeviceGetUtilizationRates"]
    measurement = attributor.end(attributor.begin())
    assert measurement.utilization_mean == pytest.approx(0.65)  # the latest sample's reading
    assert fake.calls["nvmlDeviceGetUtilizationRates"] == before


class FakeCuda:
    """torch.cuda's peak-memory surface, one device (a test double: no CUDA here)."""

    def __init__(self, uuid: str = "00000000-0000-0000-0000-000000000000") -> None:
        self.allocated = 0
        self.peak = 0
        self.uuid = uuid

    def is_initialized(self) -> bool:
        return True

    def memory_reserved(self, device: int) -> int:
        return self.allocated

    def get_device_properties(self, device: int) -> Any:
        return SimpleNamespace(uuid=self.uuid)  # torch prints it without NVML's "GPU-" prefix

    def device_count(self) -> int:
        return 1

    def allocate(self, size: int) -> None:
        self.allocated += size
        self.peak = max(self.peak, self.allocated)

    def memory_allocated(self, device: int) -> int:
        return self.allocated

    def max_memory_allocated(self, device: int) -> int:
        return self.peak

    def reset_peak_memory_stats(self, device: int) -> None:
        self.peak = self.allocated


def test_torch_peaks_nest_a_span_inside_a_cell() -> None:
    cuda = FakeCuda()
    peaks = _TorchPeaks(cuda)
    cuda.allocate(1 * GIB)
    cell = peaks.begin()
    cuda.allocate(5 * GIB)  # 6 GiB: the cell's peak, before the span
    cuda.allocate(-4 * GIB)
    span = peaks.begin()  # resets torch's counter: the cell must keep its 6 GiB
    cuda.allocate(2 * GIB)  # 4 GiB: the span's peak
    cuda.allocate(-2 * GIB)
    assert peaks.end(span) == 4 * GIB
    cuda.allocate(1 * GIB)
    assert peaks.end(cell) == 6 * GIB
    assert peaks.end(cell) is None


def test_torch_peak_is_used_when_torch_runs_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = FakeCuda()
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=cuda))
    fake = FakeNvml([FakeGpu(memory_used=30 * GIB)])  # the whole device, other processes too
    attributor = Attributor(fake_sampler(fake))
    start = attributor.begin()
    cuda.allocate(3 * GIB)
    measurement = attributor.end(start)
    assert measurement.memory_peak_bytes == 3 * GIB
    assert measurement.memory_peak_source == "torch"
    assert semconv.GPU_MEMORY_PEAK_SOURCE not in measurement.span_attributes()


def test_spans_are_charged_only_for_the_gpu_torch_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = two_gpus()
    sampler = fake_sampler(fake)
    assert sampler.attributed == (0, 1) and sampler.attribution_basis == "visible"
    cuda = FakeCuda(uuid="bbbbbbbb-0000-0000-0000-000000000000")  # torch's cuda:0 is NVML's gpu1
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=cuda))
    attributor = Attributor(sampler)
    before = attributor.begin()  # started while both GPUs were charged
    cuda.allocate(2 * GIB)
    sampler.sample_once()
    assert sampler.attributed == (1,) and sampler.attribution_basis == "torch"
    assert "spans are charged for gpu1 (where torch allocates)" in sampler.describe()
    start = attributor.begin()
    fake.gpus[0].advance(1.0, watts=60)  # an idle neighbour: not this process's energy
    fake.gpus[1].advance(1.0, watts=250)
    measurement = attributor.end(start)
    assert measurement.energy_j == pytest.approx(250.0) and measurement.gpu_count == 1
    assert attributor.end(before).energy_j == pytest.approx(310.0)  # measured as it began


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        (None, (0, 1, 2)),
        ("", ()),
        ("2,0", (2, 0)),
        ("1,7,2", (1,)),  # CUDA ignores everything after an invalid entry
        ("GPU-cccc", (2,)),  # UUID prefixes, as CUDA accepts them
    ],
)
def test_attribution_follows_cuda_visible_devices(
    visible: str | None, expected: tuple[int, ...]
) -> None:
    gpus = [
        hardware.GpuInfo(index=i, uuid=f"GPU-{c * 4}-0000", model="x") for i, c in enumerate("abc")
    ]
    assert _visible(gpus, visible) == expected


def test_settings_from_the_environment() -> None:
    settings = HardwareSettings.from_env(
        {"O11YLAB_HARDWARE_INTERVAL": "0.01", "O11YLAB_HARDWARE_HISTORY": "50"}
    )
    assert settings.interval_s == pytest.approx(1 / 6)  # NVML's own window: no point going faster
    assert settings.history == 50
    with pytest.raises(ConfigError, match="O11YLAB_HARDWARE_INTERVAL='fast' is not a number"):
        HardwareSettings.from_env({"O11YLAB_HARDWARE_INTERVAL": "fast"})
    with pytest.raises(ConfigError, match="O11YLAB_NVML='maybe'"):
        HardwareSettings.from_env({"O11YLAB_NVML": "maybe"})


# --- in a real IPython shell ------------------------------------------------------------------------


@pytest.fixture
def fake_gpu(shell: Any) -> Iterator[tuple[Any, FakeNvml, Sampler]]:
    """The extension's hardware hooks re-attached to a sampler over one fake GPU."""
    fake = FakeNvml([FakeGpu()])
    sampler = Sampler(fake, interval_s=0.2, settings=DEFAULTS)
    telemetry = get_telemetry()
    hardware.detach()
    old = hardware.set_sampler(sampler)
    hardware.attach(telemetry)
    assert sampler.ready.wait(5)
    shell.user_ns["FAKE"] = fake
    try:
        yield shell, fake, sampler
    finally:
        hardware.detach()
        hardware.set_sampler(old)
        hardware.attach(telemetry)


def test_a_chat_span_and_its_cell_carry_gpu_energy_and_the_summary_says_so(
    fake_gpu: tuple[Any, FakeNvml, Sampler], capsys: pytest.CaptureFixture[str]
) -> None:
    shell, _fake, _sampler = fake_gpu
    cell = textwrap.dedent("""\
        %%traced generate
        import o11ylab
        with o11ylab.span("chat tiny-model", **{"gen_ai.operation.name": "chat"}) as s:
            FAKE.gpus[0].memory_used = 5 * 1024**3
            FAKE.gpus[0].advance(2.0, watts=250)
            s.set_attribute("gen_ai.usage.output_tokens", 50)
        with o11ylab.span("parse answer"):
            FAKE.gpus[0].advance(1.0, watts=100)
        """)
    with capture_spans() as spans:
        shell.run_cell(cell)
    by_name = {s.name: s for s in spans}
    chat = by_name["chat tiny-model"].attributes
    assert chat[semconv.HW_ENERGY_SPAN] == pytest.approx(500.0)
    assert semconv.GPU_ENERGY_SOURCE not in chat  # absent: NVML's own counter, not an estimate
    assert chat[semconv.GPU_ENERGY_METHOD] == "counter_delta"  # a scripted counter: no period
    assert semconv.GPU_ENERGY_SHARED not in chat
    assert chat[semconv.GPU_MEMORY_PEAK_SOURCE] == "nvml"  # no torch on CUDA here: whole device
    assert chat[semconv.GPU_ENERGY_PER_OUTPUT_TOKEN] == pytest.approx(10.0)
    assert chat[semconv.GPU_MEMORY_PEAK_SPAN] == 5 * GIB
    assert semconv.GPU_COUNT not in chat  # said only when more than one GPU is summed
    assert chat[semconv.PROCESS_CPU_SECONDS_SPAN] >= 0
    assert semconv.HW_ENERGY_SPAN not in by_name["parse answer"].attributes  # not an AI call

    cell_span = by_name["generate"].attributes
    assert cell_span[semconv.CELL_GPU_ENERGY] == pytest.approx(600.0)
    assert cell_span[semconv.CELL_GPU_MEMORY_PEAK] == 5 * GIB
    assert cell_span[semconv.CELL_PROCESS_CPU_SECONDS] > 0
    assert cell_span[semconv.CELL_PROCESS_MEMORY_PEAK] > 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("✓ generate"))
    assert "600.0 J GPU" in line and "peak 5.0 GiB GPU" in line and "CPU " in line


def test_overlapping_spans_from_two_threads_are_marked_shared_and_nested_ones_not(
    fake_gpu: tuple[Any, FakeNvml, Sampler],
) -> None:
    _shell, fake, _sampler = fake_gpu
    tracer = get_telemetry().tracer
    gpu = fake.gpus[0]
    a_open, b_done = threading.Event(), threading.Event()

    def worker_a() -> None:
        with tracer.start_as_current_span("chat a", attributes={"gen_ai.operation.name": "chat"}):
            gpu.advance(1.0, watts=100)  # 100 J before b starts
            a_open.set()
            assert b_done.wait(5)

    def worker_b() -> None:
        assert a_open.wait(5)
        with tracer.start_as_current_span("chat b", attributes={"gen_ai.operation.name": "chat"}):
            gpu.advance(1.0, watts=300)  # 300 J while both are open
        b_done.set()

    with capture_spans() as spans:
        threads = [threading.Thread(target=worker_a), threading.Thread(target=worker_b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        chat_c = tracer.start_as_current_span(
            "chat c", attributes={"gen_ai.operation.name": "chat"}
        )
        with chat_c, tracer.start_as_current_span("embeddings d"):  # nested, one thread
            gpu.advance(1.0, watts=50)
    by_name = {s.name: s.attributes for s in spans}
    a, b = by_name["chat a"], by_name["chat b"]
    assert a[semconv.GPU_ENERGY_SHARED] is True and b[semconv.GPU_ENERGY_SHARED] is True
    # Not divided: each is the device's energy over its own window.
    assert a[semconv.HW_ENERGY_SPAN] == pytest.approx(400.0)
    assert b[semconv.HW_ENERGY_SPAN] == pytest.approx(300.0)
    assert a[semconv.GPU_ENERGY_METHOD] == b[semconv.GPU_ENERGY_METHOD] == "counter_delta"
    for alone in ("chat c", "embeddings d"):  # later, and nested in one thread: not shared
        assert semconv.GPU_ENERGY_SHARED not in by_name[alone]
        assert by_name[alone][semconv.HW_ENERGY_SPAN] == pytest.approx(50.0)


def test_spans_in_two_asyncio_tasks_of_one_thread_are_marked_shared(
    fake_gpu: tuple[Any, FakeNvml, Sampler],
) -> None:
    import asyncio

    _shell, fake, _sampler = fake_gpu
    tracer = get_telemetry().tracer

    async def both() -> None:
        first_open = asyncio.Event()

        async def first() -> None:
            with tracer.start_as_current_span("embeddings e"):
                first_open.set()
                await asyncio.sleep(0)
                fake.gpus[0].advance(1.0, watts=100)
                await asyncio.sleep(0)

        async def second() -> None:
            await first_open.wait()
            with tracer.start_as_current_span("embeddings f"):
                await asyncio.sleep(0)

        await asyncio.gather(first(), second())

    with capture_spans() as spans:
        asyncio.run(both())
    for span in spans:
        if span.name in ("embeddings e", "embeddings f"):
            assert span.attributes[semconv.GPU_ENERGY_SHARED] is True


def test_spans_that_are_not_ai_calls_cost_no_nvml_call(
    fake_gpu: tuple[Any, FakeNvml, Sampler],
) -> None:
    _shell, fake, sampler = fake_gpu
    sampler.stop()  # no background samples in the count
    tracer = get_telemetry().tracer
    before = fake.total_calls()
    for _ in range(50):
        tracer.start_span("tokenize").end()
    assert fake.total_calls() == before
    with tracer.start_as_current_span("embeddings all-MiniLM-L6-v2"):  # named like a GenAI op
        pass
    assert fake.total_calls() > before


def test_without_a_gpu_spans_get_cpu_seconds_and_no_nvml_call(
    shell: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    sampler = hardware.get_sampler()
    assert sampler.ready.wait(5) and sampler.no_gpu_reason  # this machine has no GPU
    cell = textwrap.dedent("""\
        %%traced cpu-only
        import o11ylab
        with o11ylab.span("chat tiny-model", **{"gen_ai.operation.name": "chat"}):
            sum(i * i for i in range(200_000))
        """)
    with capture_spans() as spans:
        shell.run_cell(cell)
    chat = next(s for s in spans if s.name == "chat tiny-model").attributes
    assert chat[semconv.PROCESS_CPU_SECONDS_SPAN] > 0
    assert semconv.HW_ENERGY_SPAN not in chat and semconv.GPU_MEMORY_PEAK_SPAN not in chat
    assert sampler.nvml.calls == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("✓ cpu-only"))
    assert "CPU " in line and "J GPU" not in line
    cell_span = next(s for s in spans if s.name == "cpu-only").attributes
    assert cell_span[semconv.CELL_PROCESS_CPU_SECONDS] >= chat[semconv.PROCESS_CPU_SECONDS_SPAN]
    assert cell_span[semconv.CELL_PROCESS_MEMORY_PEAK] > 0
    assert not any(key.startswith(("o11ylab.cell.gpu", "o11ylab.gpu")) for key in cell_span)


def test_without_a_gpu_a_cells_peak_memory_includes_what_samples_saw_inside_it(
    shell: Any,
) -> None:
    # Memory taken and given back between the cell's own two reads is seen only by a sample
    # taken meanwhile: 300 MiB mapped, touched, held until a sample has seen them, unmapped.
    # (An anonymous map, not a bytearray: in a long process malloc can serve a bytearray from
    # freed heap pages that are resident already, and keep them after, so RSS never moves.)
    sampler = hardware.get_sampler()
    assert sampler.ready.wait(5) and sampler.no_gpu_reason
    assert sampler.running, "the process's sampler must be sampling for this test"
    cell = textwrap.dedent("""\
        %%traced memory-peak
        import mmap, time
        from o11ylab import hardware
        sampler = hardware.get_sampler()
        block = mmap.mmap(-1, 300 * 1024**2)
        for offset in range(0, len(block), mmap.PAGESIZE):
            block[offset] = 1
        seen = sampler.latest.mono if sampler.latest else 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
            sampler.latest is None or sampler.latest.mono <= seen
        ):
            time.sleep(0.05)  # polls the condition: a sample has seen the block
        block.close()
        """)
    with capture_spans() as spans:
        shell.run_cell(cell)
    peak = next(s for s in spans if s.name == "memory-peak").attributes[
        semconv.CELL_PROCESS_MEMORY_PEAK
    ]
    assert peak >= hardware.get_sampler().host_rss() + 250 * 1024**2


def test_status_says_why_there_is_no_gpu(shell: Any) -> None:
    hardware.get_sampler().ready.wait(5)
    notes = get_telemetry().status()["notes"]
    assert any(n.startswith("hardware: CPU only: no NVIDIA driver") for n in notes)


def test_the_gpu_metrics_carry_convention_names_and_attributes(
    fake_gpu: tuple[Any, FakeNvml, Sampler],
) -> None:
    _shell, fake, sampler = fake_gpu
    fake.gpus[0].utilization = 42
    sampler.sample_once()
    reader = get_telemetry().memory_reader
    assert reader is not None
    points: dict[str, list[Any]] = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if not metric.name.startswith(("hw.", "process.", "system.")):
                    continue
                points.setdefault(metric.name, []).extend(
                    (metric.unit, p.value, dict(p.attributes)) for p in metric.data.data_points
                )
    unit, value, attributes = points["hw.gpu.utilization"][0]
    assert (unit, value) == ("1", pytest.approx(0.42))
    assert attributes == {
        "hw.type": "gpu",
        "hw.id": fake.gpus[0].uuid,
        "hw.name": "gpu0",
        "hw.model": "NVIDIA H100 80GB HBM3",
        "hw.vendor": "NVIDIA",
        "hw.driver_version": "570.86.15",
        "hw.gpu.task": "general",
    }
    assert points["hw.gpu.memory.usage"][0][:2] == ("By", GIB)
    assert points["hw.gpu.memory.limit"][0][:2] == ("By", 80 * GIB)
    assert points["hw.gpu.memory.utilization"][0][1] == pytest.approx(1 / 80)
    assert points["hw.power"][0][:2] == ("W", pytest.approx(70.0))
    assert points["hw.energy"][0][:2] == ("J", pytest.approx(1_000_000.0))
    assert points["hw.temperature"][0][:2] == ("Cel", 35)
    modes = {p[2]["cpu.mode"] for p in points["process.cpu.time"]}
    assert modes == {"user", "system"}
    assert points["process.memory.usage"][0][1] > 10 * 1024**2
    assert 0 < points["system.memory.utilization"][0][1] < 1
    states = {p[2]["system.memory.state"] for p in points["system.memory.usage"]}
    assert {"used", "free"} <= states


def test_load_ext_never_waits_for_the_driver(shell: Any) -> None:
    class SlowNvml(FakeNvml):
        def nvmlInit(self) -> None:
            time.sleep(1.0)  # a driver waking a GPU from persistence-off
            super().nvmlInit()

    sampler = Sampler(SlowNvml(), interval_s=0.2, settings=DEFAULTS)
    telemetry = get_telemetry()
    hardware.detach()
    old = hardware.set_sampler(sampler)
    try:
        started = time.perf_counter()
        hardware.attach(telemetry)
        assert time.perf_counter() - started < 0.2
        assert sampler.ready.wait(5) and len(sampler.gpus) == 1
    finally:
        hardware.detach()
        hardware.set_sampler(old)
        hardware.attach(telemetry)


def test_unload_stops_the_sampler_and_removes_every_hook(shell: Any) -> None:
    telemetry = get_telemetry()
    sampler = hardware.get_sampler()
    assert sampler.running
    shell.run_line_magic("unload_ext", "o11ylab")
    try:
        assert not sampler.running
        assert not any(t.name == "o11ylab-hardware" for t in threading.enumerate())
        assert "hardware" not in telemetry.enrichers.names()  # spans and cells alike
    finally:
        shell.run_line_magic("load_ext", "o11ylab")
    assert hardware.get_sampler().running


def test_metrics_reach_prometheus_and_the_otlp_file_and_exit_is_clean(tmp_path: Path) -> None:
    port = free_port()
    script = textwrap.dedent(f"""\
        import sys, time, urllib.request
        sys.path.insert(0, {str(ROOT)!r})
        from tests.fake_nvml import two_gpus
        from o11ylab import hardware
        from o11ylab.hardware import Sampler, HardwareSettings
        hardware.set_sampler(Sampler(two_gpus(), interval_s=0.2, settings=HardwareSettings()))
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        ip.run_line_magic("load_ext", "o11ylab")
        sampler = hardware.get_sampler()
        while sampler.samples_taken < 2:
            time.sleep(0.05)
        print(urllib.request.urlopen("http://127.0.0.1:{port}/metrics", timeout=5).read().decode())
        from o11ylab.telemetry import get_telemetry
        get_telemetry().flush_metrics()
        """)
    env = {
        **os.environ,
        "O11YLAB_PROMETHEUS_PORT": str(port),
        "O11YLAB_RUN_DIR": str(tmp_path / "run"),
    }
    started = time.monotonic()
    done = subprocess.run(
        [PYTHON, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 60
    assert "Traceback" not in done.stderr
    scraped = done.stdout
    assert "hw_gpu_utilization" in scraped
    assert 'hw_id="GPU-bbbbbbbb-0000-0000-0000-000000000000"' in scraped
    assert 'hw_type="gpu"' in scraped
    for name in (
        "hw_energy",
        "hw_power",
        "hw_temperature",
        "hw_gpu_memory_usage",
        "hw_gpu_memory_limit",
        "process_cpu_time",
        "process_memory_usage",
        "system_memory_usage",
    ):
        assert name in scraped, name

    from o11ylab.otlpjson import read_metric_names

    names = read_metric_names(tmp_path / "run")
    assert {"hw.gpu.utilization", "hw.energy", "hw.power", "process.cpu.time"} <= names


def test_the_sampler_keeps_its_rate_and_spends_little_cpu() -> None:
    sampler = Sampler(two_gpus(), interval_s=0.2, settings=DEFAULTS)
    sampler.start()
    try:
        time.sleep(1.1)
    finally:
        sampler.stop()
    assert 4 <= sampler.samples_taken <= 8
    assert sampler.cpu_seconds / sampler.samples_taken < 0.01  # < 10 ms of CPU a sample


def test_a_raising_subscriber_is_removed_not_the_sampler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sampler = Sampler(FakeNvml(), interval_s=0.2, settings=DEFAULTS)
    seen: list[int] = []

    def broken(sample: Any) -> None:
        raise RuntimeError("widget gone")

    sampler.subscribe(broken)
    sampler.subscribe(lambda s: seen.append(1))
    sampler.start()
    try:
        time.sleep(0.7)
    finally:
        sampler.stop()
    assert sampler.subscribers == 1 and len(seen) >= 2
    assert (
        "subscriber failed and was removed (RuntimeError: widget gone)" in capsys.readouterr().err
    )


def test_gpu_check_script_reads_spans_from_a_run_folder(tmp_path: Path) -> None:
    """scripts/gpu_check.sh's checker, against spans shaped like a CUDA run's (no GPU here)."""
    run = tmp_path / "run"
    run.mkdir()

    def attribute(key: str, value: Any) -> dict[str, Any]:
        kind = (
            "doubleValue"
            if isinstance(value, float)
            else ("intValue" if isinstance(value, int) else "stringValue")
        )
        return {"key": key, "value": {kind: str(value) if kind == "intValue" else value}}

    def span(name: str, attrs: dict[str, Any]) -> dict[str, Any]:
        return {
            "traceId": "0" * 31 + "1",
            "spanId": "0" * 15 + "1",
            "name": name,
            "startTimeUnixNano": "1",
            "endTimeUnixNano": "2",
            "attributes": [attribute(k, v) for k, v in attrs.items()],
        }

    good = {
        "gen_ai.operation.name": "text_completion",
        semconv.HW_ENERGY_SPAN: 12.5,
        semconv.GPU_MEMORY_PEAK_SPAN: 300_000_000,
        semconv.GPU_UTILIZATION_MEAN_SPAN: 0.42,
        "gen_ai.usage.output_tokens": 32,
    }
    lines = [{"resourceSpans": [{"scopeSpans": [{"spans": [span("text_completion m", good)]}]}]}]
    (run / "traces.1.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    check = [PYTHON, str(ROOT / "scripts" / "gpu_check_spans.py"), str(run)]
    done = subprocess.run(check, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 generation span" in done.stdout

    bad = dict(good, **{semconv.HW_ENERGY_SPAN: 0.0})
    lines = [{"resourceSpans": [{"scopeSpans": [{"spans": [span("text_completion m", bad)]}]}]}]
    (run / "traces.1.jsonl").write_text(json.dumps(lines[0]) + "\n")
    done = subprocess.run(check, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "energy" in done.stdout + done.stderr


def test_gpu_check_compares_span_energy_with_nvidia_smi_and_tokens_with_the_bound(
    tmp_path: Path,
) -> None:
    """The checker's two GPU comparisons, on a power log shaped like nvidia-smi's (no GPU here)."""
    run = tmp_path / "run"
    run.mkdir()
    t0 = 1_800_000_000  # unix seconds, a whole second
    uuid = "GPU-aaaaaaaa-0000-0000-0000-000000000000"

    def span(name: str, start: float, end: float, attrs: dict[str, Any]) -> dict[str, Any]:
        def value(v: Any) -> dict[str, Any]:
            if isinstance(v, bool):
                return {"boolValue": v}
            if isinstance(v, int):
                return {"intValue": str(v)}
            return {"doubleValue": v} if isinstance(v, float) else {"stringValue": v}

        return {
            "name": name,
            "startTimeUnixNano": str(int(start * 1e9)),
            "endTimeUnixNano": str(int(end * 1e9)),
            "attributes": [{"key": k, "value": value(v)} for k, v in attrs.items()],
        }

    common = {
        "gen_ai.operation.name": "chat",
        semconv.GPU_MEMORY_PEAK_SPAN: 300_000_000,
        semconv.GPU_UTILIZATION_MEAN_SPAN: 0.5,
    }
    spans = [
        span(
            "chat long",
            t0 + 1.0,
            t0 + 3.0,
            {
                **common,
                semconv.HW_ENERGY_SPAN: 210.0,  # nvidia-smi: 100 W x 2 s = 200 J
                semconv.GPU_ENERGY_METHOD: "counter_delta",
                "gen_ai.usage.output_tokens": 200,
            },
        ),
        span(
            "chat short",
            t0 + 3.5,
            t0 + 3.55,
            {
                **common,
                semconv.GPU_ENERGY_METHOD: "too_short",
                semconv.GPU_ENERGY_COUNTER_PERIOD: 0.1,
                "gen_ai.usage.output_tokens": 5,
            },
        ),
    ]
    line = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}
    (run / "traces.1.jsonl").write_text(json.dumps(line) + "\n")
    stamps = [
        time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime(t0 + i // 10)) + f".{i % 10}00"
        for i in range(50)
    ]
    power = tmp_path / "power.csv"
    other = "GPU-bbbbbbbb-0000-0000-0000-000000000000, 999.0"  # another GPU: left out
    power.write_text("".join(f"{s}, {uuid}, 100.0\n{s}, {other}\n" for s in stamps))
    check = [
        PYTHON,
        str(ROOT / "scripts" / "gpu_check_spans.py"),
        str(run),
        "--power-log",
        str(power),
        "--gpu-uuid",
        uuid,
        "--weight-bytes",
        "270000000",
        "--bandwidth",
        "4.8e12",
    ]
    done = subprocess.run(check, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "o11ylab 210.00 J, nvidia-smi 200.00 J over the same windows: ratio 1.050" in (
        done.stdout
    )
    # 205 tokens in 2.05 s = 100 tokens/s against 4.8e12 / 2.7e8 = 17,778 tokens/s.
    assert "measured 100.0, memory-bandwidth bound 17778" in done.stdout
    assert "ratio 0.0056" in done.stdout
    assert "(too_short)" in done.stdout

    done = subprocess.run(
        [*check, "--energy-tolerance", "0.02"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "1.05x nvidia-smi's over the same windows" in done.stderr
    done = subprocess.run(
        [*check[:-4], "--weight-bytes", "270000000", "--bandwidth", "1e9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "the memory-bandwidth bound: impossible" in done.stderr


@pytest.mark.notebook
def test_the_gpu_notebook_runs_headless_on_cpu_and_says_so(
    tmp_path: Path, run_env: dict[str, str]
) -> None:
    """notebooks/04_gpu_inference.ipynb under papermill, with a tiny local model for speed."""
    from o11ylab.models import build_tiny_model

    tiny = build_tiny_model(tmp_path / "tiny-model")
    executed = tmp_path / "04.out.ipynb"
    done = subprocess.run(
        [
            PYTHON,
            "-m",
            "papermill",
            str(ROOT / "notebooks" / "04_gpu_inference.ipynb"),
            str(executed),
            "-k",
            "python3",
            "-p",
            "model",
            str(tiny),
            "-p",
            "generations",
            "2",
            "-p",
            "max_new_tokens",
            "6",
            "--log-level",
            "WARNING",
        ],
        env={**run_env, "USE_GPU": "0"},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = json.loads(executed.read_text())
    text = "\n".join(  # the no-GPU reason is said once, by the monitor's still copy (HTML)
        "".join(o.get("text", ""))
        + "".join(o.get("data", {}).get("text/plain", ""))
        + "".join(o.get("data", {}).get("text/html", ""))
        for c in outputs["cells"]
        if c["cell_type"] == "code"
        for o in c.get("outputs", [])
    )
    assert "Running on the CPU" in text and "No GPU energy here" in text
    assert "no NVIDIA driver on this machine" in text
    assert "2 generations" in text and "tokens/s" in text
    widgets = [
        o
        for c in outputs["cells"]
        for o in c.get("outputs", [])
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert widgets, "the monitor was not displayed"

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from gpu_check_spans import check, read_spans
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    spans = read_spans(Path(run_env["O11YLAB_RUN_DIR"]))
    generations = [
        s
        for s in spans
        if s["attributes"].get("gen_ai.operation.name") == "chat"
        and s["attributes"].get("gen_ai.request.max_tokens") == 6
    ]
    assert len(generations) == 2
    for span in generations:
        assert span["attributes"][semconv.PROCESS_CPU_SECONDS_SPAN] > 0
        assert semconv.HW_ENERGY_SPAN not in span["attributes"]
    problems, _rows = check(spans)
    assert any("GPU energy is None" in p for p in problems)  # the GPU check fails on a CPU, rightly


def test_gpu_check_script_refuses_clearly_without_a_gpu(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "PYTHON": PYTHON}
    done = subprocess.run(
        ["bash", str(script), str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "no NVIDIA GPU here" in done.stderr
