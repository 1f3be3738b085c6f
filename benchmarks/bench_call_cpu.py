"""CPU added per chat call: o11ylab as ``%load_ext`` sets it up vs the official instrumentation.

Run: python benchmarks/bench_call_cpu.py [--rounds 15] [--calls 100] [--also NAME=VALUE ...]

``--also O11YLAB_TRACE_FILE=0`` adds a fourth worker, o11ylab with that setting, to see what one
part costs (repeat ``--also`` for more workers; ``A=1,B=2`` sets two in one worker).

``--parts`` runs the o11ylab worker alone and switches each part of o11ylab off in turn inside
it (``_parts.py``: each enricher, the registry, the run file, the roll-up, the span buffer, trace
context on the wire), interleaved with rounds of everything on: what each part costs per call
where it runs, between the SDK's own work. "nothing" switches nothing off (the A/A spread).

The same ``chat.completions.create`` call of the real openai SDK goes to a canned
OpenAI-compatible stub on loopback (``http.server`` answering ``/v1/chat/completions`` with a
fixed body and usage; it runs in this process, so its CPU is not counted). Three variants, each
in its own worker process, because OpenTelemetry's global providers can be set only once per
process:

- bare: the SDK, nothing instrumented;
- official: ``OpenAIInstrumentor`` alone (opentelemetry-instrumentation-genai-openai), an SDK
  ``TracerProvider`` with a ``BatchSpanProcessor`` to a counting exporter that writes nothing,
  its metrics on a ``MeterProvider`` with an ``InMemoryMetricReader``;
- o11ylab: ``%load_ext o11ylab`` in a real IPython shell, as a notebook gets it: the run files,
  the span buffer, the metrics (the file's periodic reader, /metrics on its default port), the
  logging bridge, the hardware sampler, the enrichers, every instrumentor. ``OPENAI_API_KEY``
  is set, as for a cloud call, so the offline default for the SDK stays off.

Every worker runs its calls the same way, as one cell of an IPython shell (``run_cell``), so
the harness is the same for all three. A round asks each worker for ``--calls`` calls, in a
rotated order; a worker reports the process CPU (``time.process_time``: the calling thread plus
its exporters' and sampler's threads, not other programs on a shared machine) that its calls
took, a flush of what they made included, so a variant cannot look cheap by leaving its spans
queued. Added CPU per call = variant - bare of the same round; the figure is the median over
rounds. Goal (issue 13): o11ylab's added CPU <= 1.25 x the official instrumentation's.

Measured on 2026-12-05 (2 shared cores, 9-21 rounds; runs differ by +-30 us, workers of the
same setup by up to 20 us): official +260 to +306 us a call; o11ylab +531 to +611 at the start
of the day, +445 to +493 after the first cuts (ratio 1.56 to 1.62), +399 to +439 after the
second (ratio 1.42 to 1.50). The first cuts: the run file encodes each span straight to bytes
(orjson when installed) so a batch's dicts never outlive the young generation, library loggers
quieted once they drop a record, enrichers set their attributes in one pass and read the SDK's
attribute dict, the cost counter is deferred to collection. The second: how a call is priced
is resolved once a minute and kept, with float rates; attributes the SDK's cleaning would not
change skip it; the no-GPU span measurement is one CPU-time float. What the parts cost in situ
(perf counters around each, wall time, 2,000 calls): the cost enricher 29 us (57 before the
second cuts; 8 of the 29 are reading O11YLAB_PRICING_FILE and the genai-prices snapshot, work
that takes well under a microsecond in a tight loop: the rest of the gap is cold caches after
the SDK call), the openai_http instrumentor 15-25 (its W3C inject 12), the hardware enricher
5-8, the registry's own loop 8, the run file 16 on the export thread. Not in the medians:
the span buffer keeps the last 10,000 spans, ~9 objects a call reach the oldest GC generation,
and a full collection of the kernel's ~180k objects (~60 ms) comes every ~3,000 calls, about
20 us a call when averaged; the official instrumentation keeps nothing.

Later the same day, ratio 1.40 (+295 / +414 us), and ``--parts`` (15 rounds, A/A +10 us): the
enrichment registry with its enrichers 63 us (cost 34, hardware 13, key scrub 0), trace
context on the wire 37, the run file 26, the roll-up 3, the span buffer -3. These sum to the
whole gap to the official instrumentation: what is left is the features themselves, each
measured near its floor in a tight loop (the cost enricher's own work 6.6 us there, the
openai_http instrumentor's 11).

Next session: the cost enricher builds no ``Cost`` and reads its environment variable with one
dict lookup (5.6 to 3.8 us a span in a tight loop; in place within the A/A spread); ratio 1.39
and 1.43 in two runs (+305 / +424, +284 / +406). A py-spy profile of GIL samples (``py-spy
record --gil``) of both workers, 8,000 calls each, shows where the official instrumentation's
own ~290 us go: its two histogram records ~85 us (exemplar sampling ~18 of them), the span's
start ~39, the BatchSpanProcessor's on_end ~10. In o11ylab's worker the same SDK code runs at
the same cost (it records the same histograms, with exemplars), so the gap stays o11ylab's parts.

Counting Python calls per chat call (``sys.setprofile``) showed o11ylab adding 106 to the
official instrumentation's ~505, at ~1 us each where they run against ~0.6 for the SDK's own.
Since then: the openai_http instrumentor reads the context once and writes traceparent itself
under the API's default propagator (~30 calls to ~10), the cost enricher's common case takes
~7 calls instead of ~18, and the cost counter is summed by o11ylab and read by an observable
counter (the SDK's Counter.add, replayed from a queue at collection, was ~9 us a call). Each
round's flush now collects metrics, so work deferred to collection is counted: it was not.
106 calls to 57. Against the code before, run as a fourth worker in the same runs (``--also
PYTHONPATH=<old checkout>``), 31-41 rounds: +384 / +388 / +379 us against +426 / +414 / +424,
official +287 / +278 / +284: ratio 1.34 / 1.39 / 1.34, the code before 1.48 / 1.49 / 1.49.

The next day, the same code: ratio 1.41 / 1.48 / 1.42 / 1.34 / 1.43 in five runs (21-41 rounds):
runs of one setup now differ by more than any part left to cut. What the goal would take, as
more workers of one run (31 rounds, official +311): o11ylab +444 (1.43); without the run file
(``O11YLAB_TRACE_FILE=0``) +397 (1.28); without trace context on the wire
(``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=openai_http``) +395 (1.27); without both +376 (1.21).
The goal is met only with two of the features the issue keeps switched off.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GOAL = 1.25
VARIANTS = ("bare", "official", "o11ylab")
MODEL = "gpt-4o-mini"  # a model genai-prices knows: the cost hook does its real work
REPLY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_767_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "A span is one timed operation."},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 14, "completion_tokens": 8, "total_tokens": 22},
    }
).encode()


# --- the stub ------------------------------------------------------------------------------------


class _Stub(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real endpoint: no connect per call
    # Headers and body go out in two writes: with Nagle on, the second waits for the client's
    # delayed ACK (~40 ms a call here).
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(REPLY)))
        self.end_headers()
        self.wfile.write(REPLY)

    def log_message(self, format: str, *args: Any) -> None:
        pass


# --- a worker: one variant, set up once, then calls on demand -----------------------------------


def _worker(variant: str, base_url: str) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    flush = _setup(variant, shell)

    import openai

    client = openai.OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0, timeout=30)
    messages = [{"role": "user", "content": "Explain in one sentence what a span is."}]

    def calls(count: int) -> None:
        for _ in range(count):
            client.chat.completions.create(model=MODEL, messages=messages, max_tokens=16)

    shell.user_ns["_bench_calls"] = calls
    reply = sys.__stdout__
    assert reply is not None
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "quit":
            break
        count, _, part = line.strip().partition("\t")
        with _switched_off(part, variant):
            started = time.process_time()
            result = shell.run_cell(f"_bench_calls({int(count)})", store_history=False)
            flush()
            cpu = time.process_time() - started
        if not result.success:
            print(f"ERROR {result.error_in_exec!r}", file=reply, flush=True)
            continue
        print(f"CPU {cpu!r}", file=reply, flush=True)
    print(f"DONE {json.dumps(_counts(variant))}", file=reply, flush=True)


_EXPORTED: list[int] = [0]


def _switched_off(part: str, variant: str) -> Any:
    if not part:
        return contextlib.nullcontext()
    from _parts import switched_off

    from o11ylab.telemetry import peek_telemetry

    assert variant == "o11ylab", "parts are o11ylab's"
    return switched_off(part, peek_telemetry())


def _setup(variant: str, shell: Any) -> Any:
    if variant == "bare":
        return lambda: None
    if variant == "official":
        from collections.abc import Sequence

        from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        class Counting(SpanExporter):
            """Counts what it is given and writes nothing."""

            def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
                _EXPORTED[0] += len(spans)
                return SpanExportResult.SUCCESS

        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(BatchSpanProcessor(Counting()))
        reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[reader])
        OpenAIInstrumentor().instrument(
            tracer_provider=tracer_provider, meter_provider=meter_provider
        )

        def flush_official() -> None:
            tracer_provider.force_flush()
            reader.get_metrics_data()

        return flush_official
    shell.run_line_magic("load_ext", "o11ylab")
    from o11ylab.telemetry import peek_telemetry

    telemetry = peek_telemetry()
    assert telemetry is not None and telemetry.memory_reader is not None

    def flush_o11ylab() -> None:
        telemetry.flush()
        # A collection, as the official worker's: it records what o11ylab's deferred
        # instruments queued on the calling path (the cost counter), so that work is counted.
        telemetry.memory_reader.get_metrics_data()

    return flush_o11ylab


def _counts(variant: str) -> dict[str, Any]:
    if variant == "official":
        return {"spans exported": _EXPORTED[0]}
    if variant == "o11ylab":
        from o11ylab.telemetry import peek_telemetry

        telemetry = peek_telemetry()
        assert telemetry is not None
        return {c.name: c.exported for c in telemetry.counts}
    return {}


# --- the driver ----------------------------------------------------------------------------------


class _Worker:
    def __init__(self, variant: str, base_url: str, env: dict[str, str]) -> None:
        self.variant = variant
        kind, _, settings = variant.partition(" ")
        if settings:
            env = {**env, **dict(pair.split("=", 1) for pair in settings.split(","))}
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", kind, "--base-url", base_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def _reply(self, prefix: str) -> str:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("ERROR"):
                raise RuntimeError(f"{self.variant}: {line.strip()}")
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        raise RuntimeError(f"the {self.variant} worker exited (rc {self.process.wait()})")

    def run(self, calls: int, part: str = "") -> float:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{calls}\t{part}\n")
        self.process.stdin.flush()
        return float(self._reply("CPU ")) / calls

    def close(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write("quit\n")
        self.process.stdin.close()
        counts: dict[str, Any] = json.loads(self._reply("DONE "))
        self.process.wait(timeout=60)
        return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=100, help="calls per worker per round")
    parser.add_argument(
        "--also", action="append", default=[], help="o11ylab with NAME=VALUE[,NAME=VALUE]"
    )
    parser.add_argument(
        "--parts", action="store_true", help="what each part of o11ylab costs per call (alone)"
    )
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.base_url)
        return 0

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{server.server_port}/v1"
    work = tempfile.mkdtemp(prefix="o11ylab-bench-cpu-")
    env = dict(os.environ)
    for key in ("OPENAI_BASE_URL", "TRACEPARENT"):
        env.pop(key, None)
    env.update(
        {
            "OPENAI_API_KEY": "sk-bench",
            "O11YLAB_RUNS_DIR": os.path.join(work, "runs"),
            "IPYTHONDIR": os.path.join(work, "ipython"),
            "HF_HUB_OFFLINE": "1",
            "ANONYMIZED_TELEMETRY": "False",
        }
    )
    if args.parts:
        return _parts_main(args, base_url, env, server)
    started = time.perf_counter()
    variants = (*VARIANTS, *(f"o11ylab {settings}" for settings in args.also))
    workers = {variant: _Worker(variant, base_url, env) for variant in variants}
    per_call: dict[str, list[float]] = {variant: [] for variant in variants}
    try:
        for variant in variants:  # warm-up: imports, connections, first spans, price lookups
            workers[variant].run(max(10, args.calls // 5))
        for round_ in range(args.rounds):
            shift = round_ % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                per_call[variant].append(workers[variant].run(args.calls))
    finally:
        counts = {}
        for variant, worker in workers.items():
            try:
                counts[variant] = worker.close()
            except Exception:  # noqa: BLE001 - the figures (or the error) matter more
                worker.process.kill()
        server.shutdown()

    bare = per_call["bare"]
    print(
        f"CPU per chat call against a canned loopback stub ({args.rounds} interleaved rounds "
        f"of {args.calls} calls per variant, {time.perf_counter() - started:.0f} s)"
    )
    print(f"  {'bare SDK':<26}: {statistics.median(bare) * 1e6:7.0f} µs/call")
    added: dict[str, float] = {}
    labels = [("official", "official instrumentation"), ("o11ylab", "o11ylab")]
    labels += [(variant, variant) for variant in variants[len(VARIANTS) :]]
    for variant, label in labels:
        deltas = [v - b for v, b in zip(per_call[variant], bare, strict=True)]
        added[variant] = statistics.median(deltas)
        quartiles = statistics.quantiles(deltas, n=4)
        print(
            f"  {label:<26}: {statistics.median(per_call[variant]) * 1e6:7.0f} µs/call, "
            f"added {added[variant] * 1e6:+6.0f} µs "
            f"(rounds' quartiles {quartiles[0] * 1e6:+.0f} .. {quartiles[2] * 1e6:+.0f})"
        )
    for variant in ("official", "o11ylab"):
        print(f"  exported by {variant}: {counts.get(variant)}")
    ratio = added["o11ylab"] / added["official"] if added["official"] > 0 else float("inf")
    verdict = "meets" if ratio <= GOAL else "misses"
    print(f"o11ylab / official added CPU: {ratio:.2f} ({verdict} the goal of <= {GOAL:.2f})")
    return 0


def _parts_main(args: argparse.Namespace, base_url: str, env: dict[str, str], server: Any) -> int:
    from _parts import CALL_PARTS, PARTS

    started = time.perf_counter()
    worker = _Worker("o11ylab", base_url, env)
    cases = ("", *CALL_PARTS)
    per_call: dict[str, list[float]] = {case: [] for case in cases}
    try:
        worker.run(max(10, args.calls // 5))
        for round_ in range(args.rounds):
            shift = round_ % len(cases)
            for case in cases[shift:] + cases[:shift]:
                per_call[case].append(worker.run(args.calls, case))
    finally:
        try:
            worker.close()
        except Exception:  # noqa: BLE001 - the figures (or the error) matter more
            worker.process.kill()
        server.shutdown()
    everything = statistics.median(per_call[""])
    print(
        f"CPU per chat call with o11ylab as %load_ext sets it up, each part switched off in turn "
        f"({args.rounds} interleaved rounds of {args.calls} calls, "
        f"{time.perf_counter() - started:.0f} s)"
    )
    print(f"  {'everything on':<34}: {everything * 1e6:7.0f} µs/call")
    for part in CALL_PARTS:
        saved = statistics.median(
            [a - b for a, b in zip(per_call[""], per_call[part], strict=True)]
        )
        print(f"  {'without ' + part:<34}: saves {saved * 1e6:+6.1f} µs  ({PARTS[part]})")
    print("(the registry's figure includes its enrichers'; 'nothing' is the A/A spread)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
