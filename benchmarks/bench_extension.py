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
import shutil
import statistics
import sys
import tempfile
import time

from _parts import switched_off

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


def cpu_per_call(fn, inner: int, flush) -> float:
    """Process CPU per call, the export of what the calls made included.

    Process CPU, not wall time: the exporter threads' work counts and other programs on a shared
    machine do not. The flush inside the timing exports every span the block made, so a tight
    loop of bare spans cannot look cheap by overflowing the export queue (dropped spans cost
    nothing) while the slower traced cells get every span exported.
    """
    t0 = time.process_time()
    for _ in range(inner):
        fn()
    flush()
    return (time.process_time() - t0) / inner


def bench_cells(shell, rounds: int) -> None:
    from o11ylab.telemetry import get_telemetry

    telemetry = get_telemetry()
    tracer = telemetry.tracer

    def bare_span() -> None:
        with tracer.start_as_current_span("bare"):
            pass

    sink = io.StringIO()
    traced = lambda: shell.run_cell("%%traced --quiet\nx = 1")  # noqa: E731
    # The same bare span started inside an untraced cell, against a cell that runs a no-op block
    # of the same shape: what one span costs where a cell span runs, after IPython's own work.
    shell.user_ns["_bench_span"] = tracer.start_as_current_span
    shell.user_ns["_bench_block"] = lambda name: contextlib.nullcontext()
    cases = {
        "untraced cell": lambda: shell.run_cell("x = 1"),
        "%%traced cell": traced,
        "%%time cell": lambda: shell.run_cell("%%time\nx = 1"),
        "one bare span": bare_span,
        "cell with a no-op block": lambda: shell.run_cell("with _bench_block('b'):\n    x = 1"),
        "cell with a bare span": lambda: shell.run_cell("with _bench_span('b'):\n    x = 1"),
    }
    parts = (
        "nothing",
        "hardware observer",
        "metric points",
        "flush wake-up",
        "roll-up",
        "run file",
    )
    samples: dict[str, list[float]] = {name: [] for name in cases}
    samples.update({f"%%traced, no {part}": [] for part in parts})
    lost = telemetry.lost()
    with contextlib.redirect_stdout(sink):
        for _ in range(200):  # warm up every path
            for case in cases.values():
                case()
        telemetry.flush()
        # Interleave the cases so drift on a shared machine hits each one alike.
        for _ in range(rounds):
            for name, case in cases.items():
                samples[name].append(cpu_per_call(case, 200, telemetry.flush))
            for part in parts:
                with switched_off(part, telemetry):
                    samples[f"%%traced, no {part}"].append(
                        cpu_per_call(traced, 200, telemetry.flush)
                    )
    results = {name: statistics.median(values) for name, values in samples.items()}
    base, bare = results["untraced cell"], results["one bare span"]
    added = results["%%traced cell"] - base
    print(
        f"per cell, process CPU (median of {rounds} interleaved rounds of 200, exports included):"
    )
    for name in cases:
        print(f"  {name:<32} {results[name] * 1e6:8.1f} µs")
    for part in parts:
        saved = results["%%traced cell"] - results[f"%%traced, no {part}"]
        print(
            f"  {'%%traced without ' + part:<32} {results[f'%%traced, no {part}'] * 1e6:8.1f} µs"
            f"  (the part costs {saved * 1e6:+.1f} µs)"
        )
    in_cell = results["cell with a bare span"] - results["cell with a no-op block"]
    print(
        f"%%traced adds {added * 1e6:.1f} µs per cell = {added / bare:.2f}× a bare span "
        f"(goal ≤ 2×); %%time adds {(results['%%time cell'] - base) * 1e6:.1f} µs; "
        f"{telemetry.lost() - lost} spans lost while measuring"
    )
    print(
        f"the bare span started inside a cell costs {in_cell * 1e6:.1f} µs: %%traced adds "
        f"{added / in_cell:.2f}× that"
    )


def bench_load() -> None:
    from jupyter_client.manager import KernelManager

    figures = []
    for _ in range(3):
        # Over IPC in a short private folder, as o11ylab run starts kernels: over TCP ipykernel
        # warns about encryption on stderr.
        folder = tempfile.mkdtemp(prefix="o11ylab-k")
        manager = KernelManager(kernel_name="python3", transport="ipc", ip=f"{folder}/k")
        manager.connection_file = f"{folder}/k.json"
        manager.start_kernel()
        client = manager.client()
        client.start_channels()
        try:
            client.wait_for_ready(timeout=60)
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
            shutil.rmtree(folder, ignore_errors=True)
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
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--only-cells", action="store_true", help="just the per-cell figures")
    args = parser.parse_args()
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "o11ylab")
    bench_cells(shell, args.rounds)
    if args.only_cells:
        return
    bench_buffer(shell, args.cells)
    bench_load()


if __name__ == "__main__":
    sys.exit(main())
