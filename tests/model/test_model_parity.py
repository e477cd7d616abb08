"""The Flax `PDECausalModel` against the PyTorch reference (porting/torch_reference.py).

Tiny architectures at the real 128x128 resolution, with randomized norm weights and
biases so that a mis-mapped norm or bias cannot hide behind ones/zeros. Errors are
relative L2 `||jax - torch|| / ||torch||` per seam: encoder tokens [B, S, D],
transformer output [B, S, D], decoder output [B, T, 128, 128, 6] (before
denormalization) and the final output.

Run: .venv/bin/python -m pytest tests/model/test_model_parity.py -q        (fast set)
     .venv/bin/python -m pytest tests/model/test_model_parity.py -q -m slow -s  (full size)
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from burgers_jax.model.config import ModelConfig, Policy  # noqa: E402
from burgers_jax.model.layers import Conv2d, ConvTranspose2d, GroupNorm, gelu  # noqa: E402
from burgers_jax.model.lora import add_lora, cast_params, merge_lora  # noqa: E402
from burgers_jax.model.network import PDECausalModel  # noqa: E402
from burgers_jax.model.transformer import Transformer  # noqa: E402
from porting import torch_reference as R  # noqa: E402
from porting.mapping import (  # noqa: E402
    MappingError,
    flax_to_torch,
    lora_torch_to_flax,
    torch_to_flax,
)
from porting.verify import rel_l2  # noqa: E402

SEAMS = ("encoder_tokens", "transformer_output", "decoder_output", "output")
# float32 end to end on both sides; what remains is summation order in convs/matmuls
# (measured <= 4e-6 on these sizes), so 1e-5 catches any real mapping/semantics error
# (a wrong GELU, eps, padding or permutation gives >= 1e-3).
F32_TOL = 1e-5
# bf16 weights+activations on both sides; each side rounds differently (bf16 eps 7.8e-3)
# and the two agree with float32 to ~1e-2 each (measured 0.6-1.4e-2), hence 2e-2.
BF16_TOL = 2e-2


def config_dict(use_resblock: bool, heads: int, kv_heads: int, layers: int) -> dict:
    d = copy.deepcopy(R.small_model_config_dict())
    d["model"]["encoder"]["use_resblock"] = use_resblock
    d["model"]["transformer"].update(num_attention_heads=heads, num_key_value_heads=kv_heads,
                                     num_hidden_layers=layers)
    return d


def make_input(batch: int, frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, frames, 128, 128, 6)).astype(np.float32)
    # distinct per-channel offsets/scales so the (de)normalization statistics matter
    return x * np.linspace(0.5, 3.0, 6, dtype=np.float32) + np.linspace(-2.0, 4.0, 6, dtype=np.float32)


@functools.lru_cache(maxsize=None)
def jitted_apply(config: ModelConfig, precision: str = "float32", attention_impl: str = "auto"):
    model = PDECausalModel(config, policy=Policy.named(precision), attention_impl=attention_impl)
    return jax.jit(lambda p, x: model.apply({"params": p}, x, return_intermediates=True))


def run_jax(config, params, x, precision="float32", attention_impl="auto") -> dict:
    with jax.default_matmul_precision("highest"):
        out, inter = jitted_apply(config, precision, attention_impl)(params, x)
    return {**inter, "output": out}


class Pair:
    """A randomized torch reference model and its converted Flax params."""

    def __init__(self, use_resblock: bool, heads: int, kv_heads: int, layers: int, seed: int = 0):
        self.cfg_dict = config_dict(use_resblock, heads, kv_heads, layers)
        torch.manual_seed(seed)
        self.torch_model = R.randomize_(R.build_model(self.cfg_dict), seed=seed)
        self.config = ModelConfig.from_dict(self.cfg_dict["model"])
        self.params = torch_to_flax(self.torch_model.state_dict(), self.config)


@pytest.fixture(scope="module")
def pair_res():  # with resblocks, 8 query / 2 KV heads (the 16/4 layout scaled down), hd 8
    return Pair(use_resblock=True, heads=8, kv_heads=2, layers=1)


@pytest.fixture(scope="module")
def pair_plain():  # without resblocks, 4 query / 2 KV heads (12/4-like GQA), hd 16, 2 layers
    return Pair(use_resblock=False, heads=4, kv_heads=2, layers=2, seed=1)


# ----------------------------------------------------------------------------- layers


def test_layers_match_torch_modules():
    """GroupNorm(8, eps 1e-5), replicate-padded stride-2 conv, ConvTranspose2d(4,2,1) and
    exact GELU against torch's own modules (catches Flax defaults: 32 groups, eps 1e-6,
    SAME padding, tanh GELU, unflipped transposed kernels)."""
    from porting.mapping import conv_oihw_to_hwio, conv_transpose_to_flax

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 16, 16)).astype(np.float32) * 3 + 1  # NHWC
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    torch.manual_seed(0)
    with torch.no_grad():
        gn = torch.nn.GroupNorm(8, 16, eps=1e-5)
        gn.weight.uniform_(0.5, 1.5), gn.bias.uniform_(-0.5, 0.5)
        conv = torch.nn.Conv2d(16, 8, 3, stride=2, padding=1, padding_mode="replicate")
        convt = torch.nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)
        refs = {"gn": gn(xt), "conv": conv(xt), "convt": convt(xt), "gelu": torch.nn.GELU()(xt)}
    got = {
        "gn": GroupNorm().apply({"params": {"scale": gn.weight.detach().numpy(), "bias": gn.bias.detach().numpy()}}, x),
        "conv": Conv2d(8, 3, 2).apply({"params": {"kernel": conv_oihw_to_hwio(conv.weight.detach().numpy()),
                                                  "bias": conv.bias.detach().numpy()}}, x),
        "convt": ConvTranspose2d(8).apply({"params": {"kernel": conv_transpose_to_flax(convt.weight.detach().numpy()),
                                                      "bias": convt.bias.detach().numpy()}}, x),
        "gelu": gelu(jnp.asarray(x)),
    }
    for name, ref in refs.items():
        ref = ref.permute(0, 2, 3, 1)
        assert got[name].shape == tuple(ref.shape), name
        err = rel_l2(got[name], ref)
        assert err < 1e-6, f"{name}: rel L2 {err:.2e} (float32 single op: expect ~1e-7)"


# ----------------------------------------------------------------------------- float32 parity


@pytest.mark.parametrize("which,frames", [("pair_res", 4), ("pair_plain", 16)])
def test_float32_parity_per_seam(which, frames, request):
    pair = request.getfixturevalue(which)
    x = make_input(1, frames)
    ref = R.run_with_intermediates(pair.torch_model, torch.from_numpy(x))
    got = run_jax(pair.config, pair.params, x)
    errors = {k: rel_l2(got[k], ref[k]) for k in SEAMS}
    print(f"\n{which} T={frames} float32 rel L2: " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))
    for k in SEAMS:
        assert got[k].shape == tuple(ref[k].shape), k
        assert errors[k] <= F32_TOL, f"{which} T={frames}: {k} rel L2 {errors[k]:.2e} > {F32_TOL}"


@pytest.mark.parametrize("impl", ["flash", "einsum", "auto"])
def test_every_attention_impl_matches_torch(pair_plain, impl):
    """Every attention path that runs on the CPU through `attend` (the cuDNN paths run
    only on a GPU: their reshapings are checked in `test_cudnn_reshapings_match_einsum`)
    on the torch encoder tokens, block-causal mask included (transformer only, T=3)."""
    from burgers_jax.model import attention

    assert attention.resolve("auto") == "flash"  # `auto` is flash on every backend (attention.py)
    x = make_input(1, 3, seed=3)
    ref = R.run_with_intermediates(pair_plain.torch_model, torch.from_numpy(x))
    transformer = Transformer(pair_plain.config, attention_impl=impl)
    with jax.default_matmul_precision("highest"):
        got = transformer.apply({"params": pair_plain.params["transformer"]}, ref["encoder_tokens"].numpy())
    err = rel_l2(got, ref["transformer_output"])
    assert err <= F32_TOL, f"attention_impl={impl}: transformer_output rel L2 {err:.2e}"


def _attention_inputs(batch=2, frames=3, nh=4, nkv=2, hd=16, seed=11):
    """Random q [B, S, Hq, hd], k/v [B, S, K, hd] and a cotangent weight w [B, S, Hq, hd]."""
    s = frames * 256
    keys = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(keys[0], (batch, s, nh, hd))
    k = jax.random.normal(keys[1], (batch, s, nkv, hd))
    v = jax.random.normal(keys[2], (batch, s, nkv, hd))
    w = jax.random.normal(keys[3], (batch, s, nh, hd))
    return q, k, v, w


def _value_and_qkv_grads(fn, q, k, v, w):
    """[out, dq, dk, dv] of sum(w * fn(q, k, v)), out reshaped to w's shape."""
    def loss(q, k, v):
        out = fn(q, k, v).reshape(w.shape)
        return jnp.sum(out * w), out
    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    return [out, *grads]


@pytest.mark.parametrize("which", ["framewise", "by_lengths"])
def test_cudnn_reshapings_match_einsum(which):
    """The `cudnn` (one maskless call per query frame on its key prefix) and
    `cudnn_lengths` (frames as batch rows cut by `key_value_seq_lengths`) reshapings,
    run through XLA's implementation of the same `jax.nn.dot_product_attention` call,
    against the masked einsum reference (`attention.eager` with `block_causal_mask`):
    values and the q/k/v gradients, float32, GQA 4 query / 2 KV heads."""
    from burgers_jax.model import attention

    tpf, hd = 256, 16
    q, k, v, w = _attention_inputs(hd=hd)
    b, s, nh, _ = q.shape
    nkv = k.shape[2]
    scale = hd ** -0.5
    reshaping = getattr(attention, which)

    def reference(q, k, v):
        return attention.eager(q.reshape(b, s, nkv, nh // nkv, hd), k, v, attention.block_causal_mask(s, tpf), scale,
                               jnp.float32)

    with jax.default_matmul_precision("highest"):
        exact = _value_and_qkv_grads(reference, q, k, v, w)
        got = _value_and_qkv_grads(lambda q, k, v: reshaping(q, k, v, tpf, scale, implementation="xla"), q, k, v, w)
    for name, e, g in zip(("out", "dq", "dk", "dv"), exact, got):
        assert g.shape == e.shape, name
        err = rel_l2(g, e)
        # float32 reassociation only (measured <= 4e-7); a wrong mask gives O(1) (the
        # token-causal mask instead of the block-causal one: 1.1-1.5), as would a wrong key
        # prefix, length or head grouping.
        assert err <= 1e-5, f"{which}: {name} rel L2 {err:.2e} against the masked einsum"


@pytest.mark.parametrize("impl", ["cudnn", "cudnn_lengths"])
def test_cudnn_paths_refuse_float32(impl):
    """cuDNN's fused kernel is bf16/fp16 only: the float32 policy is told to take flash."""
    from burgers_jax.model import attention

    q, k, v, _ = _attention_inputs(batch=1, frames=1)
    with pytest.raises(ValueError, match="flash"):
        attention.attend(q, k, v, impl, 256, 16 ** -0.5, jnp.float32)


def test_attend_residual_name_changes_nothing():
    """Tagging the attention's residuals (`residual_name`, for the remat policy) keeps its
    value and q/k/v gradients (flash, float32)."""
    from burgers_jax.model import attention

    q, k, v, w = _attention_inputs(batch=1)
    hd = q.shape[-1]
    with jax.default_matmul_precision("highest"):
        plain = _value_and_qkv_grads(lambda q, k, v: attention.attend(q, k, v, "flash", 256, hd ** -0.5, jnp.float32),
                                     q, k, v, w)
        tagged = _value_and_qkv_grads(lambda q, k, v: attention.attend(q, k, v, "flash", 256, hd ** -0.5, jnp.float32,
                                                                       residual_name="attention"), q, k, v, w)
    for name, a, b in zip(("out", "dq", "dk", "dv"), plain, tagged):
        err = rel_l2(b, a)
        # The same float32 operations in the same order (measured: bit-identical); 1e-6
        # leaves room only for XLA fusing the wrapped program differently (a lost or
        # doubled gradient is O(1)).
        assert err <= 1e-6, f"{name}: rel L2 {err:.2e} with residual_name='attention'"


def _lora_transformer(pair, dropout: float = 0.0):
    """pair's transformer with rank-2 adapters (B non-zero, so that A gets a gradient),
    random tokens [1, 3*256, D] and a random cotangent weight of the same shape."""
    config = pair.config.with_lora(r=2, alpha=4.0, dropout=dropout)  # 2 layers: the scan runs
    params = add_lora(pair.params, config, jax.random.key(0))["transformer"]
    params = jax.tree_util.tree_map_with_path(lambda p, v: v + 0.1 if p[-1].key == "lora_B" else v, params)
    tokens = jax.random.normal(jax.random.key(1), (1, 3 * 256, config.transformer.hidden_size))
    # A random cotangent: sum(RMSNorm(x)^2) would be nearly scale invariant, its gradient noise.
    weights = jax.random.normal(jax.random.key(2), tokens.shape)
    return config, params, tokens, weights


def test_flash_scan_remat_gradients_match_einsum(pair_plain):
    """The default training path (flash attention with its custom VJP, the layers
    under one scan, remat) differentiates like the plain unrolled einsum path (both
    forward-checked against torch above); adapters included. `remat=True` is the legacy
    spelling of `full`."""
    config, params, tokens, weights = _lora_transformer(pair_plain)

    def loss(p, **kw):
        return jnp.sum(Transformer(config, **kw).apply({"params": p}, tokens) * weights)

    with jax.default_matmul_precision("highest"):
        g_ref = jax.jit(jax.grad(lambda p: loss(p, attention_impl="einsum", scan_layers=False)))(params)
        g_new = jax.jit(jax.grad(lambda p: loss(p, attention_impl="flash", remat=True)))(params)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_ref), jax.tree.leaves(g_new)):
        err = float(jnp.linalg.norm(a - b) / jnp.linalg.norm(a))
        assert err <= F32_TOL, f"{jax.tree_util.keystr(path)}: rel L2 {err:.2e} (float32 reassociation only)"


@pytest.mark.parametrize("scan_layers", [True, False])  # jax.checkpoint on the scan body / nn.remat per layer
def test_remat_modes_give_the_gradients_of_no_remat(pair_plain, scan_layers):
    """`model.remat` = projections and full recompute what they do not keep, and change no
    gradient: the LoRA adapters' (and every other parameter's) against remat none on the
    same model (flash attention, deterministic)."""
    from burgers_jax.model.transformer import REMAT

    config, params, tokens, weights = _lora_transformer(pair_plain)

    def grads(remat):
        def loss(p):
            out = Transformer(config, attention_impl="flash", remat=remat, scan_layers=scan_layers).apply(
                {"params": p}, tokens)
            return jnp.sum(out * weights)
        return jax.jit(jax.grad(loss))(params)

    assert REMAT == ("none", "projections", "full")
    with jax.default_matmul_precision("highest"):
        g = {mode: grads(mode) for mode in REMAT}
    adapters = [path for path, _ in jax.tree_util.tree_leaves_with_path(g["none"])
                if path[-1].key in ("lora_A", "lora_B")]
    assert len(adapters) == 2 * 7 * config.transformer.num_hidden_layers  # A and B of 7 projections per layer
    for mode in ("projections", "full"):
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g["none"]), jax.tree.leaves(g[mode])):
            err = float(jnp.linalg.norm(a - b) / jnp.linalg.norm(a))
            assert err <= F32_TOL, f"remat={mode}: {jax.tree_util.keystr(path)} rel L2 {err:.2e} against remat=none"


def test_remat_projections_runs_the_attention_forward_once(pair_plain):
    """Under the `projections` policy the attention's tagged residuals are kept: the
    backward of one decoder layer, differentiated as training does (its parameters, LoRA
    adapters included, and its input), has as many loops (flash's frame loops:
    scan/while) as without rematerialisation. Under `full` the flash forward runs again,
    and the count grows: what this counts is what a recomputed attention forward adds.
    (o_proj's adapter recomputes `x A` from the attention's output, so that output must
    be among what the policy keeps, not only the attention's own residuals.)"""
    from burgers_jax.model.transformer import LlamaDecoderLayer, checkpoint_policy, rope_cos_sin

    config, params, tokens, weights = _lora_transformer(pair_plain)
    layer = LlamaDecoderLayer(config, attention_impl="flash")
    tr = config.transformer
    cos, sin = rope_cos_sin(tokens.shape[1], tr.head_dim, tr.rope_theta, tokens.dtype)

    def loss(p, h):
        return jnp.sum(layer.apply({"params": p}, h, cos, sin) * weights)

    def loops(f):
        text = str(jax.make_jaxpr(jax.value_and_grad(f, argnums=(0, 1)))(params["layers_0"], tokens))
        return text.count("scan[") + text.count("while[")

    plain = loops(loss)
    projections = loops(jax.checkpoint(loss, policy=checkpoint_policy("projections")))
    full = loops(jax.checkpoint(loss, policy=checkpoint_policy("full")))
    assert plain > 0, "test premise: flash's frame loops appear in the jaxpr"
    assert full > plain, "test premise: a recomputed flash forward shows as more loops"
    assert projections == plain, f"remat=projections recomputes the attention forward: {projections} loops, not {plain}"


@pytest.mark.parametrize("batch,frames,heads", [(2, 3, (8, 2)), (1, 4, (6, 6))])
def test_flash_attention_bf16_gradients_as_accurate_as_eager_bf16(batch, frames, heads):
    """Under the bf16 policies flash widens bf16 q/k/v to float32 and rounds its output
    and gradients to bf16. Against the float32 einsum path on the same values, its output
    and q/k/v gradients must be no less accurate than the eager bf16 path (HF's numerics),
    up to a small margin; in float32 it must equal the einsum path to reassociation."""
    from burgers_jax.model import attention

    nh, nkv = heads
    hd, tpf = 16, 256
    s = frames * tpf
    keys = jax.random.split(jax.random.key(5), 4)
    q = jax.random.normal(keys[0], (batch, s, nh, hd))
    k = jax.random.normal(keys[1], (batch, s, nkv, hd))
    v = jax.random.normal(keys[2], (batch, s, nkv, hd))
    w = jax.random.normal(keys[3], (batch, s, nh * hd))

    def value_and_grads(impl, dtype):
        def f(q, k, v):
            out = attention.attend(q, k, v, impl, tpf, hd ** -0.5, dtype)
            return jnp.sum(out.astype(jnp.float32) * w), out
        (_, out), g = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))(
            *(x.astype(dtype) for x in (q, k, v)))
        return [out, *g]

    with jax.default_matmul_precision("highest"):
        exact = value_and_grads("einsum", jnp.float32)
        flash32 = value_and_grads("flash", jnp.float32)
        eager16 = value_and_grads("einsum", jnp.bfloat16)
        flash16 = value_and_grads("flash", jnp.bfloat16)
    for name, e, f32, a, b in zip(("out", "dq", "dk", "dv"), exact, flash32, eager16, flash16):
        assert rel_l2(f32, e) <= F32_TOL, f"{name}: float32 flash vs einsum {rel_l2(f32, e):.2e}"
        err_eager, err_flash = rel_l2(a.astype(jnp.float32), e), rel_l2(b.astype(jnp.float32), e)
        assert err_flash <= 1.5 * err_eager + 1e-3, f"{name}: bf16 flash {err_flash:.2e} vs eager bf16 {err_eager:.2e}"
        assert err_flash <= 3e-2, f"{name}: bf16 flash {err_flash:.2e}"


# ----------------------------------------------------------------------------- block causality


def _perturbed(x: np.ndarray, from_frame: int) -> np.ndarray:
    y = x.copy()
    y[:, from_frame:] = np.random.default_rng(99).standard_normal(y[:, from_frame:].shape) * 5
    return y


def test_block_causal_jax(pair_res):
    """Frames >= k changed: outputs of frames < k bit-identical; frames >= k differ. Changing
    the last pixel block of frame 0 changes the first token (attention is bidirectional
    inside a frame, so the mask is not the plain token-causal one)."""
    x, k = make_input(1, 4), 2
    a = run_jax(pair_res.config, pair_res.params, x)
    b = run_jax(pair_res.config, pair_res.params, _perturbed(x, k))
    assert np.array_equal(np.asarray(a["output"][:, :k]), np.asarray(b["output"][:, :k])), \
        "outputs of frames < k changed when frames >= k changed"
    assert not np.allclose(np.asarray(a["output"][:, k:]), np.asarray(b["output"][:, k:]))
    # Inside a frame attention is bidirectional: the last token of frame 0 reaches token 0.
    tokens = np.asarray(a["encoder_tokens"])
    moved = tokens.copy()
    moved[:, 255] += 1.0
    transformer = Transformer(pair_res.config)
    run = jax.jit(lambda t: transformer.apply({"params": pair_res.params["transformer"]}, t))
    h0, h1 = np.asarray(run(tokens)), np.asarray(run(moved))
    assert np.allclose(h0, np.asarray(a["transformer_output"]), rtol=0, atol=1e-6), "test premise: same transformer"
    assert not np.allclose(h0[:, 0], h1[:, 0]), "token 0 does not see the last token of its own frame"
    assert not np.allclose(h0[:, 256:], h1[:, 256:]), "later frames must see frame 0"


def test_block_causal_torch_reference(pair_res):
    """The 4D additive mask reaches HF's attention (transformers 5.x): same properties on
    the torch side, and dropping the mask changes frame 0 (so it is not ignored)."""
    m = pair_res.torch_model
    x, k = make_input(1, 4), 2
    a = R.run_with_intermediates(m, torch.from_numpy(x))
    b = R.run_with_intermediates(m, torch.from_numpy(_perturbed(x, k)))
    assert torch.equal(a["output"][:, :k], b["output"][:, :k])
    assert not torch.allclose(a["output"][:, k:], b["output"][:, k:])
    tokens = a["encoder_tokens"]
    moved = tokens.clone()
    moved[:, 255] += 1.0
    mask = R.block_causal_mask(4)
    with torch.no_grad():
        h0 = m.transformer(inputs_embeds=tokens, attention_mask=mask, use_cache=False).last_hidden_state
        h1 = m.transformer(inputs_embeds=moved, attention_mask=mask, use_cache=False).last_hidden_state
    assert torch.equal(h0, a["transformer_output"])
    assert not torch.allclose(h0[:, 0], h1[:, 0]), "token 0 does not see the last token of its own frame"
    with torch.no_grad():  # an all-zero 4D mask (full attention) must change frame 0's output
        full = torch.zeros(1, 1, 1024, 1024)
        bidir = m.transformer(inputs_embeds=a["encoder_tokens"], attention_mask=full,
                              use_cache=False).last_hidden_state
    assert not torch.allclose(bidir[:, :256], a["transformer_output"][:, :256]), \
        "an all-zero 4D mask gave the block-causal result: the custom mask is not honoured"


# ----------------------------------------------------------------------------- bf16 policy


def test_bf16_policies_against_torch_bf16():
    """`reference` (bf16 like the PyTorch recipe) and `fp32_output` vs the torch model in
    bf16 on CPU (bf16 torch is fast enough at this size)."""
    pair = Pair(use_resblock=True, heads=4, kv_heads=2, layers=1, seed=2)
    mb = pair.torch_model.to(torch.bfloat16)
    x = make_input(1, 1, seed=5)  # T=1: bf16 convs are slow on CPU; the mask is covered in float32
    ref = R.run_with_intermediates(mb, torch.from_numpy(x).to(torch.bfloat16))
    params = torch_to_flax(mb.state_dict(), pair.config)
    assert all(v.dtype == jnp.bfloat16 for v in jax.tree.leaves(params)), "bf16 source must stay bf16"
    for precision, out_dtype in (("reference", jnp.bfloat16), ("fp32_output", jnp.float32)):
        got = run_jax(pair.config, cast_params(params, Policy.named(precision)), x, precision=precision)
        assert got["output"].dtype == out_dtype, precision
        assert got["encoder_tokens"].dtype == jnp.bfloat16, precision
        errors = {k: rel_l2(got[k], ref[k]) for k in SEAMS}
        print(f"\n{precision} vs torch bf16 rel L2: " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))
        for k in SEAMS:
            assert errors[k] <= BF16_TOL, f"{precision}: {k} rel L2 {errors[k]:.2e} > {BF16_TOL}"


# ----------------------------------------------------------------------------- LoRA


def test_lora_parity_with_peft_and_merge(pair_res):
    """Flax adapters vs the peft-wrapped reference with random (non-zero) B; then merged kernels."""
    r, alpha = 4, 8.0
    m = R.wrap_lora(copy.deepcopy(pair_res.torch_model), r=r, alpha=alpha, dropout=0.1, seed=1)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if ".lora_B." in name:  # PEFT starts B at zero, which would hide a wrong adapter
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    m.eval()
    x = make_input(1, 4, seed=11)
    ref = R.run_with_intermediates(m, torch.from_numpy(x))
    base_ref = R.run_with_intermediates(pair_res.torch_model, torch.from_numpy(x))
    assert rel_l2(ref["output"].numpy(), base_ref["output"]) > 1e-3, "test premise: adapters must matter"

    config = pair_res.config.with_lora(r=r, alpha=alpha, dropout=0.1)
    adapters = lora_torch_to_flax(R.lora_state_dict(m), config)
    params = copy.deepcopy(pair_res.params)
    for layer, groups in adapters["transformer"].items():
        for group, mods in groups.items():
            for mod, leaves in mods.items():
                params["transformer"][layer][group][mod].update(leaves)
    got = run_jax(config, params, x)
    errors = {k: rel_l2(got[k], ref[k]) for k in SEAMS}
    print("\nLoRA float32 rel L2: " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))
    for k in SEAMS:
        assert errors[k] <= F32_TOL, f"LoRA: {k} rel L2 {errors[k]:.2e} > {F32_TOL}"

    merged = merge_lora(params, config)
    assert not any(k in ("lora_A", "lora_B") for k in _leaf_names(merged))
    got_m = run_jax(pair_res.config, merged, x)  # the adapter-free model (same compiled fn as the base)
    err = rel_l2(got_m["output"], np.asarray(got["output"]))
    # merged W + A B s vs x W + (x A) B s: float32 reassociation only
    assert err <= F32_TOL, f"merged vs unmerged rel L2 {err:.2e}"


def _leaf_names(tree):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _leaf_names(v)
        else:
            yield k


def test_noise_and_lora_dropout_only_in_training(pair_plain):
    """train=True draws from the 'noise' and 'dropout' streams; train=False is deterministic."""
    config = dataclasses.replace(pair_plain.config, noise_level=0.1).with_lora(r=2, alpha=4.0, dropout=0.5)
    params = add_lora(pair_plain.params, config, jax.random.key(0))
    params = jax.tree_util.tree_map_with_path(  # non-zero B so that dropout on the adapter input matters
        lambda p, v: v + 0.1 if p[-1].key == "lora_B" else v, params)
    model = PDECausalModel(config)
    x = make_input(1, 1, seed=3)
    f = jax.jit(lambda p, x, k: model.apply({"params": p}, x, train=True,
                                            rngs={"noise": k, "dropout": jax.random.fold_in(k, 1)}))
    a, b = f(params, x, jax.random.key(1)), f(params, x, jax.random.key(2))
    assert not np.allclose(np.asarray(a), np.asarray(b)), "train=True must draw noise/dropout"
    # train=False asks for no rng at all (make_rng would raise without streams); tracing suffices.
    jax.eval_shape(lambda p: model.apply({"params": p}, x, train=False), params)
    with pytest.raises(Exception, match="noise"):
        jax.eval_shape(lambda p: model.apply({"params": p}, x, train=True), params)


# ----------------------------------------------------------------------------- full size (slow)


@pytest.mark.slow
@pytest.mark.parametrize("heads", [16, 12])
def test_full_size_float32_parity(heads):
    """hidden 768, 10 layers, intermediate 3072, channels 64/128/256; T=2, B=1, float32."""
    d = {"model": {"in_channels": 6, "encoder": {"version": "v2", "channels": [64, 128, 256], "use_resblock": True},
                   "transformer": {"hidden_size": 768, "num_hidden_layers": 10, "num_attention_heads": heads,
                                   "num_key_value_heads": 4, "intermediate_size": 3072, "hidden_act": "silu",
                                   "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
                                   "attention_dropout": 0.0}, "noise_level": 0.0}}
    torch.manual_seed(0)
    m = R.randomize_(R.build_model(d), seed=0)
    config = ModelConfig.from_dict(d["model"])
    t0 = time.perf_counter()
    params = torch_to_flax(m.state_dict(), config)
    t_map = time.perf_counter() - t0
    x = make_input(1, 2)
    t0 = time.perf_counter()
    ref = R.run_with_intermediates(m, torch.from_numpy(x))
    t_torch = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = run_jax(config, params, x)
    jax.block_until_ready(got)
    t_jax = time.perf_counter() - t0
    errors = {k: rel_l2(got[k], ref[k]) for k in SEAMS}
    print(f"\nfull size {heads}/4 heads, T=2 float32 rel L2: " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items())
          + f"; map {t_map:.1f}s, torch {t_torch:.1f}s, jax (compile+run) {t_jax:.1f}s")
    for k in SEAMS:
        assert errors[k] <= F32_TOL, f"full size {heads}/4: {k} rel L2 {errors[k]:.2e}"


# ----------------------------------------------------------------------------- strict mapping


@pytest.mark.parametrize("use_resblock", [True, False])
def test_mapping_round_trip_bf16_best_pt(tmp_path, use_resblock):
    """best.pt (bf16, written by the reference, loaded weights_only) -> Flax -> torch keys: exact."""
    d = config_dict(use_resblock, 4, 2, 1)
    m = R.randomize_(R.build_model(d), seed=3)
    path = tmp_path / "best.pt"
    R.write_best_pt(path, m, d, global_step=5)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert set(ckpt) == {"global_step", "model_state_dict", "optimizer_state_dict", "scheduler_state_dict",
                         "val_rmse", "val_nrmse", "best_val_nrmse", "config"}
    sd = ckpt["model_state_dict"]
    assert not any("rotary" in k or "embed_tokens" in k for k in sd), "no rotary buffers / token embedding"
    config = ModelConfig.from_dict(ckpt["config"]["model"])
    params = torch_to_flax(dict(sd), config)
    assert {str(v.dtype) for v in jax.tree.leaves(params)} == {"bfloat16"}
    back = flax_to_torch(params, config)
    assert set(back) == set(sd)
    for k, v in sd.items():
        assert np.array_equal(back[k].astype(np.float32), v.float().numpy()), k
        assert back[k].shape == tuple(v.shape), k
    consumed = dict(sd)
    torch_to_flax(consumed, config, consume=True)
    assert consumed == {}, "consume=True pops every converted tensor"


def test_mapping_errors_name_the_keys(pair_plain):
    sd = dict(pair_plain.torch_model.state_dict())
    config = pair_plain.config
    broken = dict(sd)
    del broken["transformer.layers.1.mlp.up_proj.weight"]
    broken["transformer.layers.1.extra.weight"] = torch.zeros(3)
    with pytest.raises(MappingError) as e:
        torch_to_flax(broken, config)
    msg = str(e.value)
    assert "missing (1): transformer.layers.1.mlp.up_proj.weight" in msg and "transformer/layers_1/mlp/up_proj" in msg
    assert "unexpected (1): transformer.layers.1.extra.weight" in msg
    # 12/4-style config on weights with other head counts: k_proj rows disagree
    wrong = dataclasses.replace(config, transformer=dataclasses.replace(config.transformer, num_key_value_heads=1))
    with pytest.raises(MappingError, match=r"mismatched .*transformer\.layers\.0\.self_attn\.k_proj\.weight \(32, 64\)"):
        torch_to_flax(sd, wrong)
    with pytest.raises(MappingError, match=r"(?s)missing \(128\): decoder_2d\.scalar_conv\.0\.conv\.0\.bias .*"
                                          r"unexpected \(16\): decoder_2d\.scalar_conv\.0\.bias"):
        torch_to_flax(sd, dataclasses.replace(config, encoder=dataclasses.replace(config.encoder, use_resblock=True)))


def test_input_checks(pair_plain):
    model = PDECausalModel(pair_plain.config)
    with pytest.raises(ValueError, match="rank 5"):
        model.apply({"params": pair_plain.params}, np.zeros((1, 128, 128, 6), np.float32))
    with pytest.raises(ValueError, match=r"\[128, 128, 6\]"):
        model.apply({"params": pair_plain.params}, np.zeros((1, 1, 64, 64, 6), np.float32))
    with pytest.raises(ValueError, match="max_position_embeddings=4096"):
        model.apply({"params": pair_plain.params}, np.zeros((1, 17, 128, 128, 6), np.float32))
