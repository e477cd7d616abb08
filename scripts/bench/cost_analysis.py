"""What the compiled LoRA step costs: XLA's `cost_analysis()` FLOPs against an analytic
count written out below, and `memory_analysis()` with and without rematerialisation.
Nothing runs: the step is lowered on abstract shapes (`jax.eval_shape`) and compiled.

    python scripts/bench/cost_analysis.py [--batch 4] [--frames 16] [--small] [--remat none,projections,full] [--out cost.json]

The analytic count (one multiply-add = 2 FLOPs; N = B*T images, S = T*256 tokens per
sample, D hidden, L layers, H/K query/key-value heads, hd head dim, I MLP width, r the
LoRA rank, channels c1/c2/c3, m = 2*c3):

forward
  encoder, per image and branch: the stride-2 3x3 convs 3->c1 (64^2 outputs), c1->c2
    (32^2), c2->c3 (16^2), a ResBlock (two 3x3 convs) at each scale; then the 1x1 fusion
    m->m, a ResBlock(m) at 16^2 and the token projection m->D
  transformer, per token and layer: q, o (D x D), k, v (D x K*hd), MLP 3 x D x I; the
    adapters x A B on the seven projections (in*r + r*out each); attention as the
    flash path computes it, the masked blocks skipped: query frame t sees (t+1)*256
    keys, so per sample 256^2 * T(T+1)/2 score pairs per head, each 2*hd FLOPs for
    Q K^T and for P V (the `einsum` path: all (T*256)^2 pairs)
  decoder, per image: the projection D->m, the 1x1 split m->m, ResBlock(m), and per
    branch ResBlock(c3) at 16^2, ConvTranspose c3->c2 (16 taps per input pixel, 16^2
    inputs), ResBlock(c2) at 32^2, c2->c1 (32^2 inputs), ResBlock(c1) at 64^2, c1->3
backward of the LoRA step (frozen weights get no gradient; the encoder none at all)
  decoder: the input gradient of every conv and linear (the forward's FLOPs again)
  transformer: the input gradient of every linear (the forward's linear FLOPs again);
    the adapters' gradients (two products per adapter matmul: 2x their forward);
    attention backward dQ, dK, dV, dP (4 score-sized products) plus the recomputed
    Q K^T (flash's custom VJP keeps no score matrix): 5 units against the forward's 2
    (the `einsum` path's autodiff keeps its scores: 4 units)
Elementwise work (norms, GELU, softmax, the residual, Adam) is left out: the bound
`cost_analysis() <= 1.25 x analytic` leaves it 25 %. Rematerialisation (`model.remat`,
burgers_jax/model/transformer.py REMAT) adds: `full`, the transformer forward once more;
`projections`, the adapters' first products (x A), everything else it recomputes being
elementwise.

XLA's cost analysis counts a loop body once, so the FLOPs are read from the same step
with the transformer layers unrolled (`scan_layers=False`: identical arithmetic) and the
attention as one `einsum` (the flash path loops over frame blocks; its count is exact
by construction, the loop bounds being the mask), checked against the analytic count
of that path; the memory and compile time from the program that runs (layers under a
scan, flash attention).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from burgers_jax.configs import burgers
from burgers_jax.model import attention, param_tree
from burgers_jax.model.config import ModelConfig, Policy, architecture
from burgers_jax.model.lora import cast_params
from burgers_jax.model.network import PDECausalModel, init_params
from burgers_jax.model.transformer import REMAT
from burgers_jax.training import steps


def conv(h_out: int, k: int, cin: int, cout: int) -> float:
    return 2.0 * h_out * h_out * k * k * cin * cout


def resblock(h: int, c: int) -> float:
    return 2 * conv(h, 3, c, c)


def analytic(config: ModelConfig, batch: int, frames: int, attention: str = "flash") -> dict:
    c1, c2, c3 = config.encoder.channels
    m = 2 * c3
    tr = config.transformer
    d, nh, nkv, hd, inter, layers = (tr.hidden_size, tr.num_attention_heads, tr.num_key_value_heads, tr.head_dim,
                                     tr.intermediate_size, tr.num_hidden_layers)
    r = config.lora.r
    images, tokens = batch * frames, batch * frames * 256
    branch = (conv(64, 3, 3, c1) + resblock(64, c1) + conv(32, 3, c1, c2) + resblock(32, c2)
              + conv(16, 3, c2, c3) + resblock(16, c3))
    encoder = images * (2 * branch + conv(16, 1, m, m) + resblock(16, m) + 256 * 2.0 * m * d)
    shapes = {"q": (d, nh * hd), "k": (d, nkv * hd), "v": (d, nkv * hd), "o": (nh * hd, d),
              "gate": (d, inter), "up": (d, inter), "down": (inter, d)}
    linear = tokens * layers * sum(2.0 * a * b for a, b in shapes.values())
    adapters = tokens * layers * sum(2.0 * (a * r + r * b) for a, b in shapes.values()) if r else 0.0
    pairs = batch * 256 * 256 * (frames * (frames + 1) / 2 if attention == "flash" else frames * frames)
    attention_unit = layers * nh * pairs * 2.0 * hd  # one score-sized product
    backward_units = 5 if attention == "flash" else 4
    dec_branch = (resblock(16, c3) + 2.0 * 16 * 16 * 16 * c3 * c2 + resblock(32, c2) + 2.0 * 32 * 32 * 16 * c2 * c1
                  + resblock(64, c1) + 2.0 * 64 * 64 * 16 * c1 * 3)
    decoder = images * (256 * 2.0 * d * m + conv(16, 1, m, m) + resblock(16, m) + 2 * dec_branch)
    forward = encoder + linear + adapters + 2 * attention_unit + decoder
    backward = decoder + linear + 2 * adapters + backward_units * attention_unit
    return {"encoder": encoder, "transformer_linear": linear, "adapters": adapters,
            "attention_forward": 2 * attention_unit, "decoder": decoder, "forward": forward,
            "backward": backward, "total": forward + backward,
            # what each remat mode recomputes in the backward pass (module docstring)
            "total_remat": {"none": forward + backward,
                            "projections": forward + backward + adapters / 2,
                            "full": forward + backward + linear + adapters + 2 * attention_unit}}


def lowered_step(model_config: ModelConfig, cfg, remat: str | bool, scan_layers: bool = True,
                 attention_impl: str = "auto"):
    policy = Policy.named(cfg.model.precision)
    model = PDECausalModel(model_config, policy=policy, remat=remat, scan_layers=scan_layers,
                           attention_impl=attention_impl)
    key = jax.random.PRNGKey(0)
    params = jax.eval_shape(lambda: cast_params(init_params(model_config, key), policy))
    mask = param_tree.trainable_mask(params)
    tx = steps.make_optimizer(cfg.training, mask)
    trainable, frozen = param_tree.split(params)
    state = jax.eval_shape(lambda t, f: steps.TrainState(
        step=jnp.zeros((), jnp.int32), trainable=t, opt_state=tx.init(param_tree.merge(t, f)), rng=key,
        nonfinite_in_a_row=jnp.zeros((), jnp.int32), nonfinite_total=jnp.zeros((), jnp.int32)), trainable, frozen)
    b, w = cfg.dataloader.batch_size, cfg.dataset.temporal_length + 1
    sds = jax.ShapeDtypeStruct
    batch = {"frames": sds((b, w, 128, 128, 6), jnp.float32), "nu": sds((b,), jnp.float32),
             "left": sds((b, w, 128, 1, 2), jnp.float32), "right": sds((b, w, 128, 1, 2), jnp.float32),
             "bottom": sds((b, w, 1, 128, 2), jnp.float32), "top": sds((b, w, 1, 128, 2), jnp.float32)}
    return steps.jit_train_step(model, tx, cfg).lower(state, frozen, batch)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--precision", default="fp32_output")
    ap.add_argument("--small", action="store_true", help="the small architecture instead of the full one")
    ap.add_argument("--remat", default=",".join(REMAT), help="remat modes to analyse, comma-separated")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    cfg = burgers.get_config("reference")  # the PyTorch recipe's step: adapters only
    cfg.dataloader.batch_size, cfg.dataset.temporal_length, cfg.model.precision = args.batch, args.frames, args.precision
    cfg.physics.dt = 1.0 / 999.0
    if args.small:
        model_config = architecture("small")
    else:
        model_config = architecture("full")
    model_config = model_config.with_lora(r=16, alpha=32.0, dropout=0.05)
    count = analytic(model_config, args.batch, args.frames)
    count_einsum = analytic(model_config, args.batch, args.frames, attention="einsum")
    out = {"config": {"batch": args.batch, "frames": args.frames, "precision": args.precision,
                      "arch": "small" if args.small else "full"}, "analytic": count}
    out["analytic_einsum_attention"] = count_einsum
    # XLA's cost analysis counts a loop body once, so the FLOPs come from the same step with
    # the transformer layers unrolled and the attention as one einsum (no loops), against the
    # analytic count of that program; memory from the program that runs.
    # Memory for every attention implementation `auto` picks on any backend (the GPU's
    # choice compiled here on the CPU), one row per remat mode.
    impls = sorted({attention.resolve("auto", backend=b, dtype=Policy.named(args.precision).compute_dtype)
                    for b in ("cpu", "gpu", "tpu")})
    for remat in args.remat.split(","):
        cost = lowered_step(model_config, cfg, remat, scan_layers=False, attention_impl="einsum").compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        row = out[f"remat={remat}"] = {
            "flops_einsum_attention": float(cost["flops"]),
            "flops_over_analytic": float(cost["flops"]) / count_einsum["total_remat"][remat],
            "analytic_flash_tflop": count["total_remat"][remat] / 1e12,
            "flops_over_no_remat": count["total_remat"][remat] / count["total"]}
        for impl in impls:
            t0 = time.perf_counter()
            mem = lowered_step(model_config, cfg, remat, attention_impl=impl).compile().memory_analysis()
            row[impl] = {"compile_s": time.perf_counter() - t0, "temp_gib": mem.temp_size_in_bytes / 2**30,
                         "argument_gib": mem.argument_size_in_bytes / 2**30}
            print(f"remat={remat}, attention {impl}: temporaries {row[impl]['temp_gib']:.2f} GiB, arguments "
                  f"{row[impl]['argument_gib']:.2f} GiB, compile {row[impl]['compile_s']:.0f} s", flush=True)
        print(f"remat={remat}: FLOPs (einsum attention) {row['flops_einsum_attention']:.4e} = "
              f"{row['flops_over_analytic']:.3f} x its analytic count; the flash step's analytic count "
              f"{row['analytic_flash_tflop']:.2f} TFLOP = {row['flops_over_no_remat']:.3f} x no remat", flush=True)
    print("analytic count, flash attention (GFLOP): " + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in count.items()
                                                                  if not isinstance(v, dict)))
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
