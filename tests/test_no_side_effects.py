"""o11ylab used as a library installs nothing: only %load_ext, o11ylab.init(), the CLI and the
runner set process-wide OpenTelemetry providers. Each case runs in a bare process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import json, sys
from opentelemetry import _logs, metrics, trace
before = [type(trace.get_tracer_provider()), type(metrics.get_meter_provider()),
          type(_logs.get_logger_provider())]
import o11ylab
from o11ylab.errors import O11yLabError
from o11ylab.testing import capture_spans

with o11ylab.span("alone", answer=42) as span:
    recording = span.is_recording()
try:
    with capture_spans():
        pass
    refused = None
except O11yLabError as exc:
    refused = str(exc)

from opentelemetry.sdk.trace import TracerProvider
own = TracerProvider()
with capture_spans(own) as spans:
    own.get_tracer("t").start_span("mine").end()
after = [type(trace.get_tracer_provider()), type(metrics.get_meter_provider()),
         type(_logs.get_logger_provider())]
print(json.dumps({"same": before == after, "recording": recording, "refused": refused,
                  "captured": [s.name for s in spans]}))
"""


def test_span_and_capture_in_a_bare_process_install_nothing_and_write_nothing(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("O11YLAB_", "OTEL_"))}
    env["HOME"] = str(tmp_path / "home")
    env["O11YLAB_RUNS_DIR"] = str(tmp_path / "runs")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["same"], "a global provider was installed"
    assert seen["recording"] is False  # no provider: a no-op span, as any OTel library gives
    assert "o11ylab.init()" in seen["refused"]  # says what to do
    assert seen["captured"] == ["mine"]  # a provider passed in is used
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == [], f"files written: {written}"
    assert result.stderr == ""
