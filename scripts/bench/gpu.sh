#!/usr/bin/env bash
# The GPU benchmark (the device tool; <= 8 minutes with the installs): the full-size model
# (hidden 768, 10 layers, 12/4 heads, 105.5 M parameters), B = 4, T = 16, the recipe's LoRA
# step. Each row is its own process under its own timeout (scripts/bench/gpu.py: JAX and
# PyTorch never share one), and appends one JSON line to $OUT/rows.jsonl the moment it is
# measured, so a run cut short keeps every finished row. Order: the JAX default (flash,
# the memory-safe path), the fused cuDNN candidate, PyTorch SDPA and eager (the yardsticks),
# the other JAX rows, and torch.compile last (~100 s of compile).
#
# The GPU image has JAX (CUDA), PyTorch, transformers, peft, flax, optax, orbax and h5py; it
# lacks ml-collections, tensorboardX, grain, array-record and portpicker, which travel as
# wheels. Once, here, in the repository root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl ml-collections tensorboardX grain array-record portpicker
# then, with the device tool, carry [".whl"] and run:  bash scripts/bench/gpu.sh
# A CPU dry run of every row on tiny shapes:           bash scripts/bench/gpu.sh --quick
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/bench_gpu}
WORK=${WORK:-/tmp/bench_gpu_work}
QUICK=""
[ "${1:-}" = "--quick" ] && QUICK=--quick
mkdir -p "$OUT" "$WORK"
ROWS="$OUT/rows.jsonl"
: > "$ROWS"
PY=${PY:-python3}
if [ -d .whl ] && ls .whl/*.whl > /dev/null 2>&1 && ! $PY -c "import ml_collections, grain" 2> /dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false BURGERS_JAX_CACHE="$WORK/jax_cache" TF_CPP_MIN_LOG_LEVEL=2
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2> /dev/null || echo "no GPU") | tee "$OUT/gpu.txt"
T0=$(date +%s)

row() {  # row TIMEOUT_S ARGS...: one process; a timeout becomes a row saying so
  local limit=$1
  shift
  echo "== $* (limit ${limit} s, at $(( $(date +%s) - T0 )) s)"
  timeout "$limit" $PY scripts/bench/gpu.py "$@" --work "$WORK" --rows "$ROWS" $QUICK
  local rc=$?
  if [ $rc -eq 124 ]; then
    echo "{\"kind\": \"step\", \"row\": \"$*\", \"ok\": false, \"error\": \"timeout after ${limit} s\"}" >> "$ROWS"
  fi
}
jax_row() { row "$@"; }
torch_row() { JAX_PLATFORMS=cpu row "$@"; }  # the torch process imports JAX code: keep JAX off the GPU

JAX_PLATFORMS=cpu timeout 150 $PY scripts/bench/gpu.py prepare --work "$WORK" $QUICK || { echo "prepare failed"; exit 1; }
jax_row 60 peak --side jax
jax_row 60 check
jax_row 120 jax --policy fp32_output --attention flash --remat projections
jax_row 100 jax --policy fp32_output --attention cudnn --remat projections
torch_row 60 torch --variant sdpa
torch_row 60 torch --variant eager
jax_row 100 jax --policy reference --attention cudnn --remat projections
jax_row 100 jax --policy fp32_output --attention cudnn_lengths --remat projections
jax_row 100 jax --policy float32 --attention flash --remat projections
torch_row 30 peak --side torch
torch_row 200 torch --variant sdpa_compile
echo "== done in $(( $(date +%s) - T0 )) s"
JAX_PLATFORMS=cpu $PY scripts/bench/gpu.py report --rows "$ROWS" $QUICK | tee "$OUT/report.md"
