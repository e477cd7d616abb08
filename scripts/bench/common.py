"""What the step benchmarks share, with no torch import (the GPU script's JAX process must
not load PyTorch): the LoRA settings of the recipe, the analytic batch, and the JAX
trainer doing the recipe's work."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from burgers_jax.configs import demo
from burgers_jax.physics import analytic
from burgers_jax.training import trainer as train

LORA = {"r": 16, "alpha": 32.0, "dropout": 0.05}  # the recipe's adapters on the seven projections


def batch_for(b: int, frames: int) -> dict:
    """B analytic Burgers windows of `frames + 1` frames, (u, v) padded to 6 channels."""
    nus = np.linspace(0.1, 0.15, b)
    w = analytic.analytic_batch(nus, start=np.arange(b) * 37, frames=frames + 1, resolution=128)
    pred = w["pred"].astype(np.float32)
    out = {"frames": np.concatenate([pred, np.zeros(pred.shape[:-1] + (4,), np.float32)], axis=-1),
           "nu": nus.astype(np.float32)}
    out.update({k: w[k].astype(np.float32) for k in ("left", "right", "bottom", "top")})
    return out


def jax_trainer(pretrained: Path, precision: str, b: int, frames: int, attention: str = "auto",
                remat: str | None = None) -> train.Trainer:
    """The recipe PyTorch runs (not the demo's recommended options): adapters only, the plain
    window residual with the batch-mean nu, no boundary term; the same loss at step 0."""
    cfg = demo.get_config()
    cfg.model.trainable = "adapters"
    cfg.training.residual, cfg.training.residual_scheme, cfg.training.lambda_bc = "window", "euler", 0.0
    cfg.model.pretrained_path = str(pretrained)
    cfg.model.precision = precision
    cfg.model.attention = attention
    if remat is not None:
        cfg.model.remat = remat
    cfg.model.lora.r, cfg.model.lora.alpha, cfg.model.lora.dropout = LORA["r"], LORA["alpha"], LORA["dropout"]
    cfg.dataset.temporal_length = frames
    cfg.dataset.num_samples = 20
    cfg.dataloader.batch_size = b
    cfg.dataloader.val_batch_size = b
    cfg.training.num_devices = 1
    return train.Trainer(cfg)
