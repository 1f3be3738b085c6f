"""Throughput of ``o11ylab serve`` at 1, 4 and 10 concurrent clients, in one run.

    python benchmarks/bench_serve_throughput.py                  # tiny GPT-2, built in ~2 s
    python benchmarks/bench_serve_throughput.py --model PATH --tokens 32 --clients 1,10,50

Starts the endpoint the way users get it (``LocalEndpoint``: a subprocess on 127.0.0.1) and
sends the same chat request from the real ``openai`` SDK, one client per thread. Prints
requests/s and the p50/p95 latency at each concurrency, and the ratio of the most clients'
throughput to one client's: non-streamed requests that wait for the model run in one batch, so
throughput grows with clients; streamed ones (``--stream``) take turns on the model's lock.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def run(
    base_url: str, model: str, clients: int, requests: int, tokens: int, stream: bool
) -> dict[str, float]:
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
                messages = [{"role": "user", "content": f"request {index}: tell me about spans"}]
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
    return {
        "rps": len(latencies) / wall,
        "p50": percentile(latencies, 0.5),
        "p95": percentile(latencies, 0.95),
        "ok": len(latencies),
        "failed": len(errors),
        "mean": statistics.fmean(latencies) if latencies else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the tiny model)")
    parser.add_argument("--tokens", type=int, default=16, help="max_tokens per request")
    parser.add_argument("--requests", type=int, default=60, help="requests per concurrency")
    parser.add_argument("--stream", action="store_true", help="streamed requests")
    parser.add_argument("--clients", default="1,4,10", help="concurrencies, comma-separated")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="o11ylab-bench-"))
    os.environ.setdefault("O11YLAB_RUNS_DIR", str(folder / "runs"))
    os.environ.setdefault("O11YLAB_PROMETHEUS_PORT", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from o11ylab import models
    from o11ylab.serve import LocalEndpoint

    model_path = args.model or str(models.build_tiny_model(folder / "tiny"))
    name = Path(model_path).name
    with LocalEndpoint(model=model_path, echo=False) as endpoint:
        run(endpoint.base_url, name, 2, 10, args.tokens, args.stream)  # warm up
        results = {
            clients: run(endpoint.base_url, name, clients, args.requests, args.tokens, args.stream)
            for clients in sorted({int(c) for c in args.clients.split(",")})
        }
    kind = "streamed" if args.stream else "non-streamed"
    print(f"model: {name}, {kind} chat, max_tokens={args.tokens}, {args.requests} requests per run")
    print(f"{'clients':>8} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'failed':>7}")
    for clients, r in results.items():
        print(
            f"{clients:>8} {r['rps']:>8.1f} {r['p50'] * 1000:>8.1f} {r['p95'] * 1000:>8.1f} "
            f"{int(r['failed']):>7}"
        )
    few, most = min(results), max(results)
    ratio = results[most]["rps"] / results[few]["rps"]
    print(f"throughput ratio {most} clients / {few} client(s): {ratio:.2f}")
    return 1 if any(r["failed"] for r in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
