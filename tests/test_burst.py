"""Bursts: a cell that makes far more spans and log records than any export queue holds.

The run file and the in-memory buffer keep what a cell produced (the file all of it, the
buffer its newest ``O11YLAB_BUFFER_SPANS``, its bound by design); a remote collector may fall
behind, and what it could not take is counted, for spans and log records alike.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from o11ylab.otlpjson import read_logs, read_spans
from o11ylab.status import StatusView
from o11ylab.telemetry import CountingLogExporter, ExportCounts
from o11ylab.telemetry._counting import CountingBatchLogRecordProcessor
from o11ylab.telemetry._file_export import LocalSpanProcessor

from .otlp_receiver import OtlpReceiver

SPANS = 100_000
LOGS = 20_000
BUFFER = 10_000  # O11YLAB_BUFFER_SPANS's default

KERNEL = """
import json, os, sys, time
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "o11ylab")
from o11ylab.telemetry import get_telemetry
from o11ylab.telemetry._file_export import LocalLogRecordProcessor, LocalSpanProcessor
telemetry = get_telemetry()
local = [p for p in telemetry._exporting
         if isinstance(p, (LocalSpanProcessor, LocalLogRecordProcessor))]
peak = {"local_queued": 0}
ip.user_ns.update(SPANS=SPANS_, LOGS=LOGS_, local=local, peak=peak)
def rss_mib():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
rss_before = rss_mib()
started = time.perf_counter()
ok = ip.run_cell('''%%traced burst --quiet
import logging
from opentelemetry import trace
tracer = trace.get_tracer("burst")
log = logging.getLogger("burst")
for i in range(SPANS):
    with tracer.start_as_current_span("s"):
        pass
    if i < LOGS:
        log.warning("record %d", i)
    if i % 500 == 0:
        peak["local_queued"] = max(peak["local_queued"], max(p.queued() for p in local))
''').success
cell_s = time.perf_counter() - started
# The flush is bounded by the export timeout: flush again until nothing is queued, so the
# counts below are final (what is still queued at exit would reach the receiver uncounted).
deadline = time.monotonic() + 120
while True:
    telemetry.flush()
    status = telemetry.status()
    if not status["queued"] or time.monotonic() > deadline:
        break
print(json.dumps({
    "ok": ok, "cell_s": cell_s, "buffered": status["buffered_spans"],
    "exporters": {e["name"]: e for e in status["exporters"]}, "queued": status["queued"],
    "peak_local_queued": peak["local_queued"],
    "rss_growth_mib": rss_mib() - rss_before,
    "status_text": repr(ip.run_line_magic("o11y", "status")),
}), flush=True)
"""


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_a_cell_of_100000_spans_loses_none_to_the_run_file_or_the_buffer(
    run_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with OtlpReceiver() as collector:
        env = dict(
            run_env,
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.port}",
            OTEL_METRICS_EXPORTER="none",
            O11YLAB_HARDWARE="0",
        )
        code = f"SPANS_, LOGS_ = {SPANS}, {LOGS}\n" + KERNEL
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=580
        )
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        received = len(collector.spans)
    run = Path(run_env["O11YLAB_RUN_DIR"])
    created = SPANS + 1  # and the cell's own span
    in_file = len(read_spans(run))
    all_logs = read_logs(run)
    file_logs = len([r for r in all_logs if r["attributes"].get("logger.name") == "burst"])
    exporters = result["exporters"]
    otlp = exporters["OTLP traces"]
    with capsys.disabled():
        print(
            f"\nburst: {created} spans created in {result['cell_s']:.1f} s, {in_file} in the run "
            f"file, {result['buffered']} in the buffer, {received} exported over OTLP, "
            f"{otlp['failed']} counted lost ({otlp['dropped']} dropped by a full queue); "
            f"{LOGS} log records, {file_logs} in the run file, "
            f"{exporters['OTLP logs']['exported']} over OTLP, "
            f"{exporters['OTLP logs']['failed']} counted lost; local queue peak "
            f"{result['peak_local_queued']}, RSS +{result['rss_growth_mib']:.0f} MiB",
            flush=True,
        )
    assert result["ok"]
    assert in_file == created, "the run file keeps every span of the burst"
    assert exporters["file traces"] == {
        **exporters["file traces"],
        "exported": created,
        "failed": 0,
    }
    assert file_logs == LOGS and exporters["file logs"]["failed"] == 0
    assert result["buffered"] == BUFFER, "the buffer holds its bound, the newest spans"
    # Bounded memory: the local queues never hold more than their 2,048 (+1 per thread).
    assert result["peak_local_queued"] <= 2049
    # The remote side may fall behind; whatever it did not get is counted, not hidden.
    assert received == otlp["exported"]
    assert otlp["exported"] + otlp["failed"] == created
    logs = exporters["OTLP logs"]
    assert logs["exported"] + logs["failed"] == len(all_logs)
    assert result["queued"] == 0
    assert f"{otlp['failed']} failed" in result["status_text"]


class _Gated(LogRecordExporter):
    """An exporter that holds its first batch until the test opens the gate: a slow collector."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.received = 0

    def export(self, batch: Any) -> LogRecordExportResult:
        self.gate.wait(10)
        self.received += len(batch)
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        self.gate.set()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def test_log_records_a_full_queue_drops_are_counted_and_shown_in_status() -> None:
    gated = _Gated()
    counts = ExportCounts("OTLP logs", "http://127.0.0.1:4318/v1/logs")
    processor = CountingBatchLogRecordProcessor(
        CountingLogExporter(gated, counts), max_queue_size=16, max_export_batch_size=4
    )
    provider = LoggerProvider(shutdown_on_exit=False)  # this test's own, not the global one
    provider.add_log_record_processor(processor)
    logger = provider.get_logger("chatty")
    for i in range(500):
        logger.emit(body=f"record {i}")
    gated.gate.set()
    processor.force_flush()
    provider.shutdown()
    assert counts.exported == gated.received
    assert counts.dropped() > 0 and counts.exported + counts.lost == 500
    row = {
        "name": counts.name,
        "target": counts.target,
        "exported": counts.exported,
        "failed": counts.lost,
        "dropped": counts.dropped(),
    }
    status: dict[str, Any] = {
        "service": "s",
        "run_dir": None,
        "otlp": {},
        "prometheus": None,
        "content_capture": "NO_CONTENT",
        "queued": 0,
        "buffered_spans": 0,
        "exporters": [row],
        "notes": [],
    }
    text = repr(StatusView(status, autotrace=False))
    assert f"{counts.lost} failed ({counts.dropped()} dropped: queue full)" in text


class _Slow(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Any) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def test_the_local_batcher_makes_producers_wait_instead_of_dropping() -> None:
    exporter = _Slow()
    processor = LocalSpanProcessor(exporter, max_queue=32, batch=8, delay_s=60)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    peak = 0

    def produce() -> None:
        nonlocal peak
        for _ in range(2_000):
            tracer.start_span("s").end()
            peak = max(peak, processor.queued())

    threads = [threading.Thread(target=produce) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    processor.force_flush()
    assert len(exporter.spans) == 8_000, "none dropped"
    assert peak <= 32 + 4, "at most the queue plus one span per producing thread"
    provider.shutdown()


def _child(processor: LocalSpanProcessor, provider: TracerProvider) -> None:
    tracer = provider.get_tracer("child")
    for _ in range(100):
        tracer.start_span("in-child").end()
    processor.force_flush()


def test_a_forked_child_writes_its_own_spans_to_the_run_file(tmp_path: Path) -> None:
    import multiprocessing

    from o11ylab.telemetry import FileSpanExporter, JsonLinesWriter

    processor = LocalSpanProcessor(
        FileSpanExporter(JsonLinesWriter(tmp_path / "traces.1.jsonl")), delay_s=60
    )
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    provider.get_tracer("parent").start_span("before-fork").end()  # queued in the parent
    child = multiprocessing.get_context("fork").Process(target=_child, args=(processor, provider))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    processor.force_flush()
    names = [s["name"] for s in read_spans(tmp_path)]
    assert names.count("in-child") == 100 and names.count("before-fork") == 1
    provider.shutdown()
