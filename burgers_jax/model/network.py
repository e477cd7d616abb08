"""Flax port of the PyTorch `PDECausalModel` (docs/model_and_formats.md, "The model"), LoRA included.

    x [B, T, 128, 128, 6] -> normalize per (sample, frame, channel) over (H, W)
      -> (+ noise, training only) -> encoder_2d -> tokens [B, S = T*256, D]
      -> transformer (model/transformer.py: Llama, GQA, half-split RoPE, block-causal
         by frame) -> decoder_2d -> [B, T, 128, 128, 6] -> denormalize with the
         statistics of the same input frame.

Shapes: B batch, T frames, H/W grid (128), C channels (6), S = T*256 tokens,
D hidden, N = B*T images, Hq query heads, K key/value heads, G = Hq/K, hd head dim.

The param tree mirrors torch module names (docs/model_and_formats.md), e.g.
`encoder_2d/vector_conv/2/conv_0/scale` <-> `encoder_2d.vector_conv.2.conv.0.weight`,
`transformer/layers_3/self_attn/q_proj/kernel` <-> `transformer.layers.3.self_attn.q_proj.weight`;
burgers_jax/porting/mapping.py holds the full table. LoRA leaves `lora_A`/`lora_B` sit beside the
kernel they adapt.

Precision: a `model.config.Policy` says which dtype each part computes in (trunk,
input statistics, last decoder stage and denormalization); GroupNorm, RMSNorm and
softmax statistics are float32 under every policy, cast back (as torch/HF).
Parameters are cast at use, so one tree serves every policy; adapters always compute
in float32 (PEFT).
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from burgers_jax.model.config import FLOAT32, ModelConfig, Policy
from burgers_jax.model.layers import Conv2d, ConvTranspose2d, Linear, ResBlock, gelu
from burgers_jax.model.lora import cast_params
from burgers_jax.model.param_tree import flatten, is_adapter
from burgers_jax.model.transformer import Transformer

Dtype = Any
RESOLUTION = 128
STD_EPS = 1e-6  # added to the (unbiased) std, not the variance (docs/model_and_formats.md, "The model", step 1)

# ----------------------------------------------------------------------------- encoder / decoder


class EncoderBranch(nn.Module):
    """`vector_conv`/`scalar_conv`: [Conv3x3 s2, GELU, (ResBlock)] x 3; 128 -> 16. NHWC."""

    channels: tuple[int, int, int]
    use_resblock: bool
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        idx = 0  # torch Sequential index: conv, GELU, ResBlock (or conv, GELU without resblocks)
        for c in self.channels:
            x = gelu(Conv2d(c, 3, 2, dtype=self.dtype, name=str(idx))(x))
            idx += 2
            if self.use_resblock:
                x = ResBlock(dtype=self.dtype, name=str(idx))(x)
                idx += 1
        return x


class MixBlock(nn.Module):
    """`fusion` (encoder) / `split` (decoder): Conv1x1 `0`, GELU, ResBlock `2`."""

    use_resblock: bool
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = gelu(Conv2d(x.shape[-1], 1, 1, dtype=self.dtype, name="0")(x))
        if self.use_resblock:
            x = ResBlock(dtype=self.dtype, name="2")(x)
        return x


class Encoder2d(nn.Module):
    """`encoder_2d`: images [N, 128, 128, 6] -> tokens [B, T*256, D]."""

    config: ModelConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, xn, batch: int):
        enc = self.config.encoder
        vec = EncoderBranch(enc.channels, enc.use_resblock, self.dtype, name="vector_conv")(xn[..., :3])
        sca = EncoderBranch(enc.channels, enc.use_resblock, self.dtype, name="scalar_conv")(xn[..., 3:])
        h = MixBlock(enc.use_resblock, self.dtype, name="fusion")(jnp.concatenate([vec, sca], axis=-1))
        n, hh, ww, mid = h.shape
        tokens = h.reshape(batch, (n // batch) * hh * ww, mid)  # token = t*256 + row*16 + col
        return Linear(self.config.transformer.hidden_size, use_bias=True, dtype=self.dtype, name="proj")(tokens)


class DecoderBranch(nn.Module):
    """[(ResBlock), ConvT(4,2,1), GELU] x 3 without the last GELU; 16 -> 128, 3 channels out."""

    channels: tuple[int, int, int]
    use_resblock: bool
    dtype: Dtype = jnp.float32
    last_dtype: Dtype = jnp.float32  # the final ConvTranspose (float32 under fp32_output)

    @nn.compact
    def __call__(self, x):
        c1, c2, _ = self.channels
        idx = 0
        for j, c in enumerate((c2, c1, 3)):
            if self.use_resblock:
                x = ResBlock(dtype=self.dtype, name=str(idx))(x)
                idx += 1
            last = j == 2
            x = ConvTranspose2d(c, dtype=self.last_dtype if last else self.dtype, name=str(idx))(x)
            idx += 1
            if not last:
                x = gelu(x)
                idx += 1
        return x


class Decoder2d(nn.Module):
    """`decoder_2d`: tokens [B, S, D] -> [B, T, 128, 128, 6] (normalized units)."""

    config: ModelConfig
    dtype: Dtype = jnp.float32
    last_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens):
        enc = self.config.encoder
        c3 = enc.channels[2]
        mid = 2 * c3
        b, s, _ = tokens.shape
        side = int(round(np.sqrt(self.config.tokens_per_frame)))
        t = s // self.config.tokens_per_frame
        h = Linear(mid, use_bias=True, dtype=self.dtype, name="proj")(tokens)
        h = h.reshape(b * t, side, side, mid)
        h = MixBlock(enc.use_resblock, self.dtype, name="split")(h)
        kw = dict(channels=enc.channels, use_resblock=enc.use_resblock, dtype=self.dtype, last_dtype=self.last_dtype)
        vec = DecoderBranch(**kw, name="vector_conv")(h[..., :c3])
        sca = DecoderBranch(**kw, name="scalar_conv")(h[..., c3:])
        out = jnp.concatenate([vec, sca], axis=-1)
        return out.reshape(b, t, *out.shape[1:])


# ----------------------------------------------------------------------------- the model


class PDECausalModel(nn.Module):
    """x [B, T, 128, 128, C] -> prediction [B, T, 128, 128, C] (frame k: one step after input frame k).

    `__call__(x, *, train=False, return_intermediates=False)`; with intermediates it
    returns `(out, {"encoder_tokens": [B, S, D], "transformer_output": [B, S, D],
    "decoder_output": [B, T, 128, 128, C] before denormalization})`.
    RNG streams when `train`: 'noise' (if `config.noise_level > 0`) and 'dropout'
    (LoRA dropout, if `config.lora.dropout > 0`).
    """

    config: ModelConfig
    policy: Policy = FLOAT32
    attention_impl: str = "auto"
    remat: str | bool = "none"  # rematerialisation of the transformer layers: one of REMAT
    scan_layers: bool = True  # False unrolls the layers (same numbers; e.g. for per-op FLOP counts)

    def check_input(self, x) -> None:
        c = self.config
        if x.ndim != 5:
            raise ValueError(f"PDECausalModel: input must be [B, T, H, W, C] (rank 5), got shape {tuple(x.shape)}")
        _, t, h, w, ch = x.shape
        if (h, w, ch) != (RESOLUTION, RESOLUTION, c.in_channels):
            raise ValueError(f"PDECausalModel: input frames must be [{RESOLUTION}, {RESOLUTION}, {c.in_channels}] "
                             f"(H, W, C), got shape {tuple(x.shape)}")
        if c.in_channels != 6:
            raise ValueError(f"model.in_channels={c.in_channels}: the v2 encoder splits exactly 6 channels")
        s = t * c.tokens_per_frame
        if t < 1 or s > c.transformer.max_position_embeddings:
            raise ValueError(f"PDECausalModel: T={t} frames give {s} tokens; need 1 <= T and "
                             f"T*{c.tokens_per_frame} <= max_position_embeddings="
                             f"{c.transformer.max_position_embeddings}")

    def setup(self):
        dt = self.policy.compute_dtype
        self.encoder_2d = Encoder2d(self.config, dt)
        self.transformer = Transformer(self.config, dt, self.attention_impl, self.remat, self.scan_layers)
        self.decoder_2d = Decoder2d(self.config, dt, self.policy.output_dtype)

    def __call__(self, x, *, train: bool = False, return_intermediates: bool = False):
        self.check_input(x)
        tokens, mean, std = self.encode(x, train=train)  # 1-3.
        hidden = self.transformer(tokens, train)  # 4.
        dec = self.decoder_2d(hidden)  # 5.
        out = denormalize(dec, mean, std, self.policy)  # 6.
        if return_intermediates:
            return out, {"encoder_tokens": tokens, "transformer_output": hidden, "decoder_output": dec}
        return out

    def encode(self, x, *, train: bool = False):
        """Steps 1-3: frames [B, F, H, W, C] -> (tokens [B, F*256, D], mean, std [B, F, 1, 1, C]).
        A frame's tokens and statistics depend on that frame alone."""
        b, f = x.shape[:2]
        xn, mean, std = normalize(x, self.policy)  # 1.
        if train and self.config.noise_level > 0:  # 2. Noise injection, training only.
            noise = jax.random.normal(self.make_rng("noise"), xn.shape, jnp.float32)
            xn = (xn + self.config.noise_level * noise).astype(self.policy.compute_dtype)
        return self.encoder_2d(xn.reshape(b * f, *xn.shape[2:]), b), mean, std  # 3.

    def decode(self, hidden, mean, std):
        """Steps 5-6: hidden states [B, F*256, D] -> frames [B, F, H, W, C], denormalized
        with the statistics of the frames they follow."""
        return denormalize(self.decoder_2d(hidden), mean, std, self.policy)


def normalize(x, policy: Policy):
    """Step 1: x [B, T, H, W, C] normalized over (H, W) per sample/frame/channel with the
    unbiased std + 1e-6 -> (xn in the compute dtype, mean, std [B, T, 1, 1, C]). The
    statistics accumulate in float32 and are rounded to the stats dtype (torch reduces
    bf16 with a float32 accumulator and returns bf16)."""
    stats_dtype = policy.stats_dtype
    xs = x.astype(stats_dtype)
    xf = xs.astype(jnp.float32)
    mean = xf.mean(axis=(2, 3), keepdims=True).astype(stats_dtype)
    std = (xf.std(axis=(2, 3), ddof=1, keepdims=True).astype(stats_dtype) + STD_EPS).astype(stats_dtype)
    return ((xs - mean) / std).astype(policy.compute_dtype), mean, std


def denormalize(dec, mean, std, policy: Policy):
    """Step 6: the decoder's output with the statistics of the same input frame."""
    out_dtype = policy.output_dtype
    return dec.astype(out_dtype) * std.astype(out_dtype) + mean.astype(out_dtype)


def forward_frames(model: PDECausalModel, params, frames, *, train: bool = False, rngs=None):
    """The model on input frames [B, T, H, W, C] (C = the model's channels, or 2 for
    (u, v), zero-padded here) -> its output [B, T, H, W, C] in float32, output frame k
    predicting the state one step after input frame k. The input is cast to
    the model's `policy.input_dtype` (bf16 under `reference`, as in the PyTorch recipe).
    The one forward on frames that training, evaluation and prediction share."""
    out = model.apply({"params": params}, model_input(model, frames), train=train, rngs=rngs)
    return out[..., :frames.shape[-1]].astype(jnp.float32)


def model_input(model: PDECausalModel, frames):
    """Frames [..., C] as the model takes them: (u, v) zero-padded to the model's channels,
    cast to its `policy.input_dtype`."""
    missing = model.config.in_channels - frames.shape[-1]
    if missing > 0:  # (u, v) only: the model's other channels are zero
        frames = jnp.pad(frames, ((0, 0),) * (frames.ndim - 1) + ((0, missing),))
    return frames.astype(model.policy.input_dtype)


def forward_and_rollout(model: PDECausalModel, params, frames, steps: int):
    """`forward_frames(model, params, frames)` and the autoregressive rollout from the same
    window, in one program: -> (one-step output [B, T, H, W, c], rollout [B, steps, H,
    W, c]), float32, c = frames' channels. Rollout step h feeds the window of the last T
    frames (predictions included) to the model and keeps its last output frame; its first
    step is the one-step output's last frame.

    The same numbers as calling `forward_frames` on each window, with less work per step:
    a frame's encoder tokens and its normalization statistics depend on that frame alone,
    so each new frame is encoded once and the window's tokens slide (the transformer
    still sees the whole window: block-causal attention from the window's first frame
    changes every hidden state when the window moves), and only the last frame is
    decoded. Per step: encoder and decoder on one frame instead of T; the transformer is
    compiled once for the one-step pass and the rollout."""
    config = model.config
    c = frames.shape[-1]
    b, t = frames.shape[:2]
    model.check_input(jax.ShapeDtypeStruct((b, t) + frames.shape[2:4] + (config.in_channels,), jnp.float32))
    variables = {"params": params}
    tokens_per_frame = config.tokens_per_frame

    def encode(x):  # [B, F, H, W, C] -> tokens [B, F*256, D], mean, std
        return model.apply(variables, x, method=PDECausalModel.encode)

    def decode(hidden, mean, std):  # -> [B, F, H, W, c] float32
        return model.apply(variables, hidden, mean, std, method=PDECausalModel.decode)[..., :c].astype(jnp.float32)

    def run(tokens):
        return model.apply(variables, tokens, method=lambda m, x: m.transformer(x))

    tokens, mean, std = encode(model_input(model, frames))
    if steps < 1:
        one_step = decode(run(tokens), mean, std)
        return one_step, one_step[:, :0]

    def step(carry, h):
        tokens, mean_last, std_last, first_hidden = carry  # the window's tokens; the stats of its last frame
        hidden = run(tokens)
        # The first window's hidden states are the one-step pass: kept, so that the
        # transformer is compiled once (inside this loop), not once more outside it.
        first_hidden = jnp.where(h == 0, hidden, first_hidden)
        nxt = decode(hidden[:, -tokens_per_frame:], mean_last, std_last)
        new_tokens, mean_new, std_new = encode(model_input(model, nxt))
        tokens = jnp.concatenate([tokens[:, tokens_per_frame:], new_tokens], axis=1)
        return (tokens, mean_new, std_new, first_hidden), nxt[:, 0]

    d = config.transformer.hidden_size
    init = (tokens, mean[:, -1:], std[:, -1:], jnp.zeros((b, t * tokens_per_frame, d), tokens.dtype))
    (_, _, _, first_hidden), rolled = jax.lax.scan(step, init, jnp.arange(steps))
    return decode(first_hidden, mean, std), jnp.moveaxis(rolled, 0, 1)


def init_params(config: ModelConfig, rng: jax.Array, policy: Policy = FLOAT32) -> dict:
    """Fresh params (plain nested dict) for `config`; adapters (PEFT init) when `config.lora.r > 0`.

    Base weights use torch's default inits (norm weights 1, biases as torch); the tree
    is then cast with `cast_params(params, policy)`.
    """
    model = PDECausalModel(config)
    x = jnp.zeros((1, 1, RESOLUTION, RESOLUTION, config.in_channels), jnp.float32)
    # Threefry-based init compiles for ~35 s on XLA:CPU (one unrolled generator per
    # leaf); a counter-based RngBitGenerator key derived from `rng` compiles in ~5 s.
    if jnp.issubdtype(getattr(rng, "dtype", None), jax.dtypes.prng_key):
        rng = jax.random.key_data(rng)
    init_key = jax.random.wrap_key_data(jnp.tile(jnp.ravel(rng).astype(jnp.uint32), 2)[:4], impl="unsafe_rbg")
    variables = jax.jit(model.init)({"params": init_key}, x)
    return cast_params(flax.core.unfreeze(variables["params"]), policy)  # plain dicts, not FrozenDict


def param_shapes(config: ModelConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Leaf path -> shape of the base (adapter-free) model of `config`, by `jax.eval_shape`
    of its init (no compute). Cached: tracing the 128x128 init takes seconds."""
    return dict(_base_param_shapes(config.with_lora(r=0)))


@functools.lru_cache(maxsize=16)
def _base_param_shapes(base: ModelConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    tree = jax.eval_shape(lambda: init_params(base, jax.random.key(0)))
    return {p: tuple(v.shape) for p, v in flatten(tree).items() if not is_adapter(p)}
