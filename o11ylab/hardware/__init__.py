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
  on generation spans the energy per output token. Each energy figure says how it was measured
  and whether other threads' spans shared the GPU meanwhile (``_energy``: a span shorter than
  the counter's update period is not given the counter's joules). Without a GPU it costs no NVML
  call at all;
* **the live widget** (``o11ylab.widgets.HardwareMonitor``, ``%o11y monitor``), whose
  sparklines are this ring buffer.

Every NVML query is guarded by exception type: a field a GPU does not have
(``NVMLError_NotSupported``) is shown as n/a and never asked again; a driver error mid-run is
said once and retried; a lost GPU is dropped; no NVML at all means CPU only, with the reason in
``%o11y status``, the monitor and ``Sampler.no_gpu_reason``.

Settings (environment; read by ``o11ylab.config.load_hardware``)::

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

The modules, one job each: ``_types`` (what a sample holds), ``_nvml`` (NVML, guarded),
``_host`` (psutil), ``_sampler`` (the thread and its ring buffer), ``_energy`` (the counter's
update period, the method and sharing of a span's joules), ``_attribution`` (per-span
measurements), ``_metrics`` (the observable instruments), ``_process`` (the process's sampler
and the hooks ``%load_ext`` installs). Settings live in ``o11ylab.config`` (hardware section).
"""

from __future__ import annotations

from ..config import HARDWARE_MAX_INTERVAL_S as MAX_INTERVAL_S
from ..config import HARDWARE_MIN_INTERVAL_S as MIN_INTERVAL_S
from ..config import HardwareSettings
from ..config import clamp_hardware_interval as clamp_interval

# The private names imported "as" themselves are those tests and benchmarks import from here.
from ._attribution import (
    Attributor,
    Measurement,
    Measuring,
    cell_summary,
    format_bytes,
    format_energy,
    measure,
)
from ._attribution import _SpanAttribution as _SpanAttribution
from ._attribution import _TorchPeaks as _TorchPeaks
from ._nvml import Nvml
from ._process import attach, attached, detach, get_sampler, set_sampler
from ._sampler import Sampler, Subscriber
from ._sampler import _visible as _visible
from ._types import GpuInfo, GpuReading, HostReading, NoGpu, Sample

__all__ = [
    "MAX_INTERVAL_S",
    "MIN_INTERVAL_S",
    "Attributor",
    "GpuInfo",
    "GpuReading",
    "HardwareSettings",
    "HostReading",
    "Measurement",
    "Measuring",
    "NoGpu",
    "Nvml",
    "Sample",
    "Sampler",
    "Subscriber",
    "attach",
    "attached",
    "cell_summary",
    "clamp_interval",
    "detach",
    "format_bytes",
    "format_energy",
    "get_sampler",
    "measure",
    "set_sampler",
]
