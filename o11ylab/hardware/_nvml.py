"""NVML, guarded: every query by exception type, a missing field asked once, a lost GPU dropped."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._types import GpuInfo, GpuReading, NoGpu

_log = logging.getLogger("o11ylab.hardware")


_FIELD_WORDS = {
    "utilization": "utilization",
    "memory": "memory use",
    "power": "power draw",
    "energy": "the energy counter",
    "instant": "instant power (NVML_FI_DEV_POWER_INSTANT)",
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

    def power_instant_w(self, gpu: int) -> float | None:
        """Instant power, where NVML has the field (Ampere and newer); ``nvmlDeviceGetPowerUsage``
        there is a 1 s average, too slow for a span shorter than the energy counter's period."""
        state = self._states[gpu]
        if state.lost or "instant" in state.unsupported:
            return None
        field_id = getattr(self._module, "NVML_FI_DEV_POWER_INSTANT", None)
        if field_id is None:  # an nvidia-ml-py older than the field
            state.unsupported.add("instant")
            return None
        values = self._call(gpu, "instant", "nvmlDeviceGetFieldValues", [field_id])
        if not values:
            return None
        value = values[0]
        if int(value.nvmlReturn) != 0:  # the call worked, this GPU lacks the field
            state.unsupported.add("instant")
            self._say(
                f"{state.label}: {_FIELD_WORDS['instant']} is not available "
                f"(NVML return {int(value.nvmlReturn)}); short spans are marked too short",
                logging.INFO,
            )
            return None
        kind = int(getattr(value, "valueType", 1))
        member = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal"}
        milliwatts = getattr(value.value, member.get(kind, "uiVal"))
        return float(milliwatts) / 1000

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
