"""What the run file costs per span: the span encoders side by side, measured in one run.

Run: python benchmarks/bench_run_file.py [--rounds 7]

Three encoders of the same ended spans into the same OTLP-JSON line, each followed by the
run file's one atomic append:
- protobuf round trip: the SDK's protobuf encoder, ``MessageToDict``, ids to hex, ``json.dumps``
  (the run file's encoder until this benchmark);
- official JSON: ``opentelemetry-exporter-otlp-json-common`` (``pip install
  opentelemetry-exporter-otlp-json-common``), skipped when it is not installed;
- direct: o11ylab's ``encode_spans_line``, straight from the SDK's spans to dicts to JSON.
Each batch size is measured in interleaved rounds (median), a GenAI-sized span (20 attributes,
one event) in a batch of 1 (a cell flushed alone) and of 512 (the batch size in a burst).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from o11ylab.telemetry import JsonLinesWriter
from o11ylab.telemetry._otlpjson import encode_spans_line, to_json_line


def make_spans(count: int) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "bench", "host.name": "h", "process.pid": 1}),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("opentelemetry.instrumentation.genai.openai", "1.3b0")
    for i in range(count):
        with tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT) as span:
            span.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                    "gen_ai.response.id": f"chatcmpl-{i:024d}",
                    "gen_ai.response.finish_reasons": ["stop"],
                    "gen_ai.usage.input_tokens": 42,
                    "gen_ai.usage.output_tokens": 128,
                    "gen_ai.request.temperature": 0.2,
                    "gen_ai.request.max_tokens": 256,
                    "server.address": "127.0.0.1",
                    "server.port": 8000,
                    "gen_ai.usage.cost.amount": 0.000083,
                    "gen_ai.usage.cost.currency": "USD",
                    "gen_ai.usage.cost.source": "genai-prices",
                    "hw.cpu.seconds": 0.0012,
                    "o11ylab.cell.id": "cell-3",
                    "http.response.status_code": 200,
                    "gen_ai.output.type": "text",
                    "gen_ai.conversation.id": "c-1",
                }
            )
            span.add_event("gen_ai.client.first_token", {"index": 0})
    provider.shutdown()
    return list(exporter.get_finished_spans())


def encoders() -> dict[str, Callable[[Sequence[ReadableSpan]], bytes]]:
    found: dict[str, Callable[[Sequence[ReadableSpan]], bytes]] = {
        "protobuf round trip": lambda spans: to_json_line(encode_spans(spans)),
    }
    try:
        from opentelemetry.exporter.otlp.json.common.trace_encoder import (
            encode_spans as json_encode_spans,
        )
    except ImportError:
        print("official JSON: skipped (pip install opentelemetry-exporter-otlp-json-common)")
    else:
        found["official JSON"] = lambda spans: (json_encode_spans(spans).to_json() + "\n").encode()
    found["direct"] = encode_spans_line
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    spans = make_spans(512)
    found = encoders()
    reference = json.loads(found["protobuf round trip"](spans))
    for name, encode in found.items():
        assert json.loads(encode(spans)) == reference, f"{name} writes something else"
    folder = Path(tempfile.mkdtemp(prefix="o11ylab-bench-"))
    writers = {name: JsonLinesWriter(folder / f"{i}.jsonl") for i, name in enumerate(found)}
    for batch in (1, 512):
        batches = [spans[i : i + batch] for i in range(0, 512, batch)][: max(1, 512 // batch)]
        per_span: dict[str, list[float]] = {name: [] for name in found}
        for _ in range(args.rounds):
            for name, encode in found.items():  # interleaved: the machine's noise hits all alike
                writer = writers[name]
                started = time.perf_counter()
                for chunk in batches:
                    writer.write(encode(chunk))
                elapsed = time.perf_counter() - started
                per_span[name].append(elapsed / sum(len(c) for c in batches))
        base = statistics.median(per_span["protobuf round trip"])
        print(f"batch of {batch}:")
        for name, values in per_span.items():
            median = statistics.median(values)
            print(f"  {name:20s} {median * 1e6:7.1f} us/span   {base / median:4.2f}x faster")


if __name__ == "__main__":
    main()
