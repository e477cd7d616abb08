"""PDE residual of 2D viscous Burgers in JAX (SPEC.md section 4), and the numbers that
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

`nu` is a scalar or a per-sample [B] array. Per-sample is what training should use: the
reference script passes the *batch-mean* nu (a known flaw; a [B] tensor would broadcast
wrongly in its code). The loss functions are pure, dtype generic (they compute in the
promoted dtype of pred and the boundaries; float64 under `jax.enable_x64`), jitted, and
run per device under `jax.pmap`. Cast a bf16 model output to float32 first (SPEC 5):
the floors report shows bf16 values alone already cost a loss of ~1e2.

`python -m burgers_jax.physics` prints the physics floors report (see `floors_report`).
"""

from __future__ import annotations

import argparse
import textwrap

import jax
import jax.numpy as jnp
import numpy as np

from burgers_jax import analytic
from burgers_jax.analytic import CONSTRAINT_SUM, analytic_fields, reference_times

REFERENCE_DT = 1.0 / 999.0  # t = linspace(0, 1, 1000)
TERM_NAMES = ("u_t", "u*u_x", "v*u_y", "nu*lap(u)", "v_t", "u*v_x", "v*v_y", "nu*lap(v)")

__all__ = [
    "REFERENCE_DT",
    "TERM_NAMES",
    "burgers_pde_loss",
    "pde_terms",
    "residual_terms",
    "constraint_error",
    "analytic_batch",
    "floors_report",
    "format_floors_report",
    "burgers_uv",
]

burgers_uv = analytic.burgers_uv  # re-exported: (u, v) at broadcastable (x, y, t, nu)


# ----------------------------------------------------------------------------- checks


def _check_inputs(fn: str, pred, left, right, bottom, top, nu) -> None:
    """Shape checks at the public entry points; shapes are static, so this runs once at
    trace time under jit/pmap and costs nothing per call."""
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
    expected = {
        "left": (b, t, h, 1, 2),
        "right": (b, t, h, 1, 2),
        "bottom": (b, t, 1, w, 2),
        "top": (b, t, 1, w, 2),
    }
    for name, arr in zip(expected, (left, right, bottom, top)):
        got = tuple(jnp.shape(arr))
        if got != expected[name]:
            raise ValueError(
                f"{fn}: boundary '{name}' must have shape {expected[name]} to match pred {shape}, got {got}"
            )
    nu_shape = tuple(jnp.shape(nu))
    if nu_shape not in ((), (b,)):
        raise ValueError(f"{fn}: nu must be a scalar or a per-sample [B] = [{b}] array, got shape {nu_shape}")
    for name, arr in zip(("pred", *expected), (pred, left, right, bottom, top)):
        if not jnp.issubdtype(jnp.result_type(arr), jnp.floating):
            raise TypeError(f"{fn}: '{name}' must be a floating-point array, got {jnp.result_type(arr)}")


# ----------------------------------------------------------------------------- stencils


def _pad_with_ghosts(f, left, right, bottom, top):
    """One field f [B, T, H, W] -> [B, T, H+2, W+2] with ghost cells.

    left/right [B, T, H] (x = 0 / x = 1), bottom/top [B, T, W] (y = 0 / y = 1).
    Padded row 0 lies below y = 0, padded column 0 left of x = 0.
    """
    g_left = 2 * left - f[..., :, 0]  # [B, T, H]
    g_right = 2 * right - f[..., :, -1]
    g_bottom = 2 * bottom - f[..., 0, :]  # [B, T, W]
    g_top = 2 * top - f[..., -1, :]
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


def _fields_impl(pred, left, right, bottom, top, nu, dt):
    """Unchecked core: every term of both residuals, each [B, T-1, H, W]."""
    dtype = jnp.result_type(pred, left, right, bottom, top)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    pred, left, right, bottom, top = (jnp.asarray(a, dtype) for a in (pred, left, right, bottom, top))
    nu = jnp.asarray(nu, dtype)
    if nu.ndim == 1:  # per-sample viscosity broadcasts over [B, 1, 1, 1]
        nu = nu[:, None, None, None]
    dt = jnp.asarray(dt, dtype)
    dx = 1.0 / pred.shape[2]  # dx = dy = 1/H; exact for power-of-two H

    padded = [
        _pad_with_ghosts(
            pred[..., c], left[..., 0, c], right[..., 0, c], bottom[..., 0, :, c], top[..., 0, :, c]
        )[:, 1:]  # spatial terms at the current frame, 1..T-1
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
def burgers_pde_loss(pred, left, right, bottom, top, nu, dt):
    """PDE residual loss of SPEC.md section 4.

    Args:
      pred: [B, T, H, W, 2] (u, v).
      left, right: [B, T, H, 1, 2] boundary values at x = 0 / x = 1.
      bottom, top: [B, T, 1, W, 2] boundary values at y = 0 / y = 1.
      nu: scalar or per-sample [B] viscosity.
      dt: frame spacing (1/999 for the reference data).
    Returns:
      (total, loss_u, loss_v, res_u, res_v): scalar losses (mean squared residuals,
      total = loss_u + loss_v) and residual fields [B, T-1, H, W], in the promoted
      floating dtype of the inputs.
    """
    _check_inputs("burgers_pde_loss", pred, left, right, bottom, top, nu)
    terms = _fields_impl(pred, left, right, bottom, top, nu, dt)
    res_u, res_v = terms["res_u"], terms["res_v"]
    # One reduction over the stacked residuals rather than two: when only the scalar is
    # used, XLA:CPU (jax 0.10) otherwise fuses the whole stencil into its reduce kernel,
    # which runs ~7x slower on this CPU (measured: 150-300 ms vs 25 ms at 4x17x128^2).
    loss_u, loss_v = jnp.mean(jnp.square(jnp.stack([res_u, res_v])), axis=(1, 2, 3, 4))
    return loss_u + loss_v, loss_u, loss_v, res_u, res_v


@jax.jit
def pde_terms(pred, left, right, bottom, top, nu, dt) -> dict:
    """Every term of the residual as a field [B, T-1, H, W]: keys `TERM_NAMES` plus
    `res_u`, `res_v` (res = *_t + u*_x + v*_y - nu*lap)."""
    _check_inputs("pde_terms", pred, left, right, bottom, top, nu)
    return _fields_impl(pred, left, right, bottom, top, nu, dt)


@jax.jit
def residual_terms(pred, left, right, bottom, top, nu, dt) -> dict:
    """RMS magnitude of each residual term (over batch, frames and grid), to see which
    term dominates a residual: keys `TERM_NAMES` plus `res_u`, `res_v`."""
    _check_inputs("residual_terms", pred, left, right, bottom, top, nu)
    terms = _fields_impl(pred, left, right, bottom, top, nu, dt)
    return {k: jnp.sqrt(jnp.mean(jnp.square(f))) for k, f in terms.items()}


@jax.jit
def constraint_error(pred):
    """(mean, max) of |u + v - 1.5| over all of pred [..., 2] (u, v); the analytic
    solution satisfies u + v = 1.5 exactly."""
    if jnp.ndim(pred) < 1 or jnp.shape(pred)[-1] != 2:
        raise ValueError(f"constraint_error: pred must end in the (u, v) axis of size 2, got shape {jnp.shape(pred)}")
    err = jnp.abs(pred[..., 0] + pred[..., 1] - CONSTRAINT_SUM)
    return jnp.mean(err), jnp.max(err)


def analytic_batch(nu, start=0, frames: int = 17, resolution: int = 128, num_times: int = 1000) -> dict:
    """A batch of analytic windows as numpy float64, ready for `burgers_pde_loss`.

    nu: scalar or sequence (one sample each); start: frame index into the reference time
    axis linspace(0, 1, num_times), scalar or one per sample. Returns `pred`
    [B, T, H, W, 2], `left`/`right`/`bottom`/`top`, `nu` [B] and `dt`.
    """
    nus = np.atleast_1d(np.asarray(nu, dtype=np.float64))
    starts = np.broadcast_to(np.atleast_1d(np.asarray(start, dtype=np.int64)), nus.shape)
    times = reference_times(num_times)
    samples = []
    for n, s in zip(nus, starts):
        if s < 0 or s + frames > num_times:
            raise ValueError(f"analytic_batch: window [{s}, {s + frames}) is outside the {num_times} reference frames")
        samples.append(analytic_fields(float(n), times[s : s + frames], resolution))
    out = {k: np.stack([f[k] for f in samples]) for k in ("left", "right", "bottom", "top")}
    out["pred"] = np.stack([f["data"] for f in samples])
    out["nu"] = nus
    out["dt"] = float(times[1] - times[0])
    return out


# ----------------------------------------------------------------------------- floors report

def _explanation(rows: dict, nu: float, resolution: int, noise_levels) -> str:
    """One paragraph reading the report's own numbers (rows keyed by name)."""
    exact = rows["analytic, float64 field"]["loss_f64"]
    f32 = rows["analytic, float32 field"]["loss_f64"]
    bf16 = rows["analytic, bfloat16 field"]["loss_f64"]
    frozen = rows["frozen field, true boundaries"]["loss_f64"]
    frozen_all = rows["frozen field and boundaries"]["loss_f64"]
    noise = [(s, rows[_noise_name(s)]["loss_f64"]) for s in noise_levels]
    amp_lap = nu * resolution**2
    inv_dt = 1.0 / rows["analytic, float64 field"]["dt"]
    # white noise, advection ignored: centre weight 1/dt + 4 nu/dx^2, previous frame -1/dt,
    # four neighbours -nu/dx^2 each; two components.
    white = 2 * ((inv_dt + 4 * amp_lap) ** 2 + inv_dt**2 + 4 * amp_lap**2)
    compare = "worse" if bf16 > frozen else "better"
    noise_txt = ", ".join(f"s = {n:g}: {v:.1e}" for n, v in noise)
    return (
        f"What a PDE loss value means. The exact solution's discretisation floor is {exact:.1e} "
        f"(float64) and {f32:.1e} once the field is rounded to float32. The residual divides frame "
        f"differences by dt = 1/999 and spatial second differences by dx^2/nu (nu/dx^2 = "
        f"{amp_lap:.0f} here), so any error in the field is amplified by ~1e3-1e4 before it is "
        f"squared: white noise of std s scores about {white:.1e} s^2 ({noise_txt}); noise of "
        f"{noise[0][0]:g} already costs ~{noise[0][1] / exact:.0e} times the floor. For "
        f"spatially white noise the viscous term (nu/dx^2 > 1/dt) dominates, then u_t; noise that "
        f"is smooth in space but changes from frame to frame is amplified by 1/dt alone. Rounding "
        f"the exact solution to bfloat16 (steps of 2^-8 ~ 4e-3 in [0.5, 1)) leaves a staircase "
        f"whose steps, divided by dx^2 and dt, score {bf16:.1e}: {compare} than the trivial field "
        f"frozen at frame 0 ({frozen:.1e} against the true boundaries, where the ghost cells of "
        f"the moving boundary dominate; {frozen_all:.1e} with frozen boundaries, which pays only "
        f"for the true u_t). So a bf16 model output cannot score below the bf16 row, and a low "
        f"loss is not by itself evidence of a correct solution."
    )


def _noise_name(std: float) -> str:
    return f"analytic + N(0, {std:g}^2)"


def _as(a, dtype):
    """Round a float64 numpy array to `dtype` (numpy or ml_dtypes, e.g. jnp.bfloat16) and
    return float64 numpy, so the same rounded values feed float64 or float32 math. Done in
    numpy: jnp would silently demote float64 outside the x64 context."""
    return np.asarray(a).astype(dtype).astype(np.float64)


def floors_report(
    nu: float = 0.125,
    resolution: int = 128,
    frames: int = 17,
    start: int = 0,
    noise_levels=(1e-6, 1e-5, 1e-4),
    seed: int = 0,
) -> dict:
    """The PDE loss of reference fields, computed once in float64 math and once in
    float32 math (inputs cast to float32, what training does after the bf16 model):

    - the analytic solution with its field rounded to float64 / float32 / bfloat16
      (boundaries float64 for the float64 row, float32 otherwise, as a loader gives them);
    - the field frozen in time (frame 0 repeated, what a model that copies its input
      outputs) against the true boundaries, and with the boundaries frozen too;
    - the analytic field plus Gaussian noise of each std in `noise_levels` (all frames).

    Returns {"config", "rows": [{"name", "loss_f64", "loss_f32", "constraint_mean",
    "terms" (RMS per term, float64 math)}], "explanation"}. Safe to call from code that
    runs without x64: float64 is enabled only inside.
    """
    batch = analytic_batch(nu, start, frames, resolution)
    bnd = {k: batch[k] for k in ("left", "right", "bottom", "top")}
    bnd32 = {k: _as(b, np.float32) for k, b in bnd.items()}
    exact = batch["pred"]
    frozen = np.repeat(exact[:, :1], frames, axis=1)  # a model that copies its input frame
    rng = np.random.default_rng(seed)
    cases = [
        ("analytic, float64 field", exact, bnd),
        ("analytic, float32 field", _as(exact, np.float32), bnd32),
        ("analytic, bfloat16 field", _as(exact, jnp.bfloat16), bnd32),
        ("frozen field, true boundaries", frozen, bnd),
        ("frozen field and boundaries", frozen, {k: np.repeat(b[:, :1], frames, axis=1) for k, b in bnd.items()}),
    ]
    for s in noise_levels:
        cases.append((_noise_name(s), exact + s * rng.standard_normal(exact.shape), bnd))

    rows = []
    with jax.enable_x64(True):
        for name, field, b in cases:
            args64 = [jnp.asarray(a, jnp.float64) for a in (field, b["left"], b["right"], b["bottom"], b["top"])]
            args32 = [a.astype(jnp.float32) for a in args64]
            loss64 = burgers_pde_loss(*args64, jnp.float64(nu), batch["dt"])[0]
            loss32 = burgers_pde_loss(*args32, jnp.float32(nu), np.float32(batch["dt"]))[0]
            terms = residual_terms(*args64, jnp.float64(nu), batch["dt"])
            rows.append(
                {
                    "name": name,
                    "dt": batch["dt"],
                    "loss_f64": float(loss64),
                    "loss_f32": float(loss32),
                    "constraint_mean": float(constraint_error(args64[0])[0]),
                    "terms": {k: float(t) for k, t in terms.items()},
                }
            )
    config = dict(nu=nu, resolution=resolution, frames=frames, start=start, dt=batch["dt"],
                  noise_levels=tuple(noise_levels), seed=seed)
    explanation = _explanation({r["name"]: r for r in rows}, nu, resolution, noise_levels)
    return {"config": config, "rows": rows, "explanation": explanation}


def format_floors_report(report: dict) -> str:
    c = report["config"]
    lines = [
        f"Physics floors: nu={c['nu']:g}, {c['resolution']}^2 grid, {c['frames']} frames from "
        f"reference frame {c['start']}, dt={c['dt']:.6g}",
        "PDE loss = mean(res_u^2) + mean(res_v^2); 'f64 math' computes in float64, 'f32 math' "
        "casts the same inputs to float32.",
        "",
        f"{'field':<34}{'loss (f64 math)':>17}{'loss (f32 math)':>17}{'mean|u+v-1.5|':>15}",
    ]
    for r in report["rows"]:
        lines.append(f"{r['name']:<34}{r['loss_f64']:>17.3e}{r['loss_f32']:>17.3e}{r['constraint_mean']:>15.2e}")
    lines += ["", "RMS of each residual term (float64 math):", f"{'field':<34}" + "".join(f"{k:>11}" for k in TERM_NAMES)]
    for r in report["rows"]:
        lines.append(f"{r['name']:<34}" + "".join(f"{r['terms'][k]:>11.2e}" for k in TERM_NAMES))
    lines += [""] + textwrap.wrap(report["explanation"], 100)
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Print the physics floors report (what a PDE loss value means).")
    parser.add_argument("--nu", type=float, default=0.125)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--start", type=int, default=0, help="first frame in the reference time axis (0..983)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise rows")
    args = parser.parse_args(argv)
    report = floors_report(args.nu, args.resolution, args.frames, args.start, seed=args.seed)
    print(format_floors_report(report))


if __name__ == "__main__":
    main()
