"""What one rollout step of an evaluation costs, against one forward pass of the model.

    python scripts/bench/rollout.py [--frames 16] [--steps 16] [--batch 2] [--out rollout.json]

The small architecture (as `scripts/bench/step.py`), float32, random weights. Timed, each
jitted and interleaved (medians, `block_until_ready`):

- `forward`: one `forward_frames` on a T-frame window (what one-step evaluation runs);
- `per_window`: the plain autoregressive loop, one whole forward per rollout step under a
  `lax.scan` (how `burgers-evaluate` rolled out before: every step re-encodes the T - 1
  frames it had already encoded and decodes T frames to keep one);
- `forward_and_rollout`: the evaluation's program now (`network.forward_and_rollout`):
  the one-step output and the rollout from it, each new frame encoded once and only it
  decoded.

Per rollout step = (program with N steps - forward) / N, reported beside the forward.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    from burgers_jax.model.config import architecture
    from burgers_jax.model.network import PDECausalModel, forward_and_rollout, forward_frames, init_params

    config = architecture("small").with_lora(r=16, alpha=32.0)
    params = init_params(config, jax.random.key(0))
    model = PDECausalModel(config)
    t, n = args.frames, args.steps
    x = jax.random.normal(jax.random.key(1), (args.batch, t, 128, 128, 2)) * 0.3 + 1.0

    def per_window(p, x):
        def body(win, _):
            nxt = forward_frames(model, p, win)[:, -1:]
            return jnp.concatenate([win[:, 1:], nxt], axis=1), nxt[:, 0]

        return forward_frames(model, p, x), jax.lax.scan(body, x, None, length=n)[1]

    fns = {"forward": jax.jit(lambda p, x: forward_frames(model, p, x)),
           "per_window": jax.jit(per_window),
           "forward_and_rollout": jax.jit(lambda p, x: forward_and_rollout(model, p, x, n))}
    compile_s = {}
    for k, f in fns.items():
        t0 = time.perf_counter()
        jax.block_until_ready(f(params, x))
        compile_s[k] = time.perf_counter() - t0
    times = {k: [] for k in fns}
    for _ in range(args.runs):
        for k, f in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(params, x))
            times[k].append(time.perf_counter() - t0)
    med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    fwd = med["forward"]
    out = {"config": vars(args) | {"out": str(args.out)}, "median_ms": med, "first_call_s": compile_s,
           "per_step_ms": {k: (med[k] - fwd) / n for k in ("per_window", "forward_and_rollout")}}
    print(f"B {args.batch}, T {t}, {n} rollout steps, float32, small architecture (medians of {args.runs}):")
    print("| program | first call s | median ms | per rollout step ms | per step / one forward |")
    print("|---|---|---|---|---|")
    for k in fns:
        step = out["per_step_ms"].get(k)
        cells = f"{step:.0f} | {step / fwd:.2f}" if step is not None else "— | 1 (the forward)"
        print(f"| {k} | {compile_s[k]:.1f} | {med[k]:.0f} | {cells} |")
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
