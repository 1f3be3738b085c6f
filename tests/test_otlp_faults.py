"""A collector that is down, comes back, answers 503 or 429, and dies again: one kernel's view.

The kernel is a real IPython shell in its own process, driven line by line; the collector is
a real OTLP/HTTP receiver on a fixed port that the test stops, starts and turns hostile.
Every phase checks the three things a user notices: the cell is not slowed, what could not be
delivered is counted in `%o11y status`, and what comes after a recovery is delivered.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from .conftest import free_port
from .otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.integration

KERNEL = """
import json, sys, time
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "o11ylab")
from o11ylab.telemetry import get_telemetry
telemetry = get_telemetry()
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    name = line.strip()
    started = time.perf_counter()
    ok = ip.run_cell(f"%%traced {name} --quiet\\nimport o11ylab\\nwith o11ylab.span('inner'):\\n    pass").success
    cell_s = time.perf_counter() - started
    telemetry.flush()  # what %o11y flush does; bounded by the export timeout
    otlp = [e for e in telemetry.status()["exporters"] if e["name"] == "OTLP traces"][0]
    print(json.dumps({"ok": ok, "cell_s": cell_s, "exported": otlp["exported"],
                      "failed": otlp["failed"]}), flush=True)
"""


class Kernel:
    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", KERNEL],
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self._read() == {"ready": True}

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("{"):
                return dict(json.loads(line))
        raise AssertionError(self.process.stderr.read() if self.process.stderr else "kernel died")

    def cell(self, name: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(name + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> str:
        _out, err = self.process.communicate(timeout=30)
        return err


def test_collector_down_back_hostile_and_dying(run_env: dict[str, str]) -> None:
    port = free_port()
    env = dict(
        run_env,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
        OTEL_EXPORTER_OTLP_TIMEOUT="1",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
    )
    kernel = Kernel(env)
    try:
        down = kernel.cell("while-down")
        assert down["ok"] and down["cell_s"] < 0.5
        assert down["failed"] >= 2 and down["exported"] == 0, down

        with OtlpReceiver(port) as collector:
            back = kernel.cell("after-return")
            assert back["exported"] >= 2 and back["failed"] == down["failed"], back
            assert {"after-return", "inner"} <= collector.names()
            assert "while-down" not in collector.names(), "a failed batch is dropped, not replayed"

            for status in (503, 429):
                collector.status = status
                hostile = kernel.cell(f"during-{status}")
                assert hostile["ok"] and hostile["cell_s"] < 0.5
                assert hostile["failed"] > back["failed"], (status, hostile)
                back = hostile
            collector.status = 200
            healed = kernel.cell("healed")
            assert "healed" in collector.names()
            assert healed["exported"] > back["exported"]

        died = kernel.cell("after-death")
        assert died["ok"] and died["cell_s"] < 0.5 and died["failed"] > healed["failed"]
    finally:
        stderr = kernel.close()
    assert stderr.count("OTLP traces export") == 1, "one warning, not one per batch"
    assert "lost items are counted in %o11y status" in stderr
