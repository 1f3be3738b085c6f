"""The one object that owns what ``%load_ext o11ylab`` installs in a shell, and undoes it.

In order: the options (a traitlets ``Configurable`` registered with the shell, as storemagic
does, so ``%config O11yLab`` lists them), the process's telemetry (providers, the run files,
``/metrics``, the logging bridge, the flusher), what ``activation`` switches on (the enrichers,
the offline default for the openai SDK, every GenAI instrumentor), the cell hooks and magics,
and the hardware sampler. ``unload()`` takes each off in the reverse order; a second load
after it starts from a clean shell.

OpenTelemetry's global providers can be set only once per process, so the providers stay
installed (idle, their exporters flushed) after an unload, and a reload reuses them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cells import CellTracer
    from .config import O11yLab
    from .telemetry import Telemetry

__all__ = ["O11yLabExtension"]


class O11yLabExtension:
    """``load()`` once, ``unload()`` once; both leave the shell consistent if they fail."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.options: O11yLab | None = None
        self.telemetry: Telemetry | None = None
        self.tracer: CellTracer | None = None
        self._hardware = False

    def load(self) -> None:
        from IPython.core.error import UsageError

        from . import activation, hardware
        from .cells import CellTracer
        from .config import ConfigError, O11yLab, load_all
        from .telemetry import get_telemetry

        shell = self.shell
        options = O11yLab(parent=shell, config=shell.config)
        try:
            # Every section, so a bad value anywhere fails here with one line, not in a call.
            telemetry = get_telemetry(load_all(overrides=options.overrides()).telemetry)
        except ConfigError as exc:
            raise UsageError(f"o11ylab: {exc}") from None
        self.options, self.telemetry = options, telemetry
        shell.configurables.append(options)
        telemetry.attach()
        from .traceview import remember_logs

        remember_logs(telemetry)  # the log records %o11y trace shows under their spans
        activation.activate(telemetry)  # the user's own AI libraries, traced from their import
        self.tracer = CellTracer(shell, telemetry)
        self.tracer.install()  # the %%traced transformer, the cell hooks and the magics
        hardware.attach(telemetry)  # starts the sampler thread; NVML starts inside it, not here
        self._hardware = True

    def describe(self) -> str:
        """One line: where the telemetry goes, never a secret (``safe_url`` for endpoints)."""
        if self.telemetry is None:
            return "o11ylab: not loaded"
        status = self.telemetry.status()
        places = []
        if status["run_dir"]:
            places.append(f"run files in {status['run_dir']}")
        if status["otlp"]:
            targets = sorted({url.rsplit("/v1/", 1)[0] for url in status["otlp"].values()})
            places.append(f"OTLP to {', '.join(targets)}")
        if status["prometheus"]:
            places.append(f"/metrics at {status['prometheus']}")
        where = "; ".join(places) or "memory only (%o11y trace, %o11y spans)"
        return (
            f"o11ylab: telemetry to {where}. %o11y status says more; %%traced makes a cell a span."
        )

    def unload(self) -> None:
        shell = self.shell
        tracer, self.tracer = self.tracer, None
        if tracer is not None:
            tracer.uninstall()
        if self._hardware:
            from . import hardware

            hardware.detach()  # stops the sampler thread and releases NVML
            self._hardware = False
        telemetry, self.telemetry = self.telemetry, None
        if telemetry is not None:
            from . import activation

            activation.deactivate(telemetry)  # uninstruments what o11ylab instrumented
            from .traceview import forget_logs

            forget_logs(telemetry)
            telemetry.detach()
        options, self.options = self.options, None
        if options is not None and options in shell.configurables:
            shell.configurables.remove(options)
