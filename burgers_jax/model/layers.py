"""Building blocks of `PDECausalModel` with PyTorch semantics made explicit.

Every layer here reproduces the torch module it replaces, not the Flax default:

- `gelu`: the exact erf form (`nn.GELU()` in torch); Flax/JAX default to tanh.
- `GroupNorm`: 8 groups, eps 1e-5 *inside* the square root of the biased variance,
  as `torch.nn.GroupNorm` (Flax's `nn.GroupNorm` defaults to 32 groups, eps 1e-6).
  Statistics are computed in float32 and the result cast back to the compute dtype
  (torch's CPU/GPU kernels accumulate bf16 in float32 too).
- `Conv2d`: 3x3 convs pad with **replicate** (edge) padding of 1, so stride 2 maps
  128 -> 64 exactly as torch (`padding="SAME"` would pad asymmetrically and with zeros);
  computed as a zero-padded conv plus the ghost cells' contribution
  (`conv3x3_replicate`). 1x1 convs have no padding.
- `ConvTranspose2d(k=4, s=2, p=1)`: torch's transposed conv is a forward conv over
  the input dilated by the stride, zero padded by `k - 1 - p = 2` on each side, with
  the kernel flipped spatially and in/out swapped. The stored Flax kernel is that
  forward-conv kernel: `[kh, kw, in, out]`, already flipped
  (`kernel[h, w, i, o] = torch_weight[i, o, k-1-h, k-1-w]`; see burgers_jax/porting/mapping.py).
- `Linear`: kernel `[in, out]` (torch `[out, in]` transposed), optional bias, and an
  optional LoRA adapter with PEFT semantics (below).
- `RMSNorm`: as HF Llama: float32 `x * rsqrt(mean(x^2) + eps)`, cast back to the
  input dtype, times `weight`.

Dtype policy: parameters are stored in whatever dtype the tree holds (bf16 for a
converted checkpoint, float32 for fresh init) and cast at use to the module's
`dtype` (the compute dtype), so the same tree runs under every precision policy.

Shapes: N = B*T images, H/W grid, C channels, S tokens, D hidden, r LoRA rank.
Images are channels-last (NHWC) throughout.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Dtype = Any

GROUPS = 8
GROUP_NORM_EPS = 1e-5
_CONV_DIMS = ("NHWC", "HWIO", "NHWC")


def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, torch's `nn.GELU()` default."""
    return jax.nn.gelu(x, approximate=False)


def dropout(x: jax.Array, rate: float, key: jax.Array) -> jax.Array:
    """Inverted dropout (torch's `nn.Dropout`: zero with probability `rate`, scale the rest
    by 1/(1 - rate)), its mask drawn by XLA's own ThreeFry bit generator from `key`.
    `jax.random.bernoulli` expands ThreeFry into XLA integer arithmetic, which on the CPU
    takes ~11 ns a draw: the LoRA dropout masks of the full-size step (3e7 draws per layer)
    took 4.6 s of a 19.6 s float32 step. `lax.rng_bit_generator` computes the same kind
    of counter-based stream in ~2.7 ns (measured, 12.6 M draws: 146 vs 34 ms). The drop
    probability is `rate` to 2^-32; the mask is a pure function of `key`."""
    words = jax.random.bits(key, (4,), jnp.uint32)  # the generator's state, from the stream's key
    _, bits = lax.rng_bit_generator(words, x.shape, jnp.uint32, algorithm=lax.RandomAlgorithm.RNG_THREE_FRY)
    threshold = jnp.uint32(min(round(rate * 2.0**32), 2**32 - 1))
    return jnp.where(bits >= threshold, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))


def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """`x @ w` accumulated in float32 and rounded once to the inputs' dtype, as torch's
    bf16 matmul does. For bf16 this is also the fast path on XLA:CPU, which runs a bf16
    dot with a float32 result on the CPU's bf16 instructions (measured 3.4x faster than
    float32 and than a bf16-result dot, 4096x768x3072); for float32 it is the plain dot."""
    return jnp.dot(x, w, preferred_element_type=jnp.float32).astype(x.dtype)


def torch_default_kernel_init(fan_in_axes: tuple[int, ...]):
    """torch's default Linear/Conv init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""

    def init(key, shape, dtype=jnp.float32):
        fan_in = math.prod(shape[a] for a in fan_in_axes)
        bound = 1.0 / math.sqrt(fan_in)
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def uniform_init(bound: float):
    """U(-bound, bound), torch's default bias init with bound = 1/sqrt(fan_in)."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def peft_lora_a_init(key, shape, dtype=jnp.float32):
    """PEFT's `kaiming_uniform_(A, a=sqrt(5))` on torch's `[r, in]` weight, stored `[in, r]`.

    gain = sqrt(2 / (1 + a^2)) = sqrt(1/3); bound = gain * sqrt(3 / fan_in) = 1/sqrt(in).
    """
    fan_in = shape[0]
    bound = math.sqrt(2.0 / (1.0 + 5.0)) * math.sqrt(3.0 / fan_in)
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def conv(x, w, stride: int = 1, padding="VALID", lhs_dilation=None):
    """An NHWC/HWIO convolution (no dtype handling: the modules below run it in float32)."""
    return lax.conv_general_dilated(x, w, (stride, stride), padding, lhs_dilation=lhs_dilation,
                                    dimension_numbers=_CONV_DIMS)


def in_float32(x, kernel, bias, dtype):
    """The inputs of a convolution rounded to the compute dtype, then widened to float32.

    A convolution in the compute dtype is run as a float32 one on these and rounded once
    at the end, bias included, which is what torch's bf16 convolutions (oneDNN, cuDNN)
    compute: products of bf16 values are exact in float32 and the sum accumulates in
    float32. On XLA:CPU, which has no bf16 convolution kernel and emulates one with
    conversions around every convolution (the ghost-cell ones included), this runs the
    encoder and decoder 1.6-2.5x faster under the bf16 policies (measured, B 1, T 16)."""
    f32 = jnp.float32
    return tuple(a.astype(dtype).astype(f32) for a in (x, kernel, bias))


def conv3x3_replicate(x, w, stride: int):
    """torch's 3x3 conv with `padding=1, padding_mode="replicate"` (NHWC, kernel HWIO).

    Computed as the zero-padded conv plus what the ghost cells add: the padded input is
    the zero-padded one plus a ring that holds the edge values, and a ring only reaches
    the outermost outputs, through one row or column of the kernel (small 1-D convs; the
    corners ride with the top and bottom rows). Same values as padding with copies of
    the edges first (`jnp.pad(mode="edge")` then a VALID conv), but XLA:CPU runs that
    copy-then-conv 1.3-2.9x slower than a padded conv (measured at the model's sizes).
    """
    _, h, wd, _ = x.shape
    y = conv(x, w, stride, ((1, 1), (1, 1)))
    ho, wo = y.shape[1:3]
    row = lambda r: jnp.pad(x[:, r], ((0, 0), (0, 0), (1, 1), (0, 0)), mode="edge")  # noqa: E731  [N,1,W+2,C]
    y = y.at[:, :1].add(conv(row(slice(0, 1)), w[:1], stride, "VALID")[:, :, :wo])  # top ghost row
    y = y.at[:, :, :1].add(conv(x[:, :, :1], w[:, :1], stride, ((1, 1), (0, 0)))[:, :ho])  # left column
    if (ho - 1) * stride + 1 >= h:  # the last window reaches the bottom ghost row (stride 1)
        y = y.at[:, -1:].add(conv(row(slice(h - 1, h)), w[2:], stride, "VALID")[:, :, :wo])
    if (wo - 1) * stride + 1 >= wd:
        y = y.at[:, :, -1:].add(conv(x[:, :, -1:], w[:, 2:], stride, ((1, 1), (0, 0)))[:, :ho])
    return y


class Conv2d(nn.Module):
    """torch Conv2d with replicate padding (3x3, pad 1) or none (1x1). NHWC in/out."""

    features: int
    kernel_size: int = 3
    stride: int = 1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        cin = x.shape[-1]
        kernel = self.param("kernel", torch_default_kernel_init((0, 1, 2)), (k, k, cin, self.features),
                            self.param_dtype)
        bias = self.param("bias", uniform_init(1.0 / math.sqrt(k * k * cin)), (self.features,), self.param_dtype)
        x, kernel, bias = in_float32(x, kernel, bias, self.dtype)
        if k == 3:
            y = conv3x3_replicate(x, kernel, self.stride)
        else:  # 1x1: no padding
            y = conv(x, kernel, self.stride)
        return (y + bias).astype(self.dtype)


def _conv_transpose_dilated(x, kernel, stride: int, edge: int):
    """The transposed conv as a forward conv over the stride-dilated input (XLA lowers
    this to a native transposed conv where it has one, e.g. oneDNN on CPU, cuDNN)."""
    return conv(x, kernel, 1, ((edge, edge), (edge, edge)), lhs_dilation=(stride, stride))


def _conv_transpose_subpixel(x, kernel):
    """The same ConvTranspose(4, 2, 1) as four 2x2 convs, one per output phase, on the
    undilated input (no multiplication by an inserted zero), then interleaved:
    out[2i + a, 2j + b] = conv(xpad[a:, b:], kernel[a::2, b::2])[i, j]."""
    n, h, w, _ = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    phase = [[conv(xp[:, a:a + h + 1, b:b + w + 1], kernel[a::2, b::2]) for b in (0, 1)] for a in (0, 1)]
    out = jnp.stack([jnp.stack(row, axis=3) for row in phase], axis=2)  # [N, H, 2, W, 2, C]
    return out.reshape(n, 2 * h, 2 * w, -1)


@jax.custom_vjp
def conv_transpose_4_2_1(x, kernel):
    """torch ConvTranspose2d(k=4, s=2, p=1) with the stored (flipped HWIO) kernel.

    Forward and input gradient by the dilated form; the kernel gradient by the sub-pixel
    form, since XLA:CPU differentiates the dilated form with respect to its kernel 5-9x
    slower (measured: 110 vs 12 ms for 16x16x16x64 -> 32 channels)."""
    return _conv_transpose_dilated(x, kernel, 2, 2)


def _ct_fwd(x, kernel):
    return conv_transpose_4_2_1(x, kernel), (x, kernel)


def _ct_bwd(res, dy):
    x, kernel = res
    dx = jax.vjp(lambda x_: _conv_transpose_dilated(x_, kernel, 2, 2), x)[1](dy)[0]
    dk = jax.vjp(lambda k_: _conv_transpose_subpixel(x, k_), kernel)[1](dy)[0]
    return dx, dk


conv_transpose_4_2_1.defvjp(_ct_fwd, _ct_bwd)


class ConvTranspose2d(nn.Module):
    """torch ConvTranspose2d(kernel 4, stride 2, padding 1, zero padding): H -> 2H. NHWC.

    Runs as a forward conv on the stride-dilated input padded by k-1-p; the kernel is
    stored flipped, `[kh, kw, in, out]` (module docstring).
    """

    features: int
    kernel_size: int = 4
    stride: int = 2
    padding: int = 1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, s, p = self.kernel_size, self.stride, self.padding
        cin = x.shape[-1]
        # torch's fan_in for ConvTranspose2d weight [in, out, kh, kw] is out*kh*kw.
        kernel = self.param("kernel", torch_default_kernel_init((0, 1, 3)), (k, k, cin, self.features),
                            self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        x, kernel, bias = in_float32(x, kernel, bias, self.dtype)
        if (k, s, p) == (4, 2, 1):
            y = conv_transpose_4_2_1(x, kernel)
        else:
            y = _conv_transpose_dilated(x, kernel, s, k - 1 - p)
        return (y + bias).astype(self.dtype)


class GroupNorm(nn.Module):
    """torch GroupNorm(8, C, eps=1e-5, affine): biased variance over (C/G, H, W)."""

    groups: int = GROUPS
    eps: float = GROUP_NORM_EPS
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n, h, w, c = x.shape
        if c % self.groups:
            raise ValueError(f"GroupNorm({self.groups}) needs channels divisible by {self.groups}, got {c}")
        scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
        g = self.groups
        xf = x.astype(jnp.float32)

        def group_mean(per_channel):  # [N, C] -> the mean of each group, broadcast to [N, 1, 1, C]
            m = per_channel.reshape(n, g, c // g).mean(axis=-1, keepdims=True)
            return jnp.broadcast_to(m, (n, g, c // g)).reshape(n, 1, 1, c)

        # Two passes (mean, then the variance of the deviations), each reducing over the
        # grid with the channels innermost: 3-6x faster on XLA:CPU than reducing a
        # [N, H, W, G, C/G] view, and as accurate (no E[x^2] - E[x]^2 cancellation).
        mean = group_mean(xf.mean(axis=(1, 2)))
        d = xf - mean
        var = group_mean(jnp.square(d).mean(axis=(1, 2)))
        y = d * (lax.rsqrt(var + self.eps) * scale.astype(jnp.float32)) + bias.astype(jnp.float32)
        return y.astype(self.dtype)


class ResBlock(nn.Module):
    """`x + conv_5(gelu(conv_3(conv_2(gelu(conv_0(x))))))`; names follow torch `conv.{0,2,3,5}`."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = gelu(GroupNorm(name="conv_0", **kw)(x))
        h = Conv2d(c, 3, 1, name="conv_2", **kw)(h)
        h = gelu(GroupNorm(name="conv_3", **kw)(h))
        h = Conv2d(c, 3, 1, name="conv_5", **kw)(h)
        return x.astype(self.dtype) + h


class RMSNorm(nn.Module):
    """HF LlamaRMSNorm: float32 statistics, cast back to the input dtype, times weight."""

    eps: float = 1e-5
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        weight = self.param("weight", nn.initializers.ones, (x.shape[-1],), self.param_dtype)
        xf = x.astype(jnp.float32)
        xf = xf * lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + self.eps)
        return weight.astype(x.dtype) * xf.astype(x.dtype)


class Linear(nn.Module):
    """torch Linear (kernel `[in, out]`) with an optional PEFT-style LoRA adapter.

    Adapter (when `lora_rank > 0`): leaves `lora_A` `[in, r]` and `lora_B` `[r, out]`
    beside `kernel`. As PEFT's `lora.Linear.forward`: the base output `y` is computed
    in the compute dtype; x is cast to the adapter's dtype (float32), dropout applied
    (training only, rng stream 'dropout'), `delta = (x A) B * alpha / r`;
    `y = (y + delta)` in float32, cast back to the compute dtype.
    """

    features: int
    use_bias: bool = False
    lora_rank: int = 0
    lora_alpha: float = 0.0
    lora_dropout: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        cin = x.shape[-1]
        kernel = self.param("kernel", torch_default_kernel_init((0,)), (cin, self.features), self.param_dtype)
        y = matmul(x.astype(self.dtype), kernel.astype(self.dtype))
        if self.use_bias:
            bias = self.param("bias", uniform_init(1.0 / math.sqrt(cin)), (self.features,), self.param_dtype)
            y = y + bias.astype(self.dtype)
        if self.lora_rank > 0:
            # Adapters are float32 whatever the base dtype (PEFT keeps them float32 on bf16).
            a = self.param("lora_A", peft_lora_a_init, (cin, self.lora_rank), jnp.float32)
            b = self.param("lora_B", nn.initializers.zeros, (self.lora_rank, self.features), jnp.float32)
            xa = x.astype(a.dtype)
            if train and self.lora_dropout > 0:
                xa = dropout(xa, self.lora_dropout, self.make_rng("dropout"))
            delta = jnp.dot(jnp.dot(xa, a), b) * (self.lora_alpha / self.lora_rank)
            y = (y.astype(delta.dtype) + delta).astype(self.dtype)
        return y
