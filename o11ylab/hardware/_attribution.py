"""Per-span attribution: what one span or cell used of the GPUs and the CPU."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import semconv
from .._compat import raw_attributes
from ._energy import INSTANT_POWER, METHOD_OF_SOURCE, TOO_SHORT, lane
from ._sampler import Sampler, _torch_cuda

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, Span

_MAX_OPEN_SPANS = 4096  # spans started and never ended must not grow memory without bound
_GIB = 1024**3


class _TorchPeaks:
    """Peak CUDA memory per open measurement, from torch's allocator, nesting-safe.

    torch keeps one peak per device since the last reset. Each measurement that starts folds
    the peak so far into every open measurement and then resets it, so the window since the
    last reset always lies inside every measurement still open, and each gets its own peak.
    """

    def __init__(self, cuda: Any) -> None:
        self.cuda = cuda
        self._open: dict[int, list[int]] = {}
        self._lock = threading.Lock()
        self._next = 0

    def _devices(self) -> range:
        return range(min(int(self.cuda.device_count()), 16))

    def _fold(self) -> None:
        current = [int(self.cuda.max_memory_allocated(d)) for d in self._devices()]
        for peaks in self._open.values():
            for d, value in enumerate(current):
                peaks[d] = max(peaks[d], value)

    def begin(self) -> int:
        with self._lock:
            self._fold()
            for d in self._devices():
                self.cuda.reset_peak_memory_stats(d)
            self._next += 1
            self._open[self._next] = [int(self.cuda.memory_allocated(d)) for d in self._devices()]
            return self._next

    def end(self, token: int) -> int | None:
        with self._lock:
            if token not in self._open:
                return None
            self._fold()
            return sum(self._open.pop(token))


@dataclass(slots=True)
class _Start:
    mono: float
    cpu: float
    gpus: tuple[int, ...]  # positions measured: attribution may narrow between start and end
    energy: tuple[tuple[float | None, str | None], ...]
    torch_token: int | None
    rss: int | None
    # Instant power (W) per GPU at the start, read only once the counter's period is known:
    # a span that turns out shorter than that period is measured with it.
    instant: tuple[float | None, ...] = ()
    lane: Hashable | None = None  # thread and task, for spans that may overlap (None: not tracked)
    shared: bool = False  # another lane's span was measured on one of these GPUs meanwhile


@dataclass(slots=True)
class Measurement:
    """What one span or cell used. GPU fields are None without a GPU (or a field to read).

    On spans every attribute costs a few microseconds, so the defaults go unsaid: the energy
    source only when it is the power-integral estimate, the peak-memory source only when it is
    NVML's whole-device figure, the GPU count only when there is more than one GPU, "shared"
    only when true. The energy method is always said where there is a GPU to measure (see
    ``_energy`` for what each method is worth); ``energy_j`` is None when it is ``too_short``.
    """

    duration_s: float
    cpu_seconds: float
    gpu_count: int = 0
    energy_j: float | None = None
    energy_source: str | None = None
    memory_peak_bytes: int | None = None
    memory_peak_source: str | None = None
    utilization_mean: float | None = None
    process_memory_peak_bytes: int | None = None
    energy_method: str | None = None
    energy_shared: bool = False
    counter_period_s: float | None = None

    def _qualifiers(self, attributes: dict[str, Any]) -> None:
        if self.gpu_count > 1:
            attributes[semconv.GPU_COUNT] = self.gpu_count
        if self.energy_j is not None and self.energy_source not in (None, "counter"):
            attributes[semconv.GPU_ENERGY_SOURCE] = self.energy_source
        if self.energy_method is not None:
            attributes[semconv.GPU_ENERGY_METHOD] = self.energy_method
            if self.counter_period_s is not None:
                attributes[semconv.GPU_ENERGY_COUNTER_PERIOD] = round(self.counter_period_s, 4)
            if self.energy_shared:
                attributes[semconv.GPU_ENERGY_SHARED] = True
        if self.memory_peak_bytes is not None and self.memory_peak_source == "nvml":
            attributes[semconv.GPU_MEMORY_PEAK_SOURCE] = "nvml"

    def span_attributes(self, output_tokens: Any = None) -> dict[str, Any]:
        attributes: dict[str, Any] = {semconv.PROCESS_CPU_SECONDS_SPAN: round(self.cpu_seconds, 6)}
        if self.energy_j is not None:
            attributes[semconv.HW_ENERGY_SPAN] = self.energy_j
            if type(output_tokens) is int and output_tokens > 0:
                attributes[semconv.GPU_ENERGY_PER_OUTPUT_TOKEN] = self.energy_j / output_tokens
        if self.memory_peak_bytes is not None:
            attributes[semconv.GPU_MEMORY_PEAK_SPAN] = self.memory_peak_bytes
        if self.utilization_mean is not None:
            attributes[semconv.GPU_UTILIZATION_MEAN_SPAN] = self.utilization_mean
        self._qualifiers(attributes)
        return attributes

    def cell_attributes(self) -> dict[str, Any]:
        attributes: dict[str, Any] = {semconv.CELL_PROCESS_CPU_SECONDS: round(self.cpu_seconds, 6)}
        self._qualifiers(attributes)
        if self.energy_j is not None:
            attributes[semconv.CELL_GPU_ENERGY] = self.energy_j
        if self.memory_peak_bytes is not None:
            attributes[semconv.CELL_GPU_MEMORY_PEAK] = self.memory_peak_bytes
        if self.utilization_mean is not None:
            attributes[semconv.CELL_GPU_UTILIZATION_MEAN] = self.utilization_mean
        if self.process_memory_peak_bytes is not None:
            attributes[semconv.CELL_PROCESS_MEMORY_PEAK] = self.process_memory_peak_bytes
        return attributes

    def summary(self) -> dict[str, str]:
        """Fragments for the one-line cell summary, label -> text."""
        return cell_summary(self.cell_attributes())


def format_energy(joules: float) -> str:
    if joules >= 1000:
        return f"{joules / 1000:.2f} kJ"
    if joules >= 1:
        return f"{joules:.1f} J"
    return f"{joules * 1000:.0f} mJ"


def format_bytes(count: float) -> str:
    if count >= _GIB:
        return f"{count / _GIB:.1f} GiB"
    if count >= 1024**2:
        return f"{count / 1024**2:.0f} MiB"
    return f"{count / 1024:.0f} KiB"


class Attributor:
    """Start and end measurements against a sampler; thread-safe, never raises to the caller."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self._torch: _TorchPeaks | None = None
        self._open: dict[int, _Start] = {}  # measurements with a lane, by id, for overlaps
        self._open_lock = threading.Lock()

    def _torch_peaks(self) -> _TorchPeaks | None:
        if not self.sampler.settings.torch_peak:
            return None
        cuda = _torch_cuda()
        if cuda is None:
            return None
        if self._torch is None or self._torch.cuda is not cuda:
            self._torch = _TorchPeaks(cuda)
        return self._torch

    def begin(self, process_memory: bool = False, lane: Hashable | None = None) -> _Start:
        """Start measuring. With a ``lane`` (see ``_energy.lane``) the measurement is checked
        for overlap with other lanes' measurements on the same GPUs."""
        sampler = self.sampler
        gpus = sampler.attributed
        if not gpus:  # the no-GPU path: two clock reads, no NVML, no torch
            return _Start(
                time.monotonic(),
                time.process_time(),
                (),
                (),
                None,
                sampler.host_rss() if process_memory else None,
            )
        torch_peaks = self._torch_peaks()
        token = torch_peaks.begin() if torch_peaks is not None else None
        energy = tuple(sampler.energy_now(p) for p in gpus)
        instant: tuple[float | None, ...] = ()
        if sampler.counter_period_s:
            instant = tuple(
                sampler.nvml.power_instant_w(p) if p in sampler.counter_period_s else None
                for p in gpus
            )
        start = _Start(
            time.monotonic(),
            time.process_time(),
            gpus,
            energy,
            token,
            sampler.host_rss() if process_memory else None,
            instant,
            lane,
        )
        if lane is not None:
            self._track(start)
        return start

    def _track(self, start: _Start) -> None:
        with self._open_lock:
            for other in self._open.values():
                if other.lane != start.lane and not set(other.gpus).isdisjoint(start.gpus):
                    other.shared = start.shared = True
            self._open[id(start)] = start
            if len(self._open) > _MAX_OPEN_SPANS:  # never ended: forget the oldest
                del self._open[next(iter(self._open))]

    def end(self, start: _Start, process_memory: bool = False) -> Measurement:
        sampler = self.sampler
        end_mono = time.monotonic()
        cpu = time.process_time() - start.cpu
        gpus = start.gpus
        window = sampler.window(start.mono, end_mono) if (gpus or process_memory) else []
        rss_peak = None
        if process_memory:
            values = [s.host.rss for s in window if s.host is not None]
            values += [v for v in (start.rss, sampler.host_rss()) if v is not None]
            rss_peak = max(values) if values else None
        if start.lane is not None:
            with self._open_lock:
                self._open.pop(id(start), None)
        if not gpus or not start.energy:
            return Measurement(end_mono - start.mono, cpu, process_memory_peak_bytes=rss_peak)

        energy_total, source = None, None
        for (begin_j, begin_source), position in zip(start.energy, gpus, strict=False):
            if begin_j is None:
                continue
            end_j, end_source = sampler.energy_now(position)
            if end_j is None or end_source != begin_source or end_j < begin_j:
                continue  # a reset counter or a switch of method: no honest number
            energy_total = (energy_total or 0.0) + (end_j - begin_j)
            source = begin_source if source in (None, begin_source) else "mixed"
        method = METHOD_OF_SOURCE.get(source) if source is not None else None
        duration = end_mono - start.mono
        period = sampler.counter_period(gpus) if source == "counter" else None
        if period is not None and duration < period:
            # The counter moved at most once inside the span: its delta is 0 or a whole step.
            energy_total, method = self._instant_energy(start, duration), INSTANT_POWER
            if energy_total is None:
                method = TOO_SHORT

        peak, peak_source = None, None
        if start.torch_token is not None and self._torch is not None:
            peak, peak_source = self._torch.end(start.torch_token), "torch"
        if peak is None:
            total = 0
            seen = False
            for position in gpus:
                # The samples inside the span and one read at its end: memory freed again before
                # the first sample of a short span is missed (torch's peak has no such gap).
                end_used = sampler.nvml.memory_used(position)
                values = [end_used] if end_used is not None else []
                values += [
                    reading.memory_used
                    for s in window
                    if position < len(s.gpus)
                    and (reading := s.gpus[position]) is not None
                    and reading.memory_used is not None
                ]
                if values:
                    total += max(values)
                    seen = True
            peak, peak_source = (total, "nvml") if seen else (None, None)

        utilizations = [
            reading.utilization
            for s in window
            for position in gpus
            if position < len(s.gpus)
            for reading in (s.gpus[position],)
            if reading is not None and reading.utilization is not None
        ]
        if not utilizations:
            # Shorter than a sample. NVML's utilization is itself an average over its last
            # 1/6 s to 1 s, so asking it now would mostly describe the time before the span:
            # the latest sample says as much for no NVML call. Only before any sample, ask.
            latest = sampler.latest
            if latest is not None and end_mono - latest.mono <= 2 * sampler.interval_s:
                utilizations = [
                    r.utilization
                    for p in gpus
                    if p < len(latest.gpus)
                    for r in (latest.gpus[p],)
                    if r is not None and r.utilization is not None
                ]
            else:
                utilizations = [
                    u for u in (sampler.nvml.utilization(p) for p in gpus) if u is not None
                ]
        mean = sum(utilizations) / len(utilizations) if utilizations else None
        return Measurement(
            duration_s=duration,
            cpu_seconds=cpu,
            gpu_count=len(gpus),
            energy_j=energy_total,
            energy_source=source if energy_total is not None else None,
            memory_peak_bytes=peak,
            memory_peak_source=peak_source,
            utilization_mean=mean,
            process_memory_peak_bytes=rss_peak,
            energy_method=method,
            energy_shared=start.shared,
            counter_period_s=period,
        )

    def _instant_energy(self, start: _Start, duration: float) -> float | None:
        """Mean instant power at start and end times the duration, summed over the GPUs; None
        unless every GPU had instant power at both ends."""
        if len(start.instant) != len(start.gpus):
            return None
        joules = 0.0
        for begin_w, position in zip(start.instant, start.gpus, strict=True):
            end_w = self.sampler.nvml.power_instant_w(position) if begin_w is not None else None
            if begin_w is None or end_w is None:
                return None
            joules += (begin_w + end_w) / 2 * duration
        return joules


class _SpanAttribution:
    """The hardware enricher (see ``o11ylab.enrichment``): GPU energy, peak memory,
    utilization and CPU time of each GenAI operation span and each cell span, from its start
    to its end. A cell also gets the process's peak memory."""

    name = "hardware"

    def __init__(self, attributor: Attributor) -> None:
        self.attributor = attributor

    def on_start(
        self, span: Span
    ) -> tuple[bool, _Start] | tuple[float, float, int | None] | float | None:
        attributes = raw_attributes(span)
        cell = attributes is not None and semconv.CELL_SOURCE_SHA256 in attributes
        if (
            not cell
            and (not attributes or semconv.GEN_AI_OPERATION_NAME not in attributes)
            and span.name.partition(" ")[0] not in semconv.ATTRIBUTED_OPERATIONS
        ):
            return None
        try:
            if cell:
                sampler = self.attributor.sampler
                if not sampler.attributed:  # no GPU: see _cell_without_gpu
                    return time.monotonic(), time.process_time(), sampler.host_rss()
                return True, self.attributor.begin(process_memory=True)
            if not self.attributor.sampler.attributed:
                # No GPU: a span's measurement is its CPU time alone, kept as a bare float
                # (every GenAI span pays for this; the general path cost ~8 µs more a call).
                return time.process_time()
            return False, self.attributor.begin(lane=lane())
        except Exception as exc:  # noqa: BLE001 - the registry would drop a raising enricher
            self._skipped(exc)
            return None

    def on_end(
        self,
        span: ReadableSpan,
        state: tuple[bool, _Start] | tuple[float, float, int | None] | float | None,
    ) -> dict[str, Any] | None:
        if state is None:
            return None
        if isinstance(state, float):  # see on_start: what Measurement.span_attributes says
            return {semconv.PROCESS_CPU_SECONDS_SPAN: round(time.process_time() - state, 6)}
        if len(state) == 3:
            try:
                return self._cell_without_gpu(*state)
            except Exception as exc:  # noqa: BLE001 - the registry would drop a raising enricher
                self._skipped(exc)
                return None
        cell, start = state
        try:
            measurement = self.attributor.end(start, process_memory=cell)
        except Exception as exc:  # noqa: BLE001 - the registry would drop a raising enricher
            self._skipped(exc)
            return None
        if cell:
            return measurement.cell_attributes()
        attributes = raw_attributes(span)
        return measurement.span_attributes(attributes.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS))

    def _cell_without_gpu(self, mono: float, cpu: float, rss: int | None) -> dict[str, Any]:
        """What ``Measurement.cell_attributes`` says of a cell without a GPU (CPU time and the
        process's peak memory), without building the measurement: the general path cost a
        traced cell ~7 µs more in bench_extension (issue 13)."""
        sampler = self.attributor.sampler
        attributes: dict[str, Any] = {
            semconv.CELL_PROCESS_CPU_SECONDS: round(time.process_time() - cpu, 6)
        }
        values = [v for v in (rss, sampler.host_rss()) if v is not None]
        latest = sampler.latest
        if latest is not None and latest.mono >= mono:  # samples were taken during the cell
            window = sampler.window(mono, time.monotonic())
            values += [s.host.rss for s in window if s.host is not None]
        if values:
            attributes[semconv.CELL_PROCESS_MEMORY_PEAK] = max(values)
        return attributes

    def _skipped(self, exc: Exception) -> None:
        self.attributor.sampler._say(
            f"span attribution skipped a span ({type(exc).__name__}: {exc})", logging.WARNING
        )


def cell_summary(attributes: Any) -> dict[str, str]:
    """Fragments for a cell's one-line summary, label -> text, from what the hardware enricher
    put on the cell span."""
    parts: dict[str, str] = {}
    energy = attributes.get(semconv.CELL_GPU_ENERGY)
    method = attributes.get(semconv.GPU_ENERGY_METHOD)
    if energy is not None:
        estimate = "~" if method not in (None, "counter_delta") else ""
        shared = " shared" if attributes.get(semconv.GPU_ENERGY_SHARED) else ""
        parts["gpu_energy"] = f"{estimate}{format_energy(energy)} GPU{shared}"
    else:
        period = attributes.get(semconv.GPU_ENERGY_COUNTER_PERIOD)
        if method == TOO_SHORT and period is not None:
            parts["gpu_energy"] = f"GPU J n/a (< {period * 1000:.0f} ms)"
    peak = attributes.get(semconv.CELL_GPU_MEMORY_PEAK)
    if peak is not None:
        parts["gpu_memory"] = f"peak {format_bytes(peak)} GPU"
    utilization = attributes.get(semconv.CELL_GPU_UTILIZATION_MEAN)
    if utilization is not None:
        parts["gpu_utilization"] = f"GPU {utilization * 100:.0f}%"
    cpu = attributes.get(semconv.CELL_PROCESS_CPU_SECONDS)
    if cpu is not None:
        parts["cpu"] = f"CPU {cpu:.2f} s"
    return parts


class Measuring:
    """A running ``measure()``; ``result`` is set when the block ends."""

    def __init__(self, attributor: Attributor) -> None:
        self._attributor = attributor
        self._start = attributor.begin(process_memory=True)
        self.result: Measurement | None = None

    def stop(self) -> Measurement:
        if self.result is None:
            self.result = self._attributor.end(self._start, process_memory=True)
        return self.result


@contextlib.contextmanager
def measure(sampler: Sampler | None = None) -> Iterator[Measuring]:
    """Measure a block yourself: ``with measure() as m: ...``, then ``m.result.energy_j``."""
    if sampler is None:
        from ._process import get_sampler  # the process module builds on this one

        sampler = get_sampler()
    sampler.open()
    measuring = Measuring(Attributor(sampler))
    try:
        yield measuring
    finally:
        measuring.stop()
