"""The sampler: one background thread reading GPUs and the host into a ring buffer."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from .._say import say
from ..config import HardwareSettings, clamp_hardware_interval, load_hardware
from ._energy import PROBE_BUDGET_S, PROBE_POLL_S, CounterProbe
from ._host import _HostReader
from ._nvml import Nvml
from ._types import GpuInfo, GpuReading, NoGpu, Sample

_log = logging.getLogger("o11ylab.hardware")

Subscriber = Callable[[Sample], None]


class Sampler:
    """One background thread sampling GPUs and the host into a ring buffer.

    ``nvml`` is an ``Nvml``, a module with pynvml's surface (a test double), or None for the
    real ``pynvml``. Start and stop it as often as you like; ``ready`` is set once the GPUs are
    known (NVML starts inside the thread, so starting the sampler never waits for a driver).
    """

    def __init__(
        self,
        nvml: Nvml | Any | None = None,
        *,
        interval_s: float | None = None,
        history: int | None = None,
        settings: HardwareSettings | None = None,
    ) -> None:
        settings = settings or load_hardware()
        self.settings = settings
        self.interval_s = clamp_hardware_interval(
            interval_s if interval_s is not None else settings.interval_s
        )
        self._use_nvml = settings.nvml or nvml is not None
        self.nvml = nvml if isinstance(nvml, Nvml) else Nvml(nvml, say=self._say)
        if isinstance(nvml, Nvml):
            nvml._say = self._say
        self.history: deque[Sample] = deque(maxlen=history or settings.history)
        self.latest: Sample | None = None
        self.gpus: list[GpuInfo] = []
        self.attributed: tuple[int, ...] = ()  # positions in gpus that attribution sums over
        self.attribution_basis = "none"  # "torch" (GPUs torch allocated on), "visible", "none"
        self._visible: tuple[int, ...] = ()
        self._torch_uuids: dict[int, str | None] = {}
        self.no_gpu_reason: str | None = None
        self.notes: list[str] = []  # what was said once: no GPU, missing fields, driver errors
        self.note_sinks: list[Callable[[str], None]] = []
        self.ready = threading.Event()
        self.samples_taken = 0
        self.cpu_seconds = 0.0  # CPU the sampling itself used (thread time)
        self._opened = False
        self._host: _HostReader | None = None
        self._host_failed = False
        self._lock = threading.Lock()
        self._subscribers: list[Subscriber] = []
        self.stop_listeners: list[Callable[[], None]] = []  # told when sampling stops
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._integrated: dict[int, tuple[float, float, float]] = {}  # gpu -> (joules, mono, watts)
        # The energy counter's update period per GPU position, measured once in the thread's idle
        # time (see _energy); absent while unknown. counter_probed is set when that is settled.
        self.counter_period_s: dict[int, float] = {}
        self.counter_probed = threading.Event()
        self.probe_cpu_seconds = 0.0  # the probe's CPU, apart from cpu_seconds (it runs once)
        self._probe: CounterProbe | None = None

    # -- saying things once

    def _say(self, text: str, level: int = logging.INFO) -> None:
        if text in self.notes:
            return
        self.notes.append(text)
        # Something changed under a running kernel (a warning): the user should see it, once.
        # Information (which GPUs, no GPU and why) goes to the log and %o11y status only.
        say(text, level=level, show=level >= logging.WARNING)
        for sink in list(self.note_sinks):
            try:
                sink(f"hardware: {text}")
            except Exception:  # noqa: BLE001 - a closed notebook's sink: say it elsewhere
                pass

    # -- life cycle

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def open(self) -> None:
        """Find the GPUs (NVML) and start psutil; the thread does this itself when needed."""
        if self._opened:
            return
        self._opened = True
        if not self._use_nvml:
            self._no_gpu("O11YLAB_NVML=0 turns GPU sampling off")
        else:
            try:
                self.gpus = self.nvml.open()
            except NoGpu as exc:
                self._no_gpu(str(exc))
            else:
                self.no_gpu_reason = None
                self._visible = _visible(self.gpus, self.settings.cuda_visible_devices)
                self.attributed, self.attribution_basis = self._visible, "visible"
                if not self.counter_probed.is_set():
                    self._probe = CounterProbe(
                        range(len(self.gpus)),
                        self.nvml.energy_j,
                        lambda gpu: self.nvml.supports(gpu, "energy"),
                    )
                models = ", ".join(sorted({g.model for g in self.gpus}))
                self._say(
                    f"{len(self.gpus)} GPU{'s' if len(self.gpus) != 1 else ''} ({models}), "
                    f"sampled every {self.interval_s:g} s"
                )
        if self._host is None and not self._host_failed:
            try:
                self._host = _HostReader()
            except Exception as exc:  # noqa: BLE001 - psutil missing or refused: GPUs still work
                self._host_failed = True
                self._say(
                    f"kernel CPU and memory unavailable ({type(exc).__name__}: {exc})",
                    logging.WARNING,
                )
        self.ready.set()

    def _no_gpu(self, reason: str) -> None:
        self.gpus = []
        self.attributed, self._visible, self.attribution_basis = (), (), "none"
        self.no_gpu_reason = reason
        self.counter_probed.set()  # no counter to time
        self._say(f"CPU only: {reason}")

    def close(self) -> None:
        if self._opened:
            self.nvml.close()
            self._opened = False

    def start(self) -> None:
        """Start sampling (idempotent)."""
        if self.running:
            return
        self._stop = threading.Event()
        thread = threading.Thread(
            target=self._run, args=(self._stop,), name="o11ylab-hardware", daemon=True
        )
        self._thread = thread
        thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop sampling and release NVML; the ring buffer stays for what ended before."""
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout if timeout is not None else self.interval_s + 2)
        self.close()
        if thread is not None:
            for listener in list(self.stop_listeners):
                try:
                    listener()
                except Exception:  # noqa: BLE001 - a closed widget must not block a stop
                    pass

    def set_interval(self, seconds: float) -> None:
        self.interval_s = clamp_hardware_interval(seconds)

    def subscribe(self, callback: Subscriber) -> None:
        """Call ``callback(sample)`` in the sampler thread after every sample."""
        if callback not in self._subscribers:
            self._subscribers.append(callback)

    def unsubscribe(self, callback: Subscriber) -> None:
        if callback in self._subscribers:
            self._subscribers.remove(callback)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def _run(self, stop: threading.Event) -> None:
        self.open()
        next_due = time.monotonic()
        while not stop.is_set():
            began = time.thread_time()
            try:
                sample = self.sample_once()
            except Exception as exc:  # noqa: BLE001 - the sampler outlives any one bad reading
                self._say(
                    f"a hardware sample failed ({type(exc).__name__}: {exc})", logging.WARNING
                )
                sample = None
            self.cpu_seconds += time.thread_time() - began
            if sample is not None:
                for callback in list(self._subscribers):
                    try:
                        callback(sample)
                    except Exception as exc:  # noqa: BLE001 - a widget must not stop sampling
                        self.unsubscribe(callback)
                        self._say(
                            f"a hardware subscriber failed and was removed "
                            f"({type(exc).__name__}: {exc})",
                            logging.WARNING,
                        )
            next_due += self.interval_s
            now = time.monotonic()
            if next_due < now:  # fell behind (a suspended laptop, a stalled driver): re-anchor
                next_due = now + self.interval_s
            self._wait(stop, next_due)

    def _wait(self, stop: threading.Event, due: float) -> None:
        """Wait for the next sample; meanwhile, until it is done, probe the energy counters."""
        while self._probe is not None:
            now = time.monotonic()
            if now >= due:
                return
            began = time.thread_time()
            self._probe.step(now)
            self.probe_cpu_seconds += time.thread_time() - began
            if self._probe.done:
                self._probed(self._probe)
            elif stop.wait(min(PROBE_POLL_S, due - now)):
                return
        stop.wait(max(0.0, due - time.monotonic()))

    def _probed(self, probe: CounterProbe) -> None:
        self._probe = None
        self.counter_period_s = dict(probe.periods)
        for position, period in sorted(probe.periods.items()):
            self._say(
                f"{self.gpus[position].name}: the energy counter updates every "
                f"{period * 1000:.0f} ms; shorter spans are not given its joules"
            )
        for position in probe.unknown:
            self._say(
                f"{self.gpus[position].name}: the energy counter did not move enough in "
                f"{PROBE_BUDGET_S:g} s to time its updates; spans use its delta as it is"
            )
        self.counter_probed.set()

    # -- sampling

    def sample_once(self) -> Sample:
        """Take one sample now, append it to the ring buffer and return it."""
        self.open()
        mono = time.monotonic()
        readings: list[GpuReading | None] = []
        for position in range(len(self.gpus)):
            reading = self.nvml.read(position)
            if reading is not None and reading.energy_j is None and reading.power_w is not None:
                reading = self._integrate(position, reading, mono)
            readings.append(reading)
        host = None
        if self._host is not None:
            try:
                host = self._host.read()
            except Exception as exc:  # noqa: BLE001 - the GPUs are still worth sampling
                self._say(
                    f"reading kernel CPU and memory failed ({type(exc).__name__}: {exc})",
                    logging.WARNING,
                )
        if self.gpus:
            self._follow_torch()
        sample = Sample(mono=mono, wall=time.time(), gpus=tuple(readings), host=host)
        with self._lock:
            self.history.append(sample)
            self.latest = sample
        self.samples_taken += 1
        return sample

    def _follow_torch(self) -> None:
        """Attribute to the GPUs torch allocated on, once it has: on an 8-GPU host a model on one
        GPU must not be charged the idle draw of the other seven. No NVML call: torch's own
        allocator stats and device UUIDs, matched to NVML's."""
        cuda = _torch_cuda()
        if cuda is None:
            return
        try:
            used: list[int] = []
            for device in range(min(int(cuda.device_count()), 16)):
                if not cuda.memory_reserved(device):
                    continue
                if device not in self._torch_uuids:
                    uuid = getattr(cuda.get_device_properties(device), "uuid", None)
                    self._torch_uuids[device] = str(uuid).lower() if uuid is not None else None
                uuid = self._torch_uuids[device]
                for position, info in enumerate(self.gpus):
                    if uuid and info.uuid.lower().removeprefix("gpu-") == uuid.removeprefix("gpu-"):
                        used.append(position)
        except Exception:  # noqa: BLE001 - old torch without uuids, a device gone: keep as is
            return
        if used:
            self.attributed, self.attribution_basis = tuple(sorted(set(used))), "torch"

    def _integrate(self, position: int, reading: GpuReading, mono: float) -> GpuReading:
        """Energy from power samples (trapezoids) on GPUs without NVML's energy counter."""
        assert reading.power_w is not None
        joules, last_mono, last_watts = self._integrated.get(position, (0.0, mono, reading.power_w))
        step = mono - last_mono
        if step > 5 * self.interval_s:  # a gap (stopped, suspended): don't invent a ramp
            step = self.interval_s
            last_watts = reading.power_w
        joules += (last_watts + reading.power_w) / 2 * max(step, 0.0)
        self._integrated[position] = (joules, mono, reading.power_w)
        return GpuReading(
            utilization=reading.utilization,
            memory_used=reading.memory_used,
            memory_total=reading.memory_total,
            power_w=reading.power_w,
            energy_j=joules,
            energy_source="power",
            temperature_c=reading.temperature_c,
            sm_clock_mhz=reading.sm_clock_mhz,
        )

    def window(self, start: float, end: float) -> list[Sample]:
        """Samples taken between two ``time.monotonic()`` readings, oldest first."""
        found: list[Sample] = []
        with self._lock:
            for sample in reversed(self.history):
                if sample.mono < start:
                    break
                if sample.mono <= end:
                    found.append(sample)
        found.reverse()
        return found

    def recent(self, count: int) -> list[Sample]:
        with self._lock:
            size = len(self.history)
            return [self.history[i] for i in range(max(0, size - count), size)]

    def counter_period(self, positions: Sequence[int]) -> float | None:
        """The longest known counter period among these GPUs (None: none known)."""
        periods = [self.counter_period_s[p] for p in positions if p in self.counter_period_s]
        return max(periods) if periods else None

    def energy_now(self, position: int) -> tuple[float | None, str | None]:
        """Cumulative joules of one GPU now: NVML's counter, or the power integral estimate."""
        if self.nvml.supports(position, "energy"):
            value = self.nvml.energy_j(position)
            if value is not None:
                return value, "counter"
        integrated = self._integrated.get(position)
        if integrated is None:
            return None, None
        joules, last_mono, watts = integrated
        return joules + watts * max(0.0, time.monotonic() - last_mono), "power"

    def host_rss(self) -> int | None:
        if self._host is None:
            return None
        try:
            return self._host.rss()
        except Exception:  # noqa: BLE001 - a vanished process: no RSS, not an error
            return None

    def describe(self) -> str:
        """One line for ``%o11y status`` and the monitor."""
        if not self.ready.is_set():
            return "hardware: starting"
        if self.no_gpu_reason:
            return f"CPU only: {self.no_gpu_reason}"
        described = f"{len(self.gpus)} GPU(s): " + ", ".join(
            f"{g.name} {g.model}" for g in self.gpus
        )
        charged = ", ".join(self.gpus[p].name for p in self.attributed) or "none"
        why = {"torch": "where torch allocates", "visible": "CUDA_VISIBLE_DEVICES or all"}.get(
            self.attribution_basis, self.attribution_basis
        )
        return f"{described}; spans are charged for {charged} ({why})"


def _torch_cuda() -> Any | None:
    """torch.cuda when the user's code already put torch on CUDA; never imports torch."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    cuda = getattr(torch, "cuda", None)
    try:
        return cuda if cuda is not None and cuda.is_initialized() else None
    except Exception:  # noqa: BLE001 - torch in a broken state: measure without it
        return None


def _visible(gpus: Sequence[GpuInfo], cuda_visible: str | None) -> tuple[int, ...]:
    """Positions of the GPUs this process may use, from CUDA_VISIBLE_DEVICES."""
    everything = tuple(range(len(gpus)))
    if cuda_visible is None or not cuda_visible.strip():
        return everything if cuda_visible is None else ()
    chosen: list[int] = []
    for entry in cuda_visible.split(","):
        entry = entry.strip()
        if not entry:
            continue
        if entry.lstrip("-").isdigit():
            number = int(entry)
            if number < 0:
                break  # CUDA stops at the first invalid index
            matches = [p for p, g in enumerate(gpus) if g.index == number]
        else:
            matches = [p for p, g in enumerate(gpus) if g.uuid == entry or g.uuid.startswith(entry)]
        if not matches:
            break
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return tuple(chosen)
