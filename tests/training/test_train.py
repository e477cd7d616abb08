"""LoRA fine-tuning: adapters-only updates, FLOP savings, data parallelism, exact
resume after SIGKILL, config errors, and the CLI. Tiny model, 2-frame windows."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import smoke_config

from burgers_jax.io import checkpoint as ckpt_io
from burgers_jax.model import lora as lora_lib
from burgers_jax.model import network as model_lib
from burgers_jax.model import param_tree
from burgers_jax.model.config import Policy, tiny_config
from burgers_jax.physics import residual as physics
from burgers_jax.training import steps
from burgers_jax.training import trainer as train
from burgers_jax.training.setup import TrainConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A converted base checkpoint of the tiny architecture (random weights)."""
    d = tmp_path_factory.mktemp("pre") / "pretrained"
    params = model_lib.init_params(tiny_config(), jax.random.PRNGKey(0))
    ckpt_io.save_converted(d, params, tiny_config())
    return d


def make_full_finetune_step(model, tx_full, cfg):
    """A full fine-tuning step of the same model (every weight differentiated and
    updated): what the LoRA step avoids, by compiled FLOP count."""
    T = cfg.dataset.temporal_length

    def step(params, opt_state, batch, rng):
        def loss_fn(p):
            pred = steps.forward(model, p, batch, temporal_length=T, train=True, rng=rng)
            return physics.pde_loss(pred, steps.batch_boundaries(batch, T + 1), batch["nu"], cfg.physics.dt)[0]

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx_full.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def test_every_param_classified_and_unknown_path_rejected(pretrained):
    params, cfg = ckpt_io.load_converted(pretrained)
    params = lora_lib.add_lora(params, cfg.with_lora(r=4, alpha=8.0), jax.random.PRNGKey(1))
    labels = jax.tree.leaves(param_tree.labels(params))
    assert set(labels) == {param_tree.TRAINABLE, param_tree.FROZEN}
    n_layers = cfg.transformer.num_hidden_layers
    assert labels.count(param_tree.TRAINABLE) == n_layers * 7 * 2  # A and B on 7 projections
    with pytest.raises(param_tree.ParamTreeError, match="extra/bias"):
        param_tree.labels({"extra": {"bias": jnp.zeros(3)}})
    adapters, frozen = param_tree.split(params)
    assert param_tree.count(adapters) + param_tree.count(frozen) == param_tree.count(params)


def test_trainable_count_equals_peft_full_size():
    """The 12/4-head full-size config: our adapter count equals PEFT's on the HF
    LlamaModel (built on the meta device: shapes only), and the documented 2,662,400."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaModel

    from burgers_jax.model.config import ModelConfig

    cfg = ModelConfig().with_lora(r=16, alpha=32.0, dropout=0.05)
    tc = cfg.transformer
    with torch.device("meta"):
        hf = LlamaModel(LlamaConfig(hidden_size=tc.hidden_size, num_hidden_layers=tc.num_hidden_layers,
                                    num_attention_heads=tc.num_attention_heads,
                                    num_key_value_heads=tc.num_key_value_heads,
                                    intermediate_size=tc.intermediate_size, vocab_size=16))
        peft_model = get_peft_model(hf, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                                   target_modules=list(cfg.lora.target_modules)))
    peft_count = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    shapes = jax.eval_shape(lambda: model_lib.init_params(cfg, jax.random.PRNGKey(0)))
    adapters, _ = param_tree.split(shapes)
    assert param_tree.count(adapters) == peft_count == 2_662_400


def _one_step_trainer(pretrained, tmp_path, **training):
    cfg = smoke_config(pretrained, tmp_path / "run", **training)
    return cfg, train.Trainer(cfg)


@pytest.fixture(scope="module")
def one_step(pretrained, tmp_path_factory):
    """One Trainer of the smoke config for the tests below that only call its steps (each
    starts from its own `initial_state()`): its train step compiles once, not per test."""
    return _one_step_trainer(pretrained, tmp_path_factory.mktemp("one_step"))


def test_frozen_leaves_bit_identical_and_optimizer_state_only_for_adapters(pretrained, one_step):
    cfg, tr = one_step
    base, _ = ckpt_io.load_converted(pretrained)
    state = tr.initial_state()
    b0 = jax.device_get(state.trainable)
    for s in range(3):
        state, m = tr.train_step(state, tr.frozen, tr.shard_batch(tr.train_batch(s)))
    assert int(state.step) == 3 and int(state.nonfinite_total) == 0
    # frozen: bit-identical to the converted checkpoint (after the float32 cast)
    for (p, a), (_, b) in zip(jax.tree_util.tree_leaves_with_path(tr.frozen),
                              jax.tree_util.tree_leaves_with_path(lora_lib.cast_params(base, Policy.named("float32")))):
        assert np.array_equal(np.asarray(a), np.asarray(b)), param_tree.path_str(p)
    # adapters did move (lora_B leaves start at zero and must not stay there)
    moved = [not np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(state.trainable), jax.tree.leaves(b0))]
    assert all(moved)
    # optax.masked keeps moments for adapter leaves only
    opt_elems = sum(np.size(x) for x in jax.tree.leaves(state.opt_state))
    n_adapt = param_tree.count(state.trainable)
    assert 2 * n_adapt <= opt_elems < 2 * n_adapt + 16


def test_lora_step_flops_at_most_three_quarters_of_full_finetuning(one_step):
    cfg, tr = one_step
    state = tr.initial_state()
    batch = tr.shard_batch(tr.train_batch(0))
    lora_cost = tr.train_step.lower(state, tr.frozen, batch).compile().cost_analysis()
    params = param_tree.merge(state.trainable, tr.frozen)
    tx_full = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-4, weight_decay=1e-4))
    full_step = jax.jit(make_full_finetune_step(tr.model, tx_full, tr.cfg))  # tr.cfg: dt resolved
    full_cost = full_step.lower(params, tx_full.init(params), batch, jax.random.PRNGKey(0)).compile().cost_analysis()
    flops = lambda c: float((c[0] if isinstance(c, (list, tuple)) else c)["flops"])
    ratio = flops(lora_cost) / flops(full_cost)
    print(f"FLOPs LoRA step {flops(lora_cost):.3e} / full fine-tuning {flops(full_cost):.3e} = {ratio:.3f}")
    assert 0.2 < ratio <= 0.75


def test_nonfinite_loss_skips_update_and_is_counted(one_step):
    cfg, tr = one_step
    state = tr.initial_state()
    state, _ = tr.train_step(state, tr.frozen, tr.shard_batch(tr.train_batch(0)))
    before = jax.device_get(state)
    bad = tr.train_batch(1)
    bad["nu"] = np.full_like(bad["nu"], np.nan)
    state, m = tr.train_step(state, tr.frozen, tr.shard_batch(bad))
    assert bool(m["skipped"]) and int(state.nonfinite_in_a_row) == 1 and int(state.nonfinite_total) == 1
    for a, b in zip(jax.tree.leaves(before.trainable), jax.tree.leaves(state.trainable)):
        assert np.array_equal(a, np.asarray(b))
    state, m = tr.train_step(state, tr.frozen, tr.shard_batch(tr.train_batch(2)))
    assert not bool(m["skipped"]) and int(state.nonfinite_in_a_row) == 0


def test_two_devices_give_the_same_update_as_one(pretrained, one_step, tmp_path):
    assert jax.device_count() >= 2, "conftest forces 2 host devices"
    results = []
    for n in (1, 2):
        # the shared trainer takes every device: the 2 that conftest forces
        cfg, tr = one_step if n == 2 else _one_step_trainer(pretrained, tmp_path / f"d{n}", num_devices=n)
        state = tr.initial_state()
        # step 0 runs at lr 0 (warmup from 0); step 1 is the first real update
        state, _ = tr.train_step(state, tr.frozen, tr.shard_batch(tr.train_batch(0)))
        before = jax.device_get(state.trainable)
        state, m = tr.train_step(state, tr.frozen, tr.shard_batch(tr.train_batch(1)))
        update = jax.tree.map(lambda a, b: np.asarray(a) - b, jax.device_get(state.trainable), before)
        results.append((update, jax.device_get(m), int(tr.mesh.devices.size)))
    (u1, m1, n1), (u2, m2, n2) = results
    assert (n1, n2) == (1, 2)
    # Same global batch; only the order of the cross-device reductions differs, which
    # float32 round-off turns into ~1e-6 relative differences in loss and gradients.
    assert float(m1["loss"]) == pytest.approx(float(m2["loss"]), rel=1e-5)
    assert float(m1["grad_norm"]) == pytest.approx(float(m2["grad_norm"]), rel=1e-4)
    scale = max(np.abs(x).max() for x in jax.tree.leaves(u1))
    assert scale > 0
    for x, y in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)):
        # Adam divides by sqrt(v): tiny gradient entries can differ in relative terms,
        # so bound the difference against the size of the update itself.
        np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-3 * scale)


def test_bad_configs_fail_before_any_work(pretrained, tmp_path):
    cases = [
        (dict(model__pretrained_path=str(tmp_path / "nope")), "model.pretrained_path"),
        (dict(dataset__source="hdf5", dataset__path=str(tmp_path / "missing.h5")), "dataset.path"),
        (dict(dataloader__batch_size=3), "dataloader.batch_size=3"),
        (dict(training__max_steps=5, training__warmup_steps=5), "training.max_steps=5"),
        (dict(model__precision="fp16"), "model.precision"),
    ]
    for overrides, expected in cases:
        cfg = smoke_config(pretrained, tmp_path / "bad")
        for key, value in overrides.items():
            section, name = key.split("__")
            cfg[section][name] = value
        with pytest.raises(TrainConfigError, match=expected.replace(".", r"\.")):
            train.train_and_evaluate(cfg, cfg.logging.save_dir)
        assert not (tmp_path / "bad").exists()


def _cli(pretrained, save_dir, *extra):
    flags = [f"--config.model.pretrained_path={pretrained}", "--config.model.lora.dropout=0.05",
             "--config.training.max_steps=12", "--config.training.warmup_steps=2",
             "--config.training.eval_every_steps=3", "--config.logging.plots=True",
             f"--config.logging.save_dir={save_dir}"]
    return [sys.executable, "-m", "burgers_jax.train", "--config", "configs/demo.py:smoke", *flags, *extra]


def _curve(save_dir):
    rows = [json.loads(l) for l in (Path(save_dir) / "metrics.jsonl").read_text().splitlines()]
    train_rows = {r["step"]: r["train/pde_loss"] for r in rows if "train/pde_loss" in r}
    val_rows = {r["step"]: r["val/pde_loss"] for r in rows if "val/pde_loss" in r}
    return train_rows, val_rows


def test_resume_after_sigkill_reproduces_the_uninterrupted_curve(pretrained, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    subprocess.run(_cli(pretrained, full_dir), cwd=REPO, env=env, check=True, capture_output=True)

    proc = subprocess.Popen(_cli(pretrained, cut_dir), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = cut_dir / "metrics.jsonl"
    deadline = time.time() + 300
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists():
            steps_seen = [json.loads(l)["step"] for l in metrics.read_text().splitlines() if l.strip()]
            if steps_seen and max(steps_seen) >= 7:  # past the step-6 checkpoint, before 12
                proc.send_signal(signal.SIGKILL)
                killed_at = max(steps_seen)
                break
        time.sleep(0.05)
    proc.wait()
    assert killed_at is not None and proc.returncode == -signal.SIGKILL, "run was not killed mid-way"
    assert killed_at < 12

    out = subprocess.run(_cli(pretrained, cut_dir, "--config.training.resume=True"), cwd=REPO, env=env,
                         check=True, capture_output=True, text=True)
    assert "resumed from" in out.stdout
    full_train, full_val = _curve(full_dir)
    cut_train, cut_val = _curve(cut_dir)
    assert sorted(full_train) == sorted(cut_train) == list(range(1, 13))
    # Same batches, same dropout keys, same compiled program: bit-identical curves.
    assert cut_train == full_train
    assert cut_val == full_val
    assert (cut_dir / "best_adapters").exists()
