"""One layer's block-causal attention, forward and forward+backward, each implementation.

    python scripts/bench/attention.py [--batch 1] [--frames 16] [--heads 8,2] [--head-dim 16]
                                      [--dtype float32] [--impls flash,einsum]

The small architecture's shapes by default (8 query / 2 key-value heads, head dim 16,
T = 16 frames of 256 tokens); `--heads 12,4 --head-dim 64` for the full size. Random
q/k/v and output cotangent; medians of interleaved runs after a warm-up; the gradients'
largest relative difference against the first implementation listed, as a check.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import jax
import jax.numpy as jnp

from burgers_jax.model import attention


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--heads", default="8,2", help="query heads, key-value heads")
    ap.add_argument("--head-dim", type=int, default=16)
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--impls", default="flash,einsum")
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args(argv)
    nh, nkv = (int(v) for v in args.heads.split(","))
    hd, tpf = args.head_dim, 256
    s, dtype = args.frames * tpf, jnp.dtype(args.dtype)
    keys = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(keys[0], (args.batch, s, nh, hd), dtype)
    k = jax.random.normal(keys[1], (args.batch, s, nkv, hd), dtype)
    v = jax.random.normal(keys[2], (args.batch, s, nkv, hd), dtype)
    do = jax.random.normal(keys[3], (args.batch, s, nh * hd), dtype)
    fns, first, ref = {}, {}, None
    for impl in args.impls.split(","):
        f = lambda q, k, v, impl=impl: attention.attend(q, k, v, impl, tpf, hd ** -0.5, dtype)  # noqa: E731
        fwd = jax.jit(f)
        fwd_bwd = jax.jit(lambda q, k, v, f=f: jax.vjp(f, q, k, v)[1](do))
        t0 = time.perf_counter()
        grads = jax.block_until_ready(fwd_bwd(q, k, v))
        first[impl] = time.perf_counter() - t0
        jax.block_until_ready(fwd(q, k, v))
        ref = grads if ref is None else ref
        err = max(float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))
                  / float(jnp.max(jnp.abs(b.astype(jnp.float32)))) for a, b in zip(grads, ref))
        print(f"{impl}: compile + first forward+backward {first[impl]:.1f} s; gradients vs the first: max rel {err:.1e}")
        fns[f"{impl} forward"] = lambda fwd=fwd: jax.block_until_ready(fwd(q, k, v))
        fns[f"{impl} forward+backward"] = lambda fb=fwd_bwd: jax.block_until_ready(fb(q, k, v))
    times = {name: [] for name in fns}
    for _ in range(args.runs):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    print(f"\nB {args.batch}, T {args.frames}, heads {nh}/{nkv}, hd {hd}, {args.dtype}, medians of {args.runs}:")
    for name, ts in times.items():
        print(f"  {name}: {1e3 * statistics.median(ts):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
