"""Benchmark: the jitted JAX PDE residual (burgers_jax.physics) vs the residual as the
PyTorch system writes it (`burgers_jax.porting.torch_reference.burgers_pde_loss_upwind`: vectorised,
`torch.cat` ghost cells, `torch.where` upwinding, the batch-mean nu).

    .venv/bin/python scripts/bench/physics.py [--batch 4 --frames 17 --resolution 128 --runs 20]

Float32, on whatever device JAX/torch default to (this machine: CPU). Each variant is
warmed up (JAX compiles on the first call), then JAX and torch are timed alternately
`--runs` times each; the median in ms is printed with the ratio torch / jax (> 1: JAX is faster). "loss" is the forward value;
"loss+grad" also differentiates w.r.t. pred (what training needs). nu is the scalar
batch mean on both sides, as the reference script passes it.
Shape legend: B batch, T frames, H/W grid, last axis (u, v).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

from burgers_jax.physics import analytic
from burgers_jax.physics import residual as physics
from burgers_jax.porting import torch_reference


def _interleaved_medians(fns, runs: int, warmup: int) -> list[float]:
    """Median ms of each function, timed alternately so that both see the same machine
    load (this CPU is shared; back-to-back blocks drift by 2-5x under load)."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(runs):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(ts) for ts in times]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)

    torch_pde_loss = torch_reference.burgers_pde_loss_upwind
    nus = np.linspace(0.1, 0.15, args.batch)
    batch = analytic.analytic_batch(nus, start=np.arange(args.batch) * 50, frames=args.frames, resolution=args.resolution)
    # a perturbed field, so both upwind branches and realistic magnitudes are exercised
    batch["pred"] = batch["pred"] + 1e-3 * np.random.default_rng(0).standard_normal(batch["pred"].shape)
    names = ("pred", "left", "right", "bottom", "top")
    nu, dt = float(nus.mean()), batch["dt"]

    j_args = [jax.device_put(jnp.asarray(batch[k], jnp.float32)) for k in names]
    t_args = [torch.from_numpy(batch[k].astype(np.float32)) for k in names]

    j_loss = jax.jit(lambda *a: physics.burgers_pde_loss(*a, nu, dt)[0])
    j_grad = jax.jit(jax.value_and_grad(lambda p, *b: physics.burgers_pde_loss(p, *b, nu, dt)[0]))

    def torch_loss():
        with torch.no_grad():
            return torch_pde_loss(*t_args, nu, dt)[0].item()

    def torch_grad():
        p = t_args[0].clone().requires_grad_(True)
        loss = torch_pde_loss(p, *t_args[1:], nu, dt)[0]
        loss.backward()
        return loss.item(), p.grad

    # sanity: both compute the same thing before timing it
    lj, lt = float(j_loss(*j_args)), torch_loss()
    assert abs(lj - lt) <= 1e-4 * abs(lt), f"JAX {lj} vs torch {lt}: implementations disagree"

    rows = [
        ("loss", lambda: j_loss(*j_args).block_until_ready(), torch_loss),
        ("loss+grad", lambda: jax.block_until_ready(j_grad(*j_args)), torch_grad),
    ]
    print(
        f"PDE residual, B={args.batch}, T={args.frames}, {args.resolution}^2, float32; "
        f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.device_count()} device(s)), "
        f"torch {torch.__version__} with {torch.get_num_threads()} thread(s); "
        f"median of {args.runs} interleaved runs after {args.warmup} warm-up"
    )
    print(f"loss value: jax {lj:.6e}, torch {lt:.6e}")
    print(f"{'':<12}{'jax ms':>10}{'torch ms':>10}{'torch/jax':>11}")
    for name, jf, tf in rows:
        mj, mt = _interleaved_medians([jf, tf], args.runs, args.warmup)
        print(f"{name:<12}{mj:>10.2f}{mt:>10.2f}{mt / mj:>11.2f}")


if __name__ == "__main__":
    main()
