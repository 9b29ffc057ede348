#!/usr/bin/env bash
# The GPU check, one script, under 5 minutes on one GPU (each step has a time limit; they add up
# to 295 s). On a machine with a CUDA GPU and `pip install -e ".[gpu,dev]"` (torch optional):
#   1. CuPy really runs here (minilora.backend.cupy_status: a kernel, a generator draw, a qr)
#   2. the CuPy test cases (tests/test_backends.py -k cupy)
#   3. determinism: LoRA with dropout trained twice and an interrupted run resumed, bit for bit;
#      full fine-tuning twice (its embedding gradient uses float atomics: reported, may differ)
#   4. float16: a float16 LoRA trains 20 steps without NaN; its first loss is float32's to 1e-2
#   5. the real model: SmolLM2-135M-Instruct from its cached GGUF ($MINILORA_CACHE or
#      ~/.cache/minilora) against transformers' logits and greedy tokens; without it, the speed
#      of a random model with its shapes
#   6. the benchmark: a LoRA training step and greedy generation, CuPy vs NumPy (float32) vs
#      PyTorch CUDA (when torch sees the GPU), float32 and float16, with each side's first loss
#   7. the real-model LoRA step (SmolLM2-135M's shapes, batch 4 x 128, r=8 on q,k,v,o, AdamW) on
#      CuPy vs PyTorch CUDA + PEFT (scripts/gpu_real_step.py)
# Usage:  scripts/gpu_check.sh                 (PYTHON=... picks the interpreter)
#         MINILORA_CUPY_STANDIN=1 scripts/gpu_check.sh   a dry run without a GPU: steps 3-6 run
#         against the test suite's CuPy stand-in and step 2 is its tests (the timings mean nothing)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
failed=()
mult=1                      # the dry run on a CPU gets ten times the time
[ -n "${MINILORA_CUPY_STANDIN:-}" ] && mult=10

step() {   # step NAME SECONDS COMMAND...: run with a time limit, report, keep going
    local name=$1 limit=$2 t0=$SECONDS
    shift 2
    echo "== $name"
    if timeout "$((limit * mult))" "$@"; then
        echo "-- $name: ok ($((SECONDS - t0)) s)"
    else
        echo "-- $name: FAILED (exit $?, $((SECONDS - t0)) s)"
        failed+=("$name")
    fi
}

if [ -z "${MINILORA_CUPY_STANDIN:-}" ]; then
    $PY -c "
import sys
from minilora.backend import cupy_status
reason = cupy_status()
if reason:
    sys.exit('CuPy cannot run here: ' + reason)
import cupy
p = cupy.cuda.runtime.getDeviceProperties(0)
print('CuPy', cupy.__version__, 'on', p['name'].decode(), '| CUDA runtime', cupy.cuda.runtime.runtimeGetVersion())
" || exit 1
    step "cupy test cases" 80 $PY -m pytest -q -p no:cacheprovider -rs tests/test_backends.py -k cupy
else
    echo "dry run: the CuPy stand-in, no GPU"
    step "stand-in test cases" 90 $PY -m pytest -q -p no:cacheprovider tests/test_cupy_standin.py -k "not real_model"
fi
step "determinism" 35 $PY scripts/gpu_checks.py determinism
step "float16" 25 $PY scripts/gpu_checks.py float16
step "real model" 40 $PY scripts/gpu_checks.py real-model
step "benchmark" 60 $PY scripts/gpu_bench.py ${GPU_BENCH_ARGS:-}
[ -z "${MINILORA_CUPY_STANDIN:-}" ] && step "real-model step vs PyTorch" 55 $PY scripts/gpu_real_step.py
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all GPU checks passed"
