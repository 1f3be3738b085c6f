"""Local generation tokens/s: ``LocalModel.generate`` (span + metrics) vs a bare ``generate``.

    python benchmarks/bench_local_generation.py                 # tiny GPT-2, built in ~2 s
    python benchmarks/bench_local_generation.py --model PATH    # e.g. the prepared SmolLM2

Both sides run the same model object, the same prompt and greedy decoding, so they produce
the same tokens; both tokenize the prompt and decode the answer. The instrumented side adds
what o11ylab adds to every generation: the lock, the token clock (a streamer timestamping
each token), the ``text_completion`` span with o11ylab's default exporters (in-memory buffer
and the OTLP-JSON file, under a temporary folder) and the GenAI histograms. Calls alternate
one by one (which side goes first alternates too) and the ratio is the median of the
per-pair ratios, which keeps a burst of load on a shared CPU from favouring either side.
Goal: ≥ 0.98 of the bare tokens/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

GOAL = 0.98


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the tiny model)")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per call")
    parser.add_argument("--rounds", type=int, default=40, help="pairs of calls")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="o11ylab-bench-"))
    os.environ.setdefault("O11YLAB_RUNS_DIR", str(folder / "runs"))
    os.environ.setdefault("O11YLAB_PROMETHEUS_PORT", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch

    from o11ylab import models
    from o11ylab.ai.local_model import LocalModel

    model_path = args.model or str(models.build_tiny_model(folder / "tiny"))
    engine = LocalModel(model_path, device="cpu", verbose=False)
    tokenizer, model = engine.tokenizer, engine.model
    prompt = "Observability means asking new questions of a running system"

    def bare() -> tuple[float, int]:
        started = time.perf_counter()
        encoded = tokenizer(prompt, return_tensors="pt")
        with torch.inference_mode():
            output = model.generate(**encoded, max_new_tokens=args.tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
        new = output[0, encoded["input_ids"].shape[1]:]
        tokenizer.decode(new, skip_special_tokens=True)
        return time.perf_counter() - started, int(new.shape[0])

    def instrumented() -> tuple[float, int]:
        started = time.perf_counter()
        result = engine.generate(prompt, max_new_tokens=args.tokens)
        return time.perf_counter() - started, result.output_tokens

    for _ in range(5):  # warm both paths (allocator, first span, instruments)
        bare()
        instrumented()
    bare_rates: list[float] = []
    ours_rates: list[float] = []
    ratios: list[float] = []
    for round_ in range(args.rounds):
        pair = (bare, instrumented) if round_ % 2 == 0 else (instrumented, bare)
        timings = {fn: fn() for fn in pair}
        (bare_s, bare_n), (ours_s, ours_n) = timings[bare], timings[instrumented]
        if bare_n != ours_n:
            print(f"the two sides produced different lengths ({bare_n} vs {ours_n})",
                  file=sys.stderr)
            return 1
        bare_rates.append(bare_n / bare_s)
        ours_rates.append(ours_n / ours_s)
        ratios.append((ours_n / ours_s) / (bare_n / bare_s))

    ratio = statistics.median(ratios)
    print(f"model: {engine.name} on {engine.device} ({engine.dtype}), {bare_n} new tokens per "
          f"call, {args.rounds} interleaved pairs")
    print(f"bare generate:         {statistics.median(bare_rates):8.1f} tokens/s (median)")
    print(f"o11ylab LocalModel:    {statistics.median(ours_rates):8.1f} tokens/s (median)")
    print(f"ratio (median of pairs): {ratio:.3f}   goal >= {GOAL}   "
          f"{'OK' if ratio >= GOAL else 'BELOW GOAL'}")
    return 0 if ratio >= GOAL else 1


if __name__ == "__main__":
    raise SystemExit(main())
