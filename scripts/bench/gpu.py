"""The GPU benchmark's rows, one process each (scripts/bench/gpu.sh runs them in order, each
under its own timeout): JAX and PyTorch never share a process, because each framework's
allocator keeps what it took and the other one then runs out.

    python scripts/bench/gpu.py prepare --work DIR [--quick]          # torch on the CPU: best.pt, converted
    python scripts/bench/gpu.py peak --side jax|torch --rows ROWS.jsonl
    python scripts/bench/gpu.py jax --work DIR --rows ROWS.jsonl --policy fp32_output --attention flash --remat projections
    python scripts/bench/gpu.py torch --work DIR --rows ROWS.jsonl --variant eager|sdpa|sdpa_compile
    python scripts/bench/gpu.py report --rows ROWS.jsonl [--quick]   # the table, ratios and utilisation

Every row is one JSON line appended to ROWS the moment it is measured (a killed run keeps
every finished row): first call (compile included), median step after warm-up, peak device
memory (`memory_stats()["peak_bytes_in_use"]`, `torch.cuda.max_memory_allocated()`; null on
a CPU), the step-0 loss. A failure is a row too, with its error. The work is the recipe's
LoRA step on both sides (scripts/bench/common.py, scripts/bench/step.py's `TorchRecipe`):
the full-size architecture, B 4, T 16; `--quick` the small architecture, B 1, T 4, for a
CPU dry run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path


def shape(quick: bool) -> tuple[str, int, int]:
    """(architecture, B, T) of the benchmark."""
    return ("small", 1, 4) if quick else ("full", 4, 16)


def append(rows: Path, row: dict) -> None:
    line = json.dumps(row)
    with open(rows, "a") as f:
        f.write(line + "\n")
    print(line, flush=True)


def timed(step, runs: int, warmup: int) -> dict:
    """First call (compile) and the median of `runs` calls after `warmup` more."""
    t0 = time.perf_counter()
    loss0 = step()
    first = time.perf_counter() - t0
    for _ in range(warmup):
        step()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"first_s": round(first, 2), "median_ms": round(1e3 * statistics.median(times), 2),
            "times_ms": [round(1e3 * t, 2) for t in times], "loss0": loss0}


# ----------------------------------------------------------------------------- rows


def prepare(work: Path, quick: bool) -> None:
    """A random-weight best.pt written by the PyTorch reference (CPU) and its conversion."""
    import torch

    from burgers_jax.porting import convert_ckpt
    from burgers_jax.porting import torch_reference as R

    arch, _, _ = shape(quick)
    work.mkdir(parents=True, exist_ok=True)
    config = R.architecture_config_dict(arch)
    config["model"]["use_flash_attention"] = False
    torch.manual_seed(0)
    R.write_best_pt(work / "best.pt", R.randomize_(R.build_model(config, seed=0), seed=0, scale=0.1), config)
    convert_ckpt.convert_model(work / "best.pt", work / "pretrained", None)
    print(f"prepared {work} ({arch})", flush=True)


def jax_row(args) -> dict:
    import jax
    from common import batch_for, jax_trainer

    _, b, frames = shape(args.quick)
    trainer = jax_trainer(args.work / "pretrained", args.policy, b, frames, attention=args.attention, remat=args.remat)
    state = {"s": trainer.initial_state()}
    batch = trainer.shard_batch(batch_for(b, frames))

    def step() -> float:
        state["s"], m = trainer.train_step(state["s"], trainer.frozen, batch)
        return float(jax.block_until_ready(m["loss"]))

    out = timed(step, args.runs, args.warmup)
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return {**out, "peak_gib": None if peak is None else round(peak / 2**30, 3), "device": jax.devices()[0].device_kind,
            "jax": jax.__version__}


def torch_row(args) -> dict:
    import torch
    from common import batch_for
    from step import TorchRecipe

    _, b, frames = shape(args.quick)
    attn, _, compiled = args.variant.partition("_")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    # With compile, TorchRecipe's first step compiles (timed as `compile_s`, as in step.py).
    recipe = TorchRecipe(args.work / "best.pt", dtype, batch_for(b, frames), frames, attn, compile=bool(compiled))
    out = timed(recipe.step, args.runs, args.warmup)
    if compiled:
        out.update(first_s=round(recipe.compile_s, 2), compiled=recipe.compiled, loss0=recipe.step0_loss)
    cuda = torch.cuda.is_available()
    peak = torch.cuda.max_memory_allocated() if cuda else None
    return {**out, "peak_gib": None if peak is None else round(peak / 2**30, 3),
            "device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__}


def peak_row(side: str, quick: bool) -> dict:
    """TFLOP/s of the best of ten n^3 bf16 products with float32 accumulation."""
    n = 2048 if quick else 8192
    if side == "jax":
        import jax
        import jax.numpy as jnp

        a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.bfloat16)
        f = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))

        def run():
            jax.block_until_ready(f(a, a))
    else:
        import torch

        dev = "cuda" if torch.cuda.is_available() else "cpu"
        a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)

        def run():
            a @ a
            if dev == "cuda":
                torch.cuda.synchronize()
    run()
    best = min(timed_once(run) for _ in range(10))
    return {"bf16_matmul_tflops": round(2.0 * n ** 3 / best / 1e12, 1), "n": n}


def check_row(quick: bool) -> dict:
    """The fused kernels against `flash` on this device, one attention layer of the real
    shapes (T 16, 12/4 heads, hd 64; B 1), bf16 inputs: relative L2 of the output and of
    the gradients of q, k, v (flash computes in float32 inside)."""
    import jax
    import jax.numpy as jnp

    from burgers_jax.model import attention

    t = 4 if quick else 16
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    q = jax.random.normal(keys[0], (1, t * 256, 12, 64), jnp.bfloat16)
    k, v = (jax.random.normal(kk, (1, t * 256, 4, 64), jnp.bfloat16) for kk in keys[1:3])
    w = jax.random.normal(keys[3], (1, t * 256, 12 * 64), jnp.float32)

    def loss(impl):
        return jax.jit(jax.value_and_grad(lambda q, k, v: jnp.sum(w * attention.attend(
            q, k, v, impl, 256, 64 ** -0.5, jnp.bfloat16).astype(jnp.float32)), argnums=(0, 1, 2)))

    def rel(a, b):
        a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
        return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))

    ref_val, ref_grads = loss("flash")(q, k, v)
    out = {}
    for impl in ("cudnn", "cudnn_lengths", "einsum"):
        try:
            val, grads = loss(impl)(q, k, v)
            out[impl] = {"value": rel(val, ref_val), **{f"d{n}": rel(g, r) for n, g, r in zip("qkv", grads, ref_grads)}}
        except Exception as exc:  # noqa: BLE001 (a missing kernel is a result)
            out[impl] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
    return {"rel_l2_vs_flash": out}


def timed_once(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- report


def report(rows_path: Path, quick: bool) -> dict:
    """A markdown table of the rows, the ratios against PyTorch's fastest bf16 row, peak
    memory against PyTorch SDPA's, and each step's share of the JAX-measured bf16 peak by
    the analytic FLOP count (scripts/bench/cost_analysis.py)."""
    from common import LORA
    from cost_analysis import analytic

    from burgers_jax.model.config import architecture

    arch, b, frames = shape(quick)
    flops = analytic(architecture(arch).with_lora(r=LORA["r"], alpha=LORA["alpha"]), b, frames)["total"]
    rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
    peaks = {r["side"]: r["bf16_matmul_tflops"] for r in rows if r.get("kind") == "peak" and r.get("ok")}
    steps = [r for r in rows if r.get("kind") == "step"]
    ok = [r for r in steps if r.get("ok")]
    torch_bf16 = [r for r in ok if r["side"] == "torch" and r.get("dtype") == "bf16"]
    fastest = min(torch_bf16, key=lambda r: r["median_ms"]) if torch_bf16 else None
    sdpa = next((r for r in torch_bf16 if r["variant"] == "sdpa"), None)
    peak = peaks.get("jax")
    print(f"\nfull step, {arch} architecture, B {b}, T {frames}; analytic {flops / 1e12:.2f} TFLOP per step; "
          f"bf16 matmul peak: " + ", ".join(f"{k} {v} TFLOP/s" for k, v in peaks.items()))
    print("| row | first call s | median ms | peak GiB | vs fastest PyTorch bf16 | share of bf16 peak |")
    print("|---|---|---|---|---|---|")
    for r in steps:
        if not r.get("ok"):
            print(f"| {r['row']} | failed: {r.get('error', '')[:90]} | | | | |")
            continue
        ratio = f"{fastest['median_ms'] / r['median_ms']:.2f}x" if fastest else "—"
        share = f"{flops / (r['median_ms'] / 1e3) / (peak * 1e12):.1%}" if peak else "—"
        print(f"| {r['row']} | {r['first_s']:.1f} | {r['median_ms']:.1f} | {r['peak_gib']} | {ratio} | {share} |")
    summary = {"flops": flops, "peaks_tflops": peaks, "fastest_torch_bf16": fastest and fastest["row"]}
    bf16_jax = [r for r in ok if r["side"] == "jax" and r["policy"] in ("reference", "fp32_output")]
    if bf16_jax and fastest:
        best = min(bf16_jax, key=lambda r: r["median_ms"])
        summary.update(best_jax_bf16=best["row"], best_jax_bf16_vs_fastest_torch_bf16=fastest["median_ms"] / best["median_ms"])
        if peak:
            summary["best_jax_bf16_share_of_peak"] = flops / (best["median_ms"] / 1e3) / (peak * 1e12)
    if sdpa and sdpa.get("peak_gib"):
        summary["peak_gib_vs_torch_sdpa"] = {r["row"]: r["peak_gib"] / sdpa["peak_gib"] for r in ok
                                             if r["side"] == "jax" and r.get("peak_gib")}
    print(json.dumps(summary))
    return summary


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cmd", choices=("prepare", "check", "jax", "torch", "peak", "report"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_gpu_work"))
    ap.add_argument("--rows", type=Path, default=None, help="JSON lines file the rows are appended to")
    ap.add_argument("--quick", action="store_true", help="small architecture, B 1, T 4 (a CPU dry run)")
    ap.add_argument("--policy", default="fp32_output")
    ap.add_argument("--attention", default="auto")
    ap.add_argument("--remat", default="projections")
    ap.add_argument("--variant", default="sdpa", help="PyTorch: eager | sdpa | sdpa_compile")
    ap.add_argument("--dtype", default="bf16", help="PyTorch: bf16 | float32")
    ap.add_argument("--side", default="jax", help="peak: jax | torch")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args(argv)
    if args.cmd == "prepare":
        prepare(args.work, args.quick)
        return 0
    if args.cmd == "report":
        report(args.rows, args.quick)
        return 0
    if args.cmd == "check":
        row = {"kind": "check", "row": "check_attention"}
        fn = lambda: check_row(args.quick)  # noqa: E731
    elif args.cmd == "peak":
        row = {"kind": "peak", "row": f"peak_{args.side}", "side": args.side}
        fn = lambda: peak_row(args.side, args.quick)  # noqa: E731
    elif args.cmd == "jax":
        row = {"kind": "step", "side": "jax", "row": f"jax_{args.policy}_{args.attention}_{args.remat}",
               "policy": args.policy, "attention": args.attention, "remat": args.remat}
        fn = lambda: jax_row(args)  # noqa: E731
    else:
        row = {"kind": "step", "side": "torch", "row": f"torch_{args.dtype}_{args.variant}", "dtype": args.dtype,
               "variant": args.variant}
        fn = lambda: torch_row(args)  # noqa: E731
    try:
        row.update(fn(), ok=True)
    except Exception as exc:  # a row that fails is a result too (out of memory, a kernel missing)
        traceback.print_exc()
        row.update(ok=False, error=f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}")
    append(args.rows, row)
    return 0 if row["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
