"""Label-free losses anchored on the model's input frames, their preconditioning, and the
rollout crossover horizon.

Shape legend: B batch, T model steps, H = W grid (unit square, dx = 1/H, cell centred,
axis H is y, axis W is x), last axis 2 = (u, v). A model step maps input frame x_k to
prediction p_k of frame k + 1; `inputs` = x_0..x_{T-1} and `pred` = p_0..p_{T-1}, both
[B, T, H, W, 2]. `bounds` is one `Boundaries` covering the T + 1 window frames 0..T:
left/right [B, T+1, H, 1, 2], bottom/top [B, T+1, 1, W, 2]. `nu` is a scalar or
per-sample [B].

Per-step anchored residual (`anchored_residual`):

    r_k = (p_k - x_k) / dt + N(p_k),    N(f) = (u f_x + v f_y) - nu lap(f)

with the stencils of `physics` itself (first-order upwind advection, 3-point Laplacian,
ghost cells from the boundary values of frame k + 1): each pair [x_k, p_k] is one
two-frame window of `physics._fields_impl`, so r_k is exactly the plain residual's
formula with the true input frame in place of the model's own previous output.
`scheme="bdf2"` uses (3 p_k - 4 x_k + x_{k-1}) / (2 dt) for k >= 1 (Euler at k = 0).

Preconditioned residual (`precondition`, `preconditioned_loss`):

    rho_k = dt_e (I - dt_e nu lap_h)^-1 r_k,   dt_e = dt (Euler) or 2 dt / 3 (BDF2, k >= 1)

lap_h is the 5-point Laplacian with homogeneous Dirichlet ghosts (ghost = -f): the part
of the residual's Laplacian that depends on the prediction (its ghosts are
2 * boundary - f). The inverse is applied exactly in the sine basis that diagonalises
lap_h (`dst_basis`), as two n x n matmuls on each side. dt_e (I - dt_e nu lap_h)^-1 is
the inverse of the residual's Jacobian without the advection term, so rho_k is a
Gauss-Newton step: to first order the error of p_k in the state's own units, the same
weight for smooth and rough errors (a negative-Sobolev norm of the residual), where the
plain mean-square anchored residual weighs a grid-scale error ~(1 + 8 nu H^2 dt)^2 ~ 3e2
times more than a smooth one at stride 1 (measured 1.2e3 for `physics.burgers_pde_loss`
on the trainer's [x_0, pred], where the time difference of a constant error cancels).

Only jax, numpy and `burgers_jax.physics` are used (`from burgers_jax import physics`).
The loss functions are pure, jitted (scheme static) and dtype generic: they compute in
the promoted floating dtype of their inputs (float64 under `jax.enable_x64`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from burgers_jax.physics import residual as physics
from burgers_jax.physics.boundaries import Boundaries, require_boundaries

SCHEMES = ("euler", "bdf2")
_HIGHEST = jax.lax.Precision.HIGHEST  # TF32 matmuls on GPU would spoil the ~1e-7 relative basis


def _jit(fn):
    return jax.jit(fn, static_argnames=("scheme",))


__all__ = [
    "SCHEMES",
    "anchored_pde_loss",
    "anchored_residual",
    "crossover_horizon",
    "dirichlet_eigenvalues",
    "dst_basis",
    "precondition",
    "preconditioned_loss",
    "preconditioned_loss_per_sample",
]


# ----------------------------------------------------------------------------- checks


def _check_anchored(fn: str, pred, inputs, bounds, nu, scheme, min_steps: int = 1) -> None:
    """Shape checks at the public entry points (static shapes: runs once at trace time)."""
    require_boundaries(fn, bounds)
    if scheme not in SCHEMES:
        raise ValueError(f"{fn}: scheme must be one of {SCHEMES}, got {scheme!r}")
    shape = tuple(jnp.shape(pred))
    if len(shape) != 5 or shape[-1] != 2:
        raise ValueError(f"{fn}: pred must be [B, T, H, W, 2] with channels (u, v), got shape {shape}")
    b, t, h, w, _ = shape
    if tuple(jnp.shape(inputs)) != shape:
        raise ValueError(
            f"{fn}: inputs (the model's input frames x_0..x_(T-1)) must have pred's shape {shape}, "
            f"got {tuple(jnp.shape(inputs))}"
        )
    if t < min_steps:
        raise ValueError(
            f"{fn}: needs at least {min_steps} model steps (T >= {min_steps}"
            + (", for the input increments x_k - x_(k-1) of the normalisation" if min_steps > 1 else "")
            + f"), got pred and inputs of shape {shape}"
        )
    if h != w or h < 2:
        raise ValueError(f"{fn}: the grid must be square with at least 2 cells per side, got H={h}, W={w}")
    for name, arr, want in zip(Boundaries._fields, bounds, Boundaries.shapes(b, t + 1, h, w)):
        got = tuple(jnp.shape(arr))
        if got != want:
            raise ValueError(
                f"{fn}: boundary '{name}' must cover the T + 1 = {t + 1} window frames, shape "
                f"{want} for pred {shape}, got {got}"
            )
    if tuple(jnp.shape(nu)) not in ((), (b,)):
        raise ValueError(f"{fn}: nu must be a scalar or a per-sample [B] = [{b}] array, got shape {jnp.shape(nu)}")
    for name, arr in (("pred", pred), ("inputs", inputs), *zip(Boundaries._fields, bounds)):
        if not jnp.issubdtype(jnp.result_type(arr), jnp.floating):
            raise TypeError(f"{fn}: '{name}' must be a floating-point array, got {jnp.result_type(arr)}")


def _dtype(*arrays):
    dtype = jnp.result_type(*arrays)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)


# ----------------------------------------------------------------------------- anchored residual


def _anchored_impl(pred, inputs, bounds: Boundaries, nu, dt, scheme):
    """Unchecked core of `anchored_residual`: (res_u, res_v), each [B, T, H, W]."""
    dtype = _dtype(pred, inputs, *bounds)
    pred, inputs = (jnp.asarray(a, dtype) for a in (pred, inputs))
    bounds = bounds.map(lambda a: jnp.asarray(a, dtype))
    b, t, h, w, _ = pred.shape

    def pairs(first, second):  # [B, T, ...] x 2 -> [B*T, 2, ...]
        stacked = jnp.stack([first, second], axis=2)
        return stacked.reshape(b * t, 2, *stacked.shape[3:])

    nu = jnp.asarray(nu, dtype)
    nu_pairs = jnp.repeat(nu, t) if nu.ndim == 1 else nu  # sample i -> pairs i*T .. i*T+T-1
    terms = physics._fields_impl(
        pairs(inputs, pred),
        bounds.map(lambda f: pairs(f[:, :-1], f[:, 1:])),  # frames (k, k+1)
        nu_pairs, dt,
    )
    res = [terms[f"res_{c}"][:, 0].reshape(b, t, h, w) for c in "uv"]
    if scheme == "bdf2" and t > 1:
        # (3p - 4x + x_prev) / (2 dt) - (p - x) / dt = (p - 2x + x_prev) / (2 dt), for k >= 1
        dt_ = jnp.asarray(dt, dtype)
        corr = (pred[:, 1:] - 2 * inputs[:, 1:] + inputs[:, :-1]) / (2 * dt_)  # [B, T-1, H, W, 2]
        res = [r.at[:, 1:].add(corr[..., c]) for c, r in enumerate(res)]
    return res[0], res[1]


@_jit
def anchored_residual(pred, inputs, bounds: Boundaries, nu, dt, scheme: str = "euler"):
    """Per-step residual anchored on the true input frame.

    r_k = (p_k - x_k) / dt + N(p_k) ("euler"), or (3 p_k - 4 x_k + x_{k-1}) / (2 dt) + N(p_k)
    for k >= 1 ("bdf2"; Euler at k = 0, where x_{-1} is not given). N is the spatial part
    of `physics`' residual (upwind advection - nu * Laplacian), evaluated at p_k with the
    ghost cells of frame k + 1; computed by `physics._fields_impl` on the two-frame
    windows [x_k, p_k], so the stencils are exactly the plain residual's.

    Args: pred, inputs [B, T, H, W, 2]; bounds `Boundaries` [B, T+1, ...] (window frames
    0..T); nu scalar or [B]; dt the time between the frames. Returns (res_u, res_v),
    [B, T, H, W].
    """
    _check_anchored("anchored_residual", pred, inputs, bounds, nu, scheme)
    return _anchored_impl(pred, inputs, bounds, nu, dt, scheme)


@_jit
def anchored_pde_loss(pred, inputs, bounds: Boundaries, nu, dt, scheme: str = "euler"):
    """Plain mean square of the anchored residual (`anchored_residual`), with the return
    convention of `physics.pde_loss`: (total, loss_u, loss_v, res_u, res_v),
    total = loss_u + loss_v, means over B, T, H, W; residual fields [B, T, H, W]."""
    _check_anchored("anchored_pde_loss", pred, inputs, bounds, nu, scheme)
    res_u, res_v = _anchored_impl(pred, inputs, bounds, nu, dt, scheme)
    loss_u, loss_v = jnp.mean(jnp.square(jnp.stack([res_u, res_v])), axis=(1, 2, 3, 4))
    return loss_u + loss_v, loss_u, loss_v, res_u, res_v


# ----------------------------------------------------------------------------- preconditioner


def dst_basis(n: int, dtype=jnp.float32):
    """Orthonormal basis S [n, n] (rows: cell i, columns: mode j) of the cell-centred
    Dirichlet problem: S_ij = c_j sin(pi (i + 1/2) (j + 1) / n), c_j = sqrt(2/n) for
    j < n - 1 and sqrt(1/n) for the last (Nyquist) mode (-1)^i, whose squared norm at
    sqrt(2/n) would be 2. Each column satisfies the ghost condition f_{-1} = -f_0,
    f_n = -f_{n-1}, so S^T A S = diag(`dirichlet_eigenvalues`) for A the 1-D 3-point
    Laplacian with ghost = -f. Built in float64 numpy, then cast."""
    i = np.arange(n)[:, None] + 0.5
    j = np.arange(n)[None, :] + 1.0
    s = np.sqrt(2.0 / n) * np.sin(np.pi * i * j / n)
    s[:, -1] *= np.sqrt(0.5)
    return jnp.asarray(s, dtype)


def dirichlet_eigenvalues(n: int, dtype=jnp.float32):
    """lambda_j = -4 n^2 sin^2(pi (j + 1) / (2 n)), j = 0..n-1, of the 1-D 3-point
    Laplacian (dx = 1/n) with ghost = -f, for column j of `dst_basis`."""
    j = np.arange(n) + 1.0
    return jnp.asarray(-4.0 * n**2 * np.sin(np.pi * j / (2 * n)) ** 2, dtype)


def precondition(r, nu, dt):
    """rho = dt (I - dt nu lap_h)^-1 r on each [H, W] field of r [B, ..., H, W].

    lap_h: 5-point Laplacian, dx = 1/H, homogeneous Dirichlet ghosts (ghost = -f). Applied
    as rho = S [(S^T r S) / (1 - dt nu (lambda_i + lambda_j))] S^T with `dst_basis` S (two
    n x n matmuls each side, HIGHEST precision). `dt` is the effective step: the frame
    time for Euler, 2/3 of it for BDF2. nu and dt are scalars or per-sample [B] (sample
    axis 0 of r). The symbol 1 - dt nu lambda >= 1, so the inverse is well conditioned.
    """
    dtype = _dtype(r)
    r = jnp.asarray(r, dtype)
    h, w = r.shape[-2:]
    if h != w:
        raise ValueError(f"precondition: the fields must be square [..., H, W], got shape {r.shape}")
    s = dst_basis(h, dtype)
    lam = dirichlet_eigenvalues(h, dtype)
    per_sample = lambda a: (jnp.asarray(a, dtype).reshape((-1,) + (1,) * (r.ndim - 1))
                            if jnp.ndim(a) == 1 else jnp.asarray(a, dtype))
    nu, dt = per_sample(nu), per_sample(dt)
    coef = jnp.matmul(jnp.matmul(s.T, r, precision=_HIGHEST), s, precision=_HIGHEST)
    coef = coef / (1.0 - dt * nu * (lam[:, None] + lam[None, :]))
    return dt * jnp.matmul(jnp.matmul(s, coef, precision=_HIGHEST), s.T, precision=_HIGHEST)


def _per_sample_parts(pred, inputs, bounds: Boundaries, nu, dt, scheme):
    """Per-sample pieces of the preconditioned loss (each [B]) and the residuals."""
    res_u, res_v = _anchored_impl(pred, inputs, bounds, nu, dt, scheme)
    dtype = res_u.dtype
    dt = jnp.asarray(dt, dtype)
    res = jnp.stack([res_u, res_v], axis=-1)  # [B, T, H, W, 2]
    fields = jnp.moveaxis(res, -1, 2)  # [B, T, 2, H, W]: one preconditioned field per (k, c)
    if scheme == "bdf2":  # k = 0 is an Euler step, k >= 1 a BDF2 step with dt_e = 2 dt / 3
        rho = jnp.concatenate([precondition(fields[:, :1], nu, dt),
                               precondition(fields[:, 1:], nu, 2.0 * dt / 3.0)], axis=1)
    else:
        rho = precondition(fields, nu, dt)
    num_uv = jnp.mean(jnp.sum(jnp.square(rho), axis=(-2, -1)), axis=1)  # [B, 2]: mean_k ||rho_k||^2
    x = jnp.asarray(inputs, dtype)
    den = jnp.mean(jnp.sum(jnp.square(x[:, 1:] - x[:, :-1]), axis=(2, 3, 4)), axis=1)  # [B]
    # Guard against steady inputs (den = 0): an increment below the round-off of the frames
    # themselves (eps * ||x||) carries no information, so den is floored there (plus tiny
    # for all-zero frames). A floor, not an added epsilon: real windows are far above it
    # (stride 1, float32: den ~ 1e4 x floor) and keep their value to the last bit.
    scale = jnp.mean(jnp.sum(jnp.square(x), axis=(2, 3, 4)), axis=1)
    finfo = jnp.finfo(dtype)
    den = jnp.maximum(den, finfo.eps**2 * scale + finfo.tiny)
    return {"num_u": num_uv[:, 0], "num_v": num_uv[:, 1], "den": den,
            "res_u": res_u, "res_v": res_v, "rho_u": rho[:, :, 0], "rho_v": rho[:, :, 1]}


@_jit
def preconditioned_loss_per_sample(pred, inputs, bounds: Boundaries, nu, dt, scheme: str = "euler"):
    """Per-sample preconditioned loss [B] (see `preconditioned_loss`)."""
    _check_anchored("preconditioned_loss_per_sample", pred, inputs, bounds, nu, scheme, 2)
    parts = _per_sample_parts(pred, inputs, bounds, nu, dt, scheme)
    return (parts["num_u"] + parts["num_v"]) / parts["den"]


@_jit
def preconditioned_loss(pred, inputs, bounds: Boundaries, nu, dt, scheme: str = "euler") -> dict:
    """Label-free loss: the preconditioned anchored residual, normalised by the input
    frames' own increments.

    Per sample b:

        loss_b = mean_k ||rho_k||^2 / mean_k' ||x_k' - x_{k'-1}||^2,

    k = 0..T-1, k' = 1..T-1, ||.||^2 the sum over the grid and both components,
    rho_k = `precondition`(r_k) with r_k the `anchored_residual`. The ratio is taken per
    sample, then averaged over the batch (`loss`), so a sample with slow dynamics (large
    nu or a quiet window) is not drowned by a fast one. Persistence (p_k = x_k) gives
    loss ~ 1 under "euler" (rho_k ~ -(x_{k+1} - x_k)); the exact solution ~1e-5.
    Needs T >= 2 (the increments); the denominator is floored at (eps ||x||)^2 + tiny
    (eps of the dtype), which only steady inputs reach.

    The minimiser (rho = 0, i.e. r = 0) is the implicit-Euler step of the discretised
    PDE from the input frame x_k, which matches the true next frame to first order in dt
    ("bdf2": the BDF2 step from x_k, x_{k-1}, second order). It is still the PDE
    residual, only measured in a norm that weighs smooth and rough errors alike
    (negative-Sobolev / Gauss-Newton preconditioning, see the module docstring).

    Returns a dict of scalars: `loss` (mean over B of `preconditioned_loss_per_sample`),
    `loss_u` + `loss_v` = `loss` (the two components' shares), and un-normalised parts
    for logging: `precond_sq` (mean over B of mean_k ||rho_k||^2), `increment_sq` (mean
    over B of the denominator), `anchored_mse` (`anchored_pde_loss`'s total).
    """
    _check_anchored("preconditioned_loss", pred, inputs, bounds, nu, scheme, 2)
    p = _per_sample_parts(pred, inputs, bounds, nu, dt, scheme)
    loss_u = jnp.mean(p["num_u"] / p["den"])
    loss_v = jnp.mean(p["num_v"] / p["den"])
    return {
        "loss": loss_u + loss_v,
        "loss_u": loss_u,
        "loss_v": loss_v,
        "precond_sq": jnp.mean(p["num_u"] + p["num_v"]),
        "increment_sq": jnp.mean(p["den"]),
        "anchored_mse": jnp.mean(jnp.square(p["res_u"])) + jnp.mean(jnp.square(p["res_v"])),
    }


# ----------------------------------------------------------------------------- evaluation helpers


def crossover_horizon(model_err, persistence_err):
    """First horizon h (1-based, arrays over h = 1..N) from which the model beats
    persistence for good: model_err < persistence_err (strictly) at h and at every later
    horizon. None if the model does not beat persistence at the last horizon N."""
    m = np.asarray(model_err, dtype=np.float64)
    p = np.asarray(persistence_err, dtype=np.float64)
    if m.ndim != 1 or m.shape != p.shape or m.size == 0:
        raise ValueError(f"crossover_horizon: need two equal-length 1-D arrays, got {m.shape} and {p.shape}")
    wins = m < p  # NaN compares False: a NaN horizon is not a win
    if not wins[-1]:
        return None
    losses = np.flatnonzero(~wins)
    return int(losses[-1]) + 2 if losses.size else 1
