"""How well can the model's autoencoder (encoder_2d -> decoder_2d, no transformer)
reconstruct a frame, at a given width? A probe for the stand-in's pretraining: the model
predicts whole frames, so it beats persistence only once it reconstructs a frame better
than the frame changes (Burgers at nu in [0.1, 0.15]: persistence VRMSE 0.0006 at stride 1,
0.003 at 5, 0.006 at 10).

Trains the encoder and decoder alone (Adam, warmup then cosine, float32) on single frames
of the pretraining families (burgers_jax/physics/families.py) and reports the
reconstruction VRMSE on the fine-tuning regime's frames (never trained on) and on held
frames of the pretraining families, as it goes.

    python scripts/probe_autoencoder.py --arch small --steps 1500
    python scripts/probe_autoencoder.py --arch small --channels 32,64,128 --steps 1500

Each evaluation is appended to --log (JSON lines, one per evaluation, with the settings),
so an interrupted probe keeps what it measured. With `--save DIR` the autoencoder's weights
and optimizer state are written there at each evaluation (`state.npz`, plain arrays, and
`settings.json`), and the same command run again continues from them (a probe of other
settings is refused): a long autoencoder pretraining can run over several sessions.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from pretrain import (  # scripts/pretrain.py
    ACTIVE,
    AUTOENCODER,
    fine_tuning_frames,
    init_from_autoencoder,
    normalized_mse,
    read_autoencoder,
    reconstruct,
)

from burgers_jax import cli
from burgers_jax.errors import UserError
from burgers_jax.model.config import ARCHITECTURES, Policy
from burgers_jax.model.network import PDECausalModel, init_params
from burgers_jax.physics import families, metrics


def frames_batch(seed: int, step: int, batch: int) -> np.ndarray:
    """[B, 1, 128, 128, 6]: single frames of random family members, a pure function of (seed, step)."""
    rng = np.random.default_rng([seed, step, 7])
    out = np.zeros((batch, 1, 128, 128, 6), np.float32)
    for b in range(batch):
        out[b, 0, ..., :ACTIVE] = families.sample_window(rng, 1)[1][0]
    return out


def main(argv=None) -> int:
    return cli.run("probe_autoencoder", lambda: probe(argv))


def probe(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", choices=sorted(ARCHITECTURES), default="small")
    ap.add_argument("--channels", default=None, help="encoder/decoder channels, e.g. 32,64,128 (default: the arch's)")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log", type=Path, default=Path("experiments/probe_autoencoder.jsonl"))
    ap.add_argument("--save", type=Path, default=None, help="folder of the resumable state (weights, optimizer)")
    ap.add_argument("--through-norm", action="store_true",
                    help="decode the tokens after the transformer's final RMSNorm (at its initial weight), the path "
                         "the model's decoder sees: the autoencoder stage of a two-stage pretraining")
    ap.add_argument("--init", type=Path, default=None,
                    help="start from the weights of another probe's --save folder (a warm start; new optimizer)")
    args = ap.parse_args(argv)

    config = ARCHITECTURES[args.arch]
    if args.channels:
        config = dataclasses.replace(config, encoder=dataclasses.replace(
            config.encoder, channels=tuple(int(c) for c in args.channels.split(","))))
    model = PDECausalModel(config, policy=Policy.named("float32"))
    params = init_params(config, jax.random.PRNGKey(args.seed))
    warm_start = read_autoencoder(args.init, "--init") if args.init is not None else None
    if warm_start is not None:
        params = init_from_autoencoder(params, config, args.init, warm_start, "--init")
    ae = {k: params[k] for k in AUTOENCODER}
    frozen = {k: v for k, v in params.items() if k not in ae}
    schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, min(100, args.steps // 10), args.steps, args.lr / 100)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    opt = tx.init(ae)

    def loss_fn(p, x):
        return normalized_mse(reconstruct(model, {**frozen, **p}, x, args.through_norm), x)

    @jax.jit
    def step(p, o, x):
        loss, g = jax.value_and_grad(loss_fn)(p, x)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o, loss

    @jax.jit
    def recon_vrmse(p, x):
        return jnp.mean(metrics.vrmse(reconstruct(model, {**frozen, **p}, x, args.through_norm)[..., :ACTIVE],
                                      x[..., :ACTIVE]))

    regime = fine_tuning_frames(args.seed, 16)
    held = np.concatenate([frames_batch(args.seed + 1000, s, 8) for s in range(2)])
    n_params = sum(int(np.size(v)) for v in jax.tree.leaves(ae))
    settings = {"arch": args.arch, "channels": list(config.encoder.channels), "hidden": config.transformer.hidden_size,
                "autoencoder_params": n_params, "batch": args.batch, "lr": args.lr, "steps": args.steps,
                **({"through_norm": True} if args.through_norm else {}),
                **({"init": str(args.init), "init_step": warm_start[1]} if warm_start else {})}
    print(json.dumps(settings), flush=True)
    start = 0
    if args.save is not None:
        start, ae, opt = restore(args.save, {**settings, "seed": args.seed}, ae, opt)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    t0, losses = time.time(), []
    for s in range(start + 1, args.steps + 1):
        ae, opt, loss = step(ae, opt, frames_batch(args.seed, s, args.batch))
        losses.append(float(loss))
        if s % args.eval_every == 0 or s == args.steps:
            row = {**settings, "step": s, "train_loss": float(np.mean(losses[-args.eval_every:])),
                   "recon_vrmse_fine_tuning_regime": float(recon_vrmse(ae, regime)),
                   "recon_vrmse_pretraining_families": float(recon_vrmse(ae, held)), "wall_s": time.time() - t0}
            print(json.dumps(row), flush=True)
            with args.log.open("a") as f:
                f.write(json.dumps(row) + "\n")
            if args.save is not None:
                save(args.save, s, ae, opt)
    return 0


STATE, SETTINGS = "state.npz", "settings.json"


def save(directory: Path, step: int, ae, opt) -> None:
    """Weights and optimizer state as plain arrays (leaf order of the (ae, opt) tree) and
    the step, in one file replaced atomically."""
    tmp = directory / f".{STATE}.tmp-{os.getpid()}.npz"
    np.savez(tmp, step=np.int64(step), *[np.asarray(x) for x in jax.tree.leaves((ae, opt))])
    os.replace(tmp, directory / STATE)


def restore(directory: Path, settings: dict, ae, opt):
    """-> (step, ae, opt): the saved state when `directory` holds one of these settings,
    else the given one (and the settings are recorded); another probe's state is refused."""
    directory.mkdir(parents=True, exist_ok=True)
    recorded = directory / SETTINGS
    if not recorded.exists():
        recorded.write_text(json.dumps(settings, indent=1) + "\n")
    elif json.loads(recorded.read_text()) != settings:
        raise UserError(f"{directory} holds a probe of other settings ({recorded}); give another --save folder")
    if not (directory / STATE).exists():
        return 0, ae, opt
    treedef = jax.tree.structure((ae, opt))
    with np.load(directory / STATE, allow_pickle=False) as z:
        leaves = [jnp.asarray(z[f"arr_{i}"]) for i in range(treedef.num_leaves)]
        step = int(z["step"])
    ae, opt = jax.tree.unflatten(treedef, leaves)
    print(f"resumed from {directory / STATE} at step {step}", flush=True)
    return step, ae, opt


if __name__ == "__main__":
    raise SystemExit(main())
