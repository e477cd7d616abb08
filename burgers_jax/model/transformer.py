"""The transformer of the model: the Hugging Face `LlamaModel` fed `inputs_embeds`
(GQA, half-split RoPE on flat positions, the frame block-causal mask from
`model.attention`), its LoRA-adapted projections and the rematerialisation modes of its
layers. The param tree mirrors torch names (`transformer/layers_3/self_attn/q_proj/kernel`
<-> `transformer.layers.3.self_attn.q_proj.weight`).

Shapes: B batch, S tokens, D hidden; Hq query heads, K key/value heads, hd head dim.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from burgers_jax.model import attention
from burgers_jax.model.config import ModelConfig
from burgers_jax.model.layers import Linear, RMSNorm

Dtype = Any


# Rematerialisation of the transformer layers (`model.remat`), chosen by measuring the
# full-size step (B 4, T 16; docs/performance.md, "Memory"):
#   none         keep every intermediate for the backward (the most memory)
#   projections  keep the outputs of the frozen projections o, gate and up and the
#                attention's own residuals (q, k, v, its output and row statistics); recompute
#                the norms, RoPE, activations, dropout and the rank-r adapter products,
#                which are cheap. The expensive products (the D x D and D x I matmuls
#                and the attention) run once. The default.
#   full         keep each layer's input only; the whole layer runs again (the least
#                memory, one more transformer forward)
REMAT = ("none", "projections", "full")
# q, k and v need no name: the attention's residuals hold them, and the projections'
# backward needs their input, not their output.
SAVED_BY_PROJECTIONS = ("attention", "o_proj", "gate_proj", "up_proj")


def remat_mode(remat) -> str:
    """`model.remat` as one of REMAT; booleans as older configs and `gradient_checkpointing` say them."""
    if isinstance(remat, bool) or remat is None:
        return "full" if remat else "none"
    mode = str(remat).lower()
    if mode not in REMAT:
        raise ValueError(f"model.remat={remat!r}: one of {', '.join(REMAT)}")
    return mode


def checkpoint_policy(mode: str):
    """The `jax.checkpoint` policy of a REMAT mode (`full`: None, nothing saved)."""
    return jax.checkpoint_policies.save_only_these_names(*SAVED_BY_PROJECTIONS) if mode == "projections" else None


def rope_cos_sin(seq_len: int, head_dim: int, theta: float, dtype) -> tuple[jax.Array, jax.Array]:
    """HF Llama default RoPE on positions 0..S-1: cos/sin [S, hd] in float32, cast to dtype.

    inv_freq = 1 / theta**(arange(0, hd, 2) / hd), computed in float32 like HF.
    """
    exponent = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
    inv_freq = 1.0 / (jnp.float32(theta) ** exponent)
    freqs = jnp.arange(seq_len, dtype=jnp.float32)[:, None] * inv_freq[None, :]
    emb = jnp.concatenate([freqs, freqs], axis=-1)  # [angles, angles]: half-split layout
    return jnp.cos(emb).astype(dtype), jnp.sin(emb).astype(dtype)


def rotate_half(x):
    """[-x2, x1] on the two halves of the last axis (HF layout, not interleaved)."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def projection(config: ModelConfig, name: str, features: int, dtype: Dtype) -> Linear:
    """One of the transformer's seven projections (no bias, as in Llama), with its LoRA
    adapter when `config.lora` targets `name`."""
    lora = config.lora
    return Linear(features, use_bias=False, lora_rank=lora.rank_of(name), lora_alpha=lora.alpha,
                  lora_dropout=lora.dropout, dtype=dtype, name=name)


class LlamaAttention(nn.Module):
    config: ModelConfig
    train: bool = False
    dtype: Dtype = jnp.float32
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, x, cos, sin):
        tr = self.config.transformer
        b, s, _ = x.shape
        nh, nkv, hd = tr.num_attention_heads, tr.num_key_value_heads, tr.head_dim
        # `model.remat=projections` keeps the attention's residuals and output (tagged by
        # `residual_name`) and o_proj's output (REMAT); q, k and v live in the former.
        q = projection(self.config, "q_proj", nh * hd, self.dtype)(x, train=self.train).reshape(b, s, nh, hd)
        k = projection(self.config, "k_proj", nkv * hd, self.dtype)(x, train=self.train).reshape(b, s, nkv, hd)
        v = projection(self.config, "v_proj", nkv * hd, self.dtype)(x, train=self.train).reshape(b, s, nkv, hd)
        cos, sin = cos[:, None, :], sin[:, None, :]  # broadcast over heads
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        out = attention.attend(q, k, v, self.attention_impl, self.config.tokens_per_frame, hd ** -0.5, self.dtype,
                               residual_name="attention")
        return checkpoint_name(projection(self.config, "o_proj", tr.hidden_size, self.dtype)(out, train=self.train), "o_proj")


class LlamaMLP(nn.Module):
    config: ModelConfig
    train: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        tr, c, dt = self.config.transformer, self.config, self.dtype
        gate = checkpoint_name(projection(c, "gate_proj", tr.intermediate_size, dt)(x, train=self.train), "gate_proj")
        up = checkpoint_name(projection(c, "up_proj", tr.intermediate_size, dt)(x, train=self.train), "up_proj")
        return projection(c, "down_proj", tr.hidden_size, dt)(jax.nn.silu(gate) * up, train=self.train)


class LlamaDecoderLayer(nn.Module):
    config: ModelConfig
    train: bool = False
    dtype: Dtype = jnp.float32
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, h, cos, sin):
        eps = self.config.transformer.rms_norm_eps
        attn = LlamaAttention(self.config, self.train, self.dtype, self.attention_impl, name="self_attn")
        h = h + attn(RMSNorm(eps, name="input_layernorm")(h), cos, sin)
        mlp = LlamaMLP(self.config, self.train, self.dtype, name="mlp")
        return h + mlp(RMSNorm(eps, name="post_attention_layernorm")(h))


class Transformer(nn.Module):
    """HF `LlamaModel` fed `inputs_embeds`, with the frame block-causal mask. [B, S, D] -> [B, S, D].

    The identical layers run under one `lax.scan` (`scan_layers`, as MaxText does), so
    XLA compiles one layer instead of every one of them, while the parameters keep their
    per-layer names (`layers_0`, `layers_1`, ...: the tree on disk and the mapping to
    PyTorch are unchanged): they are stacked at the call. Initialisation unrolls.
    """

    config: ModelConfig
    dtype: Dtype = jnp.float32
    attention_impl: str = "auto"
    remat: str | bool = "none"  # one of REMAT (booleans: full / none)
    scan_layers: bool = True

    @nn.compact
    def __call__(self, h, train: bool = False):
        tr = self.config.transformer
        if tr.hidden_act != "silu":
            raise ValueError(f"transformer.hidden_act={tr.hidden_act!r}: only 'silu' is supported")
        cos, sin = rope_cos_sin(h.shape[1], tr.head_dim, tr.rope_theta, h.dtype)
        args = (self.config, train, self.dtype, self.attention_impl)
        n = tr.num_hidden_layers
        mode = remat_mode(self.remat)
        if not self.scan_layers or n == 1 or self.is_initializing():
            layer_cls = (LlamaDecoderLayer if mode == "none"
                         else nn.remat(LlamaDecoderLayer, policy=checkpoint_policy(mode)))
            for i in range(n):
                h = layer_cls(*args, name=f"layers_{i}")(h, cos, sin)
        else:
            params = self.variables["params"]
            stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[params[f"layers_{i}"] for i in range(n)])
            layer = LlamaDecoderLayer(*args, parent=None)  # a pure function of its params, not a submodule
            dropout = train and self.config.lora.r > 0 and self.config.lora.dropout > 0
            rng = self.make_rng("dropout") if dropout else None

            def body(carry, xs):
                p, i = xs
                rngs = {"dropout": jax.random.fold_in(rng, i)} if rng is not None else None
                return layer.apply({"params": p}, carry, cos, sin, rngs=rngs), None

            body = body if mode == "none" else jax.checkpoint(body, policy=checkpoint_policy(mode))
            h, _ = jax.lax.scan(body, h, (stacked, jnp.arange(n)))
        return RMSNorm(tr.rms_norm_eps, name="norm")(h)
