"""PDE residual of 2D viscous Burgers in JAX (docs/model_and_formats.md, "The PDE residual"), and the numbers that
say what a residual value means.

    res_u = u_t + u u_x + v u_y - nu (u_xx + u_yy)        (same for v)

Shape legend: B batch, T frames, H/W grid (axis H is y, axis W is x, dx = dy = 1/H on
the unit square), last axis 2 = (u, v). Residual fields are [B, T-1, H, W]: the time
derivative is a backward difference and every spatial term is taken at frames 1..T-1.

Discretisation, as the reference (`burgers_pde_loss_upwind`):
- ghost cells by linear extrapolation through the boundary face,
  `ghost = 2 * boundary - nearest interior cell`; a corner ghost is the mean of its two
  neighbouring ghosts (no stencil below reads corners; they are kept for completeness);
- first derivatives first-order upwind by the sign of the advecting velocity (`>= 0`
  -> backward difference): u_x, v_x upwinded by u; u_y, v_y upwinded by v;
- second derivatives 3-point central on the padded grid.

The second difference is computed as `(forward - backward) / dx`, algebraically the
3-point stencil `(e - 2c + w) / dx^2`. Neighbouring values are within a factor of two of
each other, so each one-sided difference is exact in floating point (Sterbenz) and the
only rounding is in the final subtraction; the `e - 2c + w` form instead rounds at the
scale of |u| and, amplified by nu/dx^2 ~ 2e3, adds ~1e-8 to a float32 loss.

Boundaries are one `Boundaries(left, right, bottom, top)` value (`physics.boundaries`):
left/right [B, T, H, 1, 2] at x = 0 / x = 1, bottom/top [B, T, 1, W, 2] at y = 0 / y = 1.
`burgers_pde_loss(pred, left, right, bottom, top, nu, dt)` keeps the PyTorch recipe's
positional signature (the function the parity tests compare with it), on top of
`pde_loss(pred, bounds, nu, dt)`.

`nu` is a scalar or a per-sample [B] array. Per-sample is what training should use: the
reference script passes the *batch-mean* nu (a known flaw; a [B] tensor would broadcast
wrongly in its code). The loss functions are pure, dtype generic (they compute in the
promoted dtype of pred and the boundaries; float64 under `jax.enable_x64`), jitted, and
run per device under `jax.pmap`. Cast a bf16 model output to float32 first (docs/model_and_formats.md):
the floors report shows bf16 values alone already cost a loss of ~1e2.

What a loss value means (the floors of exact, rounded, frozen and noisy fields):
`python -m burgers_jax.floors`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from burgers_jax.physics.analytic import CONSTRAINT_SUM
from burgers_jax.physics.boundaries import Boundaries, require_boundaries

REFERENCE_DT = 1.0 / 999.0  # t = linspace(0, 1, 1000)
TERM_NAMES = ("u_t", "u*u_x", "v*u_y", "nu*lap(u)", "v_t", "u*v_x", "v*v_y", "nu*lap(v)")

__all__ = [
    "REFERENCE_DT",
    "TERM_NAMES",
    "Boundaries",
    "burgers_pde_loss",
    "pde_loss",
    "boundary_loss",
    "pde_terms",
    "residual_terms",
    "constraint_error",
]

# ----------------------------------------------------------------------------- checks


def _check_inputs(fn: str, pred, bounds, nu) -> None:
    """Shape checks at the public entry points; shapes are static, so this runs once at
    trace time under jit/pmap and costs nothing per call."""
    require_boundaries(fn, bounds)
    shape = tuple(jnp.shape(pred))
    if len(shape) != 5 or shape[-1] != 2:
        raise ValueError(f"{fn}: pred must be [B, T, H, W, 2] with channels (u, v), got shape {shape}")
    b, t, h, w, _ = shape
    if t < 2:
        raise ValueError(f"{fn}: pred needs at least 2 frames for the time derivative, got T={t}")
    if h != w:
        raise ValueError(f"{fn}: the grid must be square (dx = dy = 1/H on the unit square), got H={h}, W={w}")
    if h < 2:
        raise ValueError(f"{fn}: the grid needs at least 2 cells per side, got H={h}")
    for name, arr, want in zip(Boundaries._fields, bounds, Boundaries.shapes(b, t, h, w)):
        got = tuple(jnp.shape(arr))
        if got != want:
            raise ValueError(f"{fn}: boundary '{name}' must have shape {want} to match pred {shape}, got {got}")
    nu_shape = tuple(jnp.shape(nu))
    if nu_shape not in ((), (b,)):
        raise ValueError(f"{fn}: nu must be a scalar or a per-sample [B] = [{b}] array, got shape {nu_shape}")
    for name, arr in zip(("pred", *Boundaries._fields), (pred, *bounds)):
        if not jnp.issubdtype(jnp.result_type(arr), jnp.floating):
            raise TypeError(f"{fn}: '{name}' must be a floating-point array, got {jnp.result_type(arr)}")


# ----------------------------------------------------------------------------- stencils


def _pad_with_ghosts(f, lines: Boundaries):
    """One field f [B, T, H, W] -> [B, T, H+2, W+2] with ghost cells.

    lines: that field's boundary values (`Boundaries.component`), left/right [B, T, H]
    (x = 0 / x = 1), bottom/top [B, T, W] (y = 0 / y = 1).
    Padded row 0 lies below y = 0, padded column 0 left of x = 0.
    """
    g_left = 2 * lines.left - f[..., :, 0]  # [B, T, H]
    g_right = 2 * lines.right - f[..., :, -1]
    g_bottom = 2 * lines.bottom - f[..., 0, :]  # [B, T, W]
    g_top = 2 * lines.top - f[..., -1, :]
    middle = jnp.concatenate([g_left[..., None], f, g_right[..., None]], axis=-1)  # [B, T, H, W+2]
    corner = lambda a, b: (0.5 * (a + b))[..., None]
    bottom_row = jnp.concatenate(
        [corner(g_bottom[..., 0], g_left[..., 0]), g_bottom, corner(g_bottom[..., -1], g_right[..., 0])], axis=-1
    )
    top_row = jnp.concatenate(
        [corner(g_top[..., 0], g_left[..., -1]), g_top, corner(g_top[..., -1], g_right[..., -1])], axis=-1
    )
    return jnp.concatenate([bottom_row[..., None, :], middle, top_row[..., None, :]], axis=-2)


def _one_sided(p, dx):
    """Backward/forward differences in x (along W) and y (along H) of a padded field
    p [..., H+2, W+2], each [..., H, W]."""
    c = p[..., 1:-1, 1:-1]
    back_x = (c - p[..., 1:-1, :-2]) / dx
    fwd_x = (p[..., 1:-1, 2:] - c) / dx
    back_y = (c - p[..., :-2, 1:-1]) / dx
    fwd_y = (p[..., 2:, 1:-1] - c) / dx
    return back_x, fwd_x, back_y, fwd_y


def _fields_impl(pred, bounds: Boundaries, nu, dt):
    """Unchecked core: every term of both residuals, each [B, T-1, H, W]."""
    dtype = jnp.result_type(pred, *bounds)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    pred = jnp.asarray(pred, dtype)
    bounds = bounds.map(lambda a: jnp.asarray(a, dtype))
    nu = jnp.asarray(nu, dtype)
    if nu.ndim == 1:  # per-sample viscosity broadcasts over [B, 1, 1, 1]
        nu = nu[:, None, None, None]
    dt = jnp.asarray(dt, dtype)
    dx = 1.0 / pred.shape[2]  # dx = dy = 1/H; exact for power-of-two H

    padded = [
        _pad_with_ghosts(pred[..., c], bounds.component(c))[:, 1:]  # spatial terms at the current frame, 1..T-1
        for c in (0, 1)
    ]
    u = pred[:, 1:, ..., 0]
    v = pred[:, 1:, ..., 1]
    terms = {}
    for name, f, p in (("u", pred[..., 0], padded[0]), ("v", pred[..., 1], padded[1])):
        back_x, fwd_x, back_y, fwd_y = _one_sided(p, dx)
        f_x = jnp.where(u >= 0, back_x, fwd_x)  # both x derivatives upwinded by u
        f_y = jnp.where(v >= 0, back_y, fwd_y)  # both y derivatives upwinded by v
        lap = (fwd_x - back_x) / dx + (fwd_y - back_y) / dx
        terms[f"{name}_t"] = (f[:, 1:] - f[:, :-1]) / dt
        terms[f"u*{name}_x"] = u * f_x
        terms[f"v*{name}_y"] = v * f_y
        terms[f"nu*lap({name})"] = nu * lap
    for name in ("u", "v"):
        terms[f"res_{name}"] = (
            terms[f"{name}_t"] + terms[f"u*{name}_x"] + terms[f"v*{name}_y"] - terms[f"nu*lap({name})"]
        )
    return terms


# ----------------------------------------------------------------------------- public API


@jax.jit
def pde_loss(pred, bounds: Boundaries, nu, dt):
    """PDE residual loss of docs/model_and_formats.md, "The PDE residual".

    Args:
      pred: [B, T, H, W, 2] (u, v).
      bounds: `Boundaries` of the T frames: left/right [B, T, H, 1, 2] at x = 0 / x = 1,
        bottom/top [B, T, 1, W, 2] at y = 0 / y = 1.
      nu: scalar or per-sample [B] viscosity.
      dt: frame spacing (1/999 for the reference data).
    Returns:
      (total, loss_u, loss_v, res_u, res_v): scalar losses (mean squared residuals,
      total = loss_u + loss_v) and residual fields [B, T-1, H, W], in the promoted
      floating dtype of the inputs.
    """
    _check_inputs("pde_loss", pred, bounds, nu)
    terms = _fields_impl(pred, bounds, nu, dt)
    res_u, res_v = terms["res_u"], terms["res_v"]
    # One reduction over the stacked residuals rather than two: when only the scalar is
    # used, XLA:CPU (jax 0.10) otherwise fuses the whole stencil into its reduce kernel,
    # which runs ~7x slower on this CPU (measured: 150-300 ms vs 25 ms at 4x17x128^2).
    loss_u, loss_v = jnp.mean(jnp.square(jnp.stack([res_u, res_v])), axis=(1, 2, 3, 4))
    return loss_u + loss_v, loss_u, loss_v, res_u, res_v


@jax.jit
def burgers_pde_loss(pred, left, right, bottom, top, nu, dt):
    """`pde_loss` with the PyTorch recipe's signature (`burgers_pde_loss_upwind(pred, left,
    right, bottom, top, nu, dt)`), which the parity tests compare it with: the four faces
    positionally, shapes as `Boundaries`. Elsewhere pass one `Boundaries` to `pde_loss`."""
    return pde_loss(pred, Boundaries(left, right, bottom, top), nu, dt)


@jax.jit
def pde_terms(pred, bounds: Boundaries, nu, dt) -> dict:
    """Every term of the residual as a field [B, T-1, H, W]: keys `TERM_NAMES` plus
    `res_u`, `res_v` (res = *_t + u*_x + v*_y - nu*lap). Arguments as `pde_loss`."""
    _check_inputs("pde_terms", pred, bounds, nu)
    return _fields_impl(pred, bounds, nu, dt)


@jax.jit
def residual_terms(pred, bounds: Boundaries, nu, dt) -> dict:
    """RMS magnitude of each residual term (over batch, frames and grid), to see which
    term dominates a residual: keys `TERM_NAMES` plus `res_u`, `res_v`."""
    _check_inputs("residual_terms", pred, bounds, nu)
    terms = _fields_impl(pred, bounds, nu, dt)
    return {k: jnp.sqrt(jnp.mean(jnp.square(f))) for k, f in terms.items()}


@jax.jit
def boundary_loss(pred, bounds: Boundaries):
    """How far the prediction, extrapolated to each face of the domain, is from the given
    boundary values: mean over the four faces of the mean squared mismatch, at frames
    1..T-1 (frame 0 is the model's input) and both components.

    The face value comes from the two nearest cell centres (at dx/2 and 3dx/2):
    `f_face = 1.5 f[0] - 0.5 f[1]`, exact for linear fields, so on the exact solution the
    term sits at the discretisation floor (O(dx^4 f''^2)). Shapes as `pde_loss`.
    """
    _check_inputs("boundary_loss", pred, bounds, 0.0)
    p = pred[:, 1:]

    def face(near, next_, given):
        return jnp.mean(jnp.square(1.5 * near - 0.5 * next_ - given[:, 1:]))

    return 0.25 * (face(p[:, :, :, :1], p[:, :, :, 1:2], bounds.left)
                   + face(p[:, :, :, -1:], p[:, :, :, -2:-1], bounds.right)
                   + face(p[:, :, :1], p[:, :, 1:2], bounds.bottom) + face(p[:, :, -1:], p[:, :, -2:-1], bounds.top))


@jax.jit
def constraint_error(pred):
    """(mean, max) of |u + v - 1.5| over all of pred [..., 2] (u, v); the analytic
    solution satisfies u + v = 1.5 exactly."""
    if jnp.ndim(pred) < 1 or jnp.shape(pred)[-1] != 2:
        raise ValueError(f"constraint_error: pred must end in the (u, v) axis of size 2, got shape {jnp.shape(pred)}")
    err = jnp.abs(pred[..., 0] + pred[..., 1] - CONSTRAINT_SUM)
    return jnp.mean(err), jnp.max(err)

