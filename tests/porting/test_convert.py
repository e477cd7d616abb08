"""Converter tests: input variants, config cross-check, strict mapping errors, parity of
the converted Flax model against the PyTorch reference (the independent side), LoRA
checkpoints, and the CLI end to end.

Tiny architectures at the real 128x128 resolution; float32 everywhere (bf16 math is
slow on CPU). Shape legend: B batch, T frames, H/W grid, C channels, D hidden.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from burgers_jax.model.config import ConfigError, ModelConfig, Policy, tiny_config  # noqa: E402
from burgers_jax.model.param_tree import flatten, unflatten  # noqa: E402
from porting import convert_ckpt as cc  # noqa: E402
from porting.architecture import cross_check  # noqa: E402
from porting.verify import rel_l2  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
T_FRAMES = 2  # short T keeps the tests fast; the model is T-generic


# ----------------------------------------------------------------------------- docs/model_and_formats.md, "The model" state dicts


def _resblock(prefix: str, c: int) -> dict[str, tuple]:
    return {f"{prefix}.conv.0.weight": (c,), f"{prefix}.conv.0.bias": (c,),
            f"{prefix}.conv.2.weight": (c, c, 3, 3), f"{prefix}.conv.2.bias": (c,),
            f"{prefix}.conv.3.weight": (c,), f"{prefix}.conv.3.bias": (c,),
            f"{prefix}.conv.5.weight": (c, c, 3, 3), f"{prefix}.conv.5.bias": (c,)}


def spec_shapes(cfg: ModelConfig) -> dict[str, tuple]:
    """Keys and shapes of `model_state_dict`, written from docs/model_and_formats.md, "The model" (not from the code
    under test), so the loading and cross-check tests do not depend on the mapping."""
    c1, c2, c3 = cfg.encoder.channels
    mid, tr = 2 * c3, cfg.transformer
    d, hd = tr.hidden_size, tr.head_dim
    res = cfg.encoder.use_resblock
    s: dict[str, tuple] = {}

    def conv(name, cin, cout, k):
        s[f"{name}.weight"], s[f"{name}.bias"] = (cout, cin, k, k), (cout,)

    def convt(name, cin, cout):
        s[f"{name}.weight"], s[f"{name}.bias"] = (cin, cout, 4, 4), (cout,)

    for branch in ("vector_conv", "scalar_conv"):
        p = f"encoder_2d.{branch}"
        idx = (0, 3, 6) if res else (0, 2, 4)
        for i, (cin, cout) in zip(idx, ((3, c1), (c1, c2), (c2, c3))):
            conv(f"{p}.{i}", cin, cout, 3)
            if res:
                s.update(_resblock(f"{p}.{i + 2}", cout))
    conv("encoder_2d.fusion.0", mid, mid, 1)
    if res:
        s.update(_resblock("encoder_2d.fusion.2", mid))
    s["encoder_2d.proj.weight"], s["encoder_2d.proj.bias"] = (d, mid), (d,)
    for i in range(tr.num_hidden_layers):
        p = f"transformer.layers.{i}"
        s[f"{p}.self_attn.q_proj.weight"] = (tr.num_attention_heads * hd, d)
        s[f"{p}.self_attn.k_proj.weight"] = (tr.num_key_value_heads * hd, d)
        s[f"{p}.self_attn.v_proj.weight"] = (tr.num_key_value_heads * hd, d)
        s[f"{p}.self_attn.o_proj.weight"] = (d, tr.num_attention_heads * hd)
        s[f"{p}.mlp.gate_proj.weight"] = (tr.intermediate_size, d)
        s[f"{p}.mlp.up_proj.weight"] = (tr.intermediate_size, d)
        s[f"{p}.mlp.down_proj.weight"] = (d, tr.intermediate_size)
        s[f"{p}.input_layernorm.weight"] = (d,)
        s[f"{p}.post_attention_layernorm.weight"] = (d,)
    s["transformer.norm.weight"] = (d,)
    s["decoder_2d.proj.weight"], s["decoder_2d.proj.bias"] = (mid, d), (mid,)
    conv("decoder_2d.split.0", mid, mid, 1)
    if res:
        s.update(_resblock("decoder_2d.split.2", mid))
    for branch in ("vector_conv", "scalar_conv"):
        p = f"decoder_2d.{branch}"
        if res:
            s.update(_resblock(f"{p}.0", c3))
            convt(f"{p}.1", c3, c2)
            s.update(_resblock(f"{p}.3", c2))
            convt(f"{p}.4", c2, c1)
            s.update(_resblock(f"{p}.6", c1))
            convt(f"{p}.7", c1, 3)
        else:
            convt(f"{p}.0", c3, c2)
            convt(f"{p}.2", c2, c1)
            convt(f"{p}.4", c1, 3)
    return s


def spec_state_dict(cfg: ModelConfig, seed: int = 0, dtype=None) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: (0.05 * torch.randn(shape, generator=g)).to(dtype or torch.float32)
            for k, shape in spec_shapes(cfg).items()}


def model_dict(cfg: ModelConfig) -> dict:
    d = cfg.to_dict()
    d.pop("lora")
    return d


def training_checkpoint(sd: dict, cfg: ModelConfig | None, model_section: dict | None = None) -> dict:
    """A dict in the `best.pt` layout of docs/model_and_formats.md, "Files"."""
    ckpt = {"global_step": 123, "model_state_dict": sd,
            "optimizer_state_dict": {"state": {}, "param_groups": []}, "scheduler_state_dict": {},
            "val_rmse": 0.25, "val_nrmse": 0.5, "best_val_nrmse": 0.5}
    if cfg is not None or model_section is not None:
        ckpt["config"] = {"model": model_section if model_section is not None else model_dict(cfg),
                          "training": {"lr": 1e-4}}
    return ckpt


@pytest.fixture
def cfg() -> ModelConfig:
    return tiny_config()


def _save(tmp_path: Path, name: str, obj) -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


# ----------------------------------------------------------------------------- loading variants


def test_input_variants_give_the_same_state_dict(tmp_path, cfg):
    sd = spec_state_dict(cfg)
    variants = {
        "full": training_checkpoint(sd, cfg),
        "bare": dict(sd),
        "ddp": training_checkpoint({f"module.{k}": v for k, v in sd.items()}, cfg),
        "compiled": {f"_orig_mod.{k}": v for k, v in sd.items()},
        "both": training_checkpoint({f"module._orig_mod.{k}": v for k, v in sd.items()}, cfg),
    }
    config_file = tmp_path / "train.yaml"
    import yaml

    config_file.write_text(yaml.safe_dump({"model": model_dict(cfg)}))
    for name, obj in variants.items():
        path = _save(tmp_path, f"{name}.pt", obj)
        needs_file = "config" not in obj
        got, got_cfg, _, info, _ = cc.prepare_model(path, str(config_file) if needs_file else None)
        assert got_cfg == cfg.with_lora(r=0), name
        assert sorted(got) == sorted(sd), name
        for k in sd:
            assert torch.equal(got[k], sd[k]), (name, k)
        if not needs_file and name == "full":
            assert info["global_step"] == 123 and info["val_nrmse"] == 0.5


def _convert_error(tmp_path, obj, *extra, capsys) -> str:
    path = _save(tmp_path, "ckpt.pt", obj) if not isinstance(obj, Path) else obj
    rc = cc.main([str(path), "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) >= 1 and str(path) in err, err
    assert not (tmp_path / "out").exists(), "nothing may be written on error"
    return err


def test_not_a_checkpoint(tmp_path, capsys):
    text = tmp_path / "notes.pt"
    text.write_text("this is not a torch file\n")
    assert "not a PyTorch checkpoint" in _convert_error(tmp_path, text, capsys=capsys)
    npy = tmp_path / "array.pt"
    np.save(npy, np.zeros(3))
    (tmp_path / "array.pt.npy").rename(npy)
    assert "not a PyTorch checkpoint" in _convert_error(tmp_path, npy, capsys=capsys)
    err = _convert_error(tmp_path, [torch.zeros(3)], capsys=capsys)
    assert "not a checkpoint" in err and "list" in err
    err = _convert_error(tmp_path, {"weights": [1, 2], "step": 3}, capsys=capsys)
    assert "not a checkpoint" in err and "model_state_dict" in err
    assert "no such file" in _convert_error(tmp_path, tmp_path / "missing.pt", capsys=capsys)


def test_no_config_anywhere(tmp_path, cfg, capsys):
    err = _convert_error(tmp_path, spec_state_dict(cfg), capsys=capsys)
    assert "no config['model']" in err and "--config" in err


def test_wrong_head_count_names_field_and_lists_every_consistent_split(tmp_path, capsys):
    # weights with 8 query / 2 KV heads on hidden 64 (head_dim 8, k_proj 16 rows), config says
    # 4 / 2 (head_dim 16, k_proj would have 32 rows): the scaled-down 16/4 vs 12/4 case.
    weights_cfg = tiny_config(num_attention_heads=8, num_key_value_heads=2)
    wrong = model_dict(weights_cfg)
    wrong["transformer"]["num_attention_heads"] = 4
    err = _convert_error(tmp_path, training_checkpoint(spec_state_dict(weights_cfg), None, wrong),
                         capsys=capsys)
    assert "model.transformer.num_attention_heads=4" in err, err
    # kv/heads = 16 rows / 64 = 1/4, head_dim even (RoPE halves), kv divides heads; by hand:
    assert "consistent with the weights: (4, 1), (8, 2), (16, 4), (32, 8)." in err, err


def test_full_size_head_layouts_are_told_apart():
    # docs/model_and_formats.md, "The model": pretraining 16/4 heads (k_proj 192 rows) vs fine-tuning YAML 12/4 (256 rows).
    cfg_12 = ModelConfig()  # 12 / 4
    cfg_16 = dataclasses.replace(cfg_12, transformer=dataclasses.replace(cfg_12.transformer,
                                                                          num_attention_heads=16))
    shapes_16 = spec_shapes(cfg_16)
    assert shapes_16["transformer.layers.0.self_attn.k_proj.weight"] == (192, 768)
    cross_check(cfg_16, shapes_16, "x")  # consistent: no error
    with pytest.raises(ConfigError) as e:
        cross_check(cfg_12, shapes_16, "best.pt")
    msg = str(e.value)
    assert "model.transformer.num_attention_heads=12" in msg and "192" in msg and "256" in msg, msg
    # Every split with kv/heads = 192/768 = 1/4 and an even head_dim (worked out by hand);
    # none is singled out as "the" answer.
    assert ("(4, 1), (8, 2), (12, 3), (16, 4), (24, 6), (32, 8), (48, 12), (64, 16), (96, 24), "
            "(128, 32), (192, 48), (384, 96).") in msg, msg
    with pytest.raises(ConfigError) as e:
        cross_check(cfg_16, spec_shapes(cfg_12), "best.pt")
    assert ("(3, 1), (6, 2), (12, 4), (24, 8), (48, 16), (96, 32), (192, 64), (384, 128).") in str(e.value)


def test_wrong_split_with_the_same_shapes_converts_and_readme_says_so():
    """8/4 declared on 4/2 weights: identical shapes, so nothing can object (the 22 % case);
    the README must say the split comes from the checkpoint's config."""
    cross_check(tiny_config(num_attention_heads=8, num_key_value_heads=4),
                spec_shapes(tiny_config(num_attention_heads=4, num_key_value_heads=2)), "x")
    readme = (REPO / "README.md").read_text()
    assert "head split" in readme and "cannot be checked from" in readme


@pytest.mark.parametrize("field,change,expect", [
    ("hidden", dict(transformer=dict(hidden_size=32)), "model.transformer.hidden_size=32"),
    ("layers", dict(transformer=dict(num_hidden_layers=3)), "model.transformer.num_hidden_layers=3"),
    ("mlp", dict(transformer=dict(intermediate_size=96)), "model.transformer.intermediate_size=96"),
    ("channels", dict(encoder=dict(channels=[8, 16, 16])), "model.encoder.channels=[8, 16, 16]"),
    ("resblock", dict(encoder=dict(use_resblock=False)), "model.encoder.use_resblock=False"),
])
def test_config_field_mismatch(tmp_path, cfg, capsys, field, change, expect):
    section = model_dict(cfg)
    for part, values in change.items():
        section[part].update(values)
    err = _convert_error(tmp_path, training_checkpoint(spec_state_dict(cfg), None, section), capsys=capsys)
    assert expect in err, err


# ----------------------------------------------------------------------------- against the torch reference


def flax_forward(params, cfg: ModelConfig, x: np.ndarray) -> dict:
    """Converted Flax model, float32 policy with exact float32 matmuls, plus its seams."""
    import jax

    from burgers_jax.model.network import PDECausalModel

    with jax.default_matmul_precision("highest"):
        out, inter = PDECausalModel(cfg, policy=Policy.named("float32")).apply(
            {"params": params}, x, train=False, return_intermediates=True)
    return {**{k: np.asarray(v) for k, v in inter.items()}, "output": np.asarray(out)}


def _round_to_bf16_(model) -> None:
    """Make the torch weights exactly what a bf16 best.pt stores, so the float32 torch run
    and the converted (bf16 -> float32) Flax run use identical weights."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())


def _randomize_lora_b_(model, seed: int = 3) -> None:
    """PEFT starts B at zero, which would make the adapters invisible in a parity test."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


# Float32 parity from an error estimate: the same computation in float64 (PyTorch, the
# independent side) is the exact answer; PyTorch's own float32 distance to it is the
# round-off of one float32 implementation of this model on these weights. JAX's float32
# is a second one: it rounds differently, not by more (measured 0.06-0.7x PyTorch's
# distance on these seams), so it must stay within F32_MARGIN times that estimate. A
# mis-mapped tensor gives errors of order 1. Weights, adapters and input are seeded
# (`build_model(seed=)`, `wrap_lora(seed=)`), so the estimate is the same number in every
# run, whatever ran before in the process.
F32_MARGIN = 4.0


def assert_float32_parity(got, ref32, ref64, what: str) -> None:
    estimate = rel_l2(ref32, ref64)
    err = rel_l2(got, ref64)
    assert 0 < estimate < 1e-4, f"{what}: PyTorch float32 vs float64 {estimate:.2e} (test premise)"
    assert err <= F32_MARGIN * estimate, (f"{what}: JAX float32 is {err:.2e} from the float64 result, more than "
                                          f"{F32_MARGIN}x PyTorch float32's {estimate:.2e}")


def run_float64(tr, model, x: np.ndarray) -> dict:
    import copy

    return {k: v.numpy() for k, v in tr.run_with_intermediates(copy.deepcopy(model).double(),
                                                                torch.from_numpy(x).double()).items()}


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """A randomized tiny torch reference, its best.pt / best_lora.pt, and its outputs in
    float32 and float64."""
    import copy
    import types

    tr = pytest.importorskip("porting.torch_reference")
    root = tmp_path_factory.mktemp("convert")
    cfg_dict = tr.small_model_config_dict()
    model = tr.randomize_(tr.build_model(cfg_dict, seed=0), seed=0)  # random norms/biases: mis-maps show
    _round_to_bf16_(model)
    tr.write_best_pt(root / "best.pt", model, cfg_dict, global_step=5, val_nrmse=0.3)
    x = np.random.default_rng(0).standard_normal((1, T_FRAMES, 128, 128, 6)).astype(np.float32)
    out = {k: v.numpy() for k, v in tr.run_with_intermediates(model, torch.from_numpy(x)).items()}
    lora_model = tr.wrap_lora(copy.deepcopy(model), r=4, alpha=8.0, seed=1)
    _randomize_lora_b_(lora_model)
    tr.write_best_lora_pt(root / "best_lora.pt", lora_model, cfg_dict, global_step=9)
    lora_out = tr.run_with_intermediates(lora_model, torch.from_numpy(x))["output"].numpy()
    return types.SimpleNamespace(tr=tr, root=root, cfg_dict=cfg_dict, model=model, x=x, out=out,
                                 out64=run_float64(tr, model, x), lora_model=lora_model, lora_out=lora_out,
                                 lora_out64=run_float64(tr, lora_model, x)["output"],
                                 cfg=ModelConfig.from_dict(cfg_dict["model"]))


@pytest.fixture(scope="module")
def converted(ref):
    from burgers_jax.io.checkpoint import load_converted

    meta = cc.convert_model(ref.root / "best.pt", ref.root / "best_flax", None)
    params, cfg = load_converted(ref.root / "best_flax")
    return meta, params, cfg


def test_converted_matches_torch(ref, converted):
    meta, params, cfg = converted
    assert cfg == ref.cfg.with_lora(r=0)
    assert {str(np.asarray(v).dtype) for v in jax_leaves(params)} == {"bfloat16"}, "bf16 must stay bf16"
    assert meta["global_step"] == 5 and meta["val_nrmse"] == pytest.approx(0.3)
    n_torch = sum(p.numel() for p in ref.model.parameters())
    assert meta["param_counts"]["total"] == n_torch
    got = flax_forward(params, cfg, ref.x)
    for seam in ("encoder_tokens", "transformer_output", "decoder_output", "output"):
        # Both float32 on identical (bf16-valued) weights: only the rounding differs.
        assert_float32_parity(got[seam], ref.out[seam], ref.out64[seam], seam)


def jax_leaves(tree):
    return list(flatten(tree).values())


def test_input_variants_convert_to_the_same_params(ref, converted, tmp_path):
    from burgers_jax.io.checkpoint import load_converted

    full = torch.load(ref.root / "best.pt", weights_only=True)
    sd = full["model_state_dict"]
    config_file = tmp_path / "train.json"
    import json

    config_file.write_text(json.dumps(ref.cfg_dict))
    want = flatten(converted[1])
    for name, obj in {"bare": dict(sd), "ddp": {**full, "model_state_dict": {f"module.{k}": v for k, v in sd.items()}},
                      "compiled": {f"_orig_mod.{k}": v for k, v in sd.items()}}.items():
        path = _save(tmp_path, f"{name}.pt", obj)
        cc.convert_model(path, tmp_path / name, str(config_file) if "config" not in obj else None)
        got = flatten(load_converted(tmp_path / name)[0])
        assert got.keys() == want.keys(), name
        for k in want:
            assert np.array_equal(np.asarray(got[k]), np.asarray(want[k])), (name, k)


def test_missing_and_extra_tensor(ref, tmp_path, capsys):
    full = torch.load(ref.root / "best.pt", weights_only=True)
    sd = dict(full["model_state_dict"])
    del sd["decoder_2d.proj.bias"]
    err = _convert_error(tmp_path, {**full, "model_state_dict": sd}, capsys=capsys)
    assert "missing (1): decoder_2d.proj.bias" in err, err
    sd = dict(full["model_state_dict"], **{"decoder_2d.extra.weight": torch.zeros(3)})
    err = _convert_error(tmp_path, {**full, "model_state_dict": sd}, capsys=capsys)
    assert "unexpected (1): decoder_2d.extra.weight" in err, err


def _flax_with_adapters(base_dir: Path, adapters_dir: Path):
    from burgers_jax.io.checkpoint import load_model

    return load_model(base_dir, adapters_dir, policy=Policy.named("float32"))


def test_lora_checkpoint_reproduces_peft(ref, converted, tmp_path):
    from burgers_jax.io.checkpoint import load_metadata

    meta = cc.convert_lora(ref.root / "best_lora.pt", tmp_path / "adapters", None, None)
    assert meta["global_step"] == 9 and meta["adapter_params"] == sum(
        v.numel() for v in ref.tr.lora_state_dict(ref.lora_model).values())
    assert load_metadata(tmp_path / "adapters")["source"].endswith("best_lora.pt")
    params, cfg = _flax_with_adapters(ref.root / "best_flax", tmp_path / "adapters")
    assert (cfg.lora.r, cfg.lora.alpha) == (4, 8.0)
    got = flax_forward(params, cfg, ref.x)["output"]
    # float32 both sides, same weights; the adapters move the output by far more than round-off.
    assert_float32_parity(got, ref.lora_out, ref.lora_out64, "output with adapters")
    assert rel_l2(ref.out["output"], ref.lora_out) > 1e-3


def test_lora_without_alpha_fails(ref, tmp_path, capsys):
    ckpt = torch.load(ref.root / "best_lora.pt", weights_only=True)
    ckpt["config"]["model"].pop("lora")
    err = _convert_error(tmp_path, ckpt, capsys=capsys)
    assert "alpha" in err, err


# ----------------------------------------------------------------------------- export back to torch


def _random_adapters(cfg: ModelConfig, seed: int = 7) -> dict:
    """Random float32 adapters (non-zero B) for every target of cfg.lora, written in Flax."""
    from burgers_jax.model.network import param_shapes

    rng = np.random.default_rng(seed)
    r, flat = cfg.lora.r, {}
    for path, shape in param_shapes(cfg).items():
        if path[0] == "transformer" and path[-1] == "kernel" and path[-2] in cfg.lora.target_modules:
            flat[path[:-1] + ("lora_A",)] = (rng.standard_normal((shape[0], r)) / np.sqrt(shape[0])).astype(np.float32)
            flat[path[:-1] + ("lora_B",)] = (0.05 * rng.standard_normal((r, shape[1]))).astype(np.float32)
    return unflatten(flat)


def test_export_lora_and_merged(ref, converted, tmp_path):
    import copy

    from burgers_jax.io.checkpoint import save_adapters
    from porting import export_torch

    lcfg = ref.cfg.with_lora(r=2, alpha=6.0, target_modules=("q_proj", "v_proj", "down_proj"))
    save_adapters(tmp_path / "adapters", _random_adapters(lcfg), lcfg.lora, {"global_step": 11})
    base_dir = ref.root / "best_flax"
    params, cfg = _flax_with_adapters(base_dir, tmp_path / "adapters")
    flax_out = flax_forward(params, cfg, ref.x)["output"]

    assert export_torch.main(["--checkpoint", str(base_dir), "--lora", str(tmp_path / "adapters"),
                              "--out", str(tmp_path / "best_lora.pt")]) == 0
    ckpt = torch.load(tmp_path / "best_lora.pt", weights_only=True)
    assert ckpt["global_step"] == 11 and ckpt["config"]["model"]["lora"]["r"] == 2
    torch_model = ref.tr.wrap_lora(copy.deepcopy(ref.model), r=2, alpha=6.0,
                                   target_modules=("q_proj", "v_proj", "down_proj"), seed=2)
    result = torch_model.transformer.load_state_dict(ckpt["lora_state_dict"], strict=False)
    assert not result.unexpected_keys
    assert not [k for k in result.missing_keys if ".lora_" in k], "every PEFT adapter must be filled"
    torch_out = ref.tr.run_with_intermediates(torch_model, torch.from_numpy(ref.x))["output"].numpy()
    torch_out64 = run_float64(ref.tr, torch_model, ref.x)["output"]
    assert_float32_parity(flax_out, torch_out, torch_out64, "exported adapters")  # identical weights
    assert rel_l2(ref.out["output"], torch_out) > 1e-3  # the adapters were really loaded

    # --merged: bf16 best.pt whose weights are bf16(W + B A alpha/r), computed here in numpy.
    assert export_torch.main(["--checkpoint", str(base_dir), "--lora", str(tmp_path / "adapters"),
                              "--out", str(tmp_path / "merged.pt"), "--merged"]) == 0
    merged = torch.load(tmp_path / "merged.pt", weights_only=True)
    msd = merged["model_state_dict"]
    base_sd = torch.load(ref.root / "best.pt", weights_only=True)["model_state_dict"]
    assert msd.keys() == base_sd.keys() and {v.dtype for v in msd.values()} == {torch.bfloat16}
    a = params["transformer"]["layers_1"]["mlp"]["down_proj"]["lora_A"]
    b = params["transformer"]["layers_1"]["mlp"]["down_proj"]["lora_B"]
    w = base_sd["transformer.layers.1.mlp.down_proj.weight"].double().numpy()
    want = torch.from_numpy(w + (np.asarray(a, np.float64) @ np.asarray(b, np.float64)).T * 3.0).to(torch.bfloat16)
    got = msd["transformer.layers.1.mlp.down_proj.weight"]
    # bf16 rounding of float32 vs float64 sums may differ by one bf16 ulp on rare ties.
    assert (got.float() - want.float()).abs().max() <= 2 ** -7 * want.float().abs().max()
    assert torch.equal(msd["transformer.layers.1.mlp.up_proj.weight"], base_sd["transformer.layers.1.mlp.up_proj.weight"])
    plain = ref.tr.build_model(merged["config"])
    plain.load_state_dict({k: v.float() for k, v in msd.items()}, strict=True)
    merged_out = ref.tr.run_with_intermediates(plain, torch.from_numpy(ref.x))["output"].numpy()
    # bf16 rounding of the merged kernels (rel. 2^-9 per weight) against the float32 adapters.
    assert rel_l2(merged_out, torch_out) <= 2e-2


# ----------------------------------------------------------------------------- the CLI, end to end


def test_verify_flag(ref, tmp_path, capsys, monkeypatch):
    # In-process (the eager ops are already compiled by the parity test above).
    args = [str(ref.root / "best.pt"), "--out", str(tmp_path / "v"), "--verify", "--verify-frames", str(T_FRAMES)]
    assert cc.main(args) == 0
    printed = capsys.readouterr().out
    for seam in ("encoder_tokens", "transformer_output", "decoder_output", "output"):
        assert seam in printed
    assert "verify ok" in printed
    # The exit code follows the errors: a seam above 1e-4 must fail the command.
    monkeypatch.setattr(cc, "verify", lambda *a, **k: {"encoder_tokens": 1e-7, "output": 2e-4})
    assert cc.main(args + ["--overwrite"]) == 2  # errors exit 2 in every command
    assert "verification failed" in capsys.readouterr().err
    # A NaN seam is a failure too (Python's max() would skip it and say "ok").
    monkeypatch.setattr(cc, "verify", lambda *a, **k: {"encoder_tokens": float("nan"), "output": 1e-7})
    assert cc.main(args + ["--overwrite"]) == 2
    assert "verification failed" in capsys.readouterr().err


def test_cli_end_to_end(ref, tmp_path):
    from burgers_jax.io.checkpoint import load_converted, load_metadata

    out = tmp_path / "cli_flax"
    proc = subprocess.run([sys.executable, "porting/convert_ckpt.py", str(ref.root / "best.pt"), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == "", "a conversion that went well prints nothing on stderr (no orbax/absl echoes)"
    for word in ("encoder_2d", "transformer", "decoder_2d", "bfloat16", "peak RSS"):
        assert word in proc.stdout, (word, proc.stdout)
    params, cfg = load_converted(out)
    assert cfg == ref.cfg.with_lora(r=0)
    assert load_metadata(out)["global_step"] == 5
