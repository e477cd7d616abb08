"""Block-causal grouped-query attention, three ways, one semantics (HF Llama): scaled
scores, softmax in float32, times V. A query token of frame `a` attends to every key
token of frames `b <= a`.

Shapes: B batch, S = T*256 tokens, K key/value heads, G = query heads per KV head,
hd head dim; query head `kv*G + g` uses KV head `kv` (HF's `repeat_kv` order).

- `flash` (the default off GPU): blockwise attention with an online softmax (Rabe &
  Staats, "Self-attention does not need O(n^2) memory"; Dao's FlashAttention), where a
  block is one frame: the queries of frame `i` (its 256 tokens times the G query heads
  of a KV head, one [256*G, hd] matrix) stream the keys of frames 0..i one frame at a
  time. The mask is the loop bound, so no score is masked and no masked block is
  computed; a score block is [256*G, 256] (1 MiB in float32 at G = 4), small enough to
  stay in the core's L2 cache between its product, its exp and the next product,
  where the former whole-group blocks (128 MiB) went through memory on every pass. A
  custom VJP keeps only O and the row log-sum-exp, recomputes each block's scores in
  the backward (FlashAttention-2's order: key frames outer, their dK/dV carried by the
  loop, dQ accumulated in place) and takes the softmax gradient from `rowsum(dO * O)`.
  It computes in float32 under every policy (`flash`'s comment says why), so under the
  bf16 policies its scores and probabilities are not rounded to bf16 between the
  products, as in fused kernels (PyTorch's SDPA, cuDNN), unlike HF's eager path.
  Measured (`scripts/bench_attention.py`, one layer, B 1, T 16, 8/2 heads, hd 16,
  float32, 2-core CPU): forward 35 ms and forward+backward 84 ms, against 165 / 506 ms
  for the former frame-group path and 830 / 2500 ms for `einsum`.
- `einsum`: the whole [B, K, G, S, S] score tensor at once with the mask (the plain
  reference, memory-hungry).
- `dot_product_attention`: `jax.nn.dot_product_attention` with the mask (XLA picks a
  fused kernel on GPU, cuDNN where available).
- `auto` (the default): `dot_product_attention` on GPU, `flash` elsewhere.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

IMPLS = ("auto", "flash", "einsum", "dot_product_attention")
F32 = jnp.float32


def resolve(impl: str) -> str:
    """`auto`: the fused kernel where the backend has one (GPU: cuDNN through
    `jax.nn.dot_product_attention`), else `flash` (CPU: fastest measured)."""
    if impl == "auto":
        return "dot_product_attention" if jax.default_backend() == "gpu" else "flash"
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


def attend(q, k, v, impl: str, tokens_per_frame: int, scale: float, dtype):
    """q [B, S, Hq, hd], k/v [B, S, K, hd] -> [B, S, Hq*hd] with the block-causal mask."""
    b, s, nh, hd = q.shape
    nkv = k.shape[2]
    impl = resolve(impl)
    if impl == "flash":
        out = flash(q.reshape(b, s, nkv, nh // nkv, hd), k, v, tokens_per_frame, scale)
    elif impl == "einsum":
        out = eager(q.reshape(b, s, nkv, nh // nkv, hd), k, v, block_causal_mask(s, tokens_per_frame), scale, dtype)
    elif impl == "dot_product_attention":
        mask = block_causal_mask(s, tokens_per_frame)[None, None]
        out = jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale)
    else:
        raise ValueError(f"attention_impl={impl!r} is not one of {IMPLS}")
    return out.reshape(b, s, nh * hd)
