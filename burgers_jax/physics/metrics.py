"""Error metrics of predicted fields against the truth, one value per window: the numbers
evaluation reports and training's validation logs. `window_metrics` is the one function
both call; the others define one metric each.

Shapes: pred, true [B, T, H, W, C]: B windows, T predicted frames, H/W grid, C channels
((u, v) for Burgers). Every function returns per-window values [B] (a dict of them for
the frequency bands); average over windows outside. jax.numpy in, so they run inside a
jitted step; numpy arrays work too.

- RMSE  `sqrt(mean err^2)` over frames, grid and channels.
- nRMSE `RMSE / sqrt(mean true^2)`: error relative to the field's size. Burgers fields
  sit near 0.75, so one-step nRMSE is small for any near-copy of the input.
- VRMSE `sqrt(mean err^2 / var true)` per channel (mean and variance over frames and
  grid), then the mean over channels: error relative to the field's own variation,
  which a lazy predictor cannot hide behind.
- bRMSE the RMSE over the outer ring of cells (first and last row and column).
- fRMSE the RMSE split into spatial-frequency bands (PDEBench's bands): the error of each
  frame and channel is Fourier transformed over the grid (normalised by H*W, so by
  Parseval the squared amplitudes sum to the mean squared error), and each mode counts
  in the band of its radial wavenumber r = floor(sqrt(kx^2 + ky^2)) (integer wavenumbers
  on the unit square): low r < 4, mid 4 <= r < 12, high r >= 12. Each band's value is
  the square root of its share, averaged over frames and channels; the squares of the
  three add up to RMSE^2.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from burgers_jax.physics.analytic import CONSTRAINT_SUM
from burgers_jax.physics.boundaries import Boundaries
from burgers_jax.physics.label_free import preconditioned_loss_per_sample
from burgers_jax.physics.residual import pde_terms

EPS = 1e-30
FREQ_BANDS = (("low", 0, 4), ("mid", 4, 12), ("high", 12, math.inf))  # r in [lo, hi)


def _axes(x):
    return tuple(range(1, x.ndim))


def rmse(pred, true):
    return jnp.sqrt(jnp.mean(jnp.square(pred - true), axis=_axes(pred)))


def nrmse(pred, true):
    return rmse(pred, true) / jnp.sqrt(jnp.mean(jnp.square(true), axis=_axes(true)) + EPS)


def vrmse(pred, true):
    axes = tuple(range(1, pred.ndim - 1))  # frames and grid; channels kept
    mse = jnp.mean(jnp.square(pred - true), axis=axes)
    var = jnp.var(true, axis=axes)
    return jnp.mean(jnp.sqrt(mse / (var + EPS)), axis=-1)


def brmse(pred, true):
    err2 = jnp.square(pred - true)  # [B, T, H, W, C]
    ring = jnp.concatenate([err2[:, :, 0, :], err2[:, :, -1, :], err2[:, :, 1:-1, 0], err2[:, :, 1:-1, -1]],
                           axis=2)  # [B, T, 2W + 2(H-2), C]
    return jnp.sqrt(jnp.mean(ring, axis=_axes(ring)))


def frmse(pred, true) -> dict:
    """{"low", "mid", "high"} -> [B] (module docstring)."""
    _, _, h, w, _ = pred.shape
    spectrum = jnp.fft.fft2(pred - true, axes=(2, 3)) / (h * w)
    power = jnp.square(jnp.abs(spectrum))  # [B, T, H, W, C]; sums to mean(err^2) over the grid
    ky = jnp.fft.fftfreq(h) * h
    kx = jnp.fft.fftfreq(w) * w
    radius = jnp.floor(jnp.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2))  # [H, W]
    out = {}
    for name, lo, hi in FREQ_BANDS:
        band = ((radius >= lo) & (radius < hi)).astype(power.dtype)[None, None, :, :, None]
        share = jnp.sum(power * band, axis=(2, 3))  # [B, T, C]
        out[name] = jnp.sqrt(jnp.mean(share, axis=(1, 2)))
    return out


def _dct_ortho(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix [k, i] (scipy.fft.dct(np.eye(n), norm="ortho", axis=0))."""
    k, i = np.arange(n)[:, None], np.arange(n)[None, :] + 0.5
    c = np.sqrt(2.0 / n) * np.cos(np.pi * i * k / n)
    c[0] *= np.sqrt(0.5)
    return c


def dct_frmse(pred, true) -> dict:
    """fRMSE bands of a non-periodic error: as `frmse`, but with the orthonormal 2-D DCT-II
    instead of the periodic FFT, so an error at the boundary (the fields are not periodic)
    does not leak into every band. DCT index k is half a wavenumber of the unit square
    (cos(pi k x)), so r = floor(sqrt(kx^2 + ky^2) / 2) goes into the same bands as `frmse`.
    {"low", "mid", "high"} -> [B]; their squares add up to RMSE^2 (Parseval)."""
    _, _, h, w, _ = pred.shape
    cy, cx = jnp.asarray(_dct_ortho(h), pred.dtype), jnp.asarray(_dct_ortho(w), pred.dtype)
    err = jnp.moveaxis(pred - true, -1, 2)  # [B, T, C, H, W]
    coef = jnp.einsum("ki,btcij,lj->btckl", cy, err, cx) / jnp.sqrt(h * w)
    power = jnp.square(coef)  # sums to mean(err^2) over the grid
    radius = np.floor(np.hypot(np.arange(h)[:, None], np.arange(w)[None, :]) / 2.0)
    out = {}
    for name, lo, hi in FREQ_BANDS:
        band = jnp.asarray((radius >= lo) & (radius < hi), pred.dtype)
        out[name] = jnp.sqrt(jnp.mean(jnp.sum(power * band, axis=(-2, -1)), axis=(1, 2)))
    return out


def window_constraint_error(pred):
    """(mean, max) over frames and grid of |u + v - 1.5| ([B] each); the exact Burgers
    solution has u + v = 1.5."""
    dev = jnp.abs(pred[..., 0] + pred[..., 1] - CONSTRAINT_SUM)
    axes = tuple(range(1, dev.ndim))
    return jnp.mean(dev, axis=axes), jnp.max(dev, axis=axes)


def residual_term_rms(terms: dict) -> dict:
    """RMS per window of the residual's parts, from `physics.pde_terms` fields
    [B, T-1, H, W]: the time derivative (u_t, v_t), the advection (u f_x + v f_y) and the
    diffusion (nu lap f), each over both components."""
    def rms(*fields):
        return jnp.sqrt(sum(jnp.mean(jnp.square(f), axis=(1, 2, 3)) for f in fields) / len(fields))

    return {
        "u_t": rms(terms["u_t"], terms["v_t"]),
        "advection": rms(terms["u*u_x"] + terms["v*u_y"], terms["u*v_x"] + terms["v*v_y"]),
        "diffusion": rms(terms["nu*lap(u)"], terms["nu*lap(v)"]),
    }


def window_metrics(pred, true, frame0, bounds: Boundaries, nu, dt, inputs=None) -> dict:
    """Every per-window metric [B] of predicted frames `pred` [B, T, H, W, 2] against
    `true`: the PDE loss and its parts' RMS on the sequence [frame0 [B, 1, ...], pred]
    (with `bounds` the `Boundaries` of its T + 1 frames), the constraint error,
    RMSE, nRMSE, VRMSE, bRMSE and the fRMSE bands. Training's validation and evaluation
    both report these (one definition), so their numbers agree for the same windows.
    With the model's `inputs` [B, T, H, W, 2] (T >= 2) also `precond_loss`, the
    label-free preconditioned loss (`label_free.preconditioned_loss_per_sample`): ~1 for
    persistence, ~1e-5 for the exact solution, and unlike `pde_loss` it tracks the error."""
    seq = jnp.concatenate([frame0, pred], axis=1)
    terms = pde_terms(seq, bounds, nu, dt)
    per_window = lambda r: jnp.mean(jnp.square(r), axis=(1, 2, 3))  # noqa: E731
    mean_dev, max_dev = window_constraint_error(pred)
    out = {"pde_loss": per_window(terms["res_u"]) + per_window(terms["res_v"]),
           "rmse": rmse(pred, true), "nrmse": nrmse(pred, true), "vrmse": vrmse(pred, true),
           "brmse": brmse(pred, true), "constraint_error": mean_dev, "constraint_error_max": max_dev}
    out.update({f"residual_rms_{k}": v for k, v in residual_term_rms(terms).items()})
    out.update({f"frmse_{k}": v for k, v in frmse(pred, true).items()})
    out.update({f"dct_frmse_{k}": v for k, v in dct_frmse(pred, true).items()})
    if inputs is not None and inputs.shape[1] >= 2:
        out["precond_loss"] = preconditioned_loss_per_sample(pred, inputs, bounds, nu, dt)
    return out
