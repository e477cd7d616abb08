"""Analytic solution of 2D viscous Burgers on the unit square (docs/model_and_formats.md, "Burgers data").

    e = exp((-4x + 4y - t) / (32 nu)),  u = 0.75 - 0.25 / (1 + e),  v = 0.75 + 0.25 / (1 + e)

so u + v = 1.5 exactly. Grid: cell centres (i + 0.5) / n; axis H is y, axis W is x.
Works with numpy or jax.numpy arrays (pass `xp`); evaluate in float64 for reference data.
"""

from __future__ import annotations

import numpy as np

from burgers_jax.physics.boundaries import Boundaries

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
    """Fields and boundaries of one sample in the HDF5 layout of docs/model_and_formats.md, "Burgers data".

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


def analytic_batch(nu, start=0, frames: int = 17, resolution: int = 128, num_times: int = 1000) -> dict:
    """A batch of analytic windows as numpy float64, ready for `burgers_pde_loss`.

    nu: scalar or sequence (one sample each); start: frame index into the reference time
    axis linspace(0, 1, num_times), scalar or one per sample. Returns `pred`
    [B, T, H, W, 2], `left`/`right`/`bottom`/`top` (`Boundaries.from_mapping` makes them
    one value), `nu` [B] and `dt`.
    """
    nus = np.atleast_1d(np.asarray(nu, dtype=np.float64))
    starts = np.broadcast_to(np.atleast_1d(np.asarray(start, dtype=np.int64)), nus.shape)
    times = reference_times(num_times)
    samples = []
    for n, s in zip(nus, starts):
        if s < 0 or s + frames > num_times:
            raise ValueError(f"analytic_batch: window [{s}, {s + frames}) is outside the {num_times} reference frames")
        samples.append(analytic_fields(float(n), times[s : s + frames], resolution))
    out = {k: np.stack([f[k] for f in samples]) for k in Boundaries._fields}
    out["pred"] = np.stack([f["data"] for f in samples])
    out["nu"] = nus
    out["dt"] = float(times[1] - times[0])
    return out


def burgers_fields32(nu: float, times, resolution: int,
                     out: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One sample in the file layout, float32, computed in float64 then cast.

    The field depends on (x, y) only through y - x, which on the uniform cell-centred
    grid takes the 2n - 1 values d / n, d = i - j (row minus column). So the formula
    (`analytic.burgers_uv`) is evaluated once per diagonal and frame, [T, 2n-1], and
    spread over the grid: row i is the contiguous run of diagonals i, i-1, ..., i-n+1.
    That is n/2 times fewer transcendental calls than `analytic.analytic_fields`, with
    the same float32 values (tests compare the two). `out` ([T, H, W, 2] float32) is
    filled and returned as `data` when given, so a generator can reuse one buffer.
    """
    n = resolution
    t = np.asarray(times, dtype=np.float64)
    d = np.arange(n - 1, -n, -1, dtype=np.float64) / n  # d = n-1 .. -(n-1), descending
    u, v = burgers_uv(0.0, d[None, :], t[:, None], float(nu))
    diagonals = np.stack([u, v], axis=-1).astype(np.float32)  # [T, 2n-1, 2]
    if out is None:
        out = np.empty((t.size, n, n, 2), dtype=np.float32)
    elif out.shape != (t.size, n, n, 2) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 {(t.size, n, n, 2)}, got {out.dtype} {out.shape}")
    for i in range(n):  # cell (i, j) has d = i - j, at position (n-1-i) + j of `diagonals`
        out[:, i] = diagonals[:, n - 1 - i:2 * n - 1 - i]
    fields = {"data": out}

    c = cell_centres(n)[None, :]  # along the edge
    tt = t[:, None]
    edges = {  # (x, y) of each edge; the coordinate along the edge is the cell centre
        "left": (0.0, c), "right": (1.0, c), "bottom": (c, 0.0), "top": (c, 1.0),
    }
    for name, (x, y) in edges.items():
        ue, ve = burgers_uv(x, y, tt, float(nu))
        field = np.stack([ue, ve], axis=-1).astype(np.float32)  # [T, n, 2]
        fields[name] = field[:, :, None, :] if name in ("left", "right") else field[:, None, :, :]
    return fields
