"""Closed-form solutions of three PDE families: the pretraining data of the stand-in
model (`scripts/pretrain.py`), so that it knows dynamics in general but not the
fine-tuning regime (2D Burgers with nu in [0.1, 0.15]).

- `burgers`: the travelling-wave solution of 2D viscous Burgers (the fine-tuning data's
  formula) at viscosities outside the fine-tuning range: nu in [0.03, 0.08] or
  [0.18, 0.3].
- `diffusion`: u and v each a sum of Neumann cosine modes of the unit square decaying
  as exp(-kappa pi^2 |k|^2 t): an exact solution of u_t = kappa lap u.
- `advection`: u and v each a smooth periodic bump (a product of von Mises profiles)
  carried at a constant velocity: an exact solution of u_t + a . grad u = 0.

Frames are `dt = stride / 999` apart (the reference spacing times a stride of 1 to 20),
so the model sees small and larger steps. Fields are on the cell centres of the
128 x 128 grid, axis H is y, axis W is x, last axis (u, v), values around 0.4-1.
Every window is a pure function of the numpy Generator it is drawn with.
"""

from __future__ import annotations

import numpy as np

from burgers_jax.physics.analytic import burgers_uv, cell_centres
from burgers_jax.physics.residual import REFERENCE_DT

FAMILIES = ("burgers", "diffusion", "advection")
BURGERS_NU_RANGES = ((0.03, 0.08), (0.18, 0.3))  # outside the fine-tuning range [0.1, 0.15]
STRIDES = (1, 2, 5, 10, 20)


def _grid(n: int):
    c = cell_centres(n)
    return c[None, :, None], c[None, None, :]  # y [1, n, 1] (H), x [1, 1, n] (W)


def burgers(rng: np.random.Generator, times: np.ndarray, n: int) -> np.ndarray:
    lo, hi = BURGERS_NU_RANGES[rng.integers(len(BURGERS_NU_RANGES))]
    nu = rng.uniform(lo, hi)
    y, x = _grid(n)
    u, v = burgers_uv(x, y, times[:, None, None], nu)
    return np.stack([u, v], axis=-1)


def diffusion(rng: np.random.Generator, times: np.ndarray, n: int, max_mode: int = 4) -> np.ndarray:
    kappa = rng.uniform(0.005, 0.05)
    y, x = _grid(n)
    t = times[:, None, None]
    fields = []
    for _ in range(2):
        f = np.full((times.size, n, n), rng.uniform(0.4, 1.0))
        for _ in range(rng.integers(2, 6)):
            kx, ky = rng.integers(0, max_mode + 1, size=2)
            if kx == ky == 0:
                continue
            amp = rng.uniform(-0.2, 0.2) / np.hypot(kx, ky)
            decay = np.exp(-kappa * np.pi ** 2 * (kx ** 2 + ky ** 2) * t)
            f = f + amp * np.cos(np.pi * kx * x) * np.cos(np.pi * ky * y) * decay
        fields.append(f)
    return np.stack(fields, axis=-1)


def advection(rng: np.random.Generator, times: np.ndarray, n: int) -> np.ndarray:
    y, x = _grid(n)
    t = times[:, None, None]
    ax, ay = rng.uniform(-1.0, 1.0, size=2)  # one velocity carries both components
    fields = []
    for _ in range(2):
        x0, y0 = rng.uniform(0, 1, size=2)
        kappa = rng.uniform(2.0, 8.0)  # concentration: larger is a narrower bump
        bump = np.exp(kappa * (np.cos(2 * np.pi * (x - x0 - ax * t)) + np.cos(2 * np.pi * (y - y0 - ay * t)) - 2))
        fields.append(rng.uniform(0.5, 0.9) + rng.uniform(0.1, 0.3) * bump)
    return np.stack(fields, axis=-1)


def sample_window(rng: np.random.Generator, frames: int, n: int = 128,
                  family: str | None = None, stride: int | None = None) -> tuple[str, np.ndarray]:
    """(family, window [frames, n, n, 2] float32) of a random member of a random family
    (or of `family`), frames `stride / 999` apart (a random one of STRIDES unless given)
    from a random start time in [0, 1]."""
    family = family or FAMILIES[rng.integers(len(FAMILIES))]
    stride = stride or STRIDES[rng.integers(len(STRIDES))]
    times = rng.uniform(0.0, 1.0) + np.arange(frames) * stride * REFERENCE_DT
    make = {"burgers": burgers, "diffusion": diffusion, "advection": advection}[family]
    return family, make(rng, times, n).astype(np.float32)
