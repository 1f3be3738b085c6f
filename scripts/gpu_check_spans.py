"""Check a GPU run's spans: python scripts/gpu_check_spans.py RUN_FOLDER [--json OUT].

Reads the OTLP-JSON trace files o11ylab wrote into RUN_FOLDER (``traces.<pid>.jsonl``) and
checks every generation span (``gen_ai.operation.name`` of ``text_completion``, ``chat`` or
``generate_content``): GPU energy > 0 J, peak GPU memory > 0 bytes, mean GPU utilization
within 0..1, and at least one span with utilization above 0. Prints one line per span and the
totals; exits 1 with the reasons when a check fails. ``scripts/gpu_check.sh`` runs it after the
GPU notebook.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

GENERATION = {"text_completion", "chat", "generate_content"}
ENERGY = "o11ylab.gpu.energy_joules"
PEAK = "o11ylab.gpu.memory.peak_bytes"
UTILIZATION = "o11ylab.gpu.utilization.mean"
PER_TOKEN = "o11ylab.gpu.energy_per_output_token"
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
                        seconds = (
                            int(span["endTimeUnixNano"]) - int(span["startTimeUnixNano"])
                        ) / 1e9
                        spans.append(
                            {"name": span["name"], "seconds": seconds, "attributes": attributes}
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
            }
        )
        if not isinstance(energy, (int, float)) or energy <= 0:
            problems.append(f"{span['name']}: GPU energy is {energy!r}, expected > 0 J")
        if not isinstance(peak, (int, float)) or peak <= 0:
            problems.append(f"{span['name']}: peak GPU memory is {peak!r}, expected > 0 bytes")
        if not isinstance(utilization, (int, float)) or not 0 <= utilization <= 1:
            problems.append(
                f"{span['name']}: mean GPU utilization is {utilization!r}, expected 0..1"
            )
    if not any(isinstance(r["utilization"], (int, float)) and r["utilization"] > 0 for r in rows):
        problems.append("no generation span saw the GPU busy (utilization 0 throughout)")
    return problems, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_folder", type=Path)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    problems, rows = check(read_spans(args.run_folder))
    for r in rows:

        def show(value: Any, fmt: str) -> str:
            return format(value, fmt) if isinstance(value, (int, float)) else "n/a"

        print(
            f"{r['name']:<40} {r['seconds']:7.2f} s  {show(r['energy_j'], '.2f'):>8} J  "
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
