"""The hardware sampler's cost, per-span attribution's cost, and what it adds to ``%load_ext``.

    python benchmarks/bench_hardware.py            # about a minute
    python benchmarks/bench_hardware.py --quick    # fewer rounds

Three measurements, each against a baseline taken in the same run:

1. **Sampler CPU at 1 Hz**, as a fraction of one core: CPU time of the sampler thread per sample
   (``time.thread_time``), for the real no-GPU path (psutil only, this machine) and for a fake
   NVML with 1 and 8 GPUs (a test double, ``tests/fake_nvml.py``: no GPU here, so the NVML cost
   of a real driver is not in these figures), then the same sampler run as a thread at 1 Hz for
   a few seconds. Goal: <= 0.5 % of a core.
2. **Per-span attribution**: GenAI spans (``chat m`` with ``gen_ai.operation.name``) started and
   ended on a TracerProvider whose enricher registry is empty (baseline) vs the attribution
   callbacks over no GPU, 1 fake GPU and 4 fake GPUs; rounds interleaved, medians. NVML calls
   per span are counted. Goals: <= 50 us added per span with the fake backend (one GPU; each
   further GPU a span is charged for adds its own reads), 0 NVML calls without a GPU.
3. **%load_ext o11ylab** in fresh processes with ``O11YLAB_HARDWARE=0`` vs on (interleaved,
   medians), plus the import time of ``o11ylab.hardware`` and the time ``attach()`` takes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# After sys.path gains the repository root, for tests.fake_nvml.
from o11ylab import semconv  # noqa: E402
from o11ylab.hardware import (  # noqa: E402
    Attributor,
    HardwareSettings,
    Sampler,
    _SpanAttribution,
)
from tests.fake_nvml import FakeGpu, FakeNvml  # noqa: E402

SETTINGS = HardwareSettings()


def gpus(count: int) -> FakeNvml:
    return FakeNvml(
        [FakeGpu(uuid=f"GPU-{i:08x}-0000-0000-0000-000000000000") for i in range(count)]
    )


# --- 1. sampler CPU ------------------------------------------------------------------------------


def per_sample_cpu(sampler: Sampler, samples: int) -> float:
    sampler.open()
    sampler.sample_once()  # warm: psutil's first reads
    began = time.thread_time()
    for _ in range(samples):
        sampler.sample_once()
    return (time.thread_time() - began) / samples


def threaded_cpu(sampler: Sampler, seconds: float) -> tuple[float, int]:
    sampler.start()
    sampler.ready.wait(10)
    time.sleep(0.3)
    cpu0, n0 = sampler.cpu_seconds, sampler.samples_taken
    time.sleep(seconds)
    cpu, n = sampler.cpu_seconds - cpu0, sampler.samples_taken - n0
    sampler.stop()
    return cpu, n


def bench_sampler(quick: bool) -> None:
    print("1. Sampler CPU (thread CPU time per sample; at 1 Hz that is the fraction of one core)")
    samples = 100 if quick else 300
    cases = [
        ("no GPU (real pynvml, psutil only)", lambda: Sampler(interval_s=1.0, settings=SETTINGS)),
        ("1 fake GPU", lambda: Sampler(gpus(1), interval_s=1.0, settings=SETTINGS)),
        ("8 fake GPUs", lambda: Sampler(gpus(8), interval_s=1.0, settings=SETTINGS)),
    ]
    for label, make in cases:
        cost = per_sample_cpu(make(), samples)
        print(
            f"   {label:<34} {cost * 1e6:8.0f} us/sample   -> {cost * 100:.3f} % of a core at 1 Hz"
            f"   (goal <= 0.5 %: {'ok' if cost <= 0.005 else 'MISSED'})"
        )
    seconds = 3.0 if quick else 6.0
    cpu, taken = threaded_cpu(Sampler(interval_s=1.0, settings=SETTINGS), seconds)
    print(
        f"   running at 1 Hz for {seconds:.0f} s (no GPU): {taken} samples, {cpu * 1e3:.2f} ms CPU "
        f"-> {cpu / seconds * 100:.3f} % of a core"
    )
    # Once per start: the thread times each GPU's energy-counter steps between samples.
    for label, period, count in (("100 ms steps", 0.1, 1), ("a still counter", None, 1)):
        fake = FakeNvml([FakeGpu(counter_period_s=period) for _ in range(count)])
        sampler = Sampler(fake, interval_s=1.0, settings=SETTINGS)
        began = time.monotonic()
        sampler.start()
        sampler.counter_probed.wait(10)
        took = time.monotonic() - began
        sampler.stop()
        print(
            f"   counter probe, {label:<16} {took * 1e3:5.0f} ms wall, "
            f"{sampler.probe_cpu_seconds * 1e3:5.1f} ms CPU once, "
            f"{fake.calls['nvmlDeviceGetTotalEnergyConsumption']} counter reads"
        )


# --- 2. per-span attribution -----------------------------------------------------------------------


def span_rounds(quick: bool) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from o11ylab.enrichment import Enrichers

    print("2. Per-span attribution (GenAI span start + end; baseline: an empty enricher registry)")
    spans = 2000 if quick else 5000
    rounds = 5 if quick else 9
    attributes = {semconv.GEN_AI_OPERATION_NAME: "chat"}

    setups: dict[str, tuple[TracerProvider, Sampler | None]] = {}

    def provider(sampler: Sampler | None) -> TracerProvider:
        hooks = Enrichers()
        if sampler is not None:
            hooks.register(_SpanAttribution(Attributor(sampler)))
        tp = TracerProvider()
        tp.add_span_processor(hooks)
        return tp

    for label, nvml in (
        ("baseline", None),
        ("no GPU", "none"),
        ("1 fake GPU", 1),
        ("4 fake GPUs", 4),
    ):
        sampler = None
        if nvml == "none":
            sampler = Sampler(interval_s=1.0, settings=SETTINGS)
        elif isinstance(nvml, int):
            sampler = Sampler(gpus(nvml), interval_s=1.0, settings=SETTINGS)
        if sampler is not None:
            sampler.open()
            for _ in range(5):
                sampler.sample_once()  # a ring buffer to scan, as in a running kernel
        setups[label] = (provider(sampler), sampler)

    def run(tp: TracerProvider) -> float:
        tracer = tp.get_tracer("bench")
        began = time.perf_counter()
        for _ in range(spans):
            span = tracer.start_span("chat m", attributes=attributes)
            span.set_attribute(semconv.GEN_AI_USAGE_OUTPUT_TOKENS, 32)
            span.end()
        return (time.perf_counter() - began) / spans

    timings: dict[str, list[float]] = {label: [] for label in setups}
    calls_before = {label: (s.nvml.calls if s else 0) for label, (_, s) in setups.items()}
    for round_number in range(rounds):
        order = list(setups)
        order = order[round_number % len(order) :] + order[: round_number % len(order)]
        for label in order:
            sampler = setups[label][1]
            if sampler is not None:
                sampler.sample_once()  # as the running sampler would have, just before
                calls_before[label] += len(sampler.gpus) * 6
            timings[label].append(run(setups[label][0]))
    base = statistics.median(timings["baseline"])
    print(f"   {'baseline':<14} {base * 1e6:7.1f} us/span")
    for label in list(setups)[1:]:
        median = statistics.median(timings[label])
        sampler = setups[label][1]
        assert sampler is not None
        calls = (sampler.nvml.calls - calls_before[label]) / (spans * rounds)
        added = (median - base) * 1e6
        if label == "no GPU":
            verdict = f"goal 0 NVML calls: {'ok' if calls == 0 else 'MISSED'}"
        elif label == "1 fake GPU":
            verdict = f"goal <= 50 us: {'ok' if added <= 50 else 'MISSED'}"
        else:  # each attributed GPU adds its own reads: informational
            verdict = "scales with the GPUs a span is charged for"
        print(
            f"   {label:<14} {median * 1e6:7.1f} us/span: +{added:5.1f} us "
            f"(x{median / base:.2f} of baseline), {calls:.1f} NVML calls/span   ({verdict})"
        )


# --- 3. load_ext ----------------------------------------------------------------------------------

_LOAD = """\
import sys, time
t0 = time.perf_counter()
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
t1 = time.perf_counter()
ip.run_line_magic("load_ext", "o11ylab")
t2 = time.perf_counter()
print(f"{t2 - t1:.6f}")
"""

_PARTS = """\
import time
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
import o11ylab.telemetry, o11ylab.cells, o11ylab.config  # what load_ext imports anyway
t0 = time.perf_counter()
import o11ylab.hardware as hardware
t1 = time.perf_counter()
import os
os.environ["O11YLAB_HARDWARE"] = "0"
ip.run_line_magic("load_ext", "o11ylab")
os.environ["O11YLAB_HARDWARE"] = "1"
from o11ylab.telemetry import get_telemetry
t2 = time.perf_counter()
hardware.attach(get_telemetry())
t3 = time.perf_counter()
hardware.detach()
print(f"{t1 - t0:.6f} {t3 - t2:.6f}")
"""


def bench_load_ext(quick: bool) -> None:
    print("3. %load_ext o11ylab in fresh processes (interleaved; medians)")
    rounds = 3 if quick else 7
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "O11YLAB_RUNS_DIR": tmp, "O11YLAB_PROMETHEUS_PORT": "0"}
        times: dict[str, list[float]] = {"off": [], "on": []}
        parts: list[tuple[float, float]] = []
        for _ in range(rounds):
            for label in ("off", "on"):
                run_env = {**env, "O11YLAB_HARDWARE": "0" if label == "off" else "1"}
                out = subprocess.run(
                    [sys.executable, "-c", _LOAD],
                    env=run_env,
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=120,
                ).stdout
                times[label].append(float(out.split()[-1]))
            out = subprocess.run(
                [sys.executable, "-c", _PARTS],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                timeout=120,
            ).stdout
            imported, attached = (float(x) for x in out.split()[-2:])
            parts.append((imported, attached))
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    print(
        f"   hardware off {off * 1e3:7.0f} ms   on {on * 1e3:7.0f} ms   "
        f"difference {(on - off) * 1e3:+.0f} ms (process-to-process noise is larger than this)"
    )
    imported = statistics.median(p[0] for p in parts)
    attached = statistics.median(p[1] for p in parts)
    print(
        f"   import o11ylab.hardware {imported * 1e3:.1f} ms (loaded even when off), "
        f"attach() {attached * 1e3:.2f} ms: NVML and psutil start in the sampler thread"
    )
    print(f"   goal: %load_ext well under 1 s ({'ok' if on < 1.0 else 'MISSED'})")


def main() -> None:
    parser = argparse.ArgumentParser(description="hardware sampler and attribution costs")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} (a shared machine: read ratios, not absolutes)"
    )
    bench_sampler(args.quick)
    span_rounds(args.quick)
    bench_load_ext(args.quick)
    assert threading.active_count() >= 1


if __name__ == "__main__":
    main()
