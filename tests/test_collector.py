"""OTLP to a real collector process, and what a dead or hanging collector costs a run.

`rotel` (PyPI) is a real OTLP collector binary; here it stands where Grafana Alloy stands in
production: kernel → collector → a receiver behind it, where the spans are read back.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import NOTEBOOKS, free_port
from .otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.integration
QUICKSTART = str(NOTEBOOKS / "00_quickstart.ipynb")


def rotel_binary() -> str:
    import rotel

    path = Path(rotel.__file__).with_name("rotel-agent")
    assert path.exists(), "the rotel wheel ships its collector binary next to its module"
    return str(path)


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[tuple[OtlpReceiver, int, int]]:
    """rotel listening on (gRPC, HTTP) ports, exporting OTLP/HTTP to a receiver."""
    grpc_port, http_port = free_port(), free_port()
    with OtlpReceiver() as receiver:
        log = (tmp_path / "rotel.log").open("w")
        process = subprocess.Popen(
            [
                rotel_binary(),
                "start",
                "--otlp-grpc-endpoint",
                f"127.0.0.1:{grpc_port}",
                "--otlp-http-endpoint",
                f"127.0.0.1:{http_port}",
                "--exporter",
                "otlp",
                "--otlp-exporter-endpoint",
                f"http://127.0.0.1:{receiver.port}",
                "--otlp-exporter-protocol",
                "http",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", http_port), timeout=0.5).close()
                    break
                except OSError:
                    assert process.poll() is None, (tmp_path / "rotel.log").read_text()
                    time.sleep(0.1)
            yield receiver, grpc_port, http_port
        finally:
            process.terminate()
            process.wait(10)
            log.close()


def run_quickstart(
    env: dict[str, str], out: Path
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "o11ylab", "run", QUICKSTART, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return done, time.perf_counter() - started


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_spans_cross_a_real_collector_with_parent_links_intact(
    collector: tuple[OtlpReceiver, int, int], protocol: str, tmp_path: Path, run_env: dict[str, str]
) -> None:
    receiver, grpc_port, http_port = collector
    port = grpc_port if protocol == "grpc" else http_port
    env = dict(
        run_env,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
    )
    done, _ = run_quickstart(env, tmp_path / "out")
    assert done.returncode == 0, done.stdout + done.stderr

    def complete(spans: list[dict[str, object]]) -> bool:
        names = {s["name"] for s in spans}
        return {
            "o11ylab run",
            "notebook 00_quickstart",
            "prepare-data",
            "summarise",
            "compute squares",
        } <= names

    assert receiver.wait_for(complete, timeout=30), receiver.spans
    # The run's local endpoint (service o11ylab-serve) exports through the collector too.
    ours = [s for s in receiver.spans if s["service"] == "o11ylab"]
    spans = {s["name"]: s for s in ours}
    assert len({s["trace_id"] for s in ours}) == 1
    assert spans["notebook 00_quickstart"]["parent_span_id"] == spans["o11ylab run"]["span_id"]
    assert spans["prepare-data"]["parent_span_id"] == spans["notebook 00_quickstart"]["span_id"]
    assert spans["compute squares"]["parent_span_id"] == spans["prepare-data"]["span_id"]
    assert spans["prepare-data"]["service"] == "o11ylab"
    assert receiver.requests.get("/v1/logs"), "logs cross the collector too"


class Hang:
    """Accepts connections and never answers: the worst kind of collector."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_a_dead_or_hanging_collector_costs_a_run_a_bounded_few_seconds(
    tmp_path: Path, run_env: dict[str, str]
) -> None:
    env = dict(run_env, OTEL_EXPORTER_OTLP_TIMEOUT="1")
    baseline, base_s = run_quickstart(env, tmp_path / "base")
    assert baseline.returncode == 0, baseline.stderr

    dead_port = free_port()  # nothing listens there
    dead, dead_s = run_quickstart(
        dict(env, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{dead_port}"), tmp_path / "dead"
    )
    hang = Hang()
    try:
        hung, hung_s = run_quickstart(
            dict(env, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{hang.port}"),
            tmp_path / "hung",
        )
    finally:
        hang.close()
    print(
        f"\nquickstart run: {base_s:.1f} s without OTLP, {dead_s:.1f} s with a dead collector, "
        f"{hung_s:.1f} s with a hanging one (export timeout 1 s)"
    )
    assert dead.returncode == 0 and hung.returncode == 0, dead.stderr + hung.stderr
    # Each kernel exit may wait for one bounded flush per signal (2 × timeout + 1 s at most).
    assert dead_s - base_s < 8, (base_s, dead_s)
    assert hung_s - base_s < 8, (base_s, hung_s)
    # The run summary counts what could not be delivered...
    for done in (dead, hung):
        assert "telemetry items could not be exported" in done.stdout
    lost = json.loads((tmp_path / "dead" / "summary.json").read_text())["notebooks"][0]["lost"]
    assert lost > 0
    # ...and the local trace file is complete either way: nothing already written is lost.
    from o11ylab.otlpjson import read_spans

    for out in ("dead", "hung"):
        names = {s["name"] for s in read_spans(tmp_path / out)}
        assert {"prepare-data", "summarise", "compute squares"} <= names, out
    assert os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") is None
