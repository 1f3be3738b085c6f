"""What ``ChromaInstrumentor`` adds to a plain ``collection.query``, measured in one run.

    python benchmarks/bench_retrieval.py                 # 1,000 docs, 384 dims, top 4
    python benchmarks/bench_retrieval.py --docs 5000 --rounds 9

One in-memory Chroma collection of ``--docs`` random unit vectors, asked for the ``--top-k``
nearest neighbours of the same query vectors three ways, calls interleaved one by one (the
order rotates with every query and round, so drift favours no side):

    raw            the collection's original ``query`` (the function the instrumentor wrapped)
    instrumented   the patched ``query`` with its span recorded: an SDK TracerProvider with a
                   SimpleSpanProcessor into an InMemorySpanExporter (cleared every round), the
                   duration histogram on an SDK MeterProvider with an InMemoryMetricReader
    sampled out    the patched ``query`` as the root of a trace the sampler drops (ALWAYS_OFF)
                   (the histogram is still recorded: metrics do not follow trace sampling)
    in a sampled-out trace
                   the patched ``query`` under a parent span that was sampled out, as under a
                   cell span of a notebook whose trace is sampled out: with the SDK's default
                   ParentBased sampler no span is started at all

The patched variants share one instrumentor and one TracerProvider, whose sampler is
ParentBased with a switch in front of the SDK's ALWAYS_ON / ALWAYS_OFF samplers as its root,
so each call can take any side. Each ratio is a median instrumented call over the median raw call, in process CPU time
(all threads); wall-clock ratios are printed next to them. A fourth side calls the raw query
again: its ratio to the first is the run's noise floor (an A/A test). Goals: ≤ 1.05 recording, ≤ 1.01
sampled out (both ways). Every number printed is measured in this run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

GOALS = {"instrumented": 1.05, "sampled out": 1.01, "in a sampled-out trace": 1.01}
INCLUDE = ["documents", "metadatas", "distances"]


def _setup_env() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


def measure(
    sides: dict[str, Callable[[Any], object]],
    queries: list[Any],
    rounds: int,
    between_rounds: Callable[[], None],
) -> dict[str, tuple[float, float]]:
    """Median (cpu, wall) seconds per call of each side, calls interleaved one by one."""
    names = list(sides)
    for q in queries[: max(3, len(queries) // 10)]:  # warm every path (caches, first span)
        for name in names:
            sides[name](q)
    wall, cpu = time.perf_counter, time.process_time
    samples: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in names}
    for r in range(rounds):
        for i, q in enumerate(queries):
            shift = (i + r) % len(names)
            for name in names[shift:] + names[:shift]:
                call = sides[name]
                w0, c0 = wall(), cpu()
                call(q)
                c1, w1 = cpu(), wall()
                samples[name][0].append(c1 - c0)
                samples[name][1].append(w1 - w0)
        between_rounds()
    return {n: (statistics.median(c), statistics.median(w)) for n, (c, w) in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--top-k", type=int, default=4)
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args(argv)
    _setup_env()

    import chromadb
    import numpy as np
    from chromadb.api.models.Collection import Collection
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler

    from o11ylab.instrumentation.chromadb import ChromaInstrumentor

    class Switch(Sampler):  # type: ignore[misc]
        """ALWAYS_ON or ALWAYS_OFF, chosen per call."""

        def __init__(self) -> None:
            self.inner: Sampler = ALWAYS_ON

        def should_sample(self, *args: Any, **kwargs: Any) -> Any:
            return self.inner.should_sample(*args, **kwargs)

        def get_description(self) -> str:
            return f"Switch({self.inner.get_description()})"

    rng = np.random.default_rng(0)

    def unit(n: int) -> Any:
        v = rng.standard_normal((n, args.dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    with tempfile.TemporaryDirectory(prefix="o11ylab-bench-retrieval-") as folder:
        from chromadb.config import Settings

        client = chromadb.PersistentClient(
            path=folder, settings=Settings(anonymized_telemetry=False)
        )
        collection = client.get_or_create_collection(
            "bench", embedding_function=None, configuration={"hnsw": {"space": "cosine"}}
        )
        started = time.perf_counter()
        vectors = unit(args.docs)
        step = client.get_max_batch_size()
        for start in range(0, args.docs, step):
            end = min(start + step, args.docs)
            collection.add(
                ids=[f"doc-{i}" for i in range(start, end)],
                embeddings=vectors[start:end],
                documents=[
                    f"document {i} about topic {i % 7}: " + "lorem ipsum " * 8
                    for i in range(start, end)
                ],
                metadatas=[{"topic": i % 7} for i in range(start, end)],
            )
        indexed = time.perf_counter() - started

        switch = Switch()
        exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider(sampler=ParentBased(root=switch))
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        instrumentor = ChromaInstrumentor()
        instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
        try:
            raw_query = Collection.query.__wrapped__  # the function the instrumentor wrapped
            k = args.top_k

            def raw(q: Any) -> object:
                return raw_query(collection, query_embeddings=[q], n_results=k, include=INCLUDE)

            def recorded(q: Any) -> object:
                switch.inner = ALWAYS_ON
                return collection.query(query_embeddings=[q], n_results=k, include=INCLUDE)

            def sampled_out(q: Any) -> object:
                switch.inner = ALWAYS_OFF
                return collection.query(query_embeddings=[q], n_results=k, include=INCLUDE)

            dropped_parent = trace.set_span_in_context(
                trace.NonRecordingSpan(
                    trace.SpanContext(
                        trace_id=0x5A3,
                        span_id=0x5B1,
                        is_remote=False,
                        trace_flags=trace.TraceFlags(trace.TraceFlags.DEFAULT),
                    )
                )
            )

            def in_sampled_out_trace(q: Any) -> object:
                token = otel_context.attach(dropped_parent)
                try:
                    return collection.query(query_embeddings=[q], n_results=k, include=INCLUDE)
                finally:
                    otel_context.detach(token)

            def raw_in_trace(q: Any) -> object:  # the same attach/detach, so it is not counted
                token = otel_context.attach(dropped_parent)
                try:
                    return raw(q)
                finally:
                    otel_context.detach(token)

            queries = [v.tolist() for v in unit(args.queries)]
            print(
                f"indexed {args.docs} docs ({args.dim} dims) in {indexed:.2f} s; "
                f"{args.queries} queries x {args.rounds} rounds x 6 sides, top_k={k}; "
                f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
                f"load average {os.getloadavg()[0]:.1f}"
            )
            counted: list[int] = []

            def next_round() -> None:
                counted.append(len(exporter.get_finished_spans()))
                exporter.clear()

            medians = measure(
                {
                    "raw": raw,
                    "instrumented": recorded,
                    "sampled out": sampled_out,
                    "raw in trace": raw_in_trace,
                    "in a sampled-out trace": in_sampled_out_trace,
                    "raw again": raw,
                },
                queries,
                args.rounds,
                next_round,
            )
            recorded_spans = counted[-1]
        finally:
            instrumentor.uninstrument()
            tracer_provider.shutdown()
            meter_provider.shutdown()

    raw_cpu, raw_wall = medians["raw"]
    print(
        f"{'raw collection.query':<22} cpu {raw_cpu * 1e3:8.3f} ms   wall {raw_wall * 1e3:8.3f} ms"
    )
    met = True
    for side, goal in GOALS.items():
        cpu_s, wall_s = medians[side]
        # The trace side's baseline pays the same attach/detach of the parent's context.
        base_cpu, base_wall = medians["raw in trace" if "trace" in side else "raw"]
        ratio = cpu_s / base_cpu
        met = met and ratio <= goal
        print(
            f"{side:<22} cpu {cpu_s * 1e3:8.3f} ms   wall {wall_s * 1e3:8.3f} ms   "
            f"added {1e6 * (cpu_s - base_cpu):7.1f} µs   ratio {ratio:.3f} (cpu), "
            f"{wall_s / base_wall:.3f} (wall)   goal ≤ {goal}: "
            f"{'met' if ratio <= goal else 'NOT met'}"
        )
    control = medians["raw again"][0] / raw_cpu
    print(f"{'raw again (A/A)':<22} ratio {control:.3f} (cpu): the noise floor of this run")
    print(f"(last round recorded {recorded_spans} spans; goals {'met' if met else 'NOT met'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
