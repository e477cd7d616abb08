"""LoRA adapters: PEFT initialization, insertion, merging, casting and the PEFT key mapping.

The model-level parity with the peft-wrapped reference lives in test_model_parity.py.
Run: .venv/bin/python -m pytest tests/model/test_lora.py -q
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from burgers_jax.model.config import ModelConfig, Policy  # noqa: E402
from burgers_jax.model.lora import add_lora, cast_params, merge_lora  # noqa: E402
from porting import torch_reference as R  # noqa: E402
from porting.mapping import MappingError, lora_flax_to_torch, lora_torch_to_flax, torch_to_flax  # noqa: E402

R_RANK, ALPHA = 16, 32.0


@pytest.fixture(scope="module")
def base():
    d = R.small_model_config_dict()
    torch.manual_seed(0)
    m = R.build_model(d)
    config = ModelConfig.from_dict(d["model"])
    return d, m, config, torch_to_flax(m.state_dict(), config)


def _modules(tree):
    for layer, groups in tree["transformer"].items():
        if not layer.startswith("layers_"):
            continue
        for group, mods in groups.items():
            if group in ("self_attn", "mlp"):
                for name, leaves in mods.items():
                    yield f"{layer}/{group}/{name}", leaves


def test_peft_init_statistics(base):
    """A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform a=sqrt(5) on [r, in]), B = 0, float32;
    the bound is checked against what peft itself draws."""
    d, m, config, params = base
    cfg = config.with_lora(r=R_RANK, alpha=ALPHA)
    tree = add_lora(params, cfg, jax.random.key(0))
    peft_model = R.wrap_lora(R.build_model(d), r=R_RANK, alpha=ALPHA)
    peft_a = {k: v for k, v in R.lora_state_dict(peft_model).items() if ".lora_A." in k}
    n = 0
    for name, leaves in _modules(tree):
        a, b = np.asarray(leaves["lora_A"]), np.asarray(leaves["lora_B"])
        fan_in = leaves["kernel"].shape[0]
        bound = 1.0 / math.sqrt(fan_in)
        assert a.shape == (fan_in, R_RANK) and a.dtype == np.float32 and b.dtype == np.float32, name
        assert np.all(b == 0), name
        assert np.abs(a).max() <= bound and np.abs(a).max() > 0.95 * bound, name  # >= 1024 draws
        assert abs(a.std() - bound / math.sqrt(3)) < 0.1 * bound / math.sqrt(3), name  # uniform std
        torch_key = "base_model.model." + name.replace("layers_", "layers.").replace("/", ".") + ".lora_A.default.weight"
        pa = peft_a[torch_key].numpy()
        assert np.abs(pa).max() <= bound and np.abs(pa).max() > 0.95 * bound, f"peft itself: {torch_key}"
        n += 1
    assert n == 7 * config.transformer.num_hidden_layers


def test_add_lora_refuses_trees_with_adapters_and_r0_is_noop(base):
    _, _, config, params = base
    assert add_lora(params, config, jax.random.key(0)).keys() == params.keys()  # r = 0
    cfg = config.with_lora(r=2, alpha=4.0, target_modules=("q_proj", "down_proj"))
    tree = add_lora(params, cfg, jax.random.key(0))
    names = {n for n, leaves in _modules(tree) if "lora_A" in leaves}
    assert names == {f"layers_{i}/{g}" for i in range(2) for g in ("self_attn/q_proj", "mlp/down_proj")}
    with pytest.raises(ValueError, match="already has adapters"):
        add_lora(tree, cfg, jax.random.key(1))


def test_merge_lora_math(base):
    _, _, config, params = base
    cfg = config.with_lora(r=4, alpha=8.0)
    tree = add_lora(cast_params(params, Policy.named("reference")), cfg, jax.random.key(0))
    tree = jax.tree_util.tree_map_with_path(
        lambda p, v: v + 0.01 * (1 + jnp.arange(v.size).reshape(v.shape) % 7) if p[-1].key == "lora_B" else v, tree)
    merged = merge_lora(tree, cfg)
    for name, leaves in _modules(tree):
        layer, group, mod = name.split("/")
        got = merged["transformer"][layer][group][mod]
        assert set(got) == {"kernel"} and got["kernel"].dtype == jnp.bfloat16, name
        want = (np.asarray(leaves["kernel"], np.float64)
                + np.asarray(leaves["lora_A"], np.float64) @ np.asarray(leaves["lora_B"], np.float64) * 2.0)
        np.testing.assert_allclose(np.asarray(got["kernel"], np.float64), want, rtol=8e-3, atol=1e-6,
                                   err_msg=f"{name} (bf16 kernel: one rounding, rtol 2^-7)")


def test_cast_params_policies(base):
    _, _, config, params = base
    tree = add_lora(params, config.with_lora(r=2, alpha=4.0), jax.random.key(0))
    for precision, frozen in (("float32", jnp.float32), ("reference", jnp.bfloat16), ("fp32_output", jnp.bfloat16)):
        cast = cast_params(tree, Policy.named(precision))
        for path, leaf in jax.tree_util.tree_leaves_with_path(cast):
            want = jnp.float32 if path[-1].key in ("lora_A", "lora_B") else frozen
            assert leaf.dtype == want, (precision, path)
    with pytest.raises(ValueError, match="precision"):
        cast_params(tree, Policy.named("fp16"))


def test_lora_mapping_round_trip_and_best_lora_pt(base, tmp_path):
    d, _, config, _ = base
    m = R.wrap_lora(R.build_model(d), r=4, alpha=8.0, dropout=0.05, target_modules=("q_proj", "v_proj", "up_proj"))
    with torch.no_grad():
        for name, p in m.named_parameters():
            if ".lora_B." in name:
                p.normal_()
    path = tmp_path / "best_lora.pt"
    R.write_best_lora_pt(path, m, d, global_step=3)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert set(ckpt) == {"global_step", "lora_state_dict", "optimizer_state_dict", "scheduler_state_dict",
                         "metrics", "config"}
    sd = ckpt["lora_state_dict"]
    assert "base_model.model.layers.1.self_attn.q_proj.lora_A.default.weight" in sd
    lc = ckpt["config"]["model"]["lora"]
    cfg = config.with_lora(r=lc["r"], alpha=lc["alpha"], dropout=lc["dropout"], target_modules=tuple(lc["target_modules"]))
    adapters = lora_torch_to_flax(sd, cfg)
    q = adapters["transformer"]["layers_1"]["self_attn"]["q_proj"]
    np.testing.assert_array_equal(q["lora_A"], sd["base_model.model.layers.1.self_attn.q_proj.lora_A.default.weight"].numpy().T)
    np.testing.assert_array_equal(q["lora_B"], sd["base_model.model.layers.1.self_attn.q_proj.lora_B.default.weight"].numpy().T)
    back = lora_flax_to_torch(adapters, cfg)
    assert set(back) == set(sd)
    for k, v in sd.items():
        assert np.array_equal(back[k], v.numpy()) and back[k].dtype == np.float32, k


def test_lora_mapping_is_strict(base):
    d, _, config, _ = base
    m = R.wrap_lora(R.build_model(d), r=4, alpha=8.0)
    sd = R.lora_state_dict(m)
    cfg = config.with_lora(r=4, alpha=8.0)
    broken = dict(sd)
    key = "base_model.model.layers.0.mlp.down_proj.lora_B.default.weight"
    del broken[key]
    with pytest.raises(MappingError, match=r"missing \(1\): " + key.replace(".", r"\.")):
        lora_torch_to_flax(broken, cfg)
    with pytest.raises(MappingError, match=r"unexpected .*up_proj"):
        lora_torch_to_flax(sd, cfg.with_lora(target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                             "down_proj")))
    with pytest.raises(MappingError, match=r"mismatched .*lora_A.*gives \(64, 4\), model wants \(64, 8\)"):
        lora_torch_to_flax(sd, config.with_lora(r=8, alpha=8.0))


def test_lora_dropout_rate_scale_and_key():
    """`layers.dropout` (XLA's ThreeFry bit generator): drops with probability `rate`,
    scales the kept entries by 1/(1 - rate) as torch's nn.Dropout, is a pure function of
    its key, and two keys give two masks."""
    from burgers_jax.model.layers import dropout

    x = jnp.ones((1000, 1000), jnp.float32)
    key = jax.random.PRNGKey(3)
    out = np.asarray(dropout(x, 0.05, key))
    dropped = np.mean(out == 0)
    # Binomial(1e6, 0.05): standard deviation 2.2e-4, so 5 sigma is 1.1e-3.
    assert abs(dropped - 0.05) < 1.1e-3, dropped
    assert np.allclose(out[out != 0], 1 / 0.95, rtol=1e-6)
    assert np.array_equal(out, np.asarray(dropout(x, 0.05, key)))
    other = np.asarray(dropout(x, 0.05, jax.random.fold_in(key, 1)))
    assert not np.array_equal(out == 0, other == 0)
    # Neighbouring rows are not copies of one another (a generator fed the wrong state repeats).
    assert not np.array_equal(out[0] == 0, out[1] == 0)
    assert np.mean(np.asarray(dropout(x, 0.5, key)) == 0) == pytest.approx(0.5, abs=2.5e-3)  # 5 sigma
