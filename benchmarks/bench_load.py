"""Throughput and latency of o11ylab's AI calls under concurrent users, in one run.

    python benchmarks/bench_load.py                        # 10, 50, 200 users; tiny model
    python benchmarks/bench_load.py --users 10 50 --mode threads --max-tokens 16

Starts the local endpoint the way users get it (``LocalEndpoint``: ``o11ylab serve`` in a
subprocess on 127.0.0.1, a tiny GPT-2 built in seconds for chat, all-MiniLM-L6-v2 for
embeddings), indexes the bundled documents into Chroma in a temporary folder, then lets
simulated users loose: threads (one ``openai`` client shared, as ``get_client()`` does) and
asyncio tasks on one event loop. Each user request is one root span and one of, in turn:

* chat       ``o11ylab.ai.chat`` / ``achat``
* retrieval  embed the question at the endpoint, then ``VectorStore.search``
* pipeline   the whole RAG ``ask`` (embed, retrieve, prompt, chat)

Telemetry is on, as in a notebook: the in-memory buffer and the OTLP-JSON files (under a
temporary folder). Per level it prints requests, errors, throughput and p50/p95/p99 latency,
and the throughput against one user sending the same mix alone (the baseline, measured first
in the same run): one CPU-bound model serves every request in turn, so more users mostly add
queueing, and a ratio near 1 says the client side and the server add little under load.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

OPERATIONS = ("chat", "retrieval", "pipeline")
EMBEDDING_MODEL = "all-MiniLM-L6-v2"
COLLECTION = "bench-load"


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(round(fraction * len(ordered), 9)))
    return ordered[min(rank, len(ordered)) - 1]


class Workload:
    def __init__(self, store: Any, chat_model: str, max_tokens: int) -> None:
        self.store = store
        self.chat_model = chat_model
        self.max_tokens = max_tokens

    def _ask_kwargs(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "model": self.chat_model,
            "embedding_model": EMBEDDING_MODEL,
            "max_tokens": self.max_tokens,
            "top_k": 2,
            "max_context_chars": 1200,
        }

    def run(self, operation: str, question: str) -> None:
        from o11ylab.ai import chat, embed
        from o11ylab.ai.pipeline import ask

        if operation == "chat":
            chat(question, self.chat_model, max_tokens=self.max_tokens)
        elif operation == "retrieval":
            self.store.search(embedding=embed(question, EMBEDDING_MODEL).vectors[0], top_k=2)
        else:
            ask(question, **self._ask_kwargs())

    async def arun(self, operation: str, question: str) -> None:
        from o11ylab.ai import achat, aembed
        from o11ylab.ai.pipeline import ask

        if operation == "chat":
            await achat(question, self.chat_model, max_tokens=self.max_tokens)
        elif operation == "retrieval":
            vector = (await aembed(question, EMBEDDING_MODEL)).vectors[0]
            await asyncio.to_thread(self.store.search, embedding=vector, top_k=2)
        else:
            await asyncio.to_thread(ask, question, **self._ask_kwargs())


class Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def add(self, started: float, error: BaseException | None) -> None:
        with self.lock:
            if error is None:
                self.latencies.append(time.perf_counter() - started)
            else:
                self.errors.append(f"{type(error).__name__}: {error}")


def _request(user: int, index: int) -> tuple[str, str, dict[str, Any]]:
    operation = OPERATIONS[(user + index) % len(OPERATIONS)]
    question = f"user {user}, request {index}: what does a span record?"
    return operation, question, {"load.user": user, "load.operation": operation}


def run_threads(work: Workload, users: int, per_user: int) -> tuple[Tally, float]:
    from o11ylab.telemetry import get_telemetry

    tracer = get_telemetry().tracer
    tally = Tally()
    start = threading.Barrier(users + 1)

    def user_loop(user: int) -> None:
        start.wait()
        for index in range(per_user):
            operation, question, attributes = _request(user, index)
            began = time.perf_counter()
            with tracer.start_as_current_span("load request", attributes=attributes):
                try:
                    work.run(operation, question)
                except Exception as exc:  # noqa: BLE001 - counted, shown below
                    tally.add(began, exc)
                    continue
            tally.add(began, None)

    threads = [threading.Thread(target=user_loop, args=(u,), daemon=True) for u in range(users)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return tally, time.perf_counter() - began


def run_tasks(work: Workload, users: int, per_user: int) -> tuple[Tally, float]:
    from o11ylab.ai.client import get_async_client
    from o11ylab.telemetry import get_telemetry

    tracer = get_telemetry().tracer
    tally = Tally()

    async def main() -> float:
        go = asyncio.Event()

        async def user_loop(user: int) -> None:
            await go.wait()
            for index in range(per_user):
                operation, question, attributes = _request(user, index)
                began = time.perf_counter()
                with tracer.start_as_current_span("load request", attributes=attributes):
                    try:
                        await work.arun(operation, question)
                    except Exception as exc:  # noqa: BLE001 - counted, shown below
                        tally.add(began, exc)
                        continue
                tally.add(began, None)

        tasks = [asyncio.create_task(user_loop(u)) for u in range(users)]
        await asyncio.sleep(0)
        go.set()
        began = time.perf_counter()
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - began
        await get_async_client().close()
        return wall

    return tally, asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--mode", choices=["threads", "asyncio", "both"], default="both")
    parser.add_argument(
        "--requests",
        type=int,
        default=120,
        help="requests per level, at least one per user (default 120)",
    )
    parser.add_argument("--max-tokens", type=int, default=4, help="max_tokens per chat")
    parser.add_argument("--model", default=None, help="chat model folder (default: tiny model)")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="o11ylab-bench-load-"))
    for key, value in {
        "O11YLAB_RUNS_DIR": str(folder / "runs"),
        "O11YLAB_PROMETHEUS_PORT": "0",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "ANONYMIZED_TELEMETRY": "False",
    }.items():
        os.environ.setdefault(key, value)
    for key in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "O11YLAB_LOCAL_ENDPOINT"):
        os.environ.pop(key, None)

    from o11ylab import models
    from o11ylab.ai.client import reset_clients
    from o11ylab.ai.pipeline import index_documents, open_store
    from o11ylab.serve import LOCAL_ENDPOINT_ENV, LocalEndpoint

    model_path = args.model or str(models.build_tiny_model(folder / "tiny", context_window=1024))
    modes = ["threads", "asyncio"] if args.mode == "both" else [args.mode]
    rows: list[tuple[str, int, int, Tally, float]] = []
    with LocalEndpoint(model=model_path, echo=False) as endpoint:
        os.environ[LOCAL_ENDPOINT_ENV] = endpoint.base_url
        reset_clients()
        store = open_store(COLLECTION, path=folder / "chroma")
        index_documents(store)
        work = Workload(store, Path(model_path).name, args.max_tokens)
        run_threads(work, 3, 3)  # warm up: connections, the embedder, Chroma's index
        baseline, baseline_wall = run_threads(work, 1, max(6, args.requests // 10))
        for users in args.users:
            per_user = max(1, math.ceil(args.requests / users))
            for mode in modes:
                runner = run_threads if mode == "threads" else run_tasks
                tally, wall = runner(work, users, per_user)
                rows.append((mode, users, per_user, tally, wall))

    base_rps = len(baseline.latencies) / baseline_wall
    print(
        f"chat model {Path(model_path).name}, max_tokens={args.max_tokens}; each user sends "
        f"chat, retrieval and pipeline requests in turn; o11ylab telemetry on"
    )
    print(
        f"baseline: 1 user, {len(baseline.latencies)} requests, {base_rps:.1f} req/s, "
        f"p50 {percentile(baseline.latencies, 0.5) * 1000:.0f} ms"
    )
    print(
        f"{'mode':>8} {'users':>6} {'reqs':>6} {'errors':>7} {'req/s':>7} {'vs 1':>6} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
    )
    failed = 0
    for mode, users, per_user, tally, wall in rows:
        rps = len(tally.latencies) / wall
        print(
            f"{mode:>8} {users:>6} {users * per_user:>6} {len(tally.errors):>7} {rps:>7.1f} "
            f"{rps / base_rps:>6.2f} {percentile(tally.latencies, 0.5) * 1000:>8.0f} "
            f"{percentile(tally.latencies, 0.95) * 1000:>8.0f} "
            f"{percentile(tally.latencies, 0.99) * 1000:>8.0f}"
        )
        if tally.errors:
            failed += len(tally.errors)
            print(f"         first error: {tally.errors[0]}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
