"""Evaluation: the metric functions on hand-computed cases, the boundary term, frame
strides through data, dt and residual, the trainable variants, the evaluate command on
a tiny file, and the pretraining script end to end (a few steps)."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_cli

from burgers_jax.configs import demo
from burgers_jax.data import loader, writer
from burgers_jax.data import sources as data
from burgers_jax.model import param_tree
from burgers_jax.physics import analytic, metrics
from burgers_jax.physics import residual as physics
from burgers_jax.physics.boundaries import Boundaries
from burgers_jax.training import steps
from burgers_jax.training import trainer as train

N = 32  # grid of the hand-made fields


def _grid(n=N):
    c = (np.arange(n) + 0.5) / n
    return c[:, None], c[None, :]  # y (rows), x (columns)


# ----------------------------------------------------------------------------- metric functions


def test_persistence_error_of_a_field_linear_in_time():
    y, x = _grid()
    base = 0.7 + 0.1 * np.sin(2 * np.pi * x) * np.cos(2 * np.pi * y)
    frames = np.stack([base + 0.01 * t for t in range(5)])[None, ..., None].repeat(2, axis=-1)  # [1, 5, N, N, 2]
    pred, true = frames[:, :-1], frames[:, 1:]  # persistence: next frame = this frame
    assert float(metrics.rmse(pred, true)[0]) == pytest.approx(0.01, rel=1e-6)
    want_nrmse = 0.01 / np.sqrt(np.mean(true ** 2))
    assert float(metrics.nrmse(pred, true)[0]) == pytest.approx(want_nrmse, rel=1e-6)


def test_vrmse_of_a_scaled_error():
    rng = np.random.default_rng(0)
    true = rng.normal(0.75, 0.1, (3, 4, N, N, 2))
    mean = true.mean(axis=(1, 2, 3), keepdims=True)
    pred = true + 0.3 * (true - mean)  # error = 0.3 x (the field's deviation): VRMSE = 0.3 exactly
    np.testing.assert_allclose(metrics.vrmse(pred, true), 0.3, rtol=1e-6)
    assert float(metrics.nrmse(pred, true)[0]) < 0.05, "nRMSE hides the same error behind the mean 0.75"


@pytest.mark.parametrize("k,band", [(2, "low"), (3, "low"), (4, "mid"), (7, "mid"), (11, "mid"), (12, "high"),
                                    (15, "high")])
def test_frequency_bands_of_a_single_fourier_mode(k, band):
    y, x = _grid()
    err = 0.02 * np.sin(2 * np.pi * k * x + 0.3) + 0 * y  # one mode along x, amplitude 0.02
    true = np.full((1, 2, N, N, 2), 0.75)
    pred = true + err[None, None, :, :, None]
    got = {b: float(v[0]) for b, v in metrics.frmse(pred, true).items()}
    assert got[band] == pytest.approx(0.02 / math.sqrt(2), rel=1e-5)  # RMS of a sine
    assert all(v < 1e-9 for b, v in got.items() if b != band), got
    assert sum(v ** 2 for v in got.values()) == pytest.approx(float(metrics.rmse(pred, true)[0]) ** 2, rel=1e-6)


def test_boundary_rmse_sees_only_the_outer_ring():
    true = np.zeros((1, 1, N, N, 2))
    inner = true.copy()
    inner[:, :, 1:-1, 1:-1] = 1.0
    ring = 1.0 - inner
    assert float(metrics.brmse(inner, true)[0]) == 0.0
    assert float(metrics.brmse(ring, true)[0]) == pytest.approx(1.0)


def test_constraint_error_hand_case():
    pred = np.full((1, 1, 4, 4, 2), 0.75)
    pred[0, 0, 1, 2, 0] = 0.85  # u + v = 1.6 at one of 16 cells
    mean, mx = metrics.window_constraint_error(pred)
    assert float(mean[0]) == pytest.approx(0.1 / 16) and float(mx[0]) == pytest.approx(0.1)


# ----------------------------------------------------------------------------- boundary term and strides


def test_boundary_term_sits_at_the_floor_on_the_exact_solution():
    with jax.enable_x64(True):
        b = analytic.analytic_batch([0.1, 0.15], start=[0, 500], frames=5, resolution=128)
        pred, bounds = jnp.asarray(b["pred"]), Boundaries.from_mapping(b).map(jnp.asarray)
        exact = float(physics.boundary_loss(pred, bounds))
        shifted = analytic.analytic_batch([0.1, 0.15], start=[40, 540], frames=5, resolution=128)["pred"]
        off = float(physics.boundary_loss(jnp.asarray(shifted), bounds))
    assert exact < 1e-10, exact  # extrapolation error O(dx^2 f'') squared: ~1e-11
    assert off > 1e3 * exact and off > 1e-7, (exact, off)


def test_frame_stride_in_data_dt_and_residual(tmp_path):
    path = writer.write_dataset(tmp_path / "d.h5", num_samples=2, num_frames=60, resolution=128,
                             progress=False)["path"]
    src = data.HDF5Source(path, min_frames=2)
    w = src.read_window(1, 5, 4, stride=10)
    full = src.read_window(1, 0, 60)
    np.testing.assert_array_equal(w["data"], full["data"][5:36:10])
    np.testing.assert_array_equal(w["left"], full["left"][5:36:10])
    cfg = demo.get_config("smoke")
    cfg.physics.dt, cfg.dataset.frame_stride = src.dt, 10
    assert steps.window_dt(cfg) == pytest.approx(10 * src.dt)
    batch = loader.train_batch(src, [0, 1], batch_size=2, seed=0, step=3, window=4, stride=10)
    assert batch["frames"].shape[1] == 4 and int(batch["start"].max()) + 31 <= 60
    pred = batch["frames"][..., :2]
    bounds = Boundaries.from_mapping(batch)
    right = float(physics.pde_loss(pred, bounds, batch["nu"], 10 * src.dt)[0])
    wrong = float(physics.pde_loss(pred, bounds, batch["nu"], src.dt)[0])
    assert right < 1e-3 < wrong, (right, wrong)  # the exact solution fits only the strided dt


@pytest.mark.cli  # a whole training, or a big compilation: out of the fast loop
@pytest.mark.parametrize("trainable,moves", [("adapters+decoder", ("decoder_2d",)),
                                             ("adapters+encoder+decoder", ("encoder_2d", "decoder_2d"))])
def test_trainable_variants_keep_the_rest_bit_identical(tiny_converted, tmp_path, trainable, moves):
    cfg = demo.get_config("smoke")
    cfg.model.pretrained_path = str(tiny_converted)
    cfg.model.trainable = trainable
    tr = train.Trainer(cfg)
    state = tr.initial_state()
    before = jax.device_get(param_tree.merge(state.trainable, tr.frozen))
    for s in range(2):
        state, _ = tr.train_step(state, tr.frozen, tr.shard_batch(tr.train_batch(s)))
    after = jax.device_get(param_tree.merge(state.trainable, tr.frozen))
    moved = set()
    for path, a in param_tree.flatten(before).items():
        b = param_tree.flatten(after)[path]
        if not np.array_equal(np.asarray(a), np.asarray(b)):
            moved.add(path[0] if not param_tree.is_adapter(path) else "adapters")
    assert moved == set(moves) | {"adapters"}, moved
    for path, leaf in param_tree.flatten(state.trainable).items():
        assert leaf.dtype == jnp.float32, path  # trained leaves keep float32 master weights


# ----------------------------------------------------------------------------- the evaluate command


def test_evaluate_command_on_a_tiny_file(tiny_converted, tmp_path):
    path = writer.write_dataset(tmp_path / "d.h5", num_samples=10, num_frames=12, resolution=128,
                             progress=False)["path"]
    out = tmp_path / "eval"
    rc, stdout, err = run_cli(["-m", "burgers_jax.evaluate", "--checkpoint", str(tiny_converted), "--data",
                               str(path), "--temporal-length", "2", "--rollout", "3", "--precision", "float32",
                               "--out", str(out)])
    assert rc == 0, err[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    _, val_idx = data.split_indices(10)
    assert sorted(i for i, _ in m["windows"]) == sorted(val_idx.tolist()), "every validation sample, once"
    for method in ("model", "persistence", "truth"):
        for key in ("nrmse", "vrmse", "rmse", "brmse", "pde_loss", "constraint_error", "frmse_low",
                    "residual_rms_u_t", "residual_rms_advection", "residual_rms_diffusion"):
            assert key in m["one_step"][method], (method, key)
    assert m["rollout"]["horizons"] == [1, 2, 3] and len(m["rollout"]["model"]["vrmse"]) == 3
    # Persistence and the floor, recomputed here from the file with numpy alone.
    src = data.HDF5Source(path, min_frames=2)
    errs, nrm = [], []
    for i, s in m["windows"]:
        f = src.read_window(i, s, 3)["data"].astype(np.float64)
        e = f[1:3] - f[0:2]
        errs.append(np.sqrt(np.mean(e ** 2)))
        nrm.append(np.sqrt(np.mean(e ** 2)) / np.sqrt(np.mean(f[1:3] ** 2)))
    assert m["one_step"]["persistence"]["rmse"] == pytest.approx(np.mean(errs), rel=1e-5)
    assert m["one_step"]["persistence"]["nrmse"] == pytest.approx(np.mean(nrm), rel=1e-5)
    assert m["one_step"]["truth"]["rmse"] == 0.0  # float32 data rounded to a float32 output
    assert m["one_step"]["truth"]["pde_loss"] < 1e-6 < m["one_step"]["model"]["pde_loss"]
    assert (out / "metrics.md").is_file() and (out / "rollout.png").is_file() and (out / "window.png").is_file()


def test_pretrain_lowers_its_loss_and_writes_a_verifiable_best_pt(tmp_path):
    out = tmp_path / "standin"
    rc, stdout, err = run_cli(["scripts/pretrain.py", "--out", str(out), "--arch", "tiny", "--steps", "8",
                               "--eval-every", "4", "--val-per-family", "1", "--lr", "3e-3", "--warmup", "1"])
    assert rc == 0, err[-3000:]
    rows = [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines()]
    vals = [r["val"]["loss"] for r in rows if "val" in r]
    assert len(vals) == 2 and vals[-1] < vals[0], vals
    rc, stdout, err = run_cli(["porting/convert_ckpt.py", str(out / "best.pt"), "--out", str(tmp_path / "flax"),
                               "--verify"])
    assert rc == 0 and "verify ok" in stdout, stdout + err


# ----------------------------------------------------------------------------- rollout


@pytest.mark.cli  # a whole training, or a big compilation: out of the fast loop
def test_forward_and_rollout_equals_one_forward_per_window(precision="float32"):
    """The evaluation's rollout (each frame encoded once, the window's tokens sliding, the
    last frame decoded) against the plain autoregressive loop, one whole `forward_frames`
    per window; and its one-step output against `forward_frames` on the first window."""
    from burgers_jax.model.config import Policy, tiny_config
    from burgers_jax.model.lora import cast_params
    from burgers_jax.model.network import PDECausalModel, forward_and_rollout, forward_frames, init_params

    config = tiny_config().with_lora(r=2, alpha=4.0)
    policy = Policy.named(precision)
    params = cast_params(init_params(config, jax.random.key(0)), policy)
    params = jax.tree_util.tree_map_with_path(lambda p, v: v + 0.05 if p[-1].key == "lora_B" else v, params)
    model = PDECausalModel(config, policy=policy)
    t, steps_ = 3, 4
    frames = jax.random.normal(jax.random.key(1), (2, t, 128, 128, 2)) * 0.3 + 1.0

    one_step, rolled = jax.jit(lambda p, x: forward_and_rollout(model, p, x, steps_))(params, frames)
    forward = jax.jit(lambda p, x: forward_frames(model, p, x))
    window, expected = frames, []
    for _ in range(steps_):
        nxt = forward(params, window)[:, -1:]
        expected.append(nxt[:, 0])
        window = jnp.concatenate([window[:, 1:], nxt], axis=1)
    expected = jnp.stack(expected, axis=1)
    tol = 1e-5

    def rel(a, b):
        return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))

    assert one_step.shape == frames.shape and rolled.shape == (2, steps_, 128, 128, 2)
    assert rel(one_step, forward(params, frames)) <= tol
    assert rel(rolled, expected) <= tol, f"rollout differs from the per-window forward: {rel(rolled, expected):.2e}"
    assert rel(rolled[:, 1:], rolled[:, :1]) > 1e-3  # the rollout moves: a frozen window would fail above
