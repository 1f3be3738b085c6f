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
import itertools
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
_LABEL_WIDTH, _TIME_HEIGHT = 46, 11  # room for the scale ("80.0 GiB") and the time strip
# A blue that reads on JupyterLab's light and dark backgrounds; labels take the text colour.
_SPARK_COLOUR = "#2f8fdf"
_MONITORS: weakref.WeakSet[HardwareMonitor] = weakref.WeakSet()
# No-GPU reason -> the number of the monitor that explains it: the earliest created of those
# that met it (above the others in a notebook); the others say it was said above.
_EXPLAINED_BY: dict[str, int] = {}
_CREATED = itertools.count()


def sparkline_svg(
    values: Sequence[float | None],
    top: float,
    width: int = _SPARK_WIDTH,
    height: int = _SPARK_HEIGHT,
    *,
    top_label: str = "",
    seconds: float | None = None,
) -> str:
    """A small SVG line of ``values`` scaled to ``0..top``; gaps (None) break the line.

    With ``top_label`` the scale is drawn: a faint line at the top labelled with it and one at
    zero labelled "0", to the right of the line. With ``seconds`` (the time the values span) a
    strip below says how long ago the left end was and marks the right end "now". Labels are
    numbers and units o11ylab formats itself; they are escaped all the same.
    """
    plot_width = width - (_LABEL_WIDTH if top_label else 0)
    plot_height = height - (_TIME_HEIGHT if seconds is not None else 0)
    count = len(values)
    pieces: list[str] = []
    run: list[str] = []
    scale = top if top > 0 else 1.0
    step = plot_width / max(count - 1, 1)
    for i, value in enumerate(values):
        if value is None:
            if len(run) > 1:
                pieces.append(" ".join(run))
            run = []
            continue
        fraction = min(max(float(value) / scale, 0.0), 1.0)
        run.append(f"{i * step:.1f},{(plot_height - 1) - fraction * (plot_height - 2):.1f}")
    if len(run) > 1:
        pieces.append(" ".join(run))
    parts: list[str] = []
    if top_label:
        for y, baseline, label in ((1, "hanging", top_label), (plot_height - 1, "auto", "0")):
            parts.append(
                f'<line x1="0" y1="{y}" x2="{plot_width}" y2="{y}" stroke="currentColor" '
                'stroke-opacity="0.25" stroke-width="1"/>'
                f'<text x="{plot_width + 3}" y="{y}" font-size="9" fill="currentColor" '
                f'fill-opacity="0.75" dominant-baseline="{baseline}">{html.escape(label)}</text>'
            )
    if seconds is not None:
        ago = f"−{seconds:.0f} s" if seconds >= 1 else "−1 s"
        for x, anchor, label in ((0, "start", ago), (plot_width, "end", "now")):
            parts.append(
                f'<text x="{x}" y="{height - 1}" font-size="9" fill="currentColor" '
                f'fill-opacity="0.75" text-anchor="{anchor}">{html.escape(label)}</text>'
            )
    parts.extend(
        f'<polyline fill="none" stroke="{_SPARK_COLOUR}" stroke-width="1.5" points="{p}"/>'
        for p in pieces
    )
    return (
        f'<svg class="o11y-spark" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">{"".join(parts)}</svg>'
    )


def _window_s(history: Sequence[Sample]) -> float | None:
    """How many seconds the samples span (None for fewer than two)."""
    if len(history) < 2:
        return None
    return max(0.0, history[-1].wall - history[0].wall)


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
        self.spark = widgets.HTML(_row_sparkline([], 1.0, "", None))
        self.history: list[float | None] = []
        self.top = 1.0
        self.box = widgets.HBox([self.label, self.bar, self.value, self.spark])
        self.box.add_class("o11y-row")
        self.box.add_class(css)

    def update(
        self,
        fraction: float | None,
        text: str,
        history: Sequence[float | None],
        top: float,
        top_label: str = "",
        seconds: float | None = None,
    ) -> None:
        with self.bar.hold_sync():
            self.bar.value = min(max(fraction or 0.0, 0.0), 1.0)
            self.bar.bar_style = _style(fraction)
        with self.value.hold_sync():
            self.value.value = text
        self.history, self.top = list(history), top
        with self.spark.hold_sync():
            self.spark.value = _row_sparkline(history, top, top_label, seconds)


def _row_sparkline(
    history: Sequence[float | None], top: float, top_label: str, seconds: float | None
) -> str:
    return sparkline_svg(
        history,
        top,
        width=_SPARK_WIDTH + _LABEL_WIDTH,
        height=_SPARK_HEIGHT + _TIME_HEIGHT,
        top_label=top_label or "100%",
        seconds=seconds if seconds is not None else 0.0,
    )


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

        seconds = _window_s(history)
        utilization = series(lambda r: r.utilization)
        value = latest.utilization if latest else None
        self.rows["utilization"].update(
            value,
            f"{value * 100:.0f}%" if value is not None else "n/a",
            utilization,
            1.0,
            "100%",
            seconds,
        )

        memory = series(lambda r: r.memory_used)
        total = (latest.memory_total if latest else None) or info.memory_total
        used = latest.memory_used if latest else None
        memory_top = float(total or max((m for m in memory if m is not None), default=1))
        self.rows["memory"].update(
            used / total if used is not None and total else None,
            f"{format_bytes(used)} / {format_bytes(total)}"
            if used is not None and total
            else "n/a",
            memory,
            memory_top,
            format_bytes(memory_top),
            seconds,
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
            f"{top:.0f} W",
            seconds,
        )

        temperature = series(lambda r: r.temperature_c)
        celsius = latest.temperature_c if latest else None
        self.rows["temperature"].update(
            celsius / 100 if celsius is not None else None,
            f"{celsius:.0f} °C" if celsius is not None else "n/a",
            temperature,
            100.0,
            "100 °C",
            seconds,
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

        seconds = _window_s(history)
        cpus = latest.cpus
        self.rows["cpu"].update(
            latest.cpu_utilization,
            f"{latest.cpu_utilization * cpus * 100:.0f}% of {cpus} CPU{'s' if cpus != 1 else ''}",
            series(lambda h: h.cpu_utilization),
            1.0,
            f"{cpus * 100}%",  # all of the host's CPUs, as the value counts them
            seconds,
        )
        rss_top = float(max((h.rss for h in hosts if h is not None), default=1)) * 1.25
        self.rows["rss"].update(
            latest.rss / latest.memory_total if latest.memory_total else None,
            f"{format_bytes(latest.rss)} resident",
            series(lambda h: float(h.rss)),
            rss_top,
            format_bytes(rss_top),
            seconds,
        )
        self.rows["host_cpu"].update(
            latest.system_cpu_utilization,
            f"{latest.system_cpu_utilization * 100:.0f}%",
            series(lambda h: h.system_cpu_utilization),
            1.0,
            "100%",
            seconds,
        )
        used = latest.memory_total - latest.memory_available
        self.rows["host_memory"].update(
            latest.memory_fraction,
            f"{format_bytes(used)} / {format_bytes(latest.memory_total)}",
            series(lambda h: h.memory_fraction),
            1.0,
            "100%",
            seconds,
        )


# The static copy shown beside the live panel. While the live panel renders, CSS hides the copy;
# where the widget cannot render (a saved notebook reopened: "Error displaying widget: model not
# found"), CSS hides that error and the copy shows instead. Selectors are JupyterLab's output
# area (the output just before the copy is always the widget's: they are displayed together);
# elsewhere (nbconvert, GitHub) the copy simply shows.
_SNAPSHOT_CSS = """
.jp-OutputArea-child:has(.o11y-monitor) + .jp-OutputArea-child:has(.o11y-snapshot){display:none}
.jp-OutputArea-child:not(:has(.o11y-monitor)):not(:has(.o11y-snapshot)):has(+ .jp-OutputArea-child .o11y-snapshot){display:none}
.o11y-snapshot{font-size:12px;line-height:1.5}
.o11y-snapshot table{border-collapse:collapse;margin:0}
.o11y-snapshot table tr,.o11y-snapshot table tr:nth-child(odd),.o11y-snapshot table tr:hover{
background:transparent}
.o11y-snapshot table td{text-align:left;padding:0 12px 0 0;border:none;vertical-align:middle}
.o11y-snapshot .o11y-note{opacity:.7}
"""

# A click on Stop reaches the kernel only when it is idle (widget messages queue behind the
# running cell on the shell channel), so the front end freezes the panel itself at once: it
# shows a still copy in place of the live one until Start is pressed. The kernel stops sampling
# for this panel when the click reaches it. Fixed text: no data is spliced into it.
_FREEZE_JS = """
(function(){
var me=document.currentScript,child=me&&me.closest('.jp-OutputArea-child');
var prev=child&&child.previousElementSibling;if(!prev)return;
var tries=0;
(function wire(){
  var live=prev.querySelector('.o11y-monitor');
  if(!live){if(tries++<600)setTimeout(wire,100);return;}
  if(live.getAttribute('data-o11y-freeze'))return;
  live.setAttribute('data-o11y-freeze','1');
  live.addEventListener('click',function(e){
    var button=e.target.closest&&e.target.closest('button');
    if(!button||button.textContent.trim()!=='Stop')return;
    var still=live.cloneNode(true);
    still.classList.remove('o11y-monitor');still.classList.add('o11y-monitor-frozen');
    var status=still.querySelector('.o11y-status');
    if(status)status.textContent='o11ylab hardware \u25a0 stopped (sampling stops once the kernel is free)';
    var start=still.querySelector('button');
    if(start){start.textContent='Start';start.addEventListener('click',function(){
      still.remove();live.style.display='';button.click();});}
    live.style.display='none';live.parentNode.insertBefore(still,live);
  },true);
})();
})();
"""


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
        # The still copies this monitor displayed, refreshed when it stops (update_display):
        # a notebook saved afterwards keeps the panel as it was at the stop, not at display.
        self._copies: list[Any] = []
        self._panels: list[_GpuPanel] = []
        self._panels_for: tuple[str, ...] | None = None
        self._number = next(_CREATED)  # its place in creation order (see _EXPLAINED_BY)
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
        self._refresh_copies()

    def _refresh_copies(self) -> None:
        """The still copies as the panel is now. JupyterLab applies such an update to the
        displaying cell's output after that cell has finished too (seen in Chromium: from a
        later cell and from the Stop button's click)."""
        for copy in self._copies:
            try:
                copy.update(self._copy_bundle(), raw=True)
            except Exception:  # noqa: BLE001 - a closed stream must not make stop() fail
                pass

    def _copy_bundle(self) -> dict[str, str]:
        return {
            "text/html": self.snapshot_html(),
            "text/plain": "(a static copy of the o11ylab hardware monitor)",
        }

    def _clicked(self, _button: Any) -> None:
        if self._running and self.sampler.running:
            self.stop()
        else:
            self.start()

    def close(self) -> None:
        self.stop()
        _MONITORS.discard(self)
        for reason, teller in list(_EXPLAINED_BY.items()):
            if teller == self._number:  # gone: the next monitor explains it
                _EXPLAINED_BY.pop(reason, None)
        for child in self._all_widgets():
            child.close()
        super().close()

    # -- display: the live panel, and a static copy for where it cannot render

    def __repr__(self) -> str:
        # What a notebook shows for the widget where it cannot render it (an untrusted notebook
        # shows this text): ipywidgets' own repr is the whole widget tree.
        return "o11ylab hardware monitor (live with the notebook's kernel; a still copy follows)"

    def _ipython_display_(self, **kwargs: Any) -> None:
        from IPython.display import display

        # The copy shows what the panel shows: give a sampler that is just starting one sample
        # (one interval, at most 2 s) so the copy is not an empty "waiting" panel.
        deadline = time.monotonic() + min(2.0, 2 * self.sampler.interval_s)
        while self._running and self.sampler.latest is None and time.monotonic() < deadline:
            time.sleep(0.05)
        latest = self.sampler.latest
        if self._running and latest is not None:
            self._on_sample(latest)
        # IPython's display() is untyped.
        display(self._repr_mimebundle_(**kwargs), raw=True)  # type: ignore[no-untyped-call]
        copy = display(self._copy_bundle(), raw=True, display_id=True)  # type: ignore[no-untyped-call]
        from IPython import get_ipython

        # Only a kernel's front end replaces an output in place; a terminal would print the
        # copy's text again at each stop.
        in_kernel = getattr(get_ipython(), "kernel", None) is not None
        if copy is not None and in_kernel:
            self._copies.append(copy)

    def snapshot_html(self) -> str:
        """The panel as it is now, as plain HTML (shown where the live widget cannot render)."""
        when = time.strftime("%H:%M:%S")
        parts = [
            '<div class="o11y-snapshot">',
            f"<style>{_SNAPSHOT_CSS}</style>",
            "<div><b>o11ylab hardware</b> <span class='o11y-note'>"
            f"{html.escape(f'a still copy from {when}; the live panel needs its kernel: run the cell again')}"
            "</span></div>",
        ]
        if self._why.value:
            parts.append(f"<div>{self._why.value}</div>")

        def rows(title: str, items: Sequence[_Row]) -> None:
            parts.append(f"<div>{title}</div><table>")
            for row in items:
                # The line alone, without its text labels: where a sanitizer drops the <svg>
                # (an untrusted notebook), its labels would otherwise run together as text.
                line = sparkline_svg(row.history, row.top)
                parts.append(
                    f"<tr><td>{html.escape(row.label.value)}</td>"
                    f"<td>{html.escape(row.value.value)}</td><td>{line}</td></tr>"
                )
            parts.append("</table>")

        for panel in self._panels:
            rows(panel.title.value, list(panel.rows.values()))
        rows(self._kernel.title.value, list(self._kernel.rows.values()))
        parts.append(f"<script>{_FREEZE_JS}</script></div>")
        return "".join(parts)

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
        reason = sampler.no_gpu_reason
        if not sampler.ready.is_set():
            why = "Looking for GPUs…"
        elif reason:
            # The earliest monitor explains it, whichever refreshed first once the reason was
            # known: a later one that got there first hands it back at its next refresh.
            teller = _EXPLAINED_BY.get(reason)
            if teller is None or self._number < teller:
                _EXPLAINED_BY[reason] = teller = self._number
            # The driver's own words stay in %o11y status; the panel gives the short sentence.
            short = reason.split(" (", 1)[0]
            why = (
                f"No GPU: {short}. Showing the kernel's CPU and memory."
                if teller == self._number
                else "No GPU (said above): showing the kernel's CPU and memory."
            )
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
