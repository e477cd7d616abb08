"""Block-causal grouped-query attention, one semantics (HF Llama): scaled scores,
softmax in float32, times V. A query token of frame `a` attends to every key token of
frames `b <= a`. No implementation that `auto` picks materialises the [S, S] scores of a
head, on any backend (S = T*256: 4096 tokens at T = 16, 64 MiB per head in float32).

Shapes: B batch, S = T*256 tokens, K key/value heads, G = query heads per KV head,
hd head dim; query head `kv*G + g` uses KV head `kv` (HF's `repeat_kv` order).

- `flash` (the default on every backend): blockwise attention with an online softmax
  (Rabe & Staats, "Self-attention does not need O(n^2) memory"; Dao's FlashAttention),
  where a block is one frame: the queries of frame `i` (its 256 tokens times the G
  query heads of a KV head, one [256*G, hd] matrix) stream the keys of frames 0..i one
  frame at a time. The mask is the loop bound, so no score is masked and no masked
  block is computed; a score block is [256*G, 256] (1 MiB in float32 at G = 4), small
  enough to stay in the core's L2 cache between its product, its exp and the next
  product. A custom VJP keeps only O and the row log-sum-exp, recomputes each block's
  scores in the backward (FlashAttention-2's order: key frames outer, their dK/dV
  carried by the loop, dQ accumulated in place) and takes the softmax gradient from
  `rowsum(dO * O)`. It computes in float32 under every policy (`flash`'s comment says
  why), so under the bf16 policies its scores and probabilities are not rounded to bf16
  between the products, as in fused kernels (PyTorch's SDPA, cuDNN), unlike HF's eager
  path. Measured (`scripts/bench/attention.py`, one layer, B 1, T 16, 8/2 heads, hd 16,
  float32, 2-core CPU): forward 35 ms and forward+backward 84 ms, against 830 / 2500 ms
  for `einsum`.
- `cudnn` (GPU, bf16): cuDNN's fused flash attention through
  `jax.nn.dot_product_attention(implementation="cudnn")`, one call per query frame `a`
  on the key prefix [0, 256*(a+1)) with no mask at all: the block-causal mask becomes
  the key length, so nothing masked is computed and no score leaves the kernel.
  `cudnn_lengths` is the same as one call: the queries of each frame as their own batch
  row against the whole key sequence, cut by `key_value_seq_lengths`. Both are tested
  on the CPU through the same reshaping with `implementation="xla"`
  (`framewise(..., implementation="xla")`).
- `einsum`: the whole [B, K, G, S, S] score tensor at once with the mask: the plain
  reference for tests, never picked by `auto`.
- `auto`: `flash` everywhere until a GPU-only kernel has been measured on a GPU
  (docs/performance.md, "On a GPU").

`attend` keeps the implementation's own residuals for the backward under the name
`residual_name` (`jax.ad_checkpoint.checkpoint_name`), so that a rematerialisation
policy that saves that name (`model.remat=projections`) never runs the attention
forward twice.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

IMPLS = ("auto", "flash", "cudnn", "cudnn_lengths", "einsum")
F32 = jnp.float32


def resolve(impl: str, backend: str | None = None, dtype=F32) -> str:
    """`auto` -> the implementation for `backend` (default: JAX's) and compute dtype.
    Today `flash` for every backend and dtype: it is the one path proven memory-safe
    here, and a GPU-only kernel becomes a GPU's default only after a GPU run has measured
    it (`cudnn` is the candidate for bf16 trunks; scripts/bench/gpu.sh). The arguments
    are the question `auto` answers, so that callers (tests/model/test_memory.py,
    scripts/bench/cost_analysis.py) ask it per backend and keep asking when the answer changes."""
    if impl not in IMPLS:
        raise ValueError(f"attention_impl={impl!r} is not one of {IMPLS}")
    if impl == "auto":
        return "flash"
    return impl


def block_causal_mask(seq_len: int, tokens_per_frame: int) -> jax.Array:
    """[S, S] bool, True where query token q may see key token k: frame(k) <= frame(q)."""
    frame = jnp.arange(seq_len) // tokens_per_frame
    return frame[None, :] <= frame[:, None]


def eager(q, k, v, allowed, scale, dtype):
    """q [B, Sq, K, G, hd], k/v [B, S, K, hd], allowed [Sq, S] -> [B, Sq, K, G, hd]."""
    scores = jnp.einsum("bqkgd,bskd->bkgqs", q, k) * jnp.asarray(scale, dtype)
    scores = jnp.where(allowed, scores.astype(F32), -jnp.inf)
    probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
    return jnp.einsum("bkgqs,bskd->bqkgd", probs, v)


# ----------------------------------------------------------------------------- flash

# Layout inside: q [B, K, T, R = 256*G, hd] (a frame's rows ordered token, head), k/v
# [B, K, T, N = 256, hd], all float32; the loops index the frame axis 2.


def _frame(x, i):
    return jax.lax.dynamic_index_in_dim(x, i, 2, keepdims=False)


@jax.custom_vjp
def _flash(q, k, v):
    return _flash_fwd(q, k, v)[0]


def _flash_fwd(q, k, v):
    b, nkv, t, r, hd = q.shape

    def query_frame(_, i):
        q_i = _frame(q, i)

        def key_frame(j, carry):  # online softmax: running max m, denominator l, numerator acc
            m, l, acc = carry
            s = jnp.einsum("bkrd,bknd->bkrn", q_i, _frame(k, j))
            m_new = jnp.maximum(m, s.max(-1))
            rescale = jnp.exp(m - m_new)
            p = jnp.exp(s - m_new[..., None])
            acc = acc * rescale[..., None] + jnp.einsum("bkrn,bknd->bkrd", p, _frame(v, j))
            return m_new, l * rescale + p.sum(-1), acc

        init = (jnp.full((b, nkv, r), -jnp.inf, F32), jnp.zeros((b, nkv, r), F32), jnp.zeros((b, nkv, r, hd), F32))
        m, l, acc = jax.lax.fori_loop(0, i + 1, key_frame, init)  # the block-causal mask: frames 0..i
        return None, (acc / l[..., None], m + jnp.log(l))

    _, (o, lse) = jax.lax.scan(query_frame, None, jnp.arange(t))
    o, lse = jnp.moveaxis(o, 0, 2), jnp.moveaxis(lse, 0, 2)
    return o, (q, k, v, o, lse)


def _flash_bwd(res, do):
    q, k, v, o, lse = res
    t = q.shape[2]
    delta = jnp.sum(do * o, axis=-1)  # rowsum(dO * O): the softmax gradient's shift

    def key_frame(dq, j):
        k_j, v_j = _frame(k, j), _frame(v, j)

        def query_frame(i, carry):  # every query frame i >= j sees key frame j
            dq, dk, dv = carry
            q_i, do_i = _frame(q, i), _frame(do, i)
            p = jnp.exp(jnp.einsum("bkrd,bknd->bkrn", q_i, k_j) - _frame(lse, i)[..., None])  # recomputed
            dv = dv + jnp.einsum("bkrn,bkrd->bkdn", p, do_i)
            ds = p * (jnp.einsum("bkrd,bknd->bkrn", do_i, v_j) - _frame(delta, i)[..., None])
            dq = jax.lax.dynamic_update_index_in_dim(dq, _frame(dq, i) + jnp.einsum("bkrn,bknd->bkrd", ds, k_j), i, 2)
            return dq, dk + jnp.einsum("bkrn,bkrd->bkdn", ds, q_i), dv

        # dK/dV transposed, [B, K, hd, N]: XLA:CPU contracts over the rows 3-4x faster
        # into this layout than into [B, K, N, hd] (measured, one frame block).
        zero = jnp.zeros(k_j.shape[:2] + k_j.shape[:1:-1], F32)
        dq, dk, dv = jax.lax.fori_loop(j, t, query_frame, (dq, zero, zero))
        return dq, (dk, dv)

    dq, (dk, dv) = jax.lax.scan(key_frame, jnp.zeros_like(q), jnp.arange(t))
    dk, dv = (jnp.moveaxis(x, 0, 2).swapaxes(-1, -2) for x in (dk, dv))
    return dq, dk, dv


_flash.defvjp(_flash_fwd, _flash_bwd)


def flash(q, k, v, tokens_per_frame: int, scale: float):
    """Block-causal attention by frame blocks (module docstring).
    q [B, S, K, G, hd], k/v [B, S, K, hd] -> [B, S, K, G, hd] in q's dtype."""
    b, s, nkv, g, hd = q.shape
    t = s // tokens_per_frame
    dtype = q.dtype
    # The scale goes on the queries, outside the custom VJP (autodiff carries it to dQ):
    # one pass over q instead of one over every score block; exact where the scale is a
    # power of two (hd**-0.5 for hd 16, 64, 256). Then float32 inside, whatever the compute
    # dtype: bf16 products are no faster on XLA:CPU at these shapes and each rounding
    # between them is one more pass over a score block (measured, hd 16, forward+backward:
    # bf16 products 126 ms, widened to float32 86 ms, float32 87 ms).
    q = (q * jnp.asarray(scale, dtype)).astype(F32)
    qh = q.transpose(0, 2, 1, 3, 4).reshape(b, nkv, t, tokens_per_frame * g, hd)
    kh, vh = (x.astype(F32).transpose(0, 2, 1, 3).reshape(b, nkv, t, tokens_per_frame, hd) for x in (k, v))
    o = _flash(qh, kh, vh)
    return o.reshape(b, nkv, s, g, hd).transpose(0, 2, 1, 3, 4).astype(dtype)


# ----------------------------------------------------------------------------- fused kernels


def framewise(q, k, v, tokens_per_frame: int, scale: float, implementation: str | None = "cudnn"):
    """`cudnn`: q [B, S, Hq, hd], k/v [B, S, K, hd] -> [B, S, Hq, hd], one maskless
    `jax.nn.dot_product_attention` per query frame on its key prefix."""
    n, t = tokens_per_frame, q.shape[1] // tokens_per_frame
    return jnp.concatenate([
        jax.nn.dot_product_attention(q[:, a * n:(a + 1) * n], k[:, :(a + 1) * n], v[:, :(a + 1) * n], scale=scale,
                                     implementation=implementation) for a in range(t)], axis=1)


def by_lengths(q, k, v, tokens_per_frame: int, scale: float, implementation: str | None = "cudnn"):
    """`cudnn_lengths`: the frames of each sample as batch rows [B*T, 256, Hq, hd], each
    against the sample's whole key sequence cut at its frame's end by
    `key_value_seq_lengths` -> [B, S, Hq, hd]."""
    b, s, nh, hd = q.shape
    n, t = tokens_per_frame, s // tokens_per_frame
    rows = q.reshape(b * t, n, nh, hd)
    keys, values = (jnp.broadcast_to(x[:, None], (b, t) + x.shape[1:]).reshape((b * t,) + x.shape[1:]) for x in (k, v))
    lengths = jnp.tile(n * jnp.arange(1, t + 1, dtype=jnp.int32), b)  # row (sample, frame a): keys [0, 256 (a+1))
    out = jax.nn.dot_product_attention(rows, keys, values, scale=scale, key_value_seq_lengths=lengths,
                                       implementation=implementation)
    return out.reshape(b, s, nh, hd)


def _keeping_residuals(fn, name: str):
    """`fn` with the same values and gradients, whose backward residuals (whatever the
    implementation keeps: flash's O and log-sum-exp, cuDNN's output and softmax
    statistics, with the inputs) are tagged `name` for rematerialisation policies."""

    @jax.custom_vjp
    def wrapped(q, k, v):
        return fn(q, k, v)

    def fwd(q, k, v):
        out, vjp = jax.vjp(fn, q, k, v)  # vjp is a pytree whose leaves are the residuals
        return out, jax.tree.map(lambda r: checkpoint_name(r, name), vjp)

    wrapped.defvjp(fwd, lambda vjp, g: vjp(g))
    return wrapped


def attend(q, k, v, impl: str, tokens_per_frame: int, scale: float, dtype, residual_name: str | None = None):
    """q [B, S, Hq, hd], k/v [B, S, K, hd] -> [B, S, Hq*hd] with the block-causal mask.
    `residual_name`: tag of what the backward keeps (module docstring)."""
    b, s, nh, hd = q.shape
    nkv = k.shape[2]
    impl = resolve(impl, dtype=dtype)
    if impl == "flash":
        def fn(q, k, v):
            return flash(q.reshape(b, s, nkv, nh // nkv, hd), k, v, tokens_per_frame, scale)
    elif impl == "einsum":
        def fn(q, k, v):
            return eager(q.reshape(b, s, nkv, nh // nkv, hd), k, v, block_causal_mask(s, tokens_per_frame), scale, dtype)
    else:
        if jnp.dtype(dtype) == F32:
            raise ValueError(f"attention_impl={impl!r} runs cuDNN's bf16/fp16 kernel; the float32 policy takes "
                             "'flash' (or 'auto')")
        fn = functools.partial(framewise if impl == "cudnn" else by_lengths, tokens_per_frame=tokens_per_frame,
                               scale=scale, implementation="cudnn")
    if residual_name is None:
        return fn(q, k, v).reshape(b, s, nh * hd)
    # The output too: o_proj's adapter takes it as input, and a policy that kept only the
    # residuals would run the attention forward again to get it back.
    out = checkpoint_name(_keeping_residuals(fn, residual_name)(q, k, v), residual_name)
    return out.reshape(b, s, nh * hd)
