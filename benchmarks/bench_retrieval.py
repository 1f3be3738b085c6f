"""o11ylab retrieval vs raw ``collection.query`` on the same Chroma collection, in one run.

    python benchmarks/bench_retrieval.py            # 1,000 docs, vector and text queries
    python benchmarks/bench_retrieval.py --no-text  # vectors only (no model load)

Both sides ask the same collection for the same top-k with the same ``include`` list, so the
difference is what ``VectorStore.search`` adds: argument checks, the ``retrieval`` span (with
o11ylab's default exporters: the in-memory buffer and the OTLP-JSON file, written under a
temporary folder), two histogram points and turning Chroma's columns into ``Hit`` objects.
Calls are interleaved one by one (which side goes first alternates); the ratio is the median
o11ylab call over the median raw call, in process CPU time (wall time printed too). Goal:
≤ 1.05 (5 % added). Also measured: the same search with its span sampled out (what remains is
the two histogram points and the checks), and text queries (embedding + search).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

GOAL = 1.05
INCLUDE = ["documents", "metadatas", "distances"]


def _setup_env(folder: Path) -> None:
    os.environ.setdefault("O11YLAB_RUNS_DIR", str(folder / "runs"))
    os.environ.setdefault("O11YLAB_PROMETHEUS_PORT", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


def compare(
    label: str,
    raw: Callable[[object], object],
    ours: Callable[[object], object],
    queries: list[object],
    rounds: int,
) -> float:
    """Median per-call cost of each side, calls interleaved one by one (raw, ours, ours, raw...).

    Interleaving single calls keeps drift from favouring either side, and the median drops the
    calls a burst of load hit. The ratio is taken on the process's CPU time (all its threads,
    so o11ylab's background exporters count against it), which other processes on a shared
    machine do not inflate; wall-clock medians are printed next to it.
    """
    for q in queries[: max(3, len(queries) // 10)]:  # warm both paths (caches, first span)
        raw(q)
        ours(q)
    wall, cpu = time.perf_counter, time.process_time
    samples: dict[bool, tuple[list[float], list[float]]] = {True: ([], []), False: ([], [])}
    for r in range(rounds):
        for i, q in enumerate(queries):
            for is_ours in ((False, True) if (i + r) % 2 == 0 else (True, False)):
                call = ours if is_ours else raw
                w0, c0 = wall(), cpu()
                call(q)
                c1, w1 = cpu(), wall()
                samples[is_ours][0].append(w1 - w0)
                samples[is_ours][1].append(c1 - c0)
    raw_wall, raw_cpu = (statistics.median(x) * 1e3 for x in samples[False])
    our_wall, our_cpu = (statistics.median(x) * 1e3 for x in samples[True])
    ratio = our_cpu / raw_cpu
    verdict = "ok" if ratio <= GOAL else "over goal"
    print(
        f"{label:<27} cpu: raw {raw_cpu:8.3f} ms  o11ylab {our_cpu:8.3f} ms  "
        f"added {1e3 * (our_cpu - raw_cpu):7.1f} µs  ratio {ratio:.3f} ({verdict})   "
        f"wall: {raw_wall:.3f} / {our_wall:.3f} ms, ratio {our_wall / raw_wall:.3f}   "
        f"[{len(samples[True][0])} calls each]"
    )
    return ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--top-k", type=int, default=4)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--no-text", action="store_true", help="skip text queries (no model load)")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="o11ylab-bench-retrieval-"))
    _setup_env(folder)

    import numpy as np

    from o11ylab.ai.vectorstore import VectorStore

    rng = np.random.default_rng(0)

    def unit(n: int) -> np.ndarray:
        v = rng.standard_normal((n, args.dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    store = VectorStore("bench", path=folder / "chroma", embedder=None)
    texts = [f"document {i} about topic {i % 7}: " + "lorem ipsum " * 8 for i in range(args.docs)]
    started = time.perf_counter()
    store.add(
        texts,
        ids=[f"doc-{i}" for i in range(args.docs)],
        metadatas=[{"topic": i % 7} for i in range(args.docs)],
        embeddings=unit(args.docs),
    )
    print(
        f"indexed {args.docs} docs ({args.dim} dims, precomputed) in "
        f"{time.perf_counter() - started:.2f} s; {args.queries} queries x {args.rounds} rounds, "
        f"top_k={args.top_k}; python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}; telemetry: in-memory buffer + OTLP-JSON "
        f"file{' (off)' if os.environ.get('O11YLAB_TRACE_FILE') == '0' else ''}"
    )
    collection = store.collection
    k = args.top_k
    vectors = [v.tolist() for v in unit(args.queries)]
    results: dict[str, float] = {}
    results["vector query"] = compare(
        "vector query",
        lambda q: collection.query(query_embeddings=[q], n_results=k, include=INCLUDE),
        lambda q: store.search(embedding=q, top_k=k),
        vectors,  # type: ignore[arg-type]
        args.rounds,
    )
    # The same store with its spans sampled out: what is left is the metrics and the checks.
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    unsampled = VectorStore("bench", path=folder / "chroma", embedder=None,
                            tracer=TracerProvider(sampler=ALWAYS_OFF).get_tracer("bench"))
    results["vector query, span sampled out"] = compare(
        "vector query, sampled out",
        lambda q: collection.query(query_embeddings=[q], n_results=k, include=INCLUDE),
        lambda q: unsampled.search(embedding=q, top_k=k),
        vectors,  # type: ignore[arg-type]
        args.rounds,
    )
    results["vector query + where"] = compare(
        "vector query + where",
        lambda q: collection.query(
            query_embeddings=[q], n_results=k, where={"topic": 3}, include=INCLUDE
        ),
        lambda q: store.search(embedding=q, top_k=k, where={"topic": 3}),
        vectors,  # type: ignore[arg-type]
        args.rounds,
    )
    if not args.no_text:
        text_store = VectorStore("bench-text", path=folder / "chroma")  # all-MiniLM-L6-v2
        text_store.add(texts[: min(args.docs, 300)], batch_size=64)
        questions = [f"what is said about topic {i % 7}, item {i}?" for i in range(30)]
        text_collection = text_store.collection
        results["text query (embed + search)"] = compare(
            "text query (embed + search)",
            lambda q: text_collection.query(query_texts=[q], n_results=k, include=INCLUDE),
            lambda q: text_store.search(q, top_k=k),  # type: ignore[arg-type]
            questions,  # type: ignore[arg-type]
            2,
        )
    worst = max(results, key=results.__getitem__)
    print(f"worst ratio {results[worst]:.3f} ({worst}; goal ≤ {GOAL}): "
          f"{'met' if results[worst] <= GOAL else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
