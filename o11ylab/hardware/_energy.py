"""How good a span's joules are: the energy counter's update period, and who else was running.

NVML's total-energy counter moves in steps: about every 100 ms on current GPUs, every ~10 ms on
older ones. A span shorter than one step gets a delta that is mostly the step's timing, so
o11ylab measures the period once per GPU (``CounterProbe``, in the sampler thread's idle time)
and each span's energy then says how it was measured (``semconv.GPU_ENERGY_METHOD``):

* ``counter_delta``: the counter at start and end; off by at most one period's energy at each
  end, so good when the span is many periods long;
* ``instant_power``: a span shorter than a period, on a GPU with ``NVML_FI_DEV_POWER_INSTANT``
  (Ampere and newer): the mean of instant power at start and end, times the duration;
* ``power_samples``: a GPU without the counter: the sampler's power readings, integrated;
* ``too_short``: a span shorter than a period and no instant power: no joules are given.

Spans measured at the same time on one GPU from different threads or asyncio tasks each get
``semconv.GPU_ENERGY_SHARED``: their joules are the device's energy over their own window, not a
share of it, so shared spans' joules must not be added up.
"""

from __future__ import annotations

import itertools
import statistics
import sys
import threading
from collections.abc import Callable, Hashable, Iterable

PROBE_POLL_S = 0.002  # the counter's period is measured to about this
PROBE_BUDGET_S = 1.0  # a counter still for this long: its period stays unknown
PROBE_CHANGES = 4  # three intervals between changes; their median is the period

COUNTER_DELTA = "counter_delta"
INSTANT_POWER = "instant_power"
POWER_SAMPLES = "power_samples"
TOO_SHORT = "too_short"
MIXED = "mixed"
METHOD_OF_SOURCE = {"counter": COUNTER_DELTA, "power": POWER_SAMPLES, "mixed": MIXED}


class CounterProbe:
    """Watches each GPU's energy counter until it has changed ``PROBE_CHANGES`` times.

    ``step(now)`` reads every GPU still being probed once; the sampler calls it every couple of
    milliseconds while it waits for its next sample, so sampling keeps its rate.
    """

    def __init__(
        self,
        positions: Iterable[int],
        read: Callable[[int], float | None],
        has_counter: Callable[[int], bool],
    ) -> None:
        self._read = read
        self._has_counter = has_counter
        self._last: dict[int, float | None] = dict.fromkeys(positions)
        self._changes: dict[int, list[float]] = {p: [] for p in self._last}
        self._began: float | None = None
        self.periods: dict[int, float] = {}  # position -> seconds between counter updates
        self.unknown: list[int] = []  # GPUs whose counter did not move enough in the budget
        self.done = not self._last

    def step(self, now: float) -> None:
        if self.done:
            return
        if self._began is None:
            self._began = now
        for position in list(self._last):
            value = self._read(position)
            if value is None:
                if not self._has_counter(position):  # NVML said so: nothing to probe
                    del self._last[position]
                continue  # a failed read: the next step tries again, within the budget
            last = self._last[position]
            self._last[position] = value
            if last is None or value == last:
                continue
            changes = self._changes[position]
            changes.append(now)
            if len(changes) >= PROBE_CHANGES:
                gaps = [b - a for a, b in itertools.pairwise(changes)]
                self.periods[position] = statistics.median(gaps)
                del self._last[position]
        if self._last and now - self._began > PROBE_BUDGET_S:
            self.unknown = sorted(self._last)
            self._last.clear()
        self.done = not self._last


def lane() -> Hashable:
    """Where a span runs: its thread and asyncio task. Spans in one lane nest; in two, they may
    run at the same time."""
    task = None
    asyncio = sys.modules.get("asyncio")  # never imported for this: no loop without it
    if asyncio is not None:
        # _get_running_loop returns None where current_task() would raise: 0.3 us, not 1.9 us.
        loop = asyncio._get_running_loop()
        task = asyncio.current_task(loop) if loop is not None else None
    return (threading.get_ident(), id(task) if task is not None else 0)
