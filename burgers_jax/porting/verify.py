"""`burgers-convert --verify`: the converted Flax model against the PyTorch reference,
seam by seam, and `rel_l2`, the one relative error every parity check reports.

Seams: encoder tokens [B, S, D], transformer output [B, S, D], decoder output
[B, T, 128, 128, 6] (before denormalization) and the final output.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from burgers_jax.io.checkpoint import load_converted
from burgers_jax.model.config import FLOAT32
from burgers_jax.model.network import PDECausalModel
from burgers_jax.porting import VERIFY_TOLERANCE, torch_missing  # noqa: F401  (VERIFY_TOLERANCE: its old place)

try:
    import torch
except ImportError as e:  # the optional `torch` extra
    raise torch_missing(__name__) from e

from burgers_jax.porting import torch_reference
from burgers_jax.porting.torch_checkpoint import load_torch_file, resolve_config, split_checkpoint

SEAMS = ("encoder_tokens", "transformer_output", "decoder_output", "output")


def _float64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x).astype(np.float64)  # numpy, jax (bf16 included via ml_dtypes)


def rel_l2(a, b) -> float:
    """||a - b|| / ||b|| in float64, b the reference; torch, jax or numpy arrays, any dtype.
    NaN when either side holds a non-finite value (never a small number)."""
    a, b = _float64(a), _float64(b)
    if a.shape != b.shape:
        raise ValueError(f"rel_l2: shapes differ, {a.shape} vs {b.shape}")
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def verify(path: Path, out: Path, frames: int = 2, batch: int = 1, seed: int = 0,
           config_file: str | None = None) -> dict[str, float]:
    """Per-seam relative L2 error of the converted Flax model against the torch reference.

    Both float32; the torch model is built from the file's own state dict (the
    independent side), the Flax model from the written directory.
    """
    _, sd, ckpt_config, _ = split_checkpoint(load_torch_file(path)[0], path)
    config, _ = resolve_config(ckpt_config, config_file, path)
    model = torch_reference.build_model(config.to_dict())
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    model = model.float().eval()
    x = np.random.default_rng(seed).standard_normal((batch, frames, 128, 128, 6)).astype(np.float32)
    ref = torch_reference.run_with_intermediates(model, torch.from_numpy(x))

    params, config = load_converted(out, policy=FLOAT32)
    with jax.default_matmul_precision("highest"):
        y, inter = PDECausalModel(config, policy=FLOAT32).apply(
            {"params": params}, x, train=False, return_intermediates=True)
    got = {**inter, "output": y}
    return {k: rel_l2(got[k], ref[k]) for k in SEAMS}


def worst(errors: dict[str, float]) -> float:
    """The largest error; NaN if any is NaN (Python's max() would skip it)."""
    values = np.asarray(list(errors.values()), np.float64)
    return float("nan") if np.isnan(values).any() else float(values.max())
