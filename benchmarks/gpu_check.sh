#!/usr/bin/env bash
# GPU check for the torch-cuda and CuPy backends: ONE command on a CUDA machine.
#
#   benchmarks/gpu_check.sh            # uses .venv/bin/python if there, else `python`
#                                      # on PATH; $PYTHON overrides both
#
# NOT RUN during development: the machine these backends were written on has no GPU, so
# every torch-cuda / CuPy test there skips. On a GPU machine this script
#   1. checks that torch sees a CUDA device (so the torch-cuda tests cannot skip), then
#      runs the backend suite and the torch-optimizer tests on torch-cuda and CuPy, and
#   2. prints the preconditioner's bandwidth as a fraction of the card's measured read
#      and copy bandwidth, for the fused torch and CuPy kernels and the generic ones, and
#      its time with a half-precision history against the float32 one.
# CuPy must be installed to match the CUDA version (e.g. `pip install cupy-cuda12x`).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    PYTHON=python
    [[ -x .venv/bin/python ]] && PYTHON=.venv/bin/python
fi

"$PYTHON" - <<'PY'
import torch
assert torch.cuda.is_available(), "gpu_check.sh: torch sees no CUDA device"
print("device:", torch.cuda.get_device_name(0))
try:
    import cupy
    print("cupy:", cupy.__version__, "available:", cupy.is_available())
except ImportError:
    print("cupy: not installed (pip install cupy-cuda12x); its tests will skip")
PY

# -rs lists every skip: on a GPU machine only a missing CuPy may appear there.
MLBFGS_BACKEND_EXAMPLES=${MLBFGS_BACKEND_EXAMPLES:-50} "$PYTHON" -m pytest -q -rs \
    tests/backends/test_kernels.py -k "cuda or cupy"
"$PYTHON" -m pytest -q -rs tests/torch/test_torch_optimizer.py -k "cuda"

"$PYTHON" benchmarks/gpu_check.py --backend torch --device cuda --n $((1 << 24)) --history-size 10 \
    --history-dtype bfloat16
if "$PYTHON" -c "import cupy, sys; sys.exit(0 if cupy.is_available() else 1)" 2>/dev/null; then
    "$PYTHON" benchmarks/gpu_check.py --backend cupy --n $((1 << 24)) --history-size 10 \
        --history-dtype float16
fi
