"""What a sample holds: the GPUs as NVML names them, one reading per GPU and of the host."""

from __future__ import annotations

from dataclasses import dataclass

from .. import semconv


@dataclass(frozen=True)
class GpuInfo:
    """A GPU as NVML names it; ``attributes`` are the semantic-convention metric attributes."""

    index: int
    uuid: str
    model: str
    driver_version: str | None = None
    memory_total: int | None = None
    power_limit_w: float | None = None

    @property
    def name(self) -> str:
        return f"gpu{self.index}"

    @property
    def attributes(self) -> dict[str, str]:
        attributes = {
            semconv.HW_TYPE: semconv.HW_TYPE_GPU,
            semconv.HW_ID: self.uuid,
            semconv.HW_NAME: self.name,
            semconv.HW_MODEL: self.model,
            semconv.HW_VENDOR: semconv.HW_VENDOR_NVIDIA,
        }
        if self.driver_version:
            attributes[semconv.HW_DRIVER_VERSION] = self.driver_version
        return attributes


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One GPU at one moment; a field is None when this GPU cannot report it."""

    utilization: float | None = None  # 0..1
    memory_used: int | None = None  # bytes
    memory_total: int | None = None  # bytes
    power_w: float | None = None
    energy_j: float | None = None  # cumulative
    energy_source: str | None = None  # "counter" (NVML) or "power" (integrated by o11ylab)
    temperature_c: float | None = None
    sm_clock_mhz: float | None = None

    @property
    def memory_fraction(self) -> float | None:
        if self.memory_used is None or not self.memory_total:
            return None
        return self.memory_used / self.memory_total


@dataclass(frozen=True, slots=True)
class HostReading:
    """The kernel process and the host at one moment."""

    cpu_user_s: float
    cpu_system_s: float
    cpu_utilization: float  # of the CPUs this process may use, 0..1
    cpus: int
    rss: int
    vms: int
    system_cpu_utilization: float
    memory_total: int
    memory_available: int
    memory_used: int
    memory_free: int
    memory_cached: int | None
    memory_buffers: int | None

    @property
    def memory_fraction(self) -> float:
        return 1 - self.memory_available / self.memory_total if self.memory_total else 0.0


@dataclass(frozen=True, slots=True)
class Sample:
    mono: float  # time.monotonic(), comparable with span start/end measurements
    wall: float  # time.time()
    gpus: tuple[GpuReading | None, ...]  # one per Sampler.gpus; None for a lost GPU
    host: HostReading | None


class NoGpu(Exception):
    """NVML cannot be used here; the message says why, in words for the user."""
