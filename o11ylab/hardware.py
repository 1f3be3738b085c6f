"""GPU and CPU telemetry: one background sampler, the ``hw.*`` metrics, per-span attribution.

One ``Sampler`` per process reads, in its own thread and never in the cell's: NVML (through
``nvidia-ml-py``, ``import pynvml``) for every visible NVIDIA GPU (utilization, memory used and
total, power, the cumulative energy counter, temperature, SM clock) and psutil for the kernel
process and the host (CPU time and utilization, resident and virtual memory, host memory). It
keeps a ring buffer of samples, which feeds three things:

* **metrics** with the semantic-convention names in ``semconv`` (``hw.gpu.utilization``,
  ``hw.gpu.memory.usage``/``.limit``/``.utilization``, ``hw.power``, ``hw.energy``,
  ``hw.temperature`` with ``hw.type=gpu``, ``hw.id``, ``hw.name``, ``hw.model``, ``hw.vendor``;
  ``process.cpu.*``, ``process.memory.*``, ``system.cpu.utilization``, ``system.memory.*``),
  observed from the latest sample, so exporting them never touches the GPU;
* **per-span attribution**: every traced cell and every GenAI operation span (chat,
  embeddings, retrieval, text_completion, ...) gets the GPU energy it used, read from NVML's
  millijoule counter at start and end (or integrated from power samples on GPUs without the
  counter), its peak GPU memory (torch's allocator peak when torch runs on CUDA, NVML's device
  memory otherwise), the mean GPU utilization over its samples, the process CPU seconds, and
  on generation spans the energy per output token. Without a GPU it costs no NVML call at all;
* **the live widget** (``o11ylab.widgets.HardwareMonitor``, ``%o11y monitor``), whose
  sparklines are this ring buffer.

Every NVML query is guarded by exception type: a field a GPU does not have
(``NVMLError_NotSupported``) is shown as n/a and never asked again; a driver error mid-run is
said once and retried; a lost GPU is dropped; no NVML at all means CPU only, with the reason in
``%o11y status``, the monitor and ``Sampler.no_gpu_reason``.

Settings (environment)::

    O11YLAB_HARDWARE=0            no sampler, no hardware metrics, no attribution
    O11YLAB_HARDWARE_INTERVAL=1   seconds between samples; NVML averages over its own windows
                                  (1/6 s to 1 s), so anything faster than 1/6 s is clamped
    O11YLAB_HARDWARE_HISTORY=600  samples kept for attribution and the sparklines
    O11YLAB_NVML=0                skip NVML even where there is a GPU (CPU only)
    O11YLAB_TORCH_PEAK=0          leave torch's peak-memory statistics alone; peak GPU memory
                                  then comes from NVML (by default o11ylab resets torch's peak
                                  counter at the start of each measured span, which changes what
                                  ``torch.cuda.max_memory_allocated()`` returns to you)

``CUDA_VISIBLE_DEVICES`` narrows attribution to the GPUs this process may use (indices are read
in NVML order; UUIDs are exact). The sampler still shows every GPU.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import semconv

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, Span

    from .telemetry import Telemetry

__all__ = [
    "GpuInfo",
    "GpuReading",
    "HardwareSettings",
    "HostReading",
    "Measurement",
    "Measuring",
    "Nvml",
    "Sample",
    "Sampler",
    "attach",
    "detach",
    "get_sampler",
    "measure",
    "set_sampler",
]

_log = logging.getLogger("o11ylab.hardware")

MIN_INTERVAL_S = 1 / 6  # NVML's shortest averaging window: sampling faster adds nothing
MAX_INTERVAL_S = 60.0
_MAX_OPEN_SPANS = 4096  # spans started and never ended must not grow memory without bound
_GIB = 1024**3


# --- settings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HardwareSettings:
    enabled: bool = True
    interval_s: float = 1.0
    history: int = 600
    nvml: bool = True
    torch_peak: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HardwareSettings:
        from .config import ConfigError

        env = os.environ if env is None else env

        def flag(name: str, default: bool) -> bool:
            raw = env.get(name, "").strip().lower()
            if not raw:
                return default
            if raw in ("1", "true", "yes", "on"):
                return True
            if raw in ("0", "false", "no", "off"):
                return False
            raise ConfigError(
                f"{name}={raw!r} is not a yes/no value: use 1/0, true/false or on/off."
            )

        raw_interval = env.get("O11YLAB_HARDWARE_INTERVAL", "").strip()
        try:
            interval = float(raw_interval) if raw_interval else 1.0
        except ValueError:
            raise ConfigError(
                f"O11YLAB_HARDWARE_INTERVAL={raw_interval!r} is not a number of seconds."
            ) from None
        if not interval > 0:
            raise ConfigError("O11YLAB_HARDWARE_INTERVAL must be more than 0 seconds.")
        raw_history = env.get("O11YLAB_HARDWARE_HISTORY", "").strip()
        try:
            history = int(raw_history) if raw_history else 600
        except ValueError:
            raise ConfigError(
                f"O11YLAB_HARDWARE_HISTORY={raw_history!r} is not a whole number."
            ) from None
        if not 10 <= history <= 1_000_000:
            raise ConfigError("O11YLAB_HARDWARE_HISTORY is out of range: use 10..1000000 samples.")
        return cls(
            enabled=flag("O11YLAB_HARDWARE", True),
            interval_s=clamp_interval(interval),
            history=history,
            nvml=flag("O11YLAB_NVML", True),
            torch_peak=flag("O11YLAB_TORCH_PEAK", True),
        )


def clamp_interval(seconds: float) -> float:
    return min(max(float(seconds), MIN_INTERVAL_S), MAX_INTERVAL_S)


# --- what a sample holds ------------------------------------------------------------------------


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


# --- NVML, guarded ------------------------------------------------------------------------------


_FIELD_WORDS = {
    "utilization": "utilization",
    "memory": "memory use",
    "power": "power draw",
    "energy": "the energy counter",
    "temperature": "temperature",
    "clock": "SM clock",
}


@dataclass
class _GpuState:
    handle: Any
    label: str
    unsupported: set[str] = field(default_factory=set)
    lost: bool = False


class Nvml:
    """The NVML calls o11ylab makes, through ``pynvml`` or any module with its surface.

    Pass a module object (a test double standing in for ``pynvml`` where there is no GPU) to
    exercise every path; ``None`` imports the real ``pynvml`` on ``open()``. ``calls`` counts
    every NVML function called after ``open()``, so a test or benchmark can prove that nothing
    calls NVML when there is no GPU.
    """

    def __init__(
        self, module: Any | None = None, say: Callable[[str, int], None] | None = None
    ) -> None:
        self._module: Any = module  # a pynvml-like module; None until open() imports pynvml
        self._say = say or (lambda text, level: _log.log(level, text))
        self.calls = 0
        self._states: list[_GpuState] = []
        self._said: set[tuple[Any, ...]] = set()
        self._open = False
        self._error: tuple[type[BaseException], ...] = ()
        self._unsupported: tuple[type[BaseException], ...] = ()
        self._lost: tuple[type[BaseException], ...] = ()

    # -- start and stop

    def open(self) -> list[GpuInfo]:
        """Initialise NVML and list the GPUs; ``NoGpu`` with a reason when there is none."""
        module = self._module
        if module is None:
            try:
                import pynvml as module  # type: ignore[no-redef]
            except ImportError:
                raise NoGpu(
                    "nvidia-ml-py is not installed, so GPUs cannot be read "
                    "(pip install 'o11ylab[gpu]')"
                ) from None
            self._module = module
        m = module

        def errors(*names: str) -> tuple[type[BaseException], ...]:
            found = [getattr(m, name, None) for name in names]
            return tuple(e for e in found if isinstance(e, type) and issubclass(e, BaseException))

        self._error = errors("NVMLError") or (Exception,)
        self._unsupported = errors(
            "NVMLError_NotSupported", "NVMLError_FunctionNotFound", "NVMLError_NoPermission"
        )
        self._lost = errors("NVMLError_GpuIsLost")
        try:
            m.nvmlInit()
        except errors("NVMLError_LibraryNotFound") as exc:
            raise NoGpu(
                "no NVIDIA driver on this machine (the NVML library libnvidia-ml.so was not "
                f"found: {exc})"
            ) from None
        except errors("NVMLError_DriverNotLoaded") as exc:
            raise NoGpu(f"the NVIDIA driver is not loaded ({exc})") from None
        except errors("NVMLError_NoPermission") as exc:
            raise NoGpu(f"this user may not use NVML ({exc})") from None
        except self._error as exc:
            raise NoGpu(f"NVML could not start ({type(exc).__name__}: {exc})") from None
        except OSError as exc:  # a broken library file
            raise NoGpu(f"NVML could not be loaded ({exc})") from None
        self._open = True
        try:
            count = int(m.nvmlDeviceGetCount())
        except self._error as exc:
            self.close()
            raise NoGpu(f"NVML could not count GPUs ({type(exc).__name__}: {exc})") from None
        if count == 0:
            self.close()
            raise NoGpu("NVML found no NVIDIA GPU")
        driver = self._text(m.nvmlSystemGetDriverVersion)
        infos: list[GpuInfo] = []
        self._states = []
        problems: list[str] = []
        for index in range(count):
            try:
                handle = m.nvmlDeviceGetHandleByIndex(index)
            except self._error as exc:
                problems.append(f"gpu{index}: {type(exc).__name__}: {exc}")
                continue
            model = self._text(m.nvmlDeviceGetName, handle) or "NVIDIA GPU"
            uuid = self._text(m.nvmlDeviceGetUUID, handle) or f"gpu{index}"
            position = len(infos)
            state = _GpuState(handle, f"GPU {index} ({model})")
            self._states.append(state)
            memory = self._call(position, "memory", "nvmlDeviceGetMemoryInfo")
            limit = self._call(position, "power", "nvmlDeviceGetEnforcedPowerLimit")
            infos.append(
                GpuInfo(
                    index=index,
                    uuid=uuid,
                    model=model,
                    driver_version=driver,
                    memory_total=int(memory.total) if memory is not None else None,
                    power_limit_w=float(limit) / 1000 if limit is not None else None,
                )
            )
        if not infos:
            self.close()
            raise NoGpu("NVML could not open any GPU (" + "; ".join(problems) + ")")
        for problem in problems:
            self._say(f"skipping a GPU NVML could not open: {problem}", logging.WARNING)
        return infos

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        try:
            self._module.nvmlShutdown()
        except Exception:  # noqa: BLE001 - a broken driver must not break unload
            pass

    def _text(self, call: Callable[..., Any], *args: Any) -> str | None:
        try:
            value = call(*args)
        except self._error:
            return None
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        return str(value) if value is not None else None

    # -- guarded reads

    def _call(self, gpu: int, what: str, function: str, *args: Any) -> Any:
        state = self._states[gpu]
        if state.lost or what in state.unsupported:
            return None
        self.calls += 1
        try:
            return getattr(self._module, function)(state.handle, *args)
        except self._unsupported as exc:
            state.unsupported.add(what)
            self._say(
                f"{state.label}: {_FIELD_WORDS[what]} is not available "
                f"({type(exc).__name__}); shown as n/a",
                logging.INFO,
            )
        except self._lost as exc:
            state.lost = True
            self._say(
                f"{state.label} is lost ({type(exc).__name__}: {exc}); it is no longer sampled",
                logging.WARNING,
            )
        except self._error as exc:
            key = (gpu, what, type(exc).__name__)
            if key not in self._said:
                self._said.add(key)
                self._say(
                    f"{state.label}: reading {_FIELD_WORDS[what]} failed "
                    f"({type(exc).__name__}: {exc}); o11ylab keeps trying and shows n/a meanwhile",
                    logging.WARNING,
                )
        return None

    def lost(self, gpu: int) -> bool:
        return self._states[gpu].lost

    def supports(self, gpu: int, what: str) -> bool:
        state = self._states[gpu]
        return not state.lost and what not in state.unsupported

    def energy_j(self, gpu: int) -> float | None:
        value = self._call(gpu, "energy", "nvmlDeviceGetTotalEnergyConsumption")
        return float(value) / 1000 if value is not None else None

    def memory_used(self, gpu: int) -> int | None:
        memory = self._call(gpu, "memory", "nvmlDeviceGetMemoryInfo")
        return int(memory.used) if memory is not None else None

    def utilization(self, gpu: int) -> float | None:
        rates = self._call(gpu, "utilization", "nvmlDeviceGetUtilizationRates")
        return float(rates.gpu) / 100 if rates is not None else None

    def read(self, gpu: int) -> GpuReading | None:
        """Everything about one GPU; None when the GPU is lost."""
        if self._states[gpu].lost:
            return None
        m = self._module
        rates = self._call(gpu, "utilization", "nvmlDeviceGetUtilizationRates")
        memory = self._call(gpu, "memory", "nvmlDeviceGetMemoryInfo")
        power = self._call(gpu, "power", "nvmlDeviceGetPowerUsage")
        energy = self._call(gpu, "energy", "nvmlDeviceGetTotalEnergyConsumption")
        temperature = self._call(
            gpu, "temperature", "nvmlDeviceGetTemperature", getattr(m, "NVML_TEMPERATURE_GPU", 0)
        )
        clock = self._call(gpu, "clock", "nvmlDeviceGetClockInfo", getattr(m, "NVML_CLOCK_SM", 1))
        if self._states[gpu].lost:
            return None
        return GpuReading(
            utilization=float(rates.gpu) / 100 if rates is not None else None,
            memory_used=int(memory.used) if memory is not None else None,
            memory_total=int(memory.total) if memory is not None else None,
            power_w=float(power) / 1000 if power is not None else None,
            energy_j=float(energy) / 1000 if energy is not None else None,
            energy_source="counter" if energy is not None else None,
            temperature_c=float(temperature) if temperature is not None else None,
            sm_clock_mhz=float(clock) if clock is not None else None,
        )


# --- the host, through psutil --------------------------------------------------------------------


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class _HostReader:
    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._process = psutil.Process()
        self._statm: int | None = None
        self._statm_ok = sys.platform.startswith("linux")
        try:
            self.cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            self.cpus = psutil.cpu_count() or 1
        psutil.cpu_percent(None)  # primes the host figure: the first call has no interval
        times = self._process.cpu_times()
        self._last = (time.monotonic(), times.user + times.system)

    def read(self) -> HostReading:
        psutil = self._psutil
        with self._process.oneshot():
            times = self._process.cpu_times()
            memory = self._process.memory_info()
        now = time.monotonic()
        cpu = times.user + times.system
        last_t, last_cpu = self._last
        self._last = (now, cpu)
        elapsed = now - last_t
        utilization = (cpu - last_cpu) / elapsed / self.cpus if elapsed > 0 else 0.0
        host = psutil.virtual_memory()
        return HostReading(
            cpu_user_s=times.user,
            cpu_system_s=times.system,
            cpu_utilization=max(0.0, min(utilization, 1.0)),
            cpus=self.cpus,
            rss=int(memory.rss),
            vms=int(memory.vms),
            system_cpu_utilization=psutil.cpu_percent(None) / 100,
            memory_total=int(host.total),
            memory_available=int(host.available),
            memory_used=int(host.used),
            memory_free=int(host.free),
            memory_cached=int(getattr(host, "cached", 0)) or None,
            memory_buffers=int(getattr(host, "buffers", 0)) or None,
        )

    def rss(self) -> int:
        # Read per traced cell: a kept-open /proc/self/statm costs a few µs where psutil's
        # open-read-close costs 50-300 µs on a busy machine.
        if self._statm is None and self._statm_ok:
            try:
                self._statm = os.open(f"/proc/{self._process.pid}/statm", os.O_RDONLY)
            except OSError:
                self._statm_ok = False
        if self._statm is not None:
            try:
                return int(os.pread(self._statm, 128, 0).split()[1]) * _PAGE_SIZE
            except (OSError, IndexError, ValueError):
                os.close(self._statm)
                self._statm, self._statm_ok = None, False
        return int(self._process.memory_info().rss)


# --- the sampler ---------------------------------------------------------------------------------


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
        settings = settings or HardwareSettings.from_env()
        self.settings = settings
        self.interval_s = clamp_interval(
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

    # -- saying things once

    def _say(self, text: str, level: int = logging.INFO) -> None:
        if text in self.notes:
            return
        self.notes.append(text)
        _log.log(level, text)
        if level >= logging.WARNING:
            # Something changed under a running kernel: the user should see it, once.
            print(f"o11ylab: {text}", file=sys.stderr)
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
                self._visible = _visible(self.gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))
                self.attributed, self.attribution_basis = self._visible, "visible"
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
        self.interval_s = clamp_interval(seconds)

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
            stop.wait(next_due - now)

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


# --- per-span attribution ----------------------------------------------------------------------------


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


@dataclass(slots=True)
class _Start:
    mono: float
    cpu: float
    gpus: tuple[int, ...]  # positions measured: attribution may narrow between start and end
    energy: tuple[tuple[float | None, str | None], ...]
    torch_token: int | None
    rss: int | None


@dataclass(slots=True)
class Measurement:
    """What one span or cell used. GPU fields are None without a GPU (or a field to read).

    On spans every attribute costs a few microseconds, so the defaults go unsaid: the energy
    source only when it is the power-integral estimate, the peak-memory source only when it is
    NVML's whole-device figure, the GPU count only when there is more than one GPU.
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

    def _qualifiers(self, attributes: dict[str, Any]) -> None:
        if self.gpu_count > 1:
            attributes[semconv.GPU_COUNT] = self.gpu_count
        if self.energy_j is not None and self.energy_source not in (None, "counter"):
            attributes[semconv.GPU_ENERGY_SOURCE] = self.energy_source
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
        parts: dict[str, str] = {}
        if self.energy_j is not None:
            parts["gpu_energy"] = f"{format_energy(self.energy_j)} GPU"
        if self.memory_peak_bytes is not None:
            parts["gpu_memory"] = f"peak {format_bytes(self.memory_peak_bytes)} GPU"
        if self.utilization_mean is not None:
            parts["gpu_utilization"] = f"GPU {self.utilization_mean * 100:.0f}%"
        parts["cpu"] = f"CPU {self.cpu_seconds:.2f} s"
        return parts


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

    def _torch_peaks(self) -> _TorchPeaks | None:
        if not self.sampler.settings.torch_peak:
            return None
        cuda = _torch_cuda()
        if cuda is None:
            return None
        if self._torch is None or self._torch.cuda is not cuda:
            self._torch = _TorchPeaks(cuda)
        return self._torch

    def begin(self, process_memory: bool = False) -> _Start:
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
        return _Start(
            time.monotonic(),
            time.process_time(),
            gpus,
            energy,
            token,
            sampler.host_rss() if process_memory else None,
        )

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
            duration_s=end_mono - start.mono,
            cpu_seconds=cpu,
            gpu_count=len(gpus),
            energy_j=energy_total,
            energy_source=source,
            memory_peak_bytes=peak,
            memory_peak_source=peak_source,
            utilization_mean=mean,
            process_memory_peak_bytes=rss_peak,
        )


class _SpanAttribution:
    """The hardware enricher: GPU energy, peak memory, utilization and CPU time of GenAI
    operation spans, from start to end (see ``o11ylab.enrichment``)."""

    name = "hardware"

    def __init__(self, attributor: Attributor) -> None:
        self.attributor = attributor
        self.open: dict[int, _Start] = {}

    def on_start(self, span: Span) -> None:
        attributes = span.attributes
        if attributes:
            if semconv.CELL_SOURCE_SHA256 in attributes:
                return  # a cell span: the cell observer measures it
            if (
                semconv.GEN_AI_OPERATION_NAME not in attributes
                and span.name.partition(" ")[0] not in semconv.ATTRIBUTED_OPERATIONS
            ):
                return
        elif span.name.partition(" ")[0] not in semconv.ATTRIBUTED_OPERATIONS:
            return
        try:
            started = self.attributor.begin()
        except Exception as exc:  # noqa: BLE001 - the registry would drop a raising enricher
            self.attributor.sampler._say(
                f"span attribution skipped a span ({type(exc).__name__}: {exc})", logging.WARNING
            )
            return
        self.open[span.get_span_context().span_id] = started
        if len(self.open) > _MAX_OPEN_SPANS:
            try:
                del self.open[next(iter(self.open))]
            except (StopIteration, KeyError, RuntimeError):
                pass

    def on_end(self, span: ReadableSpan) -> dict[str, Any] | None:
        if not self.open or span.context is None:
            return None
        start = self.open.pop(span.context.span_id, None)
        if start is None:
            return None
        attributes = span.attributes or {}
        try:
            measurement = self.attributor.end(start)
        except Exception as exc:  # noqa: BLE001 - the registry would drop a raising enricher
            self.attributor.sampler._say(
                f"span attribution skipped a span ({type(exc).__name__}: {exc})", logging.WARNING
            )
            return None
        return measurement.span_attributes(attributes.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS))


class _CellMeasure:
    """The cells.CellObserver: GPU energy, peak memory, utilization and CPU on each cell span."""

    def __init__(self, attributor: Attributor) -> None:
        self.attributor = attributor

    def cell_started(self, span: Any) -> _Start:
        return self.attributor.begin(process_memory=True)

    def cell_ended(self, span: Any, state: _Start | None) -> dict[str, str]:
        if state is None:
            return {}
        measurement = self.attributor.end(state, process_memory=True)
        span.set_attributes(measurement.cell_attributes())
        return measurement.summary()


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
    sampler = sampler or get_sampler()
    sampler.open()
    measuring = Measuring(Attributor(sampler))
    try:
        yield measuring
    finally:
        measuring.stop()


# --- metrics ---------------------------------------------------------------------------------------


def _gpu_points(
    value: Callable[[GpuReading, GpuInfo], float | None], extra: Mapping[str, str] | None = None
) -> Iterator[tuple[float, dict[str, str]]]:
    sampler = _SAMPLER
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
    value: Callable[[HostReading], Iterable[tuple[float | None, dict[str, str]]]],
) -> Iterator[tuple[float, dict[str, str]]]:
    sampler = _SAMPLER
    if sampler is None or not sampler.running or sampler.latest is None:
        return
    host = sampler.latest.host
    if host is None:
        return
    for number, attributes in value(host):
        if number is not None:
            yield number, attributes


_REGISTERED_METERS: list[Any] = []


def _register_instruments(meter: Any) -> None:
    """The observable instruments, once per meter; each reads the latest sample, not NVML."""
    if any(m is meter for m in _REGISTERED_METERS):
        return
    _REGISTERED_METERS.append(meter)
    from opentelemetry.metrics import Observation

    def observing(points: Callable[[], Iterator[tuple[float, dict[str, str]]]]) -> Any:
        def callback(_options: Any) -> list[Observation]:
            try:
                return [Observation(v, a) for v, a in points()]
            except Exception:  # noqa: BLE001 - a metric callback must never break the exporter
                return []

        return callback

    gpu = _gpu_points
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
                lambda: _host_points(
                    lambda h: [(h.cpu_user_s, {mode: "user"}), (h.cpu_system_s, {mode: "system"})]
                )
            )
        ],
    )
    meter.create_observable_gauge(
        semconv.METRIC_PROCESS_CPU_UTILIZATION,
        unit="1",
        description="CPU used by the kernel process, as a fraction of the CPUs it may use.",
        callbacks=[observing(lambda: _host_points(lambda h: [(h.cpu_utilization, {})]))],
    )
    meter.create_observable_up_down_counter(
        semconv.METRIC_PROCESS_MEMORY_USAGE,
        unit="By",
        description="Resident memory of the kernel.",
        callbacks=[observing(lambda: _host_points(lambda h: [(h.rss, {})]))],
    )
    meter.create_observable_up_down_counter(
        semconv.METRIC_PROCESS_MEMORY_VIRTUAL,
        unit="By",
        description="Virtual memory of the kernel.",
        callbacks=[observing(lambda: _host_points(lambda h: [(h.vms, {})]))],
    )
    meter.create_observable_gauge(
        semconv.METRIC_SYSTEM_CPU_UTILIZATION,
        unit="1",
        description="CPU used on the host, all CPUs.",
        callbacks=[observing(lambda: _host_points(lambda h: [(h.system_cpu_utilization, {})]))],
    )
    state = semconv.SYSTEM_MEMORY_STATE
    meter.create_observable_up_down_counter(
        semconv.METRIC_SYSTEM_MEMORY_USAGE,
        unit="By",
        description="Host memory by state.",
        callbacks=[
            observing(
                lambda: _host_points(
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
        callbacks=[observing(lambda: _host_points(lambda h: [(h.memory_total, {})]))],
    )
    meter.create_observable_gauge(
        semconv.METRIC_SYSTEM_MEMORY_UTILIZATION,
        unit="1",
        description="Fraction of host memory in use (not available).",
        callbacks=[observing(lambda: _host_points(lambda h: [(h.memory_fraction, {})]))],
    )


# --- the process's sampler and the extension's hooks ------------------------------------------------


_SAMPLER: Sampler | None = None
_SAMPLER_LOCK = threading.Lock()


def get_sampler() -> Sampler:
    """The process's sampler (built from the environment on first use; not started)."""
    global _SAMPLER
    if _SAMPLER is None:
        with _SAMPLER_LOCK:
            if _SAMPLER is None:
                _SAMPLER = Sampler()
                atexit.register(_stop_at_exit)
    return _SAMPLER


def set_sampler(sampler: Sampler | None) -> Sampler | None:
    """Use this sampler for the process (a test double's, or one you configured); returns the old."""
    global _SAMPLER
    with _SAMPLER_LOCK:
        old, _SAMPLER = _SAMPLER, sampler
    if sampler is not None:
        atexit.register(_stop_at_exit)
    return old


def _stop_at_exit() -> None:
    sampler = _SAMPLER
    if sampler is not None:
        sampler.stop(timeout=1.0)


@dataclass
class _Installed:
    telemetry: Telemetry
    sampler: Sampler
    spans: _SpanAttribution
    cells: _CellMeasure
    note_sink: Callable[[str], None]


_INSTALLED: _Installed | None = None


def attach(telemetry: Telemetry) -> Sampler | None:
    """Start the sampler and hook attribution into spans and cells; what ``%load_ext`` does.

    Costs a thread start, not a driver call: NVML starts inside the sampler thread.
    """
    global _INSTALLED
    if _INSTALLED is not None:
        return _INSTALLED.sampler
    settings = HardwareSettings.from_env()
    if not settings.enabled:
        _note(telemetry, "hardware: off (O11YLAB_HARDWARE=0)")
        return None
    from . import cells

    sampler = get_sampler()
    attributor = Attributor(sampler)
    spans = _SpanAttribution(attributor)
    observer = _CellMeasure(attributor)

    def note_sink(text: str) -> None:
        _note(telemetry, text)

    for text in sampler.notes:
        note_sink(f"hardware: {text}")
    sampler.note_sinks.append(note_sink)
    telemetry.enrichers.register(spans)
    cells.observers.append(observer)
    _register_instruments(telemetry.meter)
    sampler.start()
    _INSTALLED = _Installed(telemetry, sampler, spans, observer, note_sink)
    return sampler


def _note(telemetry: Telemetry, text: str) -> None:
    if text not in telemetry.notes:
        telemetry.notes.append(text)


def detach() -> None:
    """Undo ``attach``: remove the hooks, stop the sampler, release NVML."""
    global _INSTALLED
    installed, _INSTALLED = _INSTALLED, None
    if installed is None:
        return
    from . import cells

    installed.telemetry.enrichers.unregister(installed.spans.name)
    if installed.cells in cells.observers:
        cells.observers.remove(installed.cells)
    if installed.note_sink in installed.sampler.note_sinks:
        installed.sampler.note_sinks.remove(installed.note_sink)
    installed.sampler.stop()


def attached() -> bool:
    return _INSTALLED is not None
