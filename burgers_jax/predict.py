"""Runs a converted `PDECausalModel` on an array of frames and saves the prediction.

    python -m burgers_jax.predict --checkpoint DIR --input in.npy --output out.npy \
        [--dtype float32|bfloat16] [--lora ADAPTERS] [--batch-size N]

Input `[B, T, 128, 128, 6]` (T <= max_position_embeddings / 256, i.e. 16 for the
pretrained model); output of the same shape, output frame k predicting the state one
step after input frame k; written as float32.

`--dtype float32` runs the float32 parity policy with "highest" matmul precision (no
TF32 on GPUs); `--dtype bfloat16` runs the PyTorch recipe's bf16 policy ("reference").

Shape legend: B batch, T frames, H/W grid (128), C channels (6).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from burgers_jax.checkpoint import CheckpointError, load_model
from burgers_jax.model import PDECausalModel, cast_params
from burgers_jax.model_config import FLOAT32, INFERENCE_DTYPES, ConfigError, ModelConfig, Policy

GRID = 128


class PredictError(ValueError):
    """A user-facing prediction failure (bad input, missing checkpoint, ...)."""


def check_input(x: np.ndarray, config: ModelConfig, source: str = "input") -> None:
    max_t = config.transformer.max_position_embeddings // config.tokens_per_frame
    expected = f"[B, T, {GRID}, {GRID}, {config.in_channels}] with 1 <= T <= {max_t}"
    if x.ndim != 5 or x.shape[2:] != (GRID, GRID, config.in_channels):
        raise PredictError(f"{source}: shape {tuple(x.shape)} is not the expected {expected}")
    if not 1 <= x.shape[1] <= max_t or x.shape[0] < 1:
        raise PredictError(f"{source}: shape {tuple(x.shape)}: T={x.shape[1]}, B={x.shape[0]}; expected {expected}")
    if not np.issubdtype(x.dtype, np.floating):
        raise PredictError(f"{source}: dtype {x.dtype} is not floating point")


def predict(params: Mapping[str, Any], config: ModelConfig, x: np.ndarray, policy: Policy | None = None,
            batch_size: int = 4, progress: bool = True) -> np.ndarray:
    """Model output for `x` `[B, T, 128, 128, 6]` as a float32 numpy array, in mini-batches.

    The last mini-batch is padded to `batch_size` (and the padding dropped) so the
    forward pass is compiled once. `policy` defaults to float32.
    """
    x = np.asarray(x)
    check_input(x, config)
    if batch_size < 1:
        raise PredictError(f"--batch-size must be >= 1, got {batch_size}")
    policy = policy or FLOAT32
    model = PDECausalModel(config, policy=policy)
    params = cast_params(params, policy)

    @jax.jit
    def forward(p, xb):
        return model.apply({"params": p}, xb.astype(policy.input_dtype), train=False).astype(jnp.float32)

    n = x.shape[0]
    bs = min(batch_size, n)
    out = np.empty(x.shape, np.float32)
    with jax.default_matmul_precision(policy.matmul_precision):
        for start in tqdm(range(0, n, bs), desc="predict", unit="batch", disable=not progress,
                          total=-(-n // bs)):
            xb = x[start:start + bs]
            real = xb.shape[0]
            if real < bs:
                xb = np.concatenate([xb, np.repeat(xb[-1:], bs - real, axis=0)])
            out[start:start + real] = np.asarray(forward(params, xb))[:real]
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m burgers_jax.predict", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, type=Path, help="converted checkpoint directory")
    p.add_argument("--input", required=True, type=Path, help=".npy array [B, T, 128, 128, 6]")
    p.add_argument("--output", required=True, type=Path, help=".npy path for the float32 prediction")
    p.add_argument("--dtype", choices=list(INFERENCE_DTYPES), default="float32",
                   help="float32: the parity policy with exact float32 matmuls; bfloat16: the PyTorch recipe's")
    p.add_argument("--lora", type=Path, default=None, help="adapters directory (convert_ckpt or training)")
    p.add_argument("--batch-size", type=int, default=4)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if not args.input.is_file():
            raise PredictError(f"{args.input}: input file not found")
        try:
            x = np.load(args.input, mmap_mode="r", allow_pickle=False)
        except ValueError as e:
            raise PredictError(f"{args.input}: not a .npy array ({e})") from None
        params, config = load_model(args.checkpoint, args.lora)
        check_input(x, config, source=str(args.input))
        y = predict(params, config, x, Policy.for_dtype(args.dtype), args.batch_size)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        np.save(args.output, y)
        print(f"wrote {args.output}: {y.shape} float32")
        return 0
    except (PredictError, CheckpointError, ConfigError) as e:
        print(f"predict: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
