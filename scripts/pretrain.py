"""Pretrains the stand-in "foundation model": supervised next-frame prediction on
closed-form solutions of three PDE families (burgers_jax/physics/families.py: Burgers outside
the fine-tuning viscosities, diffusion of Fourier modes, periodic advection of a bump),
all weights trained, float32. The result is written as a PyTorch `best.pt` (the
`best.pt` format, bf16 weights, through the project's export), so it enters the fine-tuning path
by the same door as a user's checkpoint: `burgers-convert best.pt --verify`.

    python scripts/pretrain.py --out /tmp/standin               # the committed stand-in (assets/standin/)
    python scripts/pretrain.py --out /tmp/p --arch tiny --steps 5   # a smoke run

Objective (the foundation model's): output frame k against true frame k + 1, the
squared error over the active channels (u, v) divided by the variance of the true
frames of that sample and channel (so every family and stride weighs the same), mean
over everything; optional input noise (`--noise-level`, the model's `noise_level`).
Optimizer: the fine-tuning code's (AdamW, warmup, cosine, global-norm clip) with the
partition rule set "all". Validation: fixed windows of each family, VRMSE of the model
and of persistence (next frame = this frame); the best model by validation loss is kept.
Out: best.pt, curve.jsonl, curve.png, summary.json and metadata.json (the format marker),
under the output rules of every command: checked before any work; a new or empty `--out`,
or an earlier result of this script, replaced only with `--overwrite`; a folder holding
files this script did not write is refused. The result appears under `--out` only when it
is complete; the curve so far is kept in a file next to it (named at the start) until then.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from burgers_jax import cli
from burgers_jax.data import sources as data_lib
from burgers_jax.errors import UserError
from burgers_jax.io import outputs
from burgers_jax.io.progress import make_progress
from burgers_jax.model import param_tree
from burgers_jax.model.config import ARCHITECTURES, Policy
from burgers_jax.model.lora import cast_params
from burgers_jax.model.network import PDECausalModel, init_params
from burgers_jax.physics import families, metrics
from burgers_jax.training import steps
from porting.export_torch import export_merged

ACTIVE = 2  # (u, v) in channels 0, 1; the other four are zero
OUT_KIND = "pretrain"  # the format marker of our output folder: burgers_jax.pretrain


class PretrainError(UserError):
    """A flag value this script cannot run with; raised before any work."""


def check_flags(args) -> None:
    """Every numeric flag, before any work: one line naming each bad flag. (The training
    config's checks in burgers_jax/training/setup.py speak of config fields, not of these
    flags, and do not cover them all: --batch, --frames, --noise-level, --seed.)"""
    problems = []
    at_least = {"--steps": (args.steps, 1), "--batch": (args.batch, 1), "--frames": (args.frames, 1),
                "--warmup": (args.warmup, 0), "--eval-every": (args.eval_every, 1),
                "--val-per-family": (args.val_per_family, 1), "--seed": (args.seed, 0)}
    problems += [f"{flag}={value} must be >= {low}" for flag, (value, low) in at_least.items() if value < low]
    if not (math.isfinite(args.lr) and args.lr > 0):
        problems.append(f"--lr={args.lr} must be a finite number > 0 (a negative rate ascends the loss)")
    if not (math.isfinite(args.noise_level) and args.noise_level >= 0):
        problems.append(f"--noise-level={args.noise_level} must be a finite number >= 0")
    if problems:
        raise PretrainError("; ".join(problems))


def window_batch(seed: int, step: int, batch: int, frames: int) -> np.ndarray:
    """[B, frames, 128, 128, 6] float32: a pure function of (seed, step)."""
    rng = np.random.default_rng([seed, step])
    out = np.zeros((batch, frames, 128, 128, 6), np.float32)
    for b in range(batch):
        out[b, ..., :ACTIVE] = families.sample_window(rng, frames)[1]
    return out


def validation_set(seed: int, per_family: int, frames: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, 10**9])
    out = {}
    for fam in families.FAMILIES:
        x = np.zeros((per_family, frames, 128, 128, 6), np.float32)
        for b in range(per_family):
            x[b, ..., :ACTIVE] = families.sample_window(rng, frames, family=fam)[1]
        out[fam] = x
    return out


def normalized_mse(out, target):
    """Squared error over the active channels / the variance of the target (per sample
    and channel), mean over everything."""
    err = jnp.square(out[..., :ACTIVE] - target[..., :ACTIVE])
    var = jnp.var(target[..., :ACTIVE], axis=(1, 2, 3), keepdims=True)
    return jnp.mean(err / (var + 1e-12))


def main(argv=None) -> int:
    return cli.run("pretrain", lambda: pretrain(argv))


def pretrain(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="pretrain", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output folder (best.pt, curve, summary)")
    ap.add_argument("--arch", choices=sorted(ARCHITECTURES), default="small")
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--frames", type=int, default=4, help="input frames T (windows hold T + 1)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--noise-level", type=float, default=0.0)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--val-per-family", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overwrite", action="store_true", help="replace an earlier result of this script in --out")
    args = ap.parse_args(argv)
    check_flags(args)
    out = outputs.check_dir(args.out, OUT_KIND, args.overwrite)  # before any work
    t_start = time.time()

    config = dataclasses.replace(ARCHITECTURES[args.arch], noise_level=args.noise_level)
    model = PDECausalModel(config, policy=Policy.named("float32"))
    params = init_params(config, jax.random.PRNGKey(args.seed))
    training = ml_collections.ConfigDict(dict(
        learning_rate=args.lr, min_lr=args.lr / 100, warmup_steps=min(args.warmup, args.steps - 1),
        max_steps=args.steps, betas=(0.9, 0.999), grad_clip=1.0, weight_decay=1e-4))
    tx = steps.make_optimizer(training, param_tree.trainable_mask(params, "all"))
    opt_state = tx.init(params)
    T = args.frames

    def loss_fn(p, x, rng):
        out = model.apply({"params": p}, x[:, :T], train=True, rngs={"noise": rng, "dropout": rng})
        return normalized_mse(out, x[:, 1:])

    @jax.jit
    def train_step(p, o, x, step):
        loss, grads = jax.value_and_grad(loss_fn)(p, x, jax.random.fold_in(jax.random.PRNGKey(args.seed), step))
        updates, o = tx.update(grads, o, p)
        return jax.tree.map(lambda a, u: a + u, p, updates), o, loss

    @jax.jit
    def val_metrics(p, x):
        out = model.apply({"params": p}, x[:, :T])[..., :ACTIVE]
        true, prev = x[:, 1:, ..., :ACTIVE], x[:, :T, ..., :ACTIVE]
        return {"loss": normalized_mse(out, true), "vrmse": jnp.mean(metrics.vrmse(out, true)),
                "nrmse": jnp.mean(metrics.nrmse(out, true)), "persistence_vrmse": jnp.mean(metrics.vrmse(prev, true))}

    val = validation_set(args.seed, args.val_per_family, T + 1)

    def evaluate(p) -> dict:
        per = {fam: {k: float(v) for k, v in val_metrics(p, x).items()} for fam, x in val.items()}
        return {"loss": float(np.mean([m["loss"] for m in per.values()])), "families": per}

    # The curve is written as it is computed into a file next to --out (not into it: an
    # earlier result there stays whole until the new one is complete, and write_dir renames
    # one finished folder into place). It is copied into the result at the end and then
    # removed; after a crash it stays, named, so nothing computed is lost. A plain sibling
    # file, not write_dir's temporary folder: that one is deleted when anything fails.
    out.parent.mkdir(parents=True, exist_ok=True)
    curve_path = out.parent / f".{out.name}.curve-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.jsonl"
    curve_path.touch(exist_ok=False)
    print(f"curve so far: {curve_path} (moved into {out} at the end)", flush=True)
    try:
        best = {"loss": np.inf}
        best_params = params
        batches = data_lib.prefetch(lambda s: window_batch(args.seed, s, args.batch, T + 1), range(args.steps), depth=2)
        bar = make_progress(args.steps, "pretrain", unit="step", every=max(1, args.eval_every // 4))
        with open(curve_path, "a") as curve:
            for step, x in enumerate(batches, start=1):
                params, opt_state, loss = train_step(params, opt_state, x, step)
                bar.update(1)
                record = {"step": step, "train_loss": None}
                if step % 10 == 0 or step == args.steps:
                    record["train_loss"] = float(loss)
                    bar.set_postfix(loss=f"{float(loss):.3e}")
                if step % args.eval_every == 0 or step == args.steps:
                    v = evaluate(params)
                    record["val"] = v
                    if v["loss"] < best["loss"]:
                        best, best_params = {"step": step, **v}, params
                    bar.write(f"step {step}: val loss {v['loss']:.4e}; " + ", ".join(
                        f"{f} VRMSE {m['vrmse']:.3e} (persistence {m['persistence_vrmse']:.3e})"
                        for f, m in v["families"].items()))
                if record["train_loss"] is not None or "val" in record:
                    curve.write(json.dumps(record) + "\n")
                    curve.flush()
        bar.close()
        minutes = (time.time() - t_start) / 60

        # The stand-in ships like the real model: bf16 weights in a PyTorch best.pt.
        bf16 = cast_params(best_params, Policy.named("reference"))
        source_config = {
            "model": {**{k: v for k, v in config.to_dict().items() if k != "lora"}, "use_flash_attention": False},
            "pretraining": {"script": "scripts/pretrain.py", "argv": sys.argv[1:] if argv is None else list(argv),
                            "families": list(families.FAMILIES), "burgers_nu_ranges": families.BURGERS_NU_RANGES,
                            "strides": list(families.STRIDES), "steps": args.steps, "batch": args.batch,
                            "frames": T, "seed": args.seed},
        }
        val_nrmse = float(np.mean([m["nrmse"] for m in best["families"].values()]))
        summary = {"best_step": best["step"], "best_val": best, "minutes": minutes, "steps": args.steps,
                   "arch": args.arch, "params": int(sum(np.size(x) for x in jax.tree.leaves(best_params))),
                   "command": "python scripts/pretrain.py " + " ".join(sys.argv[1:] if argv is None else argv)}

        def fill(tmp: Path) -> None:
            export_merged(bf16, config, tmp / "best.pt", source_config=source_config,
                          metadata={"global_step": best["step"], "val_nrmse": val_nrmse, "best_val_nrmse": val_nrmse,
                                    "val_rmse": None})
            shutil.copyfile(curve_path, tmp / "curve.jsonl")  # a copy: if the rename fails, the curve stays
            (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            plot_curve(tmp / "curve.jsonl", tmp / "curve.png")
            (tmp / outputs.METADATA_FILE).write_text(json.dumps(outputs.format_marker(OUT_KIND)) + "\n")

        outputs.write_dir(out, fill, OUT_KIND, args.overwrite)
        curve_path.unlink()
        print(f"wrote {out / 'best.pt'} (best validation loss {best['loss']:.4e} at step {best['step']}, "
              f"{minutes:.1f} min)")
        return 0
    except BaseException:
        print(f"pretrain: the curve computed so far is kept in {curve_path}", file=sys.stderr)
        raise


def plot_curve(curve_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in curve_path.read_text().splitlines() if line]
    fig, ax = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    tr = [(r["step"], r["train_loss"]) for r in rows if r.get("train_loss") is not None]
    ax[0].semilogy(*zip(*tr), label="train (normalized MSE)", alpha=0.6)
    vals = [(r["step"], r["val"]) for r in rows if "val" in r]
    ax[0].semilogy([s for s, _ in vals], [v["loss"] for _, v in vals], "o-", label="validation")
    ax[0].set_xlabel("step")
    ax[0].legend()
    ax[0].set_title("pretraining loss")
    for fam in families.FAMILIES:
        line, = ax[1].semilogy([s for s, _ in vals], [v["families"][fam]["vrmse"] for _, v in vals], "o-",
                               label=f"{fam}: model")
        ax[1].axhline(vals[-1][1]["families"][fam]["persistence_vrmse"], ls="--", color=line.get_color(),
                      label=f"{fam}: persistence")
    ax[1].set_xlabel("step")
    ax[1].set_title("validation one-step VRMSE")
    ax[1].legend(fontsize=7)
    fig.savefig(png, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
