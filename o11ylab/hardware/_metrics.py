"""The hw.*, process.* and system.* metrics, observed from the latest sample (never NVML).

``opentelemetry-instrumentation-system-metrics`` (0.66b2) was tried for the process.* and
system.* half and dropped: it names the same metrics but not the same attributes
(``process.cpu.time`` by ``type``, not ``cpu.mode``; ``system.memory.usage`` by ``state``, not
``system.memory.state``, and as a gauge; ``system.cpu.utilization`` per CPU and state, where
this is one figure for the host), has no ``system.memory.limit``, and reads psutil again in
the export thread, while the sampler reads it anyway for attribution and the monitor. The
hw.* (GPU) half has no maintained counterpart.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from .. import semconv
from ._sampler import Sampler
from ._types import GpuInfo, GpuReading, HostReading

CurrentSampler = Callable[[], Sampler | None]  # the process's sampler at export time


def _gpu_points(
    current: CurrentSampler,
    value: Callable[[GpuReading, GpuInfo], float | None],
    extra: Mapping[str, str] | None = None,
) -> Iterator[tuple[float, dict[str, str]]]:
    sampler = current()
    if sampler is None or not sampler.running:
        return
    sample = sampler.latest
    if sample is None:
        return
    for info, reading in zip(sampler.gpus, sample.gpus, strict=False):
        if reading is None:
            continue
        number = value(reading, info)
        if number is not None:
            attributes = info.attributes
            if extra:
                attributes.update(extra)
            yield number, attributes


def _host_points(
    current: CurrentSampler,
    value: Callable[[HostReading], Iterable[tuple[float | None, dict[str, str]]]],
) -> Iterator[tuple[float, dict[str, str]]]:
    sampler = current()
    if sampler is None or not sampler.running or sampler.latest is None:
        return
    host = sampler.latest.host
    if host is None:
        return
    for number, attributes in value(host):
        if number is not None:
            yield number, attributes


class _Meters:
    """The meters the instruments are registered on: each once (a second set of callbacks would
    double every point), and forgotten when the meter itself is gone."""

    def __init__(self) -> None:
        self._seen: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()

    def first_time(self, meter: Any) -> bool:
        with self._lock:
            if meter in self._seen:
                return False
            self._seen.add(meter)
            return True


_METERS = _Meters()


def register_instruments(meter: Any, current: CurrentSampler) -> None:
    """The observable instruments, once per meter; each reads the latest sample, not NVML."""
    if not _METERS.first_time(meter):
        return
    from opentelemetry.metrics import Observation

    def observing(points: Callable[[], Iterator[tuple[float, dict[str, str]]]]) -> Any:
        def callback(_options: Any) -> list[Observation]:
            try:
                return [Observation(v, a) for v, a in points()]
            except Exception:  # noqa: BLE001 - a metric callback must never break the exporter
                return []

        return callback

    def gpu(
        value: Callable[[GpuReading, GpuInfo], float | None],
        extra: Mapping[str, str] | None = None,
    ) -> Iterator[tuple[float, dict[str, str]]]:
        return _gpu_points(current, value, extra)

    def host(
        value: Callable[[HostReading], Iterable[tuple[float | None, dict[str, str]]]],
    ) -> Iterator[tuple[float, dict[str, str]]]:
        return _host_points(current, value)

    task = {semconv.HW_GPU_TASK: semconv.HW_GPU_TASK_GENERAL}
    meter.create_observable_gauge(
        semconv.METRIC_HW_GPU_UTILIZATION,
        unit="1",
        description="Fraction of time the GPU spent on work (NVML).",
        callbacks=[observing(lambda: gpu(lambda r, i: r.utilization, task))],
    )
    meter.create_observable_up_down_counter(
        semconv.METRIC_HW_GPU_MEMORY_USAGE,
        unit="By",
        description="GPU memory used.",
        callbacks=[observing(lambda: gpu(lambda r, i: r.memory_used))],
    )
    meter.create_observable_up_down_counter(
        semconv.METRIC_HW_GPU_MEMORY_LIMIT,
        unit="By",
        description="Size of the GPU memory.",
        callbacks=[observing(lambda: gpu(lambda r, i: r.memory_total or i.memory_total))],
    )
    meter.create_observable_gauge(
        semconv.METRIC_HW_GPU_MEMORY_UTILIZATION,
        unit="1",
        description="Fraction of GPU memory used.",
        callbacks=[observing(lambda: gpu(lambda r, i: r.memory_fraction))],
    )
    meter.create_observable_gauge(
        semconv.METRIC_HW_POWER,
        unit="W",
        description="Power drawn by the GPU.",
        callbacks=[observing(lambda: gpu(lambda r, i: r.power_w))],
    )
    meter.create_observable_counter(
        semconv.METRIC_HW_ENERGY,
        unit="J",
        description="Energy used by the GPU (NVML counter, or integrated power where it has none).",
        callbacks=[observing(lambda: gpu(lambda r, i: r.energy_j))],
    )
    meter.create_observable_gauge(
        semconv.METRIC_HW_TEMPERATURE,
        unit="Cel",
        description="GPU temperature.",
        callbacks=[observing(lambda: gpu(lambda r, i: r.temperature_c))],
    )

    mode = semconv.CPU_MODE
    meter.create_observable_counter(
        semconv.METRIC_PROCESS_CPU_TIME,
        unit="s",
        description="CPU seconds of the kernel process.",
        callbacks=[
            observing(
                lambda: host(
                    lambda h: [(h.cpu_user_s, {mode: "user"}), (h.cpu_system_s, {mode: "system"})]
                )
            )
        ],
    )
    meter.create_observable_gauge(
        semconv.METRIC_PROCESS_CPU_UTILIZATION,
        unit="1",
        description="CPU used by the kernel process, as a fraction of the CPUs it may use.",
        callbacks=[observing(lambda: host(lambda h: [(h.cpu_utilization, {})]))],
    )
    meter.create_observable_up_down_counter(
        semconv.METRIC_PROCESS_MEMORY_USAGE,
        unit="By",
        description="Resident memory of the kernel.",
        callbacks=[observing(lambda: host(lambda h: [(h.rss, {})]))],
    )
    meter.create_observable_up_down_counter(
        semconv.METRIC_PROCESS_MEMORY_VIRTUAL,
        unit="By",
        description="Virtual memory of the kernel.",
        callbacks=[observing(lambda: host(lambda h: [(h.vms, {})]))],
    )
    meter.create_observable_gauge(
        semconv.METRIC_SYSTEM_CPU_UTILIZATION,
        unit="1",
        description="CPU used on the host, all CPUs.",
        callbacks=[observing(lambda: host(lambda h: [(h.system_cpu_utilization, {})]))],
    )
    state = semconv.SYSTEM_MEMORY_STATE
    meter.create_observable_up_down_counter(
        semconv.METRIC_SYSTEM_MEMORY_USAGE,
        unit="By",
        description="Host memory by state.",
        callbacks=[
            observing(
                lambda: host(
                    lambda h: [
                        (h.memory_used, {state: "used"}),
                        (h.memory_free, {state: "free"}),
                        (h.memory_cached, {state: "cached"}),
                        (h.memory_buffers, {state: "buffers"}),
                    ]
                )
            )
        ],
    )
    meter.create_observable_up_down_counter(
        semconv.METRIC_SYSTEM_MEMORY_LIMIT,
        unit="By",
        description="Host memory in total.",
        callbacks=[observing(lambda: host(lambda h: [(h.memory_total, {})]))],
    )
    meter.create_observable_gauge(
        semconv.METRIC_SYSTEM_MEMORY_UTILIZATION,
        unit="1",
        description="Fraction of host memory in use (not available).",
        callbacks=[observing(lambda: host(lambda h: [(h.memory_fraction, {})]))],
    )
