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
    from .magics import O11yMagics
    from .telemetry import Telemetry

__all__ = ["O11yLabExtension"]

_EVENTS = ("pre_run_cell", "post_run_cell")


class O11yLabExtension:
    """``load()`` once, ``unload()`` once; both leave the shell consistent if they fail."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.options: O11yLab | None = None
        self.telemetry: Telemetry | None = None
        self.tracer: CellTracer | None = None
        self.magics: O11yMagics | None = None
        self._hardware = False

    def load(self) -> None:
        from IPython.core.error import UsageError

        from . import activation, hardware
        from .cells import CellTracer
        from .config import ConfigError, O11yLab, load_settings
        from .magics import O11yMagics
        from .telemetry import get_telemetry

        shell = self.shell
        options = O11yLab(parent=shell, config=shell.config)
        try:
            telemetry = get_telemetry(load_settings(overrides=options.overrides()))
            hardware.HardwareSettings.from_env()  # a bad O11YLAB_HARDWARE_* fails here, not later
        except ConfigError as exc:
            raise UsageError(f"o11ylab: {exc}") from None
        self.options, self.telemetry = options, telemetry
        shell.configurables.append(options)
        telemetry.attach()
        activation.activate(telemetry)  # the user's own AI libraries, traced from their import
        self.tracer = tracer = CellTracer(shell, telemetry)
        self.magics = O11yMagics(shell, tracer)
        shell.register_magics(self.magics)
        for event in _EVENTS:
            shell.events.register(event, getattr(tracer, event))
        hardware.attach(telemetry)  # starts the sampler thread; NVML starts inside it, not here
        self._hardware = True

    def unload(self) -> None:
        shell = self.shell
        tracer, self.tracer = self.tracer, None
        if tracer is not None:
            for event in _EVENTS:
                try:
                    shell.events.unregister(event, getattr(tracer, event))
                except ValueError:
                    pass
        magics, self.magics = self.magics, None
        if magics is not None:
            registry = shell.magics_manager
            for kind, names in magics.magics.items():
                for name in names:
                    registry.magics[kind].pop(name, None)
            registry.registry.pop(type(magics).__name__, None)
            if magics in shell.configurables:  # register_magics put it there
                shell.configurables.remove(magics)
        if tracer is not None:
            tracer.close()
        if self._hardware:
            from . import hardware

            hardware.detach()  # stops the sampler thread and releases NVML
            self._hardware = False
        telemetry, self.telemetry = self.telemetry, None
        if telemetry is not None:
            from . import activation

            activation.deactivate(telemetry)  # uninstruments what o11ylab instrumented
            telemetry.detach()
        options, self.options = self.options, None
        if options is not None and options in shell.configurables:
            shell.configurables.remove(options)
