"""Runs a converted `PDECausalModel` on frames (the library behind `burgers-predict`).

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

import sys
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np

from burgers_jax.data import sources as data_lib
from burgers_jax.errors import UserError
from burgers_jax.io import arrays, outputs
from burgers_jax.io.checkpoint import load_model
from burgers_jax.io.progress import progress
from burgers_jax.model.config import FLOAT32, ModelConfig, Policy
from burgers_jax.model.lora import cast_params
from burgers_jax.model.network import PDECausalModel, forward_frames

GRID = 128
UV_CHANNELS = 2


class PredictError(UserError):
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
        # As the model sees it: float32 (a float64 value beyond float32's range becomes Inf).
        with np.errstate(over="ignore"):
            bad = ~np.isfinite(np.asarray(x[b], dtype=np.float32))
        if bad.any():
            t, i, j, c = (int(v) for v in np.argwhere(bad)[0])
            beyond = " or beyond float32's range (|x| > 3.4e38)" if x.dtype.itemsize > 4 else ""
            raise PredictError(f"{source}: sample {b}, frame {t} holds {int(bad.sum())} non-finite value(s){beyond} "
                               f"(first at row {i}, column {j}, channel {c}); the model cannot use NaN/Inf inputs")


def predict(params: Mapping[str, Any], config: ModelConfig, x: np.ndarray, policy: Policy | None = None,
            batch_size: int = 4, show_progress: bool = False) -> np.ndarray:
    """Model output for `x` `[B, T, 128, 128, C]` (C = 6, or 2 for (u, v)) as a float32 numpy
    array of the same shape, in mini-batches.

    The last mini-batch is padded to `batch_size` (and the padding dropped) so the
    forward pass is compiled once. `policy` defaults to float32. Quiet unless
    `show_progress` (the command shows a bar).
    """
    x = np.asarray(x)
    check_input(x, config)
    if batch_size < 1:
        raise PredictError(f"--batch-size must be >= 1, got {batch_size}")
    policy = policy or FLOAT32
    model = PDECausalModel(config, policy=policy)
    params = cast_params(params, policy)

    forward = jax.jit(lambda p, xb: forward_frames(model, p, xb))

    n = x.shape[0]
    bs = min(batch_size, n)
    out = np.empty(x.shape, np.float32)
    with jax.default_matmul_precision(policy.matmul_precision):
        for start in progress(range(0, n, bs), desc="predict", unit="batch", enabled=show_progress):
            xb = np.asarray(x[start:start + bs], x.dtype.newbyteorder("="))  # a big-endian .npy: native, per batch
            real = xb.shape[0]
            if real < bs:
                xb = np.concatenate([xb, np.repeat(xb[-1:], bs - real, axis=0)])
            out[start:start + real] = np.asarray(forward(params, xb))[:real]
    return out


def load_input(path: Path) -> np.ndarray:
    """A `.npy` array, memory-mapped; never unpickled (`io.arrays`: named errors, and no
    advice to load a pickle unsafely)."""
    return arrays.load_plain_array(path)


def read_windows(path: Path, samples: list[int], start: int, frames: int) -> np.ndarray:
    """Frames `[start, start + frames)` of each sample of an HDF5 file: [B, T, 128, 128, 2]."""
    source = data_lib.HDF5Source(path, min_frames=frames)
    return np.stack([source.read_window(i, start, frames)["data"] for i in samples])


def predict_to_file(checkpoint: Path, output: Path, *, input: Path | None = None, data: Path | None = None,
                    sample: list[int] = (0,), start: int = 0, frames: int = 16, dtype: str = "float32",
                    lora: Path | None = None, batch_size: int = 4, overwrite: bool = False,
                    allow_other_base: bool = False) -> tuple[int, ...]:
    """Predicts from an `.npy` array (`input`) or windows of an HDF5 file (`data`,
    `sample`, `start`, `frames`) and writes the float32 prediction to exactly `output`
    (refused when it exists, unless `overwrite`). -> the prediction's shape."""
    if (input is None) == (data is None):
        raise PredictError("give exactly one of --input ARRAY.npy and --data FILE.h5")
    outputs.check_file(output, overwrite, "prediction")
    if input is not None:
        x, source = load_input(input), str(input)
    else:
        x = read_windows(data, list(sample), start, frames)
        source = f"{data} (samples {list(sample)}, frames {start}..{start + frames - 1})"
    params, config = load_model(checkpoint, lora, allow_other_base=allow_other_base)
    check_input(x, config, source=source)
    y = predict(params, config, x, Policy.for_dtype(dtype), batch_size, show_progress=True)  # the command's bar
    nonfinite = int(y.size - np.count_nonzero(np.isfinite(y)))
    if nonfinite:
        print(f"warning: the prediction holds {nonfinite} non-finite value(s) of {y.size} (inputs far outside the "
              "range the model was trained on?); it is written as computed", file=sys.stderr)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save adds no ".npy" to the name
            np.save(f, y)

    outputs.write_file(output, write, overwrite, "prediction")
    return y.shape

