"""The kernel process and the host, through psutil."""

from __future__ import annotations

import os
import sys
import time

from ._types import HostReading

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
