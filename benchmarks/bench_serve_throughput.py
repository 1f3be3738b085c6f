"""Throughput of ``o11ylab serve`` at 1, 4, 10 and 50 concurrent clients, in one run.

    python benchmarks/bench_serve_throughput.py                  # tiny GPT-2, built in ~2 s
    python benchmarks/bench_serve_throughput.py --model PATH --tokens 32 --clients 1,10,50
    python benchmarks/bench_serve_throughput.py --baseline /tmp/o11ylab-main --rounds 3

Starts the endpoint the way users get it (``LocalEndpoint``: a subprocess on 127.0.0.1) and
sends the same chat request from the real ``openai`` SDK, one client per thread. Prints
requests/s and the p50/p95/p99 latency at each concurrency, and each concurrency's throughput
against one client's: non-streamed requests that wait for the model run in one batch, so
throughput grows with clients; streamed ones (``--stream``) take turns on the model's lock.

``--baseline DIR`` (repeatable) starts an endpoint from another source tree (a ``git archive``
or worktree of an older commit, labelled by its folder's name) and alternates the endpoints,
round by round and level by level, so all see the same machine load (this machine is shared);
``--env NAME=VALUE`` sets a variable for this tree's endpoint only (``--baseline-env`` for the
others). Requests/s is the median of
the rounds; the percentiles pool every round's latencies.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def run(
    base_url: str,
    model: str,
    clients: int,
    requests: int,
    tokens: int,
    stream: bool,
    context: str = "",
) -> dict[str, Any]:
    import openai

    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def client_loop() -> None:
        client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            started = time.perf_counter()
            try:
                question = f"{context}request {index}: tell me about spans"
                messages = [{"role": "user", "content": question}]
                if stream:
                    for _ in client.chat.completions.create(
                        model=model, messages=messages, max_tokens=tokens, stream=True
                    ):
                        pass
                else:
                    client.chat.completions.create(
                        model=model, messages=messages, max_tokens=tokens
                    )
            except BaseException as exc:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(exc)
                continue
            with lock:
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        print(f"{len(errors)} requests failed, first: {errors[0]!r}", file=sys.stderr)
    return {"rps": len(latencies) / wall, "latencies": latencies, "failed": len(errors)}


def summary(rounds: list[dict[str, Any]]) -> dict[str, float]:
    latencies = [x for r in rounds for x in r["latencies"]] or [math.nan]
    return {
        "rps": statistics.median(r["rps"] for r in rounds),
        "p50": percentile(latencies, 0.5),
        "p95": percentile(latencies, 0.95),
        "p99": percentile(latencies, 0.99),
        "failed": sum(r["failed"] for r in rounds),
    }


def source_tree_env(tree: Path, extra: list[str]) -> dict[str, str]:
    """The environment of an endpoint that runs the o11ylab found in ``tree``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree), *filter(None, [env.get("PYTHONPATH")])])
    for item in extra:
        name, _, value = item.partition("=")
        env[name] = value
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the tiny model)")
    parser.add_argument("--tokens", type=int, default=16, help="max_tokens per request")
    parser.add_argument(
        "--requests", type=int, default=200, help="requests per level (at least 10 per client)"
    )
    parser.add_argument("--stream", action="store_true", help="streamed requests")
    parser.add_argument(
        "--context-words", type=int, default=0, help="words before each question (a RAG prompt)"
    )
    parser.add_argument("--clients", default="1,4,10,50", help="concurrencies, comma-separated")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of every level")
    parser.add_argument(
        "--baseline", type=Path, action="append", default=[], help="another source tree"
    )
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE, this tree")
    parser.add_argument("--baseline-env", action="append", default=[], help="NAME=VALUE")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="o11ylab-bench-"))
    os.environ.setdefault("O11YLAB_RUNS_DIR", str(folder / "runs"))
    os.environ.setdefault("O11YLAB_PROMETHEUS_PORT", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import o11ylab
    from o11ylab import models
    from o11ylab.serve import LocalEndpoint

    # `python -m o11ylab serve` puts its working folder first on sys.path: start the endpoints
    # where no o11ylab lies, so each runs the tree its PYTHONPATH names.
    os.chdir(folder)
    trees = {"this": (Path(o11ylab.__file__).resolve().parents[1], args.env)}
    for other in args.baseline:
        trees[other.resolve().name] = (other.resolve(), args.baseline_env)
    model_path = args.model or str(models.build_tiny_model(folder / "tiny"))
    name = Path(model_path).name
    levels = sorted({int(c) for c in args.clients.split(",")})
    context = (
        " ".join(f"word{i % 97}" for i in range(args.context_words)) + "\n"
        if args.context_words
        else ""
    )
    rounds: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with contextlib.ExitStack() as stack:
        urls = {
            label: stack.enter_context(
                LocalEndpoint(model=model_path, env=source_tree_env(tree, extra), echo=False)
            ).base_url
            for label, (tree, extra) in trees.items()
        }
        for url in urls.values():
            run(url, name, 2, 10, args.tokens, args.stream)  # warm up
        # This process holds torch and transformers (it built the tiny model): a full garbage
        # collection here stalled every client thread for ~160 ms, timed as the endpoint's
        # latency. Frozen, the clients' own garbage is all a collection scans.
        gc.collect()
        gc.freeze()
        for _ in range(args.rounds):
            for clients in levels:
                requests = max(args.requests, 10 * clients)
                for label, url in urls.items():
                    result = run(url, name, clients, requests, args.tokens, args.stream, context)
                    rounds.setdefault((label, clients), []).append(result)
    kind = "streamed" if args.stream else "non-streamed"
    print(
        f"model: {name}, {kind} chat, max_tokens={args.tokens}, {args.context_words} words of "
        f"context, at least {args.requests} "
        f"requests per level, {args.rounds} round(s), load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(
        f"{'tree':>22} {'clients':>8} {'req/s':>8} {'x ' + str(levels[0]):>6} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'failed':>7}"
    )
    failed = False
    for label in trees:
        few = summary(rounds[(label, levels[0])])["rps"]
        for clients in levels:
            r = summary(rounds[(label, clients)])
            failed = failed or bool(r["failed"])
            print(
                f"{label:>22} {clients:>8} {r['rps']:>8.1f} {r['rps'] / few:>6.2f} "
                f"{r['p50'] * 1000:>8.1f} {r['p95'] * 1000:>8.1f} {r['p99'] * 1000:>8.1f} "
                f"{int(r['failed']):>7}"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
