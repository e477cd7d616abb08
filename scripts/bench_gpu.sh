#!/usr/bin/env bash
# The GPU benchmark, prepared for one run on a lent accelerator (the device tool; <= 8 minutes
# with the installs): the full-size model (hidden 768, 10 layers, 12/4 heads), B = 4, T = 16,
# the JAX LoRA step under each precision policy against the PyTorch original with eager
# attention (the recipe), with SDPA and with SDPA + torch.compile, forward alone, residual
# alone; JSON into $OUT (and a one-line JSON summary at the end of the log).
#
# The GPU image has JAX (CUDA), PyTorch, transformers, peft, flax, optax, orbax and h5py; the
# few packages it lacks travel as wheels. Once, here, in the repository root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl ml-collections tensorboardX grain array-record
# then run with carry [".whl"]:  bash scripts/bench_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/bench_gpu}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 BURGERS_JAX_CACHE="$OUT/jax_cache"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import jax, torch; print('jax', jax.__version__, jax.devices(), 'torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
timeout 420 python3 scripts/bench_step.py --full --batch 4 --frames 16 --runs 5 --warmup 2 \
  --torch-variants eager,sdpa,sdpa_compile --json --no-profile --out "$OUT/bench_gpu.json" 2>&1 | tee "$OUT/bench_gpu.log"
