"""Analytic solution of 2D viscous Burgers on the unit square (SPEC.md section 3).

    e = exp((-4x + 4y - t) / (32 nu)),  u = 0.75 - 0.25 / (1 + e),  v = 0.75 + 0.25 / (1 + e)

so u + v = 1.5 exactly. Grid: cell centres (i + 0.5) / n; axis H is y, axis W is x.
Works with numpy or jax.numpy arrays (pass `xp`); evaluate in float64 for reference data.
"""

from __future__ import annotations

import numpy as np

CONSTRAINT_SUM = 1.5  # u + v of the analytic solution


def cell_centres(n: int, dtype=np.float64) -> np.ndarray:
    return (np.arange(n, dtype=dtype) + 0.5) / n


def reference_times(num_frames: int = 1000, t0: float = 0.0, t1: float = 1.0) -> np.ndarray:
    """The reference time axis: linspace(0, 1, 1000), so dt = 1/999."""
    return np.linspace(t0, t1, num_frames, dtype=np.float64)


def burgers_uv(x, y, t, nu, xp=np):
    """(u, v) at broadcastable coordinates. 1/(1+e^z) is written as (1 - tanh(z/2)) / 2,
    which cannot overflow for small nu."""
    z = (-4.0 * x + 4.0 * y - t) / (32.0 * nu)
    s = 0.5 * (1.0 - xp.tanh(0.5 * z))
    return 0.75 - 0.25 * s, 0.75 + 0.25 * s


def _stack(u, v, xp):
    return xp.stack([u, v], axis=-1)


def analytic_fields(nu: float, times, resolution: int = 128, xp=np, dtype=np.float64) -> dict:
    """Fields and boundaries of one sample in the HDF5 layout of SPEC.md section 3.

    Returns `data [T, H, W, 2]`, `left`/`right [T, H, 1, 2]` (x = 0 / x = 1),
    `bottom`/`top [T, 1, W, 2]` (y = 0 / y = 1), boundaries sampled at the cell centres
    along each edge.
    """
    t = xp.asarray(times, dtype=dtype)[:, None, None]
    c = xp.asarray(cell_centres(resolution), dtype=dtype)
    y = c[None, :, None]  # H axis
    x = c[None, None, :]  # W axis
    zero = xp.zeros((1, 1, 1), dtype=dtype)
    one = xp.ones((1, 1, 1), dtype=dtype)
    return {
        "data": _stack(*burgers_uv(x, y, t, nu, xp), xp),
        "left": _stack(*burgers_uv(zero, y, t, nu, xp), xp),
        "right": _stack(*burgers_uv(one, y, t, nu, xp), xp),
        "bottom": _stack(*burgers_uv(x, zero, t, nu, xp), xp),
        "top": _stack(*burgers_uv(x, one, t, nu, xp), xp),
    }
