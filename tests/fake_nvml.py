"""A test double for ``pynvml``: NVIDIA GPUs that do not exist on this machine.

Stated plainly: the machines these tests run on have no GPU, so the NVML-backed code in
``o11ylab.hardware`` is exercised through this fake. It has pynvml's function names and return
shapes (structs with ``.gpu`` / ``.used`` / ``.total``, milliwatts, millijoules, degrees) and it
raises pynvml's own exception classes, made the way pynvml makes them
(``NVMLError(NVML_ERROR_NOT_SUPPORTED)`` is an ``NVMLError_NotSupported``). The real no-GPU
path is tested separately, against the real ``pynvml``.

A ``FakeGpu`` is either scripted (set its fields; ``advance()`` moves the energy counter) or
``live``: utilization, power and temperature then follow the clock, and the energy counter is
the integral of that power, so a monitor in a browser shows values that change. With
``counter_period_s`` the energy counter behaves as a real one does: it also grows with the
clock at ``power_mw``, but only in steps, every ``counter_period_s`` seconds (about 0.1 s on
current GPUs). Instant power (``NVML_FI_DEV_POWER_INSTANT`` through
``nvmlDeviceGetFieldValues``) is the current power; put ``"NVML_FI_DEV_POWER_INSTANT"`` in
``unsupported`` for a GPU that lacks the field, as NVML says it: per field, not by raising.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml

GIB = 1024**3


@dataclass
class FakeGpu:
    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    memory_total: int = 80 * GIB
    memory_used: int = 1 * GIB
    utilization: int = 0  # percent, as NVML reports it
    power_mw: int = 70_000
    energy_mj: int = 1_000_000_000
    temperature: int = 35
    sm_clock: int = 1_980
    power_limit_mw: int = 700_000
    unsupported: set[str] = field(default_factory=set)  # NVML function names that say NotSupported
    failing: dict[str, int] = field(default_factory=dict)  # function name -> NVML error code
    live: bool = False
    counter_period_s: float | None = None  # the energy counter steps with the clock, this often
    _born: float = field(default_factory=time.monotonic)

    def counter_mj(self) -> int:
        """What NVML's energy counter says now."""
        if self.live:
            return self.live_energy_mj()
        if self.counter_period_s is None:
            return self.energy_mj
        steps = int((time.monotonic() - self._born) / self.counter_period_s)
        return self.energy_mj + int(self.power_mw * steps * self.counter_period_s)

    def advance(self, seconds: float, watts: float | None = None) -> None:
        """Let time pass on the GPU: the energy counter grows by power x time."""
        if watts is not None:
            self.power_mw = int(watts * 1000)
        self.energy_mj += int(self.power_mw * seconds)

    # Live mode: a slow wave, so every sample differs from the last.
    def _phase(self) -> float:
        return (time.monotonic() - self._born) / 3.0

    def live_utilization(self) -> int:
        return int(50 + 45 * math.sin(self._phase()))

    def live_power_mw(self) -> int:
        return int(150_000 + 100_000 * math.sin(self._phase()))

    def live_energy_mj(self) -> int:
        # Integral of live_power_mw over time (mW x s = mJ).
        t = time.monotonic() - self._born
        return self.energy_mj + int(150_000 * t + 300_000 * (1 - math.cos(t / 3.0)))


class FakeNvml:
    """Stands where the ``pynvml`` module stands. ``calls`` counts each function called."""

    NVMLError = pynvml.NVMLError
    NVMLError_NotSupported = pynvml.NVMLError_NotSupported
    NVMLError_FunctionNotFound = pynvml.NVMLError_FunctionNotFound
    NVMLError_NoPermission = pynvml.NVMLError_NoPermission
    NVMLError_GpuIsLost = pynvml.NVMLError_GpuIsLost
    NVMLError_LibraryNotFound = pynvml.NVMLError_LibraryNotFound
    NVMLError_DriverNotLoaded = pynvml.NVMLError_DriverNotLoaded
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
    NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM
    NVML_FI_DEV_POWER_INSTANT = pynvml.NVML_FI_DEV_POWER_INSTANT

    def __init__(
        self,
        gpus: list[FakeGpu] | None = None,
        init_error: int | None = None,
        driver: str = "570.86.15",
    ) -> None:
        self.gpus = list(gpus if gpus is not None else [FakeGpu()])
        self.init_error = init_error
        self.driver = driver
        self.calls: Counter[str] = Counter()
        self.initialised = 0
        self._lock = threading.Lock()

    # -- plumbing

    def _count(self, name: str) -> None:
        with self._lock:
            self.calls[name] += 1

    def _device(self, name: str, handle: FakeGpu) -> FakeGpu:
        self._count(name)
        if name in handle.unsupported:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if name in handle.failing:
            raise pynvml.NVMLError(handle.failing[name])
        return handle

    def total_calls(self) -> int:
        return sum(self.calls.values())

    # -- the pynvml surface o11ylab uses

    def nvmlInit(self) -> None:
        self._count("nvmlInit")
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self._count("nvmlShutdown")
        self.initialised -= 1

    def nvmlDeviceGetCount(self) -> int:
        self._count("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlSystemGetDriverVersion(self) -> str:
        self._count("nvmlSystemGetDriverVersion")
        return self.driver

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        self._count("nvmlDeviceGetHandleByIndex")
        return self.gpus[index]

    def nvmlDeviceGetName(self, handle: FakeGpu) -> str:
        return self._device("nvmlDeviceGetName", handle).name

    def nvmlDeviceGetUUID(self, handle: FakeGpu) -> str:
        return self._device("nvmlDeviceGetUUID", handle).uuid

    def nvmlDeviceGetMemoryInfo(self, handle: FakeGpu) -> Any:
        gpu = self._device("nvmlDeviceGetMemoryInfo", handle)
        return SimpleNamespace(
            total=gpu.memory_total, used=gpu.memory_used, free=gpu.memory_total - gpu.memory_used
        )

    def nvmlDeviceGetUtilizationRates(self, handle: FakeGpu) -> Any:
        gpu = self._device("nvmlDeviceGetUtilizationRates", handle)
        return SimpleNamespace(
            gpu=gpu.live_utilization() if gpu.live else gpu.utilization, memory=0
        )

    def nvmlDeviceGetPowerUsage(self, handle: FakeGpu) -> int:
        gpu = self._device("nvmlDeviceGetPowerUsage", handle)
        return gpu.live_power_mw() if gpu.live else gpu.power_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: FakeGpu) -> int:
        return self._device("nvmlDeviceGetTotalEnergyConsumption", handle).counter_mj()

    def nvmlDeviceGetFieldValues(self, handle: FakeGpu, field_ids: list[int]) -> list[Any]:
        gpu = self._device("nvmlDeviceGetFieldValues", handle)
        values = []
        for field_id in field_ids:
            known = field_id == pynvml.NVML_FI_DEV_POWER_INSTANT
            supported = known and "NVML_FI_DEV_POWER_INSTANT" not in gpu.unsupported
            milliwatts = gpu.live_power_mw() if gpu.live else gpu.power_mw
            values.append(
                SimpleNamespace(
                    fieldId=field_id,
                    nvmlReturn=pynvml.NVML_SUCCESS
                    if supported
                    else pynvml.NVML_ERROR_NOT_SUPPORTED,
                    valueType=pynvml.NVML_VALUE_TYPE_UNSIGNED_INT,
                    value=SimpleNamespace(uiVal=milliwatts if supported else 0),
                )
            )
        return values

    def nvmlDeviceGetTemperature(self, handle: FakeGpu, sensor: int) -> int:
        gpu = self._device("nvmlDeviceGetTemperature", handle)
        if gpu.live:
            return int(gpu.temperature + 20 + 10 * math.sin(gpu._phase()))
        return gpu.temperature

    def nvmlDeviceGetClockInfo(self, handle: FakeGpu, clock: int) -> int:
        return self._device("nvmlDeviceGetClockInfo", handle).sm_clock

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: FakeGpu) -> int:
        return self._device("nvmlDeviceGetEnforcedPowerLimit", handle).power_limit_mw


def two_gpus(**overrides: Any) -> FakeNvml:
    """Two GPUs of different models, as on a mixed workstation."""
    return FakeNvml(
        [
            FakeGpu(
                name="NVIDIA H100 80GB HBM3",
                uuid="GPU-aaaaaaaa-0000-0000-0000-000000000000",
                **overrides,
            ),
            FakeGpu(
                name="NVIDIA A10G",
                uuid="GPU-bbbbbbbb-0000-0000-0000-000000000000",
                memory_total=24 * GIB,
                power_limit_mw=300_000,
                **overrides,
            ),
        ]
    )
