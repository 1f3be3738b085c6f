"""Check a GPU run's spans: python scripts/gpu_check_spans.py RUN_FOLDER [--json OUT] [...].

Reads the OTLP-JSON trace files o11ylab wrote into RUN_FOLDER (``traces.<pid>.jsonl``) and
checks every generation span (``gen_ai.operation.name`` of ``text_completion``, ``chat`` or
``generate_content``): GPU energy > 0 J (or, for a span shorter than the energy counter's update
period, the method ``too_short`` with that period and no joules), peak GPU memory > 0 bytes,
mean GPU utilization within 0..1, and at least one span with utilization above 0. Prints one
line per span and the totals; exits 1 with the reasons when a check fails.

With ``--power-log`` (``nvidia-smi --query-gpu=timestamp,uuid,power.draw[.instant]
--format=csv,noheader,nounits -lms 50``, run with TZ=UTC over the same time) it integrates that
independent power reading over each span's window and compares it with o11ylab's joules: the
total over the spans with joules must agree within ``--energy-tolerance``. With
``--weight-bytes`` and ``--bandwidth`` it reports measured tokens/s against the memory-bandwidth
bound of batch-1 decoding (every weight read once per token: bandwidth / weight bytes), which
no run can beat. ``scripts/gpu_check.sh`` runs it after the GPU notebook.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import sys
from pathlib import Path
from typing import Any

GENERATION = {"text_completion", "chat", "generate_content"}
ENERGY = "o11ylab.gpu.energy_joules"
PEAK = "o11ylab.gpu.memory.peak_bytes"
UTILIZATION = "o11ylab.gpu.utilization.mean"
PER_TOKEN = "o11ylab.gpu.energy_per_output_token"
METHOD = "o11ylab.gpu.energy.method"
PERIOD = "o11ylab.gpu.energy.counter_period_s"
SHARED = "o11ylab.gpu.energy.shared"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"


def _value(node: dict[str, Any]) -> Any:
    if "intValue" in node:
        return int(node["intValue"])
    if "doubleValue" in node:
        return float(node["doubleValue"])
    if "boolValue" in node:
        return bool(node["boolValue"])
    return node.get("stringValue")


def read_spans(folder: Path) -> list[dict[str, Any]]:
    spans = []
    for path in sorted(folder.glob("traces.*.jsonl")):
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            for resource in json.loads(line).get("resourceSpans", []):
                for scope in resource.get("scopeSpans", []):
                    for span in scope.get("spans", []):
                        attributes = {
                            a["key"]: _value(a["value"]) for a in span.get("attributes", [])
                        }
                        start = int(span["startTimeUnixNano"]) / 1e9
                        end = int(span["endTimeUnixNano"]) / 1e9
                        spans.append(
                            {
                                "name": span["name"],
                                "seconds": end - start,
                                "start": start,
                                "end": end,
                                "attributes": attributes,
                            }
                        )
    return spans


def check(spans: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    problems: list[str] = []
    rows = []
    generations = [s for s in spans if s["attributes"].get("gen_ai.operation.name") in GENERATION]
    if not generations:
        return ["no generation span found (was the notebook run with o11ylab loaded?)"], rows
    for span in generations:
        a = span["attributes"]
        energy, peak, utilization = a.get(ENERGY), a.get(PEAK), a.get(UTILIZATION)
        rows.append(
            {
                "name": span["name"],
                "seconds": span["seconds"],
                "energy_j": energy,
                "peak_bytes": peak,
                "utilization": utilization,
                "output_tokens": a.get(OUTPUT_TOKENS),
                "j_per_token": a.get(PER_TOKEN),
                "method": a.get(METHOD),
                "period_s": a.get(PERIOD),
                "shared": bool(a.get(SHARED)),
                "start": span["start"],
                "end": span["end"],
            }
        )
        if a.get(METHOD) == "too_short":
            # Shorter than the counter's update period: no joules, by design; the period says why.
            if energy is not None or not isinstance(a.get(PERIOD), (int, float)):
                problems.append(f"{span['name']}: too_short must carry the period and no joules")
        elif not isinstance(energy, (int, float)) or energy <= 0:
            problems.append(f"{span['name']}: GPU energy is {energy!r}, expected > 0 J")
        if not isinstance(peak, (int, float)) or peak <= 0:
            problems.append(f"{span['name']}: peak GPU memory is {peak!r}, expected > 0 bytes")
        if not isinstance(utilization, (int, float)) or not 0 <= utilization <= 1:
            problems.append(
                f"{span['name']}: mean GPU utilization is {utilization!r}, expected 0..1"
            )
    if not any(isinstance(r["utilization"], (int, float)) and r["utilization"] > 0 for r in rows):
        problems.append("no generation span saw the GPU busy (utilization 0 throughout)")
    if rows and all(r["method"] == "too_short" for r in rows):
        problems.append("every generation span was too short for the energy counter")
    return problems, rows


def read_power_log(path: Path, uuid: str | None) -> list[tuple[float, float]]:
    """(unix seconds, watts) from nvidia-smi's CSV, written with TZ=UTC; one GPU's rows."""
    wanted = uuid.lower().removeprefix("gpu-") if uuid else None
    readings = []
    for line in path.read_text().splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 3:
            continue
        stamp, gpu, watts = fields[0], fields[1], fields[2]
        if wanted and gpu.lower().removeprefix("gpu-") != wanted:
            continue
        try:
            when = datetime.datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f")
            readings.append((when.replace(tzinfo=datetime.UTC).timestamp(), float(watts)))
        except ValueError:  # "[N/A]", a header, a cut line
            continue
    return sorted(readings)


def integrate(readings: list[tuple[float, float]], start: float, end: float) -> float | None:
    """Joules between two instants: trapezoids over the readings, clipped to the window."""
    if not readings or readings[0][0] > start or readings[-1][0] < end:
        return None  # the log does not cover the window

    def watts_at(t: float) -> float:
        for (t0, w0), (t1, w1) in itertools.pairwise(readings):
            if t0 <= t <= t1:
                return w0 + (w1 - w0) * (t - t0) / (t1 - t0) if t1 > t0 else w0
        return readings[-1][1]

    points = [(start, watts_at(start))]
    points += [(t, w) for t, w in readings if start < t < end]
    points.append((end, watts_at(end)))
    return sum((w0 + w1) / 2 * (t1 - t0) for (t0, w0), (t1, w1) in itertools.pairwise(points))


def compare_energy(
    rows: list[dict[str, Any]], readings: list[tuple[float, float]], tolerance: float
) -> list[str]:
    """Add nvidia-smi's joules to each row; a problem when the totals disagree."""
    ours = theirs = 0.0
    for r in rows:
        r["smi_j"] = integrate(readings, r["start"], r["end"])
        if isinstance(r["energy_j"], (int, float)) and r["smi_j"] is not None:
            ours += r["energy_j"]
            theirs += r["smi_j"]
    if theirs <= 0:
        return ["the nvidia-smi power log covers no span with joules: nothing to compare"]
    ratio = ours / theirs
    print(
        f"energy: o11ylab {ours:.2f} J, nvidia-smi {theirs:.2f} J over the same windows: "
        f"ratio {ratio:.3f} (allowed {1 - tolerance:.2f}..{1 + tolerance:.2f})"
    )
    if not 1 - tolerance <= ratio <= 1 + tolerance:
        return [f"o11ylab's span energy is {ratio:.2f}x nvidia-smi's over the same windows"]
    return []


def compare_bound(rows: list[dict[str, Any]], weight_bytes: int, bandwidth: float) -> list[str]:
    """Measured tokens/s against batch-1 decoding's memory-bandwidth bound."""
    tokens = sum(r["output_tokens"] or 0 for r in rows)
    seconds = sum(r["seconds"] for r in rows)
    if not tokens or seconds <= 0:
        return ["no output tokens to measure tokens/s with"]
    measured = tokens / seconds
    bound = bandwidth / weight_bytes
    ratio = measured / bound
    print(
        f"tokens/s: measured {measured:.1f}, memory-bandwidth bound {bound:.0f} "
        f"({bandwidth / 1e9:.0f} GB/s / {weight_bytes / 1e6:.0f} MB of weights): "
        f"ratio {ratio:.4f}"
    )
    if ratio > 1.05:  # faster than reading the weights allows: the tokens or the clock are wrong
        return [f"measured tokens/s is {ratio:.2f}x the memory-bandwidth bound: impossible"]
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_folder", type=Path)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--power-log", type=Path, help="nvidia-smi's power CSV (TZ=UTC)")
    parser.add_argument("--gpu-uuid", help="the GPU the model ran on, as in the power log")
    parser.add_argument("--energy-tolerance", type=float, default=0.25)
    parser.add_argument("--weight-bytes", type=int, help="bytes of the model's weights")
    parser.add_argument("--bandwidth", type=float, help="GPU memory bandwidth, bytes/s")
    args = parser.parse_args()
    problems, rows = check(read_spans(args.run_folder))
    if rows and args.power_log:
        readings = read_power_log(args.power_log, args.gpu_uuid)
        problems += compare_energy(rows, readings, args.energy_tolerance)
    if rows and args.weight_bytes and args.bandwidth:
        problems += compare_bound(rows, args.weight_bytes, args.bandwidth)
    for r in rows:

        def show(value: Any, fmt: str) -> str:
            return format(value, fmt) if isinstance(value, (int, float)) else "n/a"

        print(
            f"{r['name']:<32} {r['seconds']:7.2f} s  {show(r['energy_j'], '.2f'):>8} J  "
            f"({r['method'] or 'no method'}{', shared' if r['shared'] else ''})  "
            f"smi {show(r.get('smi_j'), '.2f'):>8} J  "
            f"peak {show((r['peak_bytes'] or 0) / 2**20, '.0f'):>6} MiB  "
            f"util {show((r['utilization'] or 0) * 100, '.0f'):>3}%  "
            f"{show(r['j_per_token'], '.3f')} J/token"
        )
    if rows:
        energy = sum(r["energy_j"] or 0 for r in rows)
        tokens = sum(r["output_tokens"] or 0 for r in rows)
        print(
            f"{len(rows)} generation span{'s' if len(rows) != 1 else ''}: {energy:.2f} J, "
            f"{tokens} output tokens" + (f", {energy / tokens:.3f} J/token" if tokens else "")
        )
    if args.json:
        args.json.write_text(json.dumps({"spans": rows, "problems": problems}, indent=2))
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
