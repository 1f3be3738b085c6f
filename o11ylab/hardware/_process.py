"""The process's one sampler, and the hooks ``%load_ext`` installs (``attach`` / ``detach``)."""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import load_hardware
from ._attribution import Attributor, _SpanAttribution
from ._metrics import register_instruments
from ._sampler import Sampler

if TYPE_CHECKING:
    from ..telemetry import Telemetry


@dataclass
class _Installed:
    telemetry: Telemetry
    sampler: Sampler
    spans: _SpanAttribution
    note_sink: Callable[[str], None]


class _ProcessHardware:
    """What this process has: its one sampler (built on first use) and, while the extension is
    loaded, the hooks ``attach`` installed. One object, so tests and unload see one state."""

    def __init__(self) -> None:
        self.sampler: Sampler | None = None
        self.installed: _Installed | None = None
        self._lock = threading.Lock()
        self._exit_hook = False

    def get(self) -> Sampler:
        sampler = self.sampler
        if sampler is None:
            with self._lock:
                if self.sampler is None:
                    self.sampler = Sampler()
                    self._stop_at_exit()
                sampler = self.sampler
        return sampler

    def swap(self, sampler: Sampler | None) -> Sampler | None:
        with self._lock:
            old, self.sampler = self.sampler, sampler
            if sampler is not None:
                self._stop_at_exit()
        return old

    def _stop_at_exit(self) -> None:
        if not self._exit_hook:  # once: atexit would run a second registration twice
            self._exit_hook = True
            atexit.register(self._at_exit)

    def _at_exit(self) -> None:
        sampler = self.sampler
        if sampler is not None:
            sampler.stop(timeout=1.0)


_PROCESS = _ProcessHardware()


def get_sampler() -> Sampler:
    """The process's sampler (built from the environment on first use; not started)."""
    return _PROCESS.get()


def set_sampler(sampler: Sampler | None) -> Sampler | None:
    """Use this sampler for the process (a test double's, or one you configured); returns the old."""
    return _PROCESS.swap(sampler)


def _current_sampler() -> Sampler | None:
    return _PROCESS.sampler


def attach(telemetry: Telemetry) -> Sampler | None:
    """Start the sampler and hook attribution into spans and cells; what ``%load_ext`` does.

    Costs a thread start, not a driver call: NVML starts inside the sampler thread.
    """
    if _PROCESS.installed is not None:
        return _PROCESS.installed.sampler
    settings = load_hardware()
    if not settings.enabled:
        _note(telemetry, "hardware: off (O11YLAB_HARDWARE=0)")
        return None
    sampler = get_sampler()
    attributor = Attributor(sampler)
    spans = _SpanAttribution(attributor)

    def note_sink(text: str) -> None:
        _note(telemetry, text)

    for text in sampler.notes:
        note_sink(f"hardware: {text}")
    sampler.note_sinks.append(note_sink)
    telemetry.enrichers.register(spans)
    register_instruments(telemetry.meter, _current_sampler)
    sampler.start()
    _PROCESS.installed = _Installed(telemetry, sampler, spans, note_sink)
    return sampler


def _note(telemetry: Telemetry, text: str) -> None:
    if text not in telemetry.notes:
        telemetry.notes.append(text)


def detach() -> None:
    """Undo ``attach``: remove the hooks, stop the sampler, release NVML."""
    installed, _PROCESS.installed = _PROCESS.installed, None
    if installed is None:
        return
    installed.telemetry.enrichers.unregister(installed.spans.name)
    if installed.note_sink in installed.sampler.note_sinks:
        installed.sampler.note_sinks.remove(installed.note_sink)
    installed.sampler.stop()


def attached() -> bool:
    return _PROCESS.installed is not None
