#!/usr/bin/env bash
# GPU check for a lent CUDA machine: bf16 fits of IFM and INN, samples/s, peak memory, Lightning vs plain loop.
# Packages the machine lacks (datasets and its needs) travel as wheels in .whl/ (see benchmarks/RESULTS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 benchmarks/gpu_check.py "$@"
