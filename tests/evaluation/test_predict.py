"""`burgers_jax.predict`: the CLI writes float32 outputs of the right shape equal to
the model's own forward pass (mini-batching, padding of the last batch, adapters
merged in), and fails clearly on a wrong shape, a missing checkpoint and adapters that
do not fit. Tiny architecture, float32, short T.

Shape legend: B batch, T frames, H/W grid (128), C channels (6).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from burgers_jax import predict as predict_cmd
from burgers_jax.io import checkpoint as ck
from burgers_jax.model import param_tree
from burgers_jax.model.config import Policy, tiny_config
from burgers_jax.model.network import PDECausalModel, init_params
from porting.verify import rel_l2

REPO = Path(__file__).resolve().parents[2]
T_FRAMES = 1  # the model is T-generic; one frame keeps the CPU forward passes cheap


def random_params(cfg, seed=0):
    """Random weights in the model's tree, built from `jax.eval_shape` (no compiled init:
    compiling the 128x128 init costs tens of seconds on CPU). Kernels ~ 1/sqrt(fan_in),
    norm scales around 1, non-zero biases and lora_B (PEFT starts B at zero, which
    would make the adapters invisible)."""
    shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    rng = np.random.default_rng(seed)
    flat = {}
    for path, s in param_tree.flatten(shapes).items():
        z = rng.standard_normal(s.shape)
        if path[-1] in ("kernel", "lora_A", "lora_B"):
            z = z / np.sqrt(np.prod(s.shape[:-1]))
        elif path[-1] in ("scale", "weight"):
            z = 1.0 + 0.1 * z
        else:
            z = 0.1 * z
        flat[path] = z.astype(np.float32)
    return param_tree.unflatten(flat)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A converted-checkpoint dir of a tiny model, adapters for it, and an input file."""
    root = tmp_path_factory.mktemp("predict")
    cfg = tiny_config()
    lcfg = cfg.with_lora(r=4, alpha=8.0)
    with_lora = random_params(lcfg)
    params = param_tree.strip_adapters(with_lora)
    ck.save_converted(root / "model", params, cfg, {"source": "test"})
    ck.save_adapters(root / "adapters", param_tree.extract_adapters(with_lora), lcfg.lora)
    x = np.random.default_rng(0).standard_normal((3, T_FRAMES, 128, 128, 6)).astype(np.float32)
    np.save(root / "in.npy", x)
    return root, cfg, params, lcfg, with_lora, x


def _reference(params, cfg, x):
    """The model's own forward pass: one eager `apply` on the whole batch (no jit, no
    mini-batching, no padding, no file I/O): what predict must reproduce."""
    with jax.default_matmul_precision("highest"):
        return np.asarray(PDECausalModel(cfg, policy=Policy.named("float32")).apply({"params": params}, jnp.asarray(x)))


@pytest.fixture(scope="module")
def refs(converted):
    _, cfg, params, lcfg, with_lora, x = converted
    return _reference(params, cfg, x), _reference(with_lora, lcfg, x)  # 2nd reuses the eager op cache


# Tolerance of predict (one jitted XLA program, batches of 2 with the last one padded)
# against the eager op-by-op reference: float32 rounding only, amplified by the random
# tiny model to ~2e-5 (measured). Plumbing bugs are far above it: adapters not merged
# give ~1, the bf16 path ~1e-2, a shifted batch slice ~1.
PLUMBING_TOL = 1e-4


def test_cli_writes_model_output(converted, refs):
    root, cfg, params, lcfg, with_lora, x = converted
    base_ref, lora_ref = refs
    out = root / "out.npy"
    # One real subprocess: the `python -m` entry point with adapters, batch 2 over B=3
    # (so the last mini-batch is padded).
    proc = subprocess.run([sys.executable, "-m", "burgers_jax.predict", "--checkpoint", str(root / "model"),
                           "--input", str(root / "in.npy"), "--output", str(out), "--batch-size", "2",
                           "--lora", str(root / "adapters")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    y = np.load(out)
    assert y.shape == x.shape and y.dtype == np.float32
    assert rel_l2(y, lora_ref) <= PLUMBING_TOL
    assert rel_l2(base_ref, lora_ref) > 1e-2, "the adapters must change the output (non-zero lora_B)"
    assert np.abs(base_ref - x).max() > 1e-3  # a random model does not return its input


def test_wrong_shape(converted, tmp_path, capsys):
    root = converted[0]
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((1, 2, 64, 64, 6), np.float32))
    assert predict_cmd.main(["--checkpoint", str(root / "model"), "--input", str(bad), "--output",
                    str(tmp_path / "o.npy")]) == 2
    err = capsys.readouterr().err
    assert "(1, 2, 64, 64, 6)" in err and "[B, T, 128, 128, 6]" in err, err
    np.save(bad, np.zeros((1, 17, 128, 128, 6), np.float32))  # tiny config: at most 4096/256 = 16 frames
    assert predict_cmd.main(["--checkpoint", str(root / "model"), "--input", str(bad), "--output",
                    str(tmp_path / "o.npy")]) == 2
    assert "T=17" in capsys.readouterr().err
    assert not (tmp_path / "o.npy").exists()


def test_missing_checkpoint(converted, tmp_path, capsys):
    root = converted[0]
    assert predict_cmd.main(["--checkpoint", str(tmp_path / "nope"), "--input", str(root / "in.npy"), "--output",
                    str(tmp_path / "o.npy")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "does not exist" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    assert predict_cmd.main(["--checkpoint", str(tmp_path / "empty"), "--input", str(root / "in.npy"), "--output",
                    str(tmp_path / "o.npy")]) == 2
    assert "model_config.json" in capsys.readouterr().err


def test_adapters_not_fitting(converted, tmp_path, capsys):
    root = converted[0]
    other = tiny_config(hidden_size=32).with_lora(r=4, alpha=8.0)  # adapters of a narrower model
    ck.save_adapters(tmp_path / "other", param_tree.extract_adapters(random_params(other)), other.lora)
    assert predict_cmd.main(["--checkpoint", str(root / "model"), "--input", str(root / "in.npy"), "--output",
                    str(tmp_path / "o.npy"), "--lora", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert "do not fit" in err and "transformer/layers_0/self_attn/q_proj" in err, err
