"""The live hardware panel: ``%o11y monitor`` or ``o11ylab.widgets.HardwareMonitor()``.

One panel per GPU (utilization, memory, power, temperature) and one for the kernel (its CPU
and resident memory, the host's CPU and memory), each row a bar, a value and a sparkline of
the last minute. The panel follows the process's one hardware sampler: the sampler thread
hands each sample to every open monitor, which updates its widgets there, each batch inside
``hold_sync()``, so the kernel is never blocked and a busy cell does not freeze the panel.
Several monitors share that one sampler. ``stop()`` and ``start()`` pause and resume a monitor;
without a GPU it shows the kernel's CPU and memory and one line saying why there is no GPU.

Everything written into HTML here is escaped (GPU names and driver messages come from outside);
the sparklines are SVG built from numbers only.
"""

from __future__ import annotations

import html
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets

from . import hardware
from .hardware import GpuInfo, HostReading, Sample, Sampler, format_bytes

__all__ = ["HardwareMonitor", "monitor_command", "sparkline_svg"]

_SPARK_WIDTH, _SPARK_HEIGHT = 120, 22
_MONITORS: weakref.WeakSet[HardwareMonitor] = weakref.WeakSet()


def sparkline_svg(
    values: Sequence[float | None],
    top: float,
    width: int = _SPARK_WIDTH,
    height: int = _SPARK_HEIGHT,
) -> str:
    """A small SVG line of ``values`` scaled to ``0..top``; gaps (None) break the line."""
    count = len(values)
    pieces: list[str] = []
    run: list[str] = []
    scale = top if top > 0 else 1.0
    step = width / max(count - 1, 1)
    for i, value in enumerate(values):
        if value is None:
            if len(run) > 1:
                pieces.append(" ".join(run))
            run = []
            continue
        fraction = min(max(float(value) / scale, 0.0), 1.0)
        run.append(f"{i * step:.1f},{(height - 1) - fraction * (height - 2):.1f}")
    if len(run) > 1:
        pieces.append(" ".join(run))
    lines = "".join(
        f'<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{p}"/>'
        for p in pieces
    )
    return (
        f'<svg class="o11y-spark" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" style="color:#1f77b4">{lines}</svg>'
    )


def _style(fraction: float | None) -> str:
    if fraction is None:
        return ""
    if fraction >= 0.9:
        return "danger"
    if fraction >= 0.7:
        return "warning"
    return "success"


class _Row:
    """label | bar | value | sparkline"""

    def __init__(self, label: str, css: str) -> None:
        self.label = widgets.Label(label, layout=widgets.Layout(width="120px"))
        self.bar = widgets.FloatProgress(
            value=0.0, min=0.0, max=1.0, layout=widgets.Layout(width="180px")
        )
        self.value = widgets.Label("n/a", layout=widgets.Layout(width="190px"))
        self.value.add_class("o11y-value")
        self.spark = widgets.HTML(sparkline_svg([], 1.0))
        self.box = widgets.HBox([self.label, self.bar, self.value, self.spark])
        self.box.add_class("o11y-row")
        self.box.add_class(css)

    def update(
        self, fraction: float | None, text: str, history: Sequence[float | None], top: float
    ) -> None:
        with self.bar.hold_sync():
            self.bar.value = min(max(fraction or 0.0, 0.0), 1.0)
            self.bar.bar_style = _style(fraction)
        with self.value.hold_sync():
            self.value.value = text
        with self.spark.hold_sync():
            self.spark.value = sparkline_svg(history, top)


class _GpuPanel:
    def __init__(self, info: GpuInfo) -> None:
        self.info = info
        self.title = widgets.HTML()
        self.rows = {
            "utilization": _Row("utilization", "o11y-gpu-utilization"),
            "memory": _Row("memory", "o11y-gpu-memory"),
            "power": _Row("power", "o11y-gpu-power"),
            "temperature": _Row("temperature", "o11y-gpu-temperature"),
        }
        self.box = widgets.VBox([self.title, *(r.box for r in self.rows.values())])
        self.box.add_class("o11y-gpu")
        self._max_power = info.power_limit_w or 0.0

    def update(self, position: int, history: list[Sample]) -> None:
        info = self.info
        readings = [s.gpus[position] if position < len(s.gpus) else None for s in history]
        latest = readings[-1] if readings else None
        clock = f" · {latest.sm_clock_mhz:.0f} MHz" if latest and latest.sm_clock_mhz else ""
        energy = ""
        if latest is not None and latest.energy_j is not None:
            energy = f" · {hardware.format_energy(latest.energy_j)} " + (
                "used since the driver loaded"
                if latest.energy_source == "counter"
                else "used since sampling began"
            )
        state = " · lost" if latest is None and readings else ""
        with self.title.hold_sync():
            self.title.value = (
                f"<b>{html.escape(info.name.upper())} · {html.escape(info.model)}</b>"
                f"<span style='opacity:.7'>{html.escape(clock + energy + state)}</span>"
            )

        def series(get: Callable[[Any], float | None]) -> list[float | None]:
            return [get(r) if r is not None else None for r in readings]

        utilization = series(lambda r: r.utilization)
        value = latest.utilization if latest else None
        self.rows["utilization"].update(
            value, f"{value * 100:.0f}%" if value is not None else "n/a", utilization, 1.0
        )

        memory = series(lambda r: r.memory_used)
        total = (latest.memory_total if latest else None) or info.memory_total
        used = latest.memory_used if latest else None
        self.rows["memory"].update(
            used / total if used is not None and total else None,
            f"{format_bytes(used)} / {format_bytes(total)}"
            if used is not None and total
            else "n/a",
            memory,
            float(total or max((m for m in memory if m is not None), default=1)),
        )

        power = series(lambda r: r.power_w)
        watts = latest.power_w if latest else None
        seen = max((p for p in power if p is not None), default=0.0)
        self._max_power = max(self._max_power, seen)
        top = self._max_power or 1.0
        limit = f" / {info.power_limit_w:.0f} W" if info.power_limit_w else ""
        self.rows["power"].update(
            watts / top if watts is not None else None,
            f"{watts:.0f} W{limit}" if watts is not None else "n/a",
            power,
            top,
        )

        temperature = series(lambda r: r.temperature_c)
        celsius = latest.temperature_c if latest else None
        self.rows["temperature"].update(
            celsius / 100 if celsius is not None else None,
            f"{celsius:.0f} °C" if celsius is not None else "n/a",
            temperature,
            100.0,
        )


class _KernelPanel:
    def __init__(self) -> None:
        self.title = widgets.HTML("<b>KERNEL</b>")
        self.rows = {
            "cpu": _Row("kernel CPU", "o11y-kernel-cpu"),
            "rss": _Row("kernel memory", "o11y-kernel-memory"),
            "host_cpu": _Row("host CPU", "o11y-host-cpu"),
            "host_memory": _Row("host memory", "o11y-host-memory"),
        }
        self.box = widgets.VBox([self.title, *(r.box for r in self.rows.values())])
        self.box.add_class("o11y-kernel")

    def update(self, history: list[Sample]) -> None:
        hosts = [s.host for s in history]
        latest: HostReading | None = hosts[-1] if hosts else None
        if latest is None:
            for row in self.rows.values():
                row.update(None, "n/a", [], 1.0)
            return

        def series(get: Callable[[HostReading], float]) -> list[float | None]:
            return [get(h) if h is not None else None for h in hosts]

        cpus = latest.cpus
        self.rows["cpu"].update(
            latest.cpu_utilization,
            f"{latest.cpu_utilization * cpus * 100:.0f}% of {cpus} CPU{'s' if cpus != 1 else ''}",
            series(lambda h: h.cpu_utilization),
            1.0,
        )
        self.rows["rss"].update(
            latest.rss / latest.memory_total if latest.memory_total else None,
            f"{format_bytes(latest.rss)} resident",
            series(lambda h: float(h.rss)),
            float(max((h.rss for h in hosts if h is not None), default=1)) * 1.25,
        )
        self.rows["host_cpu"].update(
            latest.system_cpu_utilization,
            f"{latest.system_cpu_utilization * 100:.0f}%",
            series(lambda h: h.system_cpu_utilization),
            1.0,
        )
        used = latest.memory_total - latest.memory_available
        self.rows["host_memory"].update(
            latest.memory_fraction,
            f"{format_bytes(used)} / {format_bytes(latest.memory_total)}",
            series(lambda h: h.memory_fraction),
            1.0,
        )


class HardwareMonitor(widgets.VBox):  # type: ignore[misc]  # ipywidgets is untyped: VBox is Any
    """A live panel of every GPU and of the kernel's CPU and memory.

    ``HardwareMonitor()`` follows the process's sampler (started if needed); pass ``sampler=``
    to follow another. ``history`` is how many samples the sparklines show. ``stop()`` pauses
    it, ``start()`` resumes it; ``close()`` removes it for good.
    """

    def __init__(
        self,
        sampler: Sampler | None = None,
        *,
        history: int = 60,
        start: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.add_class("o11y-monitor")
        self.sampler = sampler or hardware.get_sampler()
        self.history = max(2, int(history))
        self._lock = threading.Lock()
        self._running = False
        self._panels: list[_GpuPanel] = []
        self._panels_for: tuple[str, ...] | None = None
        self._header = widgets.HTML()
        self._header.add_class("o11y-status")
        self._toggle = widgets.Button(
            description="Stop",
            tooltip="Pause or resume this monitor",
            layout=widgets.Layout(width="90px"),
        )
        self._toggle.on_click(self._clicked)
        self._why = widgets.HTML()
        self._why.add_class("o11y-no-gpu")
        self._gpus = widgets.VBox()
        self._kernel = _KernelPanel()
        self.children = [
            widgets.HBox([self._header, self._toggle]),
            self._why,
            self._gpus,
            self._kernel.box,
        ]
        _MONITORS.add(self)
        self._show_status()
        if start:
            self.start()

    # -- life cycle

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        """Resume updates (starting the sampler if nothing else runs it)."""
        self._running = True
        self.sampler.subscribe(self._on_sample)
        if self._show_status not in self.sampler.stop_listeners:
            self.sampler.stop_listeners.append(self._show_status)
        if not self.sampler.running:
            self.sampler.start()
        self._toggle.description = "Stop"
        latest = self.sampler.latest
        if latest is not None:
            self._on_sample(latest)
        else:
            self._show_status()

    def stop(self) -> None:
        """Pause updates; the sampler stops too when nothing else needs it."""
        self._running = False
        self.sampler.unsubscribe(self._on_sample)
        if self._show_status in self.sampler.stop_listeners:
            self.sampler.stop_listeners.remove(self._show_status)
        if (
            self.sampler.subscribers == 0
            and not hardware.attached()
            and self.sampler is hardware.get_sampler()
        ):
            self.sampler.stop()
        self._toggle.description = "Start"
        self._show_status()

    def _clicked(self, _button: Any) -> None:
        if self._running and self.sampler.running:
            self.stop()
        else:
            self.start()

    def close(self) -> None:
        self.stop()
        _MONITORS.discard(self)
        for child in self._all_widgets():
            child.close()
        super().close()

    def _all_widgets(self) -> list[widgets.Widget]:
        found: list[widgets.Widget] = []
        stack: list[widgets.Widget] = list(self.children)
        while stack:
            widget = stack.pop()
            found.append(widget)
            stack.extend(getattr(widget, "children", ()))
        return found

    # -- updates, in the sampler thread

    def _on_sample(self, sample: Sample) -> None:
        if not self._running:
            return
        with self._lock:
            history = self.sampler.recent(self.history)
            if not history:
                history = [sample]
            self._ensure_panels()
            for position, panel in enumerate(self._panels):
                panel.update(position, history)
            self._kernel.update(history)
            self._show_status(sample)

    def _ensure_panels(self) -> None:
        key = tuple(g.uuid for g in self.sampler.gpus)
        if key == self._panels_for:
            return
        self._panels_for = key
        self._panels = [_GpuPanel(info) for info in self.sampler.gpus]
        self._gpus.children = [p.box for p in self._panels]

    def _show_status(self, sample: Sample | None = None) -> None:
        sampler = self.sampler
        if self._running and not sampler.running and sampler.ready.is_set():
            state = "■ the sampler stopped (was o11ylab unloaded?): press Start to resume"
        elif self._running:
            when = time.strftime("%H:%M:%S", time.localtime(sample.wall)) if sample else "waiting"
            state = (
                f"● live · every {sampler.interval_s:g} s · {when} · sample {sampler.samples_taken}"
            )
        else:
            state = "■ stopped: press Start or call .start()"
        self._toggle.description = "Stop" if self._running and sampler.running else "Start"
        with self._header.hold_sync():
            self._header.value = (
                f"<b>o11ylab hardware</b> <span style='opacity:.7'>{html.escape(state)}</span>"
            )
        if not sampler.ready.is_set():
            why = "Looking for GPUs…"
        elif sampler.no_gpu_reason:
            why = f"No GPU: {sampler.no_gpu_reason}. Showing the kernel's CPU and memory."
        else:
            why = ""
        text = f"<span>{html.escape(why)}</span>" if why else ""
        if self._why.value != text:
            self._why.value = text


def monitor_command(rest: list[str]) -> HardwareMonitor | None:
    """``%o11y monitor`` (a new panel), ``%o11y monitor stop`` / ``start`` (all of them)."""
    from IPython.core.error import UsageError

    if not rest:
        return HardwareMonitor()
    if len(rest) == 1 and rest[0] in ("stop", "start"):
        monitors = list(_MONITORS)
        for monitor in monitors:
            monitor.stop() if rest[0] == "stop" else monitor.start()
        verb = "stopped" if rest[0] == "stop" else "started"
        print(f"o11ylab: {verb} {len(monitors)} monitor{'s' if len(monitors) != 1 else ''}")
        return None
    raise UsageError("Use %o11y monitor, %o11y monitor stop, or %o11y monitor start.")
