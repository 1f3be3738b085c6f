"""What the extension costs: %%traced per cell, %load_ext in a fresh kernel, memory over 10k cells.

Run: python benchmarks/bench_extension.py [--cells 10000]
Every figure is measured in this run, side by side with its baseline (the machine is shared and
noisy, so only ratios and differences measured together mean anything).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("O11YLAB_RUNS_DIR", tempfile.mkdtemp(prefix="o11ylab-bench-"))
os.environ.setdefault("O11YLAB_PROMETHEUS_PORT", "0")

LOAD_PROBE = """
import json, os, time, psutil
process = psutil.Process()
rss0 = process.memory_info().rss
t0 = time.perf_counter()
get_ipython().run_line_magic("load_ext", "o11ylab")
seconds = time.perf_counter() - t0
import sys
heavy = sorted(m for m in ("torch", "transformers", "chromadb", "openai", "pynvml", "ipywidgets",
                            "langchain_core", "sentence_transformers") if m in sys.modules)
from o11ylab import instrumentation
registered = [row["name"] for row in instrumentation.status()]
print(json.dumps({"seconds": seconds, "rss_mb": (process.memory_info().rss - rss0) / 2**20,
                  "heavy_imported": heavy, "registered": registered}))
"""


def per_call(fn, repeat: int, inner: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return samples


def bench_cells(shell) -> None:
    from o11ylab.telemetry import get_telemetry

    tracer = get_telemetry().tracer

    def bare_span() -> None:
        with tracer.start_as_current_span("bare"):
            pass

    sink = io.StringIO()
    cases = {
        "untraced cell": lambda: shell.run_cell("x = 1"),
        "%%traced cell": lambda: shell.run_cell("%%traced --quiet\nx = 1"),
        "%%time cell": lambda: shell.run_cell("%%time\nx = 1"),
        # IPython's own nested run_cell, as %%traced uses it, without any telemetry:
        "%%capture cell": lambda: shell.run_cell("%%capture\nx = 1"),
    }
    results = {}
    with contextlib.redirect_stdout(sink):
        for _ in range(200):  # warm up every path
            for case in cases.values():
                case()
        bare = statistics.median(per_call(bare_span, 15, 2000))
        # Interleave the cases so drift on a shared machine hits each one alike.
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(15):
            for name, case in cases.items():
                samples[name] += per_call(case, 1, 200)
        results = {name: statistics.median(values) for name, values in samples.items()}
    base = results["untraced cell"]
    added = results["%%traced cell"] - base
    print("per cell (median):")
    for name, value in results.items():
        print(f"  {name:<16} {value * 1e6:8.1f} µs")
    print(f"  one bare OTel span {bare * 1e6:6.1f} µs")
    nested = results["%%capture cell"] - base
    ours = results["%%traced cell"] - results["%%capture cell"]
    print(
        f"%%traced adds {added * 1e6:.1f} µs per cell = {added / bare:.2f}× a bare span "
        f"(goal ≤ 2×); %%time adds {(results['%%time cell'] - base) * 1e6:.1f} µs"
    )
    print(
        f"  of which IPython's nested run_cell (as %%capture): {nested * 1e6:.1f} µs; "
        f"o11ylab's telemetry work: {ours * 1e6:.1f} µs = {ours / bare:.2f}× a bare span"
    )


def bench_load() -> None:
    from jupyter_client.manager import start_new_kernel

    figures = []
    for _ in range(3):
        manager, client = start_new_kernel(kernel_name="python3")
        try:
            lines: list[str] = []
            client.execute_interactive(
                LOAD_PROBE,
                timeout=60,
                output_hook=lambda msg, lines=lines: (
                    lines.append(msg["content"].get("text", ""))
                    if msg["msg_type"] == "stream"
                    else None
                ),
            )
            figures.append(json.loads("".join(lines).strip().splitlines()[-1]))
        finally:
            client.stop_channels()
            manager.shutdown_kernel(now=True)
    seconds = statistics.median(f["seconds"] for f in figures)
    rss = statistics.median(f["rss_mb"] for f in figures)
    print(
        f"%load_ext o11ylab in a fresh kernel: {seconds * 1000:.0f} ms (goal ≤ 1000 ms), "
        f"+{rss:.1f} MB RSS (goal ≤ 40 MB); heavy modules imported: "
        f"{figures[0]['heavy_imported'] or 'none'}; instrumentors waiting for their import: "
        f"{', '.join(figures[0]['registered']) or 'none'}"
    )


def bench_buffer(shell, cells: int) -> None:
    import psutil

    from o11ylab.telemetry import get_telemetry

    telemetry = get_telemetry()
    process = psutil.Process()
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        for _ in range(1000):
            shell.run_cell(
                "%%traced --quiet\nimport o11ylab\nwith o11ylab.span('child'):\n    pass"
            )
        rss_start = process.memory_info().rss
        for _ in range(cells):
            shell.run_cell(
                "%%traced --quiet\nimport o11ylab\nwith o11ylab.span('child'):\n    pass"
            )
    telemetry.flush()
    rss_end = process.memory_info().rss
    limit = telemetry.settings.buffer_spans
    print(
        f"after {cells} more traced cells ({2 * cells} spans): buffer holds "
        f"{len(telemetry.buffer.spans)} spans (bound {limit}); RSS "
        f"{(rss_end - rss_start) / 2**20:+.1f} MB; {telemetry.lost()} lost, "
        f"{telemetry.queued()} queued"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=10_000)
    args = parser.parse_args()
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "o11ylab")
    bench_cells(shell)
    bench_buffer(shell, args.cells)
    bench_load()


if __name__ == "__main__":
    sys.exit(main())
