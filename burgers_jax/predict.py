"""Runs a converted `PDECausalModel` on frames and saves the prediction.

    python -m burgers_jax.predict --checkpoint DIR --input in.npy --output out.npy \
        [--dtype float32|bfloat16] [--lora ADAPTERS] [--batch-size N] [--overwrite]
    python -m burgers_jax.predict --checkpoint DIR --data FILE.h5 --sample 3 [--start 0] \
        [--frames 16] --output out.npy

Input `[B, T, 128, 128, 6]` (T <= max_position_embeddings / 256, i.e. 16 for the
pretrained model), or `[B, T, 128, 128, 2]` holding (u, v) only, padded to the model's
six channels here; or windows read straight from an HDF5 file of the Burgers layout.
The output has the input's shape (two channels in, two out), output frame k predicting
the state one step after input frame k; float32, written to exactly the path given.

`--dtype float32` runs the float32 parity policy with "highest" matmul precision (no
TF32 on GPUs); `--dtype bfloat16` runs the PyTorch recipe's all-bf16 policy.

Shape legend: B batch, T frames, H/W grid (128), C channels (6, or 2 for (u, v)).
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from burgers_jax import compilation_cache, outputs
from burgers_jax import data as data_lib
from burgers_jax.checkpoint import CheckpointError, load_model
from burgers_jax.model import PDECausalModel, cast_params
from burgers_jax.model_config import FLOAT32, INFERENCE_DTYPES, ConfigError, ModelConfig, Policy
from burgers_jax.progress import progress

GRID = 128
UV_CHANNELS = 2


class PredictError(ValueError):
    """A user-facing prediction failure (bad input, missing checkpoint, ...)."""


def check_input(x: np.ndarray, config: ModelConfig, source: str = "input") -> None:
    max_t = config.transformer.max_position_embeddings // config.tokens_per_frame
    expected = (f"[B, T, {GRID}, {GRID}, {config.in_channels}] (or {UV_CHANNELS} channels (u, v)) "
                f"with 1 <= T <= {max_t}")
    if x.ndim != 5 or x.shape[2:4] != (GRID, GRID) or x.shape[4] not in (config.in_channels, UV_CHANNELS):
        raise PredictError(f"{source}: shape {tuple(x.shape)} is not the expected {expected}")
    if not 1 <= x.shape[1] <= max_t or x.shape[0] < 1:
        raise PredictError(f"{source}: shape {tuple(x.shape)}: T={x.shape[1]}, B={x.shape[0]}; expected {expected}")
    if not np.issubdtype(x.dtype, np.floating):
        raise PredictError(f"{source}: dtype {x.dtype} is not floating point")
    for b in range(x.shape[0]):  # one sample at a time: a memory-mapped input stays on disk
        bad = ~np.isfinite(x[b])
        if bad.any():
            t, i, j, c = (int(v) for v in np.argwhere(bad)[0])
            raise PredictError(f"{source}: sample {b}, frame {t} holds {int(bad.sum())} non-finite value(s) "
                               f"(first at row {i}, column {j}, channel {c}); the model cannot use NaN/Inf inputs")


def predict(params: Mapping[str, Any], config: ModelConfig, x: np.ndarray, policy: Policy | None = None,
            batch_size: int = 4, show_progress: bool = True) -> np.ndarray:
    """Model output for `x` `[B, T, 128, 128, C]` (C = 6, or 2 for (u, v)) as a float32 numpy
    array of the same shape, in mini-batches.

    The last mini-batch is padded to `batch_size` (and the padding dropped) so the
    forward pass is compiled once. `policy` defaults to float32.
    """
    x = np.asarray(x)
    check_input(x, config)
    if batch_size < 1:
        raise PredictError(f"--batch-size must be >= 1, got {batch_size}")
    channels = x.shape[-1]
    policy = policy or FLOAT32
    model = PDECausalModel(config, policy=policy)
    params = cast_params(params, policy)

    @jax.jit
    def forward(p, xb):
        if channels < config.in_channels:  # (u, v) only: the rest of the model's channels are zero
            xb = jnp.pad(xb, ((0, 0),) * 4 + ((0, config.in_channels - channels),))
        out = model.apply({"params": p}, xb.astype(policy.input_dtype), train=False)
        return out[..., :channels].astype(jnp.float32)

    n = x.shape[0]
    bs = min(batch_size, n)
    out = np.empty(x.shape, np.float32)
    with jax.default_matmul_precision(policy.matmul_precision):
        for start in progress(range(0, n, bs), desc="predict", unit="batch", enabled=show_progress):
            xb = x[start:start + bs]
            real = xb.shape[0]
            if real < bs:
                xb = np.concatenate([xb, np.repeat(xb[-1:], bs - real, axis=0)])
            out[start:start + real] = np.asarray(forward(params, xb))[:real]
    return out


def load_input(path: Path) -> np.ndarray:
    """A `.npy` array, memory-mapped; never unpickled."""
    if not path.is_file():
        raise PredictError(f"{path}: input file not found")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError, pickle.UnpicklingError) as e:
        raise PredictError(f"{path}: not a .npy array file ({type(e).__name__}: {str(e)[:120]})") from None


def read_windows(path: Path, samples: list[int], start: int, frames: int) -> np.ndarray:
    """Frames `[start, start + frames)` of each sample of an HDF5 file: [B, T, 128, 128, 2]."""
    source = data_lib.HDF5Source(path, min_frames=frames)
    return np.stack([source.read_window(i, start, frames)["data"] for i in samples])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m burgers_jax.predict", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, type=Path, help="converted checkpoint directory")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", type=Path, help=".npy array [B, T, 128, 128, 6] or [B, T, 128, 128, 2]")
    src.add_argument("--data", type=Path, help="HDF5 file of the Burgers layout (with --sample, --start)")
    p.add_argument("--sample", type=int, nargs="+", default=[0], help="with --data: sample index(es)")
    p.add_argument("--start", type=int, default=0, help="with --data: first frame of the window")
    p.add_argument("--frames", type=int, default=16, help="with --data: input frames T")
    p.add_argument("--output", required=True, type=Path, help="path of the float32 .npy prediction (written as given)")
    p.add_argument("--dtype", choices=list(INFERENCE_DTYPES), default="float32",
                   help="float32: the parity policy with exact float32 matmuls; bfloat16: the PyTorch recipe's")
    p.add_argument("--lora", type=Path, default=None, help="adapters directory (convert_ckpt or training)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    compilation_cache.enable()
    try:
        outputs.check_file(args.output, args.overwrite, "prediction")
        if args.input is not None:
            x, source = load_input(args.input), str(args.input)
        else:
            x = read_windows(args.data, args.sample, args.start, args.frames)
            source = f"{args.data} (samples {args.sample}, frames {args.start}..{args.start + args.frames - 1})"
        params, config = load_model(args.checkpoint, args.lora)
        check_input(x, config, source=source)
        y = predict(params, config, x, Policy.for_dtype(args.dtype), args.batch_size)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.save adds no ".npy" to the name
                np.save(f, y)

        outputs.write_file(args.output, write, args.overwrite, "prediction")
        print(f"wrote {args.output}: {y.shape} float32")
        return 0
    except (PredictError, CheckpointError, ConfigError, data_lib.DataError, outputs.OutputError) as e:
        print(f"predict: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
