"""``o11ylab serve`` with work queued: /health latency, and the cost of an abandoned request.

    python benchmarks/bench_serve_backpressure.py               # tiny GPT-2, built in ~2 s
    python benchmarks/bench_serve_backpressure.py --queued 80 --long-tokens 8000

Starts the endpoint as users get it (``LocalEndpoint``: a subprocess on 127.0.0.1, with a key
of its own) and prints, each against a baseline from the same run:

- /health p50/p99 idle, then with ``--queued`` generations queued on the model (the audit saw
  21 s with 80 queued when /health shared the thread pool);
- a full ``--long-tokens`` generation, then the wait of a 1-token request sent right after a
  client with a 3 s timeout (and the openai SDK's default 2 retries) gave up on the same long
  request (the audit saw 123 s before a gone client's generation was stopped).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def health_latencies(url: str, count: int) -> list[float]:
    import httpx

    latencies = []
    with httpx.Client() as client:
        for _ in range(count):
            started = time.perf_counter()
            client.get(url + "/health").raise_for_status()
            latencies.append(time.perf_counter() - started)
    return latencies


def show(label: str, latencies: list[float]) -> None:
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    print(f"/health {label}: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queued", type=int, default=80, help="generations queued at once")
    parser.add_argument("--tokens", type=int, default=300, help="max_tokens of each queued one")
    parser.add_argument("--long-tokens", type=int, default=8000, help="the abandoned request's")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="o11ylab-bench-bp-"))
    os.environ.setdefault("O11YLAB_RUNS_DIR", str(folder / "runs"))
    os.environ.setdefault("O11YLAB_PROMETHEUS_PORT", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["O11YLAB_SERVE_MAX_QUEUE"] = str(args.queued + 10)
    import httpx
    import openai

    from o11ylab import models, serve

    model = models.build_tiny_model(folder / "tiny", context_window=args.long_tokens + 100)
    key = serve.new_launch_key()

    def body(tokens: int, text: str = "tell me about spans") -> dict[str, Any]:
        return {
            "model": "tiny",
            "messages": [{"role": "user", "content": text}],
            "max_tokens": tokens,
        }

    with serve.LocalEndpoint(model=str(model), api_key=key, echo=False) as endpoint:
        headers = {"authorization": f"Bearer {key}"}
        idle = health_latencies(endpoint.url, 300)

        def queued() -> None:
            url = endpoint.base_url + "/chat/completions"
            httpx.post(url, json=body(args.tokens), headers=headers, timeout=3600)

        threads = [threading.Thread(target=queued, daemon=True) for _ in range(args.queued)]
        for thread in threads:
            thread.start()
        time.sleep(3)  # let the burst arrive: what is measured is the queue, not the arrival
        busy = health_latencies(endpoint.url, 300)
        pending = sum(thread.is_alive() for thread in threads)
        show("idle", idle)
        show(f"with {args.queued} queued ({pending} still pending after)", busy)
        print(f"p99 ratio busy / idle: {percentile(busy, 0.99) / percentile(idle, 0.99):.1f}")
        for thread in threads:
            thread.join()

        client = openai.OpenAI(base_url=endpoint.base_url, api_key=key, max_retries=0, timeout=3600)
        started = time.perf_counter()
        client.chat.completions.create(**body(args.long_tokens, "tell me a long story"))
        full = time.perf_counter() - started
        impatient = openai.OpenAI(base_url=endpoint.base_url, api_key=key, timeout=3)
        started = time.perf_counter()
        try:
            impatient.chat.completions.create(**body(args.long_tokens, "tell me a long story"))
        except openai.APITimeoutError:
            pass
        gave_up = time.perf_counter() - started
        started = time.perf_counter()
        client.chat.completions.create(**body(1))
        after = time.perf_counter() - started
    print(f"a full {args.long_tokens}-token generation: {full:.1f} s")
    print(
        f"a 3 s-timeout client gave up after {gave_up:.1f} s; the next 1-token request: {after:.2f} s"
    )
    print(f"ratio next request / full generation: {after / full:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
