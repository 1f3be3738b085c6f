"""`o11ylab run` one after another vs `o11ylab run --workers 2`, measured in the same run.

    python benchmarks/bench_run_dask.py                 # a sweep of 12 short notebook runs
    python benchmarks/bench_run_dask.py --walkthrough   # also the eight walkthrough notebooks

Each side is the whole command as a user runs it (a fresh process: the LocalCluster's start
and stop, the local endpoint, every kernel), wall clock. The ratio is sequential / parallel:
above 1 the Dask run is faster. Kernels start in a second or two and a short notebook runs in
less, so on a small machine the sweep measures mostly kernel start-ups, which parallelise as
far as the cores allow: the core count is printed beside the ratios.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SHORT = {
    "parameters": "n = 1",
    "work": "total = sum(i * i for i in range(200_000 * n))\nprint(n, total)",
}


def short_notebook(folder: Path) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(SHORT["parameters"], metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(SHORT["work"]),
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path = folder / "short.ipynb"
    nbformat.write(nb, path)
    return path


def timed_run(env: dict[str, str], out: Path, *args: str) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "o11ylab", "run", *args, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"o11ylab run {' '.join(args)} failed:\n{done.stdout[-3000:]}")
    return wall


def compare(name: str, env: dict[str, str], folder: Path, *args: str) -> tuple[float, float]:
    serial = timed_run(env, folder / f"{name}-serial", *args)
    parallel = timed_run(env, folder / f"{name}-workers2", *args, "--workers", "2")
    print(
        f"{name:<28} sequential {serial:7.1f} s   --workers 2 {parallel:7.1f} s   "
        f"ratio {serial / parallel:4.2f}",
        flush=True,
    )
    return serial, parallel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--walkthrough", action="store_true", help="Also run the eight walkthrough notebooks."
    )
    args = parser.parse_args()
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("ANONYMIZED_TELEMETRY", "False")
    env["O11YLAB_PROMETHEUS_PORT"] = "0"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    print(f"machine: {os.cpu_count()} cores (load {os.getloadavg()[0]:.1f} at the start)")
    with tempfile.TemporaryDirectory(prefix="o11ylab-bench-run-") as tmp:
        folder = Path(tmp)
        notebook = short_notebook(folder)
        grid = ",".join(str(n) for n in range(1, 13))
        compare("sweep of 12 short runs", env, folder, str(notebook), "--grid", f"n={grid}")
        if args.walkthrough:
            compare("eight walkthrough notebooks", env, folder, str(ROOT / "notebooks"))


if __name__ == "__main__":
    main()
