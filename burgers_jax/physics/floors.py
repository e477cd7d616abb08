"""The physics floors report: what a PDE residual loss value means at dt = 1/999
(printed by `python -m burgers_jax.floors`).

The loss of reference fields (exact, rounded to float32 / bfloat16, frozen in time,
noisy), computed in float64 and float32 math, with the RMS of every residual term and a
paragraph that reads the numbers.
"""

from __future__ import annotations

import textwrap

import jax
import jax.numpy as jnp
import numpy as np

from burgers_jax.physics.analytic import analytic_batch
from burgers_jax.physics.boundaries import Boundaries
from burgers_jax.physics.residual import TERM_NAMES, constraint_error, pde_loss, residual_terms


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
    bnd = Boundaries.from_mapping(batch)
    bnd32 = bnd.map(lambda b: _as(b, np.float32))
    exact = batch["pred"]
    frozen = np.repeat(exact[:, :1], frames, axis=1)  # a model that copies its input frame
    rng = np.random.default_rng(seed)
    cases = [
        ("analytic, float64 field", exact, bnd),
        ("analytic, float32 field", _as(exact, np.float32), bnd32),
        ("analytic, bfloat16 field", _as(exact, jnp.bfloat16), bnd32),
        ("frozen field, true boundaries", frozen, bnd),
        ("frozen field and boundaries", frozen, bnd.map(lambda b: np.repeat(b[:, :1], frames, axis=1))),
    ]
    for s in noise_levels:
        cases.append((_noise_name(s), exact + s * rng.standard_normal(exact.shape), bnd))

    rows = []
    with jax.enable_x64(True):
        for name, field, b in cases:
            field64, b64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), (field, b))
            field32, b32 = jax.tree.map(lambda a: a.astype(jnp.float32), (field64, b64))
            loss64 = pde_loss(field64, b64, jnp.float64(nu), batch["dt"])[0]
            loss32 = pde_loss(field32, b32, jnp.float32(nu), np.float32(batch["dt"]))[0]
            terms = residual_terms(field64, b64, jnp.float64(nu), batch["dt"])
            rows.append(
                {
                    "name": name,
                    "dt": batch["dt"],
                    "loss_f64": float(loss64),
                    "loss_f32": float(loss32),
                    "constraint_mean": float(constraint_error(field64)[0]),
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
