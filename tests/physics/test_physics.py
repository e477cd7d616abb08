"""Tests of burgers_jax.physics (docs/model_and_formats.md, "The PDE residual").

The parity reference is `torch_pde_terms` below: an independent PyTorch float64
implementation of docs/model_and_formats.md, "The PDE residual" written from the spec (torch.cat padding,
`b + (b - interior)` ghosts, torch.diff stencils, torch.where on the padded tensor's
differences, a per-sample loop for per-sample nu). `scripts/bench/physics.py` imports it.

float64 tests run inside `jax.enable_x64(True)` (a context manager in jax 0.10), never
by flipping x64 globally for the other test modules. conftest forces 2 host CPU devices.
Shape legend: B batch, T frames, H/W grid (H is y, W is x), last axis (u, v).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from burgers_jax.physics import analytic, floors
from burgers_jax.physics import residual as physics
from burgers_jax.physics.boundaries import Boundaries
from porting.verify import rel_l2  # relative 2-norm: the residuals change sign, pointwise is meaningless

DT = 1.0 / 999.0


# ----------------------------------------------------------------------------- torch reference


def _torch_padded(f, left, right, bottom, top):
    """f [B, T, H, W]; left/right [B, T, H, 1]; bottom/top [B, T, 1, W] -> [B, T, H+2, W+2]."""
    gl = left + (left - f[..., :, :1])  # linear extrapolation through the face
    gr = right + (right - f[..., :, -1:])
    gb = bottom + (bottom - f[..., :1, :])
    gt = top + (top - f[..., -1:, :])
    bl = (gb[..., :, :1] + gl[..., :1, :]) / 2
    br = (gb[..., :, -1:] + gr[..., :1, :]) / 2
    tl = (gt[..., :, :1] + gl[..., -1:, :]) / 2
    tr = (gt[..., :, -1:] + gr[..., -1:, :]) / 2
    rows = [torch.cat([bl, gb, br], dim=-1), torch.cat([gl, f, gr], dim=-1), torch.cat([tl, gt, tr], dim=-1)]
    return torch.cat(rows, dim=-2)


def _torch_terms_scalar_nu(pred, left, right, bottom, top, nu: float, dt: float) -> dict:
    h = pred.shape[2]
    dx = 1.0 / h
    padded = [_torch_padded(pred[..., c], left[..., c], right[..., c], bottom[..., c], top[..., c]) for c in range(2)]
    u = pred[:, 1:, :, :, 0]
    v = pred[:, 1:, :, :, 1]
    out = {}
    for c, name in enumerate("uv"):
        p = padded[c][:, 1:]  # spatial terms at frames 1..T-1
        dxs = torch.diff(p[..., 1:-1, :], dim=-1)  # [.., H, W+1]: dxs[j] = p[j+1] - p[j]
        dys = torch.diff(p[..., :, 1:-1], dim=-2)  # [.., H+1, W]
        f_x = torch.where(u >= 0, dxs[..., :-1], dxs[..., 1:]) / dx  # >= 0: backward
        f_y = torch.where(v >= 0, dys[..., :-1, :], dys[..., 1:, :]) / dx
        lap = torch.diff(p[..., 1:-1, :], n=2, dim=-1) / dx**2 + torch.diff(p[..., :, 1:-1], n=2, dim=-2) / dx**2
        f_t = torch.diff(pred[..., c], dim=1) / dt
        out[f"{name}_t"], out[f"u*{name}_x"], out[f"v*{name}_y"], out[f"nu*lap({name})"] = f_t, u * f_x, v * f_y, nu * lap
        out[f"res_{name}"] = f_t + u * f_x + v * f_y - nu * lap
    return out


def torch_pde_terms(pred, left, right, bottom, top, nu, dt) -> dict:
    """Torch tensors (any float dtype) -> dict of term fields [B, T-1, H, W]; nu a float
    or a per-sample sequence, handled by looping over samples."""
    if np.ndim(nu) == 0:
        return _torch_terms_scalar_nu(pred, left, right, bottom, top, float(nu), dt)
    per_sample = [
        _torch_terms_scalar_nu(pred[i : i + 1], left[i : i + 1], right[i : i + 1], bottom[i : i + 1], top[i : i + 1], float(n), dt)
        for i, n in enumerate(nu)
    ]
    return {k: torch.cat([s[k] for s in per_sample]) for k in per_sample[0]}


def torch_pde_loss(pred, left, right, bottom, top, nu, dt):
    t = torch_pde_terms(pred, left, right, bottom, top, nu, dt)
    loss_u, loss_v = (t["res_u"] ** 2).mean(), (t["res_v"] ** 2).mean()
    return loss_u + loss_v, loss_u, loss_v, t["res_u"], t["res_v"]


# ----------------------------------------------------------------------------- helpers

BOUNDARIES = Boundaries._fields


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _args(batch: dict, dtype=np.float64):
    """(pred, left, right, bottom, top): `burgers_pde_loss`'s PyTorch-shaped arguments."""
    return [np.asarray(batch[k], dtype) for k in ("pred", *BOUNDARIES)]


def _pb(batch: dict, dtype=np.float64):
    """(pred, Boundaries): the arguments of `pde_loss`, `pde_terms`, `residual_terms`."""
    pred, *faces = _args(batch, dtype)
    return pred, Boundaries(*faces)


def _torch_args(batch: dict):
    return [torch.from_numpy(np.asarray(batch[k], np.float64)) for k in ("pred", *BOUNDARIES)]


def _perturbed(batch: dict, std: float, seed: int = 0) -> dict:
    out = dict(batch)
    out["pred"] = batch["pred"] + std * np.random.default_rng(seed).standard_normal(batch["pred"].shape)
    return out


def _manual_batch(u, v, frames: int = 2, n: int = 16) -> dict:
    """A time-constant batch (B = 1) from callables u(x, y), v(x, y) on the unit square,
    with boundaries sampled at the cell centres along each edge, like the data."""
    c = (np.arange(n) + 0.5) / n
    y, x = c[:, None], c[None, :]  # axis H is y, axis W is x

    def stack(xx, yy):
        shape = np.broadcast_shapes(np.shape(xx), np.shape(yy))
        f = np.stack([np.broadcast_to(u(xx, yy), shape), np.broadcast_to(v(xx, yy), shape)], axis=-1)
        return np.broadcast_to(f, (1, frames, *f.shape)).copy()

    return {
        "pred": stack(x, y),
        "left": stack(np.zeros_like(y), y),  # [1, T, H, 1, 2]
        "right": stack(np.ones_like(y), y),
        "bottom": stack(x, np.zeros_like(x)),  # [1, T, 1, W, 2]
        "top": stack(x, np.ones_like(x)),
        "x": np.broadcast_to(x, (n, n)),
        "y": np.broadcast_to(y, (n, n)),
        "dx": 1.0 / n,
    }


# ----------------------------------------------------------------------------- parity with torch


@pytest.mark.parametrize("nus,starts", [((0.1, 0.11), (0, 0)), ((0.137, 0.145), (500, 250)), ((0.15, 0.1), (983, 17))])
@pytest.mark.parametrize("field", ["analytic", "perturbed", "signed"])
@pytest.mark.parametrize("nu_mode", ["scalar", "per_sample"])
def test_matches_torch_reference(x64, nus, starts, field, nu_mode):
    """float64 JAX vs the independent torch reference on analytic and perturbed fields.
    The analytic u, v are positive (backward branch only); "signed" shifts each channel
    by its mean and adds noise so both velocities change sign and both upwind branches run."""
    batch = analytic.analytic_batch(nus, start=starts, frames=5, resolution=32)
    if field == "perturbed":
        batch = _perturbed(batch, 1e-3)
    if field == "signed":
        mean = batch["pred"].mean(axis=(0, 1, 2, 3))  # per channel (u, v)
        batch = _perturbed({k: v - mean if k in ("pred", *BOUNDARIES) else v for k, v in batch.items()}, 1e-2)
        u, v = batch["pred"][:, 1:, ..., 0], batch["pred"][:, 1:, ..., 1]
        assert 0.2 < (u >= 0).mean() < 0.8 and 0.2 < (v >= 0).mean() < 0.8, "both branches exercised"
    nu = batch["nu"] if nu_mode == "per_sample" else float(batch["nu"].mean())  # the reference's batch mean
    got = physics.burgers_pde_loss(*_args(batch), nu, batch["dt"])
    want = torch_pde_loss(*_torch_args(batch), batch["nu"].tolist() if nu_mode == "per_sample" else nu, batch["dt"])
    assert got[0].dtype == jnp.float64, "float64 in, float64 out under x64"
    for name, g, w in zip(("total", "loss_u", "loss_v", "res_u", "res_v"), got, want):
        assert g.shape == tuple(w.shape), name
        # float64 and identical stencil algebra: only summation order differs (~1e-14)
        assert rel_l2(g, w.numpy()) <= 1e-10, f"{name}: relative difference {rel_l2(g, w.numpy()):.2e}"


def test_per_sample_nu_differs_from_batch_mean(x64):
    """Per-sample nu really is used per sample (the reference's batch mean is a known flaw)."""
    batch = analytic.analytic_batch([0.1, 0.15], frames=3, resolution=16)
    per_sample = physics.burgers_pde_loss(*_args(batch), batch["nu"], batch["dt"])[0]
    mean_nu = physics.burgers_pde_loss(*_args(batch), float(batch["nu"].mean()), batch["dt"])[0]
    want = torch_pde_loss(*_torch_args(batch), [0.1, 0.15], batch["dt"])[0].item()
    assert rel_l2(per_sample, want) <= 1e-10
    assert abs(float(mean_nu) - want) > 1e-3 * want, "batch-mean nu must give a different (wrong) loss"


def test_terms_match_torch_reference(x64):
    batch = _perturbed(analytic.analytic_batch([0.11, 0.14], start=[10, 700], frames=4, resolution=16), 1e-3)
    fields = physics.pde_terms(*_pb(batch), batch["nu"], batch["dt"])
    rms = physics.residual_terms(*_pb(batch), batch["nu"], batch["dt"])
    want = torch_pde_terms(*_torch_args(batch), batch["nu"].tolist(), batch["dt"])
    assert set(fields) == set(physics.TERM_NAMES) | {"res_u", "res_v"} == set(rms)
    for k, w in want.items():
        assert rel_l2(fields[k], w.numpy()) <= 1e-10, k  # float64, same algebra
        assert abs(float(rms[k]) - w.pow(2).mean().sqrt().item()) <= 1e-10 * w.abs().max().item(), k


# ----------------------------------------------------------------------------- physical floors


def test_analytic_floor_and_noise(x64):
    """Exact solution: loss <= 1e-6 across nu in [0.1, 0.15]; 1% noise: >= 1e3 (documented: ~1e4)."""
    batch = analytic.analytic_batch([0.1, 0.125, 0.15], start=[0, 400, 983], frames=3, resolution=128)
    for i, nu in enumerate(batch["nu"]):
        one = {k: batch[k][i : i + 1] for k in ("pred", *BOUNDARIES)}
        loss = float(physics.burgers_pde_loss(*_args(one), nu, batch["dt"])[0])
        assert loss <= 1e-6, f"nu={nu}: analytic loss {loss:.2e}"
    noisy = _perturbed(batch, 1e-2, seed=1)
    loss = float(physics.burgers_pde_loss(*_args(noisy), batch["nu"], batch["dt"])[0])
    assert loss >= 1e3, f"1% noise loss {loss:.2e}"


def test_constraint_error(x64):
    batch = analytic.analytic_batch([0.1, 0.15], frames=2, resolution=16)
    mean, mx = physics.constraint_error(batch["pred"])
    assert float(mx) <= 1e-15  # u + v = 1.5 exactly up to rounding of 0.75 +- a
    field = np.array([[0.8, 0.8], [0.6, 0.6]])  # u + v - 1.5 = +0.1, -0.3
    mean, mx = physics.constraint_error(field)
    assert abs(float(mean) - 0.2) <= 1e-15 and abs(float(mx) - 0.3) <= 1e-15
    with pytest.raises(ValueError, match="constraint_error"):
        physics.constraint_error(np.zeros((2, 3)))


# ----------------------------------------------------------------------------- hand-built stencils


def test_linear_field_exact_derivatives(x64):
    """u, v linear: ghosts are exact, both upwind branches give the slope, laplacian 0,
    constant in time, so res_u = u a + v b exactly (up to rounding)."""
    au, bu, av, bv = 0.3, -0.7, -0.4, 0.2
    b = _manual_batch(lambda x, y: 0.1 + au * x + bu * y, lambda x, y: -0.05 + av * x + bv * y)
    u, v = b["pred"][0, 1, ..., 0], b["pred"][0, 1, ..., 1]
    assert (u > 0).any() and (u < 0).any() and (v > 0).any() and (v < 0).any(), "both branches exercised"
    t = physics.pde_terms(*_pb(b), 0.37, DT)
    np.testing.assert_allclose(t["res_u"][0, 0], u * au + v * bu, rtol=0, atol=1e-11)  # 1/dx^2 * eps
    np.testing.assert_allclose(t["res_v"][0, 0], u * av + v * bv, rtol=0, atol=1e-11)
    np.testing.assert_allclose(t["nu*lap(u)"], 0.0, atol=1e-11)
    np.testing.assert_allclose(t["u_t"], 0.0, atol=0)


def test_upwind_branch_selected_by_sign_x(x64):
    """u = x^2 - 1/4 along x: backward difference 2x - dx where u >= 0, forward 2x + dx
    where u < 0 (both exact for a quadratic). v = -u has v_x upwinded by u, not by v."""
    b = _manual_batch(lambda x, y: x**2 - 0.25 + 0 * y, lambda x, y: 0.25 - x**2 + 0 * y)
    x, dx = b["x"], b["dx"]
    u = x**2 - 0.25
    d_upwind = np.where(u >= 0, 2 * x - dx, 2 * x + dx)
    t = physics.pde_terms(*_pb(b), 0.0, DT)
    np.testing.assert_allclose(t["u*u_x"][0, 0], u * d_upwind, rtol=0, atol=1e-13)
    np.testing.assert_allclose(t["u*v_x"][0, 0], -u * d_upwind, rtol=0, atol=1e-13)
    np.testing.assert_allclose(t["res_u"][0, 0], u * d_upwind, rtol=0, atol=1e-13)
    # the opposite choice (or upwinding v_x by v) differs by 2 dx |u| somewhere
    assert np.abs(-u * np.where(u >= 0, 2 * x + dx, 2 * x - dx) - t["u*u_x"][0, 0]).max() > 0.01


def test_upwind_branch_selected_by_sign_y(x64):
    """The same along y (axis H), advected by v: u_y and v_y both upwinded by v."""
    b = _manual_batch(lambda x, y: 0.25 - y**2 + 0 * x, lambda x, y: y**2 - 0.25 + 0 * x)
    y, dy = b["y"], b["dx"]
    v = y**2 - 0.25
    d_upwind = np.where(v >= 0, 2 * y - dy, 2 * y + dy)
    t = physics.pde_terms(*_pb(b), 0.0, DT)
    np.testing.assert_allclose(t["v*v_y"][0, 0], v * d_upwind, rtol=0, atol=1e-13)
    np.testing.assert_allclose(t["v*u_y"][0, 0], -v * d_upwind, rtol=0, atol=1e-13)
    np.testing.assert_allclose(t["u*u_x"], 0.0, atol=1e-13)


def test_laplacian_and_ghost_extrapolation(x64):
    """u = 1 + x^2 + 2 y^2: the 3-point stencil is exact inside (u_xx + u_yy = 6); the
    linearly extrapolated ghost gives 3/4 of the curvature in the edge cells."""
    b = _manual_batch(lambda x, y: 1 + x**2 + 2 * y**2, lambda x, y: 0 * x + 0 * y)
    n = b["x"].shape[0]
    want_xx = np.full((n, n), 2.0)
    want_xx[:, [0, -1]] = 1.5
    want_yy = np.full((n, n), 4.0)
    want_yy[[0, -1], :] = 3.0
    t = physics.pde_terms(*_pb(b), 0.5, DT)
    np.testing.assert_allclose(t["nu*lap(u)"][0, 0], 0.5 * (want_xx + want_yy), rtol=0, atol=1e-10)


def test_ghost_corners():
    """Corner ghost = mean of its two neighbouring ghosts (no stencil reads corners, so
    checked on the padding itself)."""
    f = np.arange(1.0, 5.0).reshape(1, 1, 2, 2)  # [[1, 2], [3, 4]], row 0 is y = 0
    left, right = np.array([[[0.0, 10.0]]]), np.array([[[5.0, 6.0]]])  # [B, T, H]
    bottom, top = np.array([[[20.0, 30.0]]]), np.array([[[7.0, 8.0]]])  # [B, T, W]
    p = np.asarray(physics._pad_with_ghosts(f, Boundaries(left, right, bottom, top)))[0, 0]
    g_left, g_right = [2 * 0 - 1, 2 * 10 - 3], [2 * 5 - 2, 2 * 6 - 4]
    g_bottom, g_top = [2 * 20 - 1, 2 * 30 - 2], [2 * 7 - 3, 2 * 8 - 4]
    want = np.array(
        [
            [(g_bottom[0] + g_left[0]) / 2, *g_bottom, (g_bottom[1] + g_right[0]) / 2],
            [g_left[0], 1, 2, g_right[0]],
            [g_left[1], 3, 4, g_right[1]],
            [(g_top[0] + g_left[1]) / 2, *g_top, (g_top[1] + g_right[1]) / 2],
        ]
    )
    np.testing.assert_array_equal(p, want)


def test_time_derivative_is_backward_and_spatial_terms_use_current_frame(x64):
    """u = 0.5 at frame 0 and 0.5 + x from frame 1 on (boundaries too): u_t = x/dt at
    residual frame 0 and 0 after; advection uses the current frame (u_x = 1)."""
    b = _manual_batch(lambda x, y: 0.5 + 0 * x * y, lambda x, y: 0 * x * y, frames=3)
    b["pred"][:, 1:, ..., 0] += b["x"]
    b["right"][:, 1:, ..., 0] += 1.0  # left (x = 0) is unchanged
    b["bottom"][:, 1:, ..., 0] += b["x"][:1]
    b["top"][:, 1:, ..., 0] += b["x"][:1]
    t = physics.pde_terms(*_pb(b), 0.0, DT)
    x = b["x"]
    np.testing.assert_allclose(t["u_t"][0, 0], x / DT, rtol=1e-13)
    np.testing.assert_allclose(t["u_t"][0, 1], 0.0, atol=0)
    np.testing.assert_allclose(t["u*u_x"][0], np.broadcast_to(0.5 + x, (2, *x.shape)), rtol=1e-12)


# ----------------------------------------------------------------------------- numerics, devices, errors


def test_float32_agrees_with_float64(x64):
    """The jitted function in float32 vs float64 on the same float32-rounded inputs."""
    batch = analytic.analytic_batch([0.1, 0.15], start=[0, 300], frames=4, resolution=32)
    for field, rtol, atol in ((batch, 1e-3, 1e-8), (_perturbed(batch, 1e-2), 1e-5, 0.0)):
        a32 = _args(field, np.float32)
        l32 = physics.burgers_pde_loss(*a32, field["nu"].astype(np.float32), np.float32(DT))
        l64 = physics.burgers_pde_loss(*[a.astype(np.float64) for a in a32], field["nu"], DT)
        assert l32[0].dtype == jnp.float32 and l32[3].dtype == jnp.float32
        # one-sided differences are exact in float32 (Sterbenz); what is left is the
        # rounding of products and sums, ~1e-7 of the terms (|terms| ~ 5e-2 exact, ~1e2 noisy):
        # relative 1e-5 for the noisy field, absolute 1e-8 near the analytic floor (~1e-6 here).
        for g, w in zip(l32[:3], l64[:3]):
            assert abs(float(g) - float(w)) <= atol + rtol * float(w), (float(g), float(w))


def test_default_float32_without_x64():
    batch = analytic.analytic_batch(0.12, frames=3, resolution=16)
    out = physics.burgers_pde_loss(*_args(batch, np.float32), 0.12, DT)
    assert out[0].dtype == jnp.float32 and out[3].shape == (1, 2, 16, 16)
    assert float(out[0]) <= 1e-3  # float32 analytic floor is ~1e-6 at 16^2


def test_pmap_over_two_devices_matches_single_device(x64):
    assert jax.device_count() >= 2, "conftest must force 2 host CPU devices"
    batch = _perturbed(analytic.analytic_batch([0.1, 0.12, 0.13, 0.15], start=[0, 5, 50, 900], frames=3, resolution=16), 1e-3)
    args = _args(batch)
    single = physics.burgers_pde_loss(*args, batch["nu"], DT)
    split = lambda a: a.reshape(2, a.shape[0] // 2, *a.shape[1:])
    pmapped = jax.pmap(physics.burgers_pde_loss, in_axes=(0, 0, 0, 0, 0, 0, None))
    out = pmapped(*[split(a) for a in args], split(batch["nu"]), DT)
    assert out[0].shape == (2,)
    # equal shards: the mean of per-device means is the global mean, up to rounding
    for i in range(3):
        assert rel_l2(jnp.mean(out[i]), single[i]) <= 1e-13
    # residual fields: same math per element; XLA may fuse differently per program (~1 ulp)
    for i in (3, 4):
        assert rel_l2(np.asarray(out[i]).reshape(single[i].shape), single[i]) <= 1e-13


def test_gradient_is_finite(x64):
    batch = _perturbed(analytic.analytic_batch(0.12, frames=3, resolution=16), 1e-3)
    args = _args(batch)
    g = jax.grad(lambda p: physics.burgers_pde_loss(p, *args[1:], 0.12, DT)[0])(args[0])
    assert g.shape == args[0].shape and bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0


def test_bad_shapes_give_clear_errors():
    b = analytic.analytic_batch([0.1, 0.12], frames=3, resolution=8)
    p, l, r, bo, t = _args(b, np.float32)
    cases = [
        ((p[0], l, r, bo, t, 0.1), "pred must be \\[B, T, H, W, 2\\]"),
        ((p[..., :1], l, r, bo, t, 0.1), "pred must be"),
        ((p[:, :1], l[:, :1], r[:, :1], bo[:, :1], t[:, :1], 0.1), "at least 2 frames"),
        ((p[:, :, :4], l[:, :, :4], r[:, :, :4], bo, t, 0.1), "square"),
        ((p, l[:, :, :4], r, bo, t, 0.1), "boundary 'left'"),
        ((p, l, r, t.transpose(0, 1, 3, 2, 4), t, 0.1), "boundary 'bottom'"),
        ((p, l, r, bo, t[:1], 0.1), "boundary 'top'"),
        ((p, l, r, bo, t, np.array([0.1, 0.1, 0.1])), "nu must be a scalar or a per-sample"),
    ]
    for args, match in cases:
        with pytest.raises(ValueError, match=match):
            physics.burgers_pde_loss(*args, DT)


def test_boundaries_are_one_named_value(x64):
    """`pde_loss` takes one `Boundaries` (named faces, in the PyTorch recipe's order) and
    is what `burgers_pde_loss` computes; the faces by position (a dict, a bare tuple) are
    refused, and a left/right swap, which passes every shape check, changes the loss."""
    assert Boundaries._fields == ("left", "right", "bottom", "top")
    batch = analytic.analytic_batch([0.1, 0.15], start=[0, 300], frames=3, resolution=16)
    pred, bounds = _pb(batch)
    assert all(np.array_equal(a, b) for a, b in zip(bounds, Boundaries.from_mapping(batch)))
    got = physics.pde_loss(pred, bounds, batch["nu"], DT)
    want = physics.burgers_pde_loss(*_args(batch), batch["nu"], DT)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    for bad in (bounds._asdict(), tuple(bounds), list(bounds)):
        with pytest.raises(TypeError, match="pde_loss: bounds must be a Boundaries"):
            physics.pde_loss(pred, bad, batch["nu"], DT)
    swapped = bounds._replace(left=bounds.right, right=bounds.left)
    assert float(physics.pde_loss(pred, swapped, batch["nu"], DT)[0]) > 1e3 * float(got[0])
    # pytree helpers: slice_time keeps the faces apart, component gives the lines along each edge
    first = bounds.slice_time(2)
    assert first.left.shape == (2, 2, 16, 1, 2) and first.top.shape == (2, 2, 1, 16, 2)
    np.testing.assert_array_equal(first.bottom, bounds.bottom[:, :2])
    lines = bounds.component(1)
    assert lines.right.shape == (2, 3, 16) and lines.bottom.shape == (2, 3, 16)
    np.testing.assert_array_equal(lines.right, bounds.right[..., 0, 1])
    np.testing.assert_array_equal(lines.top, bounds.top[..., 0, :, 1])
    assert Boundaries.shapes(2, 3, 16, 8) == ((2, 3, 16, 1, 2), (2, 3, 16, 1, 2), (2, 3, 1, 8, 2), (2, 3, 1, 8, 2))


def test_floors_report_orders_the_floors():
    """Small report: the orderings the report's explanation relies on."""
    rep = floors.floors_report(nu=0.125, resolution=32, frames=5, start=10)
    rows = {r["name"]: r for r in rep["rows"]}
    exact = rows["analytic, float64 field"]["loss_f64"]
    assert exact < rows["analytic + N(0, 1e-06^2)"]["loss_f64"] < rows["analytic + N(0, 1e-05^2)"]["loss_f64"]
    assert rows["analytic, bfloat16 field"]["loss_f64"] > rows["frozen field, true boundaries"]["loss_f64"]
    assert "bfloat16" in floors.format_floors_report(rep)
    assert not jax.config.jax_enable_x64, "floors_report must not leave x64 switched on"
