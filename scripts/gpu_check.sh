#!/usr/bin/env bash
# GPU check: on a machine with a CUDA GPU and CuPy installed (pip install -e ".[gpu,dev]"),
# run the CuPy test cases, then time a LoRA training step and greedy generation on CuPy vs NumPy
# (and vs PyTorch CUDA eager when torch is installed), printed as ratios; then the real-model LoRA
# step (SmolLM2-135M's shapes, batch 4 x 128) on CuPy vs PyTorch CUDA + PEFT. Under 7 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
$PY -c "import cupy; n = cupy.cuda.runtime.getDeviceCount(); assert n > 0; print('GPUs:', n, cupy.cuda.runtime.getDeviceProperties(0)['name'].decode())"
echo "== cupy test cases"
timeout 180 $PY -m pytest -q -p no:cacheprovider -rs tests/test_backends.py -k cupy
echo "== benchmark"
timeout 120 $PY scripts/gpu_bench.py
echo "== real-model step (SmolLM2-135M shapes): CuPy vs PyTorch CUDA + PEFT"
timeout 180 $PY scripts/gpu_real_step.py
