"""Pretrains the stand-in "foundation model": supervised next-frame prediction on
closed-form solutions of three PDE families (burgers_jax/physics/families.py: Burgers outside
the fine-tuning viscosities, diffusion of Fourier modes, periodic advection of a bump),
all weights trained, float32. The result is written as a PyTorch `best.pt` (the
`best.pt` format, bf16 weights, through the project's export), so it enters the fine-tuning path
by the same door as a user's checkpoint: `burgers-convert best.pt --verify`.

    python scripts/pretrain.py --out /tmp/standin               # the committed stand-in (assets/standin/)
    python scripts/pretrain.py --out /tmp/p --arch tiny --steps 5   # a smoke run
    python scripts/pretrain.py --out assets/standin2 --steps 20000 --recon-weight 1 \
        --weights-dtype float32 --state runs/standin2   # hours: stop and rerun, it resumes

Two stages (the second stand-in): the autoencoder alone first
(`scripts/probe_autoencoder.py --save DIR`, single frames, fast), then the dynamics from it:
`--init-autoencoder DIR` starts encoder_2d and decoder_2d from that stage's weights and
`--freeze-autoencoder` trains the transformer only (gradients are taken of the transformer's
weights alone, so no weight gradient of the convolutions is computed).

Objective (the foundation model's): output frame k against true frame k + 1, the
squared error over the active channels (u, v) divided by the variance of the true
frames of that sample and channel (so every family and stride weighs the same), mean
over everything; optional input noise (`--noise-level`, the model's `noise_level`).
`--recon-weight w` adds w times the same error of the autoencoder alone (the decoder on
the encoder's tokens of the input frames, no transformer) against the input frames: the
model predicts whole frames, so it cannot beat persistence (the last frame) before it
reconstructs a frame better than the frame changes.
Optimizer: the fine-tuning code's (AdamW, warmup, cosine, global-norm clip) with the
partition rule set "all". Validation: fixed windows of each family at each of
`--val-strides`, VRMSE of the model and of persistence (next frame = this frame), and
the autoencoder's reconstruction VRMSE, also on frames of the fine-tuning regime (Burgers,
nu in [0.1, 0.15]), which pretraining never sees; the best model by validation loss is kept.
`--state DIR` makes a long run resumable: the training state is checkpointed there at
each validation, and the same command run again continues from the last one (the same
batches: they are a pure function of seed and step); other flags are refused.
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
import orbax.checkpoint as ocp

from burgers_jax import cli
from burgers_jax.data import loader
from burgers_jax.errors import UserError
from burgers_jax.io import outputs
from burgers_jax.io.progress import make_progress
from burgers_jax.model import param_tree
from burgers_jax.model.config import ARCHITECTURES, Policy
from burgers_jax.model.layers import RMSNorm
from burgers_jax.model.lora import cast_params
from burgers_jax.model.network import PDECausalModel, init_params
from burgers_jax.physics import families, metrics
from burgers_jax.physics.analytic import burgers_uv, cell_centres
from burgers_jax.porting.export_torch import export_merged
from burgers_jax.training import steps

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
    if not (math.isfinite(args.recon_weight) and args.recon_weight >= 0):
        problems.append(f"--recon-weight={args.recon_weight} must be a finite number >= 0")
    if args.freeze_autoencoder and args.init_autoencoder is None:
        problems.append("--freeze-autoencoder needs --init-autoencoder DIR (a frozen random autoencoder learns nothing)")
    if args.freeze_autoencoder and args.recon_weight:
        problems.append(f"--recon-weight={args.recon_weight} with --freeze-autoencoder: the reconstruction term "
                        "cannot change (give 0)")
    if args.val_strides is not None and (not args.val_strides or any(s not in families.STRIDES
                                                                     for s in args.val_strides)):
        problems.append(f"--val-strides={','.join(map(str, args.val_strides))}: each one of "
                        f"{','.join(map(str, families.STRIDES))}")
    if problems:
        raise PretrainError("; ".join(problems))


def window_batch(seed: int, step: int, batch: int, frames: int) -> np.ndarray:
    """[B, frames, 128, 128, 6] float32: a pure function of (seed, step)."""
    rng = np.random.default_rng([seed, step])
    out = np.zeros((batch, frames, 128, 128, 6), np.float32)
    for b in range(batch):
        out[b, ..., :ACTIVE] = families.sample_window(rng, frames)[1]
    return out


def validation_set(seed: int, per_family: int, frames: int, strides=(None,)) -> dict[tuple, np.ndarray]:
    """{(family, stride): windows [per_family, frames, 128, 128, 6]}; stride None draws one
    per window (the first stand-in's validation)."""
    rng = np.random.default_rng([seed, 10**9])
    out = {}
    for stride in strides:
        for fam in families.FAMILIES:
            x = np.zeros((per_family, frames, 128, 128, 6), np.float32)
            for b in range(per_family):
                x[b, ..., :ACTIVE] = families.sample_window(rng, frames, family=fam, stride=stride)[1]
            out[(fam, stride)] = x
    return out


FINE_TUNING_NU = (0.1, 0.15)  # the fine-tuning regime: never in pretraining


def fine_tuning_frames(seed: int, count: int) -> np.ndarray:
    """[count, 1, 128, 128, 6] frames of the fine-tuning data's formula at nu in [0.1, 0.15]
    and random times in [0, 1]: the regime pretraining never sees, for the reconstruction error."""
    rng = np.random.default_rng([seed, 2 * 10**9])
    c = cell_centres(128)
    y, x = c[:, None], c[None, :]
    out = np.zeros((count, 1, 128, 128, 6), np.float32)
    for i in range(count):
        u, v = burgers_uv(x, y, rng.uniform(0, 1), rng.uniform(*FINE_TUNING_NU))
        out[i, 0, ..., 0], out[i, 0, ..., 1] = u, v
    return out


def reconstruct(model: PDECausalModel, params, x, through_norm: bool = False):
    """The autoencoder alone: the decoder on the encoder's tokens of x [B, F, 128, 128, 6]
    (normalised and denormalised as in the model), no transformer -> [B, F, 128, 128, 6].

    `through_norm`: the tokens pass the transformer's final RMSNorm (its own weight) on the
    way, as in the model with every transformer layer adding nothing. The model's decoder
    only ever sees RMS-normalised tokens; an autoencoder trained without the norm decodes
    per-token-normalised tokens badly (0.0022 -> 0.63 VRMSE, docs/results.md), so a model
    built on it must first learn to carry each token's size through the norm."""
    variables = {"params": params}
    tokens, mean, std = model.apply(variables, x, method=PDECausalModel.encode)
    if through_norm:
        norm = RMSNorm(model.config.transformer.rms_norm_eps)
        tokens = norm.apply({"params": params["transformer"]["norm"]}, tokens)
    return model.apply(variables, tokens, mean, std, method=PDECausalModel.decode)


def normalized_mse(out, target):
    """Squared error over the active channels / the variance of the target (per sample
    and channel), mean over everything."""
    err = jnp.square(out[..., :ACTIVE] - target[..., :ACTIVE])
    var = jnp.var(target[..., :ACTIVE], axis=(1, 2, 3), keepdims=True)
    return jnp.mean(err / (var + 1e-12))


AUTOENCODER = ("encoder_2d", "decoder_2d")


def read_autoencoder(directory: Path, flag: str = "--init-autoencoder") -> tuple[dict, int, list[np.ndarray]]:
    """-> (settings, step, the weights' leaves) of an autoencoder stage saved by
    `scripts/probe_autoencoder.py --save DIR`: `state.npz` holds the leaves of its
    (autoencoder, optimizer) tree in order, so the autoencoder's come first. Checked
    before any work; the shapes are checked against the model in `init_from_autoencoder`."""
    settings_path, state_path = directory / "settings.json", directory / "state.npz"
    for path in (settings_path, state_path):
        if not path.is_file():
            raise PretrainError(f"{flag} {directory}: no {path.name} there; give the folder of "
                                "scripts/probe_autoencoder.py --save")
    settings = json.loads(settings_path.read_text())
    with np.load(state_path, allow_pickle=False) as z:
        step = int(z["step"])
        leaves = [z[f"arr_{i}"] for i in range(len(z.files) - 1)]
    return settings, step, leaves


def init_from_autoencoder(params: dict, config, directory: Path, saved: tuple[dict, int, list],
                          flag: str = "--init-autoencoder") -> dict:
    """`params` with encoder_2d and decoder_2d replaced by the saved autoencoder's; an
    autoencoder of another width is refused, naming both."""
    settings, _, leaves = saved
    ours = {"channels": list(config.encoder.channels), "hidden": config.transformer.hidden_size}
    theirs = {k: settings.get(k) for k in ours}
    if theirs != ours:
        raise PretrainError(f"{flag} {directory} holds an autoencoder of {theirs}; this --arch has {ours}")
    template = {k: params[k] for k in AUTOENCODER}
    treedef = jax.tree.structure(template)
    want = jax.tree.leaves(template)
    got = leaves[:treedef.num_leaves]
    bad = [i for i, (a, b) in enumerate(zip(want, got)) if a.shape != b.shape or a.dtype != b.dtype]
    if len(got) < len(want) or bad:
        raise PretrainError(f"{flag} {directory}: state.npz does not hold this model's autoencoder "
                            f"(leaf {bad[0] if bad else len(got)} differs)")
    return {**params, **jax.tree.unflatten(treedef, [jnp.asarray(x) for x in got])}


def main(argv=None) -> int:
    return cli.run("pretrain", lambda: pretrain(argv))


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="pretrain", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output folder (best.pt, curve, summary)")
    ap.add_argument("--arch", choices=sorted(ARCHITECTURES), default="small")
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--frames", type=int, default=4, help="input frames T (windows hold T + 1)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--noise-level", type=float, default=0.0)
    ap.add_argument("--recon-weight", type=float, default=0.0,
                    help="weight of the autoencoder's reconstruction error of the input frames (0: next frame only)")
    ap.add_argument("--init-autoencoder", type=Path, default=None,
                    help="start encoder and decoder from this autoencoder stage (scripts/probe_autoencoder.py --save)")
    ap.add_argument("--freeze-autoencoder", action="store_true",
                    help="train the transformer only (with --init-autoencoder: the dynamics stage)")
    ap.add_argument("--weights-dtype", choices=("bfloat16", "float32"), default="bfloat16",
                    help="dtype of the weights in best.pt (the real model ships bf16)")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--val-per-family", type=int, default=4)
    ap.add_argument("--val-strides", type=lambda t: [int(v) for v in t.split(",") if v], default=None,
                    help="validate each family at these frame strides, comma-separated (default: a random stride "
                         "per window)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--state", type=Path, default=None,
                    help="checkpoint the run here at each validation; the same command again resumes it")
    ap.add_argument("--overwrite", action="store_true", help="replace an earlier result of this script in --out")
    args = ap.parse_args(argv)
    check_flags(args)
    return args


# Flags that do not change what a resumed run computes.
RESUMABLE_FLAGS = ("out", "overwrite", "state", "eval_every")
# Flags added after states were written, with their defaults: a state without them ran at these.
FLAGS_ADDED_LATER = {"init_autoencoder": None, "freeze_autoencoder": False}


class RunState:
    """`--state DIR`: the flags (args.json), the curve (curve.jsonl) and orbax checkpoints
    of the training state at each validation, so that a run of hours survives a stop."""

    def __init__(self, directory: Path, args: argparse.Namespace):
        self.dir = directory
        self.flags = {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(args).items())
                      if k not in RESUMABLE_FLAGS}
        saved_path = directory / "args.json"
        if saved_path.is_file():
            saved = json.loads(saved_path.read_text())
            saved = {**FLAGS_ADDED_LATER, **saved}
            changed = {k: (saved.get(k), v) for k, v in self.flags.items() if saved.get(k) != v}
            if changed:
                raise PretrainError(f"--state {directory} holds a run of other flags ("
                                    + "; ".join(f"--{k.replace('_', '-')}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
                                    + "); give those flags to resume it, or another --state")
        elif directory.exists() and any(directory.iterdir()):
            raise PretrainError(f"--state {directory} holds files that are not a pretraining state; "
                                "choose a new or empty folder")
        directory.mkdir(parents=True, exist_ok=True)
        saved_path.write_text(json.dumps(self.flags, indent=2) + "\n")
        self.manager = ocp.CheckpointManager(
            (directory / "checkpoints").absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True, enable_async_checkpointing=False))
        self.curve = directory / "curve.jsonl"

    def restore(self, template: dict) -> tuple[dict | None, dict]:
        """-> (the latest saved payload or None, the best record so far); the curve is cut
        back to the checkpoint's step (the steps after it run again)."""
        step = self.manager.latest_step()
        if step is None:
            self.curve.write_text("")
            return None, {"loss": np.inf}
        payload = self.manager.restore(step, args=ocp.args.StandardRestore(template))
        rows = [json.loads(line) for line in self.curve.read_text().splitlines() if line] if self.curve.is_file() else []
        kept = [r for r in rows if r["step"] <= step]
        self.curve.write_text("".join(json.dumps(r) + "\n" for r in kept))
        best = json.loads((self.dir / "best.json").read_text())
        return payload, best

    def save(self, step: int, payload: dict, best: dict) -> None:
        (self.dir / "best.json").write_text(json.dumps(best, default=float) + "\n")
        self.manager.save(step, args=ocp.args.StandardSave(payload), force=True)
        self.manager.wait_until_finished()


def pretrain(argv=None) -> int:
    args = parse_args(argv)
    out = outputs.check_dir(args.out, OUT_KIND, args.overwrite)  # before any work
    saved_autoencoder = read_autoencoder(args.init_autoencoder) if args.init_autoencoder else None
    state = RunState(args.state, args) if args.state is not None else None
    t_start = time.time()

    config = dataclasses.replace(ARCHITECTURES[args.arch], noise_level=args.noise_level)
    model = PDECausalModel(config, policy=Policy.named("float32"))
    params = init_params(config, jax.random.PRNGKey(args.seed))
    if saved_autoencoder is not None:
        params = init_from_autoencoder(params, config, args.init_autoencoder, saved_autoencoder)
    frozen_keys = AUTOENCODER if args.freeze_autoencoder else ()
    # Reconstruction on the path the autoencoder stage trained (through the final norm or not).
    through_norm = bool(saved_autoencoder and saved_autoencoder[0].get("through_norm"))

    def trained_part(p):
        return {k: v for k, v in p.items() if k not in frozen_keys}

    training = ml_collections.ConfigDict(dict(
        learning_rate=args.lr, min_lr=args.lr / 100, warmup_steps=min(args.warmup, args.steps - 1),
        max_steps=args.steps, betas=(0.9, 0.999), grad_clip=1.0, weight_decay=1e-4))
    tx = steps.make_optimizer(training, param_tree.trainable_mask(trained_part(params), "all"))
    opt_state = tx.init(trained_part(params))
    T = args.frames

    def loss_fn(p, x, rng):
        out = model.apply({"params": p}, x[:, :T], train=True, rngs={"noise": rng, "dropout": rng})
        loss = normalized_mse(out, x[:, 1:])
        if args.recon_weight:
            loss = loss + args.recon_weight * normalized_mse(reconstruct(model, p, x[:, :T], through_norm), x[:, :T])
        return loss

    @jax.jit
    def train_step(p, o, x, step):
        # Gradients of the trained part only: a frozen autoencoder's weight gradients are never computed.
        rng = jax.random.fold_in(jax.random.PRNGKey(args.seed), step)
        trained = trained_part(p)
        loss, grads = jax.value_and_grad(lambda t: loss_fn({**p, **t}, x, rng))(trained)
        updates, o = tx.update(grads, o, trained)
        return {**p, **jax.tree.map(lambda a, u: a + u, trained, updates)}, o, loss

    @jax.jit
    def val_metrics(p, x):
        out = model.apply({"params": p}, x[:, :T])[..., :ACTIVE]
        true, prev = x[:, 1:, ..., :ACTIVE], x[:, :T, ..., :ACTIVE]
        rec = reconstruct(model, p, x[:, :T], through_norm)[..., :ACTIVE]
        return {"loss": normalized_mse(out, true), "vrmse": jnp.mean(metrics.vrmse(out, true)),
                "nrmse": jnp.mean(metrics.nrmse(out, true)), "persistence_vrmse": jnp.mean(metrics.vrmse(prev, true)),
                "recon_vrmse": jnp.mean(metrics.vrmse(rec, prev))}

    @jax.jit
    def recon_vrmse(p, x):
        return jnp.mean(metrics.vrmse(reconstruct(model, p, x, through_norm)[..., :ACTIVE], x[..., :ACTIVE]))

    val = validation_set(args.seed, args.val_per_family, T + 1, args.val_strides or (None,))
    regime = fine_tuning_frames(args.seed, args.val_per_family * len(families.FAMILIES))

    def evaluate(p) -> dict:
        per = {key: {k: float(v) for k, v in val_metrics(p, x).items()} for key, x in val.items()}
        fams = {}
        for fam in families.FAMILIES:  # each family's metrics: the mean over its strides
            rows = [m for (f, _), m in per.items() if f == fam]
            fams[fam] = {k: float(np.mean([m[k] for m in rows])) for k in rows[0]}
            if args.val_strides:
                fams[fam]["strides"] = {str(s): per[(fam, s)] for s in args.val_strides}
        return {"loss": float(np.mean([m["loss"] for m in per.values()])), "families": fams,
                "recon_vrmse_fine_tuning_regime": float(recon_vrmse(p, regime))}

    # The curve is written as it is computed into a file next to --out (not into it: an
    # earlier result there stays whole until the new one is complete, and write_dir renames
    # one finished folder into place), or into --state. It is copied into the result at the
    # end; after a crash it stays, named, so nothing computed is lost. A plain sibling
    # file, not write_dir's temporary folder: that one is deleted when anything fails.
    best = {"loss": np.inf}
    best_params, first_step = params, 0
    if state is not None:
        template = {"params": params, "opt_state": opt_state, "best_params": params}
        payload, best = state.restore(template)
        if payload is not None:
            params, opt_state, best_params = payload["params"], payload["opt_state"], payload["best_params"]
            first_step = state.manager.latest_step()
            print(f"resumed from {state.dir} at step {first_step}", flush=True)
        curve_path = state.curve
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        curve_path = out.parent / f".{out.name}.curve-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.jsonl"
        curve_path.touch(exist_ok=False)
    print(f"curve so far: {curve_path} (copied into {out} at the end)", flush=True)
    try:
        batches = loader.prefetch(lambda s: window_batch(args.seed, s, args.batch, T + 1),
                                    range(first_step, args.steps), depth=2)
        bar = make_progress(args.steps, "pretrain", unit="step", every=max(1, args.eval_every // 4),
                            initial=first_step)
        with open(curve_path, "a") as curve:
            for step, x in enumerate(batches, start=first_step + 1):
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
                        for f, m in v["families"].items())
                        + f"; reconstruction (fine-tuning regime) {v['recon_vrmse_fine_tuning_regime']:.3e}")
                if record["train_loss"] is not None or "val" in record:
                    curve.write(json.dumps(record) + "\n")
                    curve.flush()
                if "val" in record and state is not None:
                    state.save(step, {"params": params, "opt_state": opt_state, "best_params": best_params}, best)
                    bar.write(f"checkpoint of step {step} saved in {state.dir}")
        bar.close()
        minutes = (time.time() - t_start) / 60

        # The stand-in ships like the real model: bf16 weights in a PyTorch best.pt
        # (--weights-dtype float32 keeps them float32, for a stand-in whose error is below bf16's).
        shipped = cast_params(best_params, Policy.named("reference" if args.weights_dtype == "bfloat16" else "float32"))
        source_config = {
            "model": {**{k: v for k, v in config.to_dict().items() if k != "lora"}, "use_flash_attention": False},
            "pretraining": {"script": "scripts/pretrain.py", "argv": sys.argv[1:] if argv is None else list(argv),
                            "families": list(families.FAMILIES), "burgers_nu_ranges": families.BURGERS_NU_RANGES,
                            "strides": list(families.STRIDES), "steps": args.steps, "batch": args.batch,
                            "frames": T, "seed": args.seed, "recon_weight": args.recon_weight,
                            **({"autoencoder_stage": {**saved_autoencoder[0], "step": saved_autoencoder[1],
                                                      "frozen": args.freeze_autoencoder}}
                               if saved_autoencoder else {})},
        }
        val_nrmse = float(np.mean([m["nrmse"] for m in best["families"].values()]))
        summary = {"best_step": best["step"], "best_val": best, "minutes": minutes, "steps": args.steps,
                   "arch": args.arch, "params": int(sum(np.size(x) for x in jax.tree.leaves(best_params))),
                   "command": "python scripts/pretrain.py " + " ".join(sys.argv[1:] if argv is None else argv)}
        if state is not None:
            summary["minutes_note"] = "this session's minutes only: the run was resumed from --state"

        def fill(tmp: Path) -> None:
            export_merged(shipped, config, tmp / "best.pt", source_config=source_config,
                          metadata={"global_step": best["step"], "val_nrmse": val_nrmse, "best_val_nrmse": val_nrmse,
                                    "val_rmse": None})
            shutil.copyfile(curve_path, tmp / "curve.jsonl")  # a copy: if the rename fails, the curve stays
            (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            plot_curve(tmp / "curve.jsonl", tmp / "curve.png")
            (tmp / outputs.METADATA_FILE).write_text(json.dumps(outputs.format_marker(OUT_KIND)) + "\n")

        outputs.write_dir(out, fill, OUT_KIND, args.overwrite)
        if state is None:
            curve_path.unlink()
        print(f"wrote {out / 'best.pt'} (best validation loss {best['loss']:.4e} at step {best['step']}, "
              f"{minutes:.1f} min)")
        return 0
    except BaseException:
        print(f"pretrain: the curve computed so far is kept in {curve_path}", file=sys.stderr)
        raise


def curve_figure(curve_path: Path):
    """The pretraining loss (train and validation) and the validation one-step VRMSE per
    family against persistence's, in the pretrained model's colour (figures.ROLE_COLOURS:
    the zero-shot role; families in shades and markers) and persistence's grey."""
    from burgers_jax.evaluation import figures

    rows = [json.loads(line) for line in curve_path.read_text().splitlines() if line]
    fig = figures.new_figure(figsize=(13, 4.2))
    ax = fig.subplots(1, 2)
    tr = [(r["step"], r["train_loss"]) for r in rows if r.get("train_loss") is not None]
    vals = [(r["step"], r["val"]) for r in rows if "val" in r]
    if tr:
        ax[0].semilogy(*zip(*tr), color=figures.role_colour("zero-shot", 3), label="train (normalized MSE)")
    ax[0].semilogy([s for s, _ in vals], [v["loss"] for _, v in vals], label="validation",
                   **figures.role_style("zero-shot"))
    ax[0].set_xlabel("pretraining step")
    ax[0].set_ylabel("loss: MSE / variance of the truth")
    ax[0].set_title("pretraining loss", fontsize=10)
    figures.legend_beside(ax[0])
    for i, fam in enumerate(families.FAMILIES):
        ax[1].semilogy([s for s, _ in vals], [v["families"][fam]["vrmse"] for _, v in vals], label=f"{fam}: model",
                       **figures.role_style("zero-shot", i))
        if vals:
            ax[1].axhline(vals[-1][1]["families"][fam]["persistence_vrmse"], label=f"{fam}: persistence",
                          **{k: v for k, v in figures.role_style("persistence", i).items() if k != "marker"})
    ax[1].set_xlabel("pretraining step")
    ax[1].set_ylabel("one-step VRMSE (lower is better)")
    ax[1].set_title("validation one-step VRMSE per PDE family", fontsize=10)
    figures.legend_beside(ax[1])
    fig.suptitle("pretraining of the stand-in on three PDE families (none at the fine-tuning viscosities)",
                 fontsize=11)
    return fig


def plot_curve(curve_path: Path, png: Path) -> None:
    from burgers_jax.evaluation import figures

    figures.save(curve_figure(curve_path), png)


if __name__ == "__main__":
    sys.exit(main())
