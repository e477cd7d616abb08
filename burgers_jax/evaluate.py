"""Evaluates a model on Burgers windows against the truth and two baselines.

    python -m burgers_jax.evaluate --checkpoint DIR [--lora DIR] --data FILE.h5 \\
        [--split val|train|all] [--frame-stride S] [--temporal-length T] [--rollout N] \\
        [--precision P] --out DIR
    python -m burgers_jax.evaluate --checkpoint DIR --analytic --nu-min 0.18 --nu-max 0.3 --out DIR

Windows are deterministic and cover every sample of the split (the reference split:
seed 42, first 90 % train); their `(sample, start)` pairs are written out.

One step (teacher forced: T true frames in, the T predicted next frames out), for three
methods: the model; persistence (next frame = this frame: at dt = 1/999 already an
excellent predictor); the truth rounded to the model's output dtype (the floor). Per
method: PDE loss and the RMS of the residual's parts (u_t, advection, diffusion) on the
window [input frame 0, predictions], the constraint error |u + v - 1.5| (mean, max),
RMSE, nRMSE, VRMSE, bRMSE and fRMSE in low/mid/high wavenumber bands
(burgers_jax/metrics.py defines each).

Rollout (`--rollout N`): the model fed its own predictions (a sliding window of T
frames) for N steps; VRMSE and nRMSE against the truth at each horizon, for the model and
for persistence (the last true frame, held), and the last horizon up to which the model
beats persistence at every step.

Out: metrics.json (`windows`, `one_step.{model,persistence,truth}.{...}`,
`rollout.{horizons,model,persistence,...}`), metrics.md (a table), rollout.png (error
vs horizon) and window.png (fields and errors of one window).

Shapes: B windows, T frames, H/W grid (128), last axis (u, v).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging as absl_logging

from burgers_jax import compilation_cache, metrics, outputs, physics
from burgers_jax import data as data_lib
from burgers_jax.checkpoint import CheckpointError, load_model
from burgers_jax.model import PDECausalModel
from burgers_jax.model_config import ConfigError, Policy
from burgers_jax.progress import progress

METHODS = ("model", "persistence", "truth")
OUT_KIND = "evaluation"


class EvaluateError(ValueError):
    pass


def one_step_metrics(pred, true, frame0, bounds: dict, nu, dt) -> dict:
    """Per-window metrics [B] of predicted frames `pred` [B, T, H, W, 2] against `true`;
    the residual on [frame0 [B, 1, ...], pred] with `bounds` of T+1 frames."""
    seq = jnp.concatenate([frame0, pred], axis=1)
    terms = physics.pde_terms(seq, bounds["left"], bounds["right"], bounds["bottom"], bounds["top"], nu, dt)
    per = lambda r: jnp.mean(jnp.square(r), axis=(1, 2, 3))  # noqa: E731
    mean_dev, max_dev = metrics.constraint_error(pred)
    out = {"pde_loss": per(terms["res_u"]) + per(terms["res_v"]),
           "rmse": metrics.rmse(pred, true), "nrmse": metrics.nrmse(pred, true), "vrmse": metrics.vrmse(pred, true),
           "brmse": metrics.brmse(pred, true), "constraint_error": mean_dev, "constraint_error_max": max_dev}
    out.update({f"residual_rms_{k}": v for k, v in metrics.residual_term_rms(terms).items()})
    out.update({f"frmse_{k}": v for k, v in metrics.frmse(pred, true).items()})
    return out


def frame_metrics(pred, true) -> dict:
    return {"vrmse": metrics.vrmse(pred, true), "nrmse": metrics.nrmse(pred, true)}


def build_source(args):
    if args.analytic:
        nus = data_lib.reference_nus(args.num_samples, args.seed, (args.nu_min, args.nu_max))
        return data_lib.AnalyticSource(nus, num_frames=args.num_frames), 1.0 / (args.num_frames - 1)
    window = data_lib.span(args.temporal_length + max(args.rollout, 1), args.frame_stride)
    source = data_lib.HDF5Source(args.data, min_frames=window)
    if source.dt is None and args.dt is None:
        print(f"note: {args.data} records no time axis; using the reference dt = 1/999 (--dt to change)")
    return source, args.dt or source.dt or physics.REFERENCE_DT


def evaluation_windows(source, split: str, window: int, stride: int, per_sample: int) -> list[tuple[int, int]]:
    train_idx, val_idx = data_lib.split_indices(source.num_samples, 0.9, 42)
    idx = {"val": val_idx, "train": train_idx, "all": np.arange(source.num_samples)}[split]
    if len(idx) == 0:
        raise EvaluateError(f"the {split} split of {source.name} is empty ({source.num_samples} samples)")
    return data_lib.val_windows(source.num_frames, sorted(idx), window, per_sample, stride)


def evaluate(params, config, policy: Policy, source, items, *, temporal_length: int, stride: int, dt: float,
             rollout: int = 0, batch_size: int = 4, show_progress: bool = True) -> dict:
    """The metrics of one evaluation (module docstring) as plain Python numbers."""
    T = temporal_length
    model = PDECausalModel(config, policy=policy)
    window = T + max(rollout, 1)
    step_dt = dt * stride

    @jax.jit
    def predict(p, x):  # [B, T, H, W, 2] -> next frames [B, T, H, W, 2], float32
        x6 = jnp.pad(x, ((0, 0),) * 4 + ((0, config.in_channels - 2),)).astype(policy.input_dtype)
        return model.apply({"params": p}, x6, train=False)[..., :2].astype(jnp.float32)

    @jax.jit
    def one_step(p, frames, bounds, nu):
        x, true = frames[:, :T], frames[:, 1:T + 1]
        preds = {"model": predict(p, x), "persistence": x,
                 "truth": true.astype(policy.output_dtype).astype(jnp.float32)}
        b = {k: v[:, :T + 1] for k, v in bounds.items()}
        return {m: one_step_metrics(pr, true, frames[:, :1], b, nu, step_dt) for m, pr in preds.items()}, preds

    @jax.jit
    def roll(p, frames):
        def body(win, h):
            nxt = predict(p, win)[:, -1:]
            return jnp.concatenate([win[:, 1:], nxt], axis=1), nxt[:, 0]

        _, pred = jax.lax.scan(body, frames[:, :T], jnp.arange(rollout))  # [N, B, H, W, 2]
        pred = jnp.moveaxis(pred, 0, 1)
        true = frames[:, T:T + rollout]
        held = jnp.repeat(frames[:, T - 1:T], rollout, axis=1)
        per_h = lambda a: jax.vmap(frame_metrics, in_axes=(1, 1))(a[:, :, None], true[:, :, None])  # noqa: E731
        return {"model": per_h(pred), "persistence": per_h(held)}

    sums: dict = {}
    count = 0.0
    shown = None
    batches = data_lib.window_batches(source, items, batch_size, window, stride)
    total = -(-len(items) // batch_size)
    with jax.default_matmul_precision(policy.matmul_precision):
        for batch in progress(batches, desc="evaluate", unit="batch", total=total, enabled=show_progress):
            frames = jnp.asarray(batch["frames"][..., :2])
            bounds = {k: jnp.asarray(batch[k]) for k in data_lib.BOUNDARIES}
            w = np.asarray(batch["valid"], np.float64)
            per, preds = one_step(params, frames, bounds, jnp.asarray(batch["nu"]))
            parts = {"one_step": jax.device_get(per)}
            if rollout:
                parts["rollout"] = jax.device_get(roll(params, frames))
            _accumulate(sums, parts, w)
            count += w.sum()
            if shown is None:
                shown = {m: np.asarray(pr[0, -1]) for m, pr in preds.items()} | {"true": np.asarray(frames[0, T])}
    result = jax.tree.map(lambda s: s / count, sums)
    result["windows"] = [[int(i), int(s)] for i, s in items]
    if rollout:
        r = result["rollout"]
        r["horizons"] = list(range(1, rollout + 1))
        better = np.asarray(r["model"]["vrmse"]) < np.asarray(r["persistence"]["vrmse"])
        r["model_beats_persistence_until"] = int(np.argmin(better)) if not better.all() else rollout
    return {"result": _plain(result), "shown": shown}


def _accumulate(sums: dict, parts, weights: np.ndarray) -> None:
    for key, value in parts.items():
        if isinstance(value, dict):
            _accumulate(sums.setdefault(key, {}), value, weights)
        else:
            v = np.asarray(value, np.float64)  # [B] or [N, B] (rollout: horizons first)
            sums[key] = sums.get(key, 0.0) + (v * weights).sum(axis=-1)


def _plain(tree):
    if isinstance(tree, dict):
        return {k: _plain(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_plain(v) for v in tree]
    a = np.asarray(tree)
    if a.ndim:
        return a.tolist()
    return int(a) if np.issubdtype(a.dtype, np.integer) else float(a)


# ----------------------------------------------------------------------------- report

TABLE_KEYS = (("vrmse", "VRMSE"), ("nrmse", "nRMSE"), ("rmse", "RMSE"), ("brmse", "bRMSE"), ("pde_loss", "PDE loss"),
              ("constraint_error", "|u+v-1.5| mean"), ("frmse_low", "fRMSE low"), ("frmse_mid", "fRMSE mid"),
              ("frmse_high", "fRMSE high"))


def markdown(result: dict, title: str) -> str:
    lines = [f"# {title}", "", f"{len(result['windows'])} windows, one step (teacher forced):", "",
             "| method | " + " | ".join(name for _, name in TABLE_KEYS) + " |",
             "|---|" + "---|" * len(TABLE_KEYS)]
    for m in METHODS:
        row = result["one_step"][m]
        lines.append(f"| {m} | " + " | ".join(f"{row[k]:.3e}" for k, _ in TABLE_KEYS) + " |")
    if "rollout" in result:
        r = result["rollout"]
        lines += ["", f"Rollout VRMSE (the model fed its own predictions); the model beats persistence up to "
                      f"horizon {r['model_beats_persistence_until']}:", "",
                  "| horizon | model | persistence |", "|---|---|---|"]
        for h, a, b in zip(r["horizons"], r["model"]["vrmse"], r["persistence"]["vrmse"]):
            lines.append(f"| {h} | {a:.3e} | {b:.3e} |")
    return "\n".join(lines) + "\n"


def plot(result: dict, shown: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    if "rollout" in result:
        r = result["rollout"]
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
        for ax, key in zip(axes, ("vrmse", "nrmse")):
            for m in ("model", "persistence"):
                ax.semilogy(r["horizons"], r[m][key], "o-" if m == "model" else "s--", label=m)
            ax.set_xlabel("rollout horizon (steps)")
            ax.set_title(key.upper().replace("RMSE", "RMSE"))
            ax.legend()
        fig.suptitle("error vs horizon")
        fig.savefig(out / "rollout.png", dpi=90)
        plt.close(fig)
        paths.append(out / "rollout.png")
    fig, axes = plt.subplots(2, 4, figsize=(15, 7), constrained_layout=True)
    for row, name in enumerate("uv"):
        true = shown["true"][..., row]
        panels = [(true, f"true {name}", "viridis"), (shown["model"][..., row] - true, f"model error {name}", "RdBu_r"),
                  (shown["persistence"][..., row] - true, f"persistence error {name}", "RdBu_r"),
                  (shown["truth"][..., row] - true, f"floor (rounding) error {name}", "RdBu_r")]
        for col, (img, label, cmap) in enumerate(panels):
            ax = axes[row, col]
            kw = {} if cmap == "viridis" else {"vmin": -np.abs(img).max() - 1e-30, "vmax": np.abs(img).max() + 1e-30}
            im = ax.imshow(img, origin="lower", extent=(0, 1, 0, 1), cmap=cmap, **kw)
            ax.set_title(label)
            fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle("first window, last predicted frame")
    fig.savefig(out / "window.png", dpi=80)
    plt.close(fig)
    return paths + [out / "window.png"]


# ----------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="burgers-evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, type=Path, help="converted model directory")
    p.add_argument("--lora", type=Path, default=None, help="adapters directory")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="HDF5 file of the Burgers layout")
    src.add_argument("--analytic", action="store_true", help="exact solutions at --nu-min..--nu-max")
    p.add_argument("--nu-min", type=float, default=0.1)
    p.add_argument("--nu-max", type=float, default=0.15)
    p.add_argument("--num-samples", type=int, default=10, help="with --analytic")
    p.add_argument("--num-frames", type=int, default=1000, help="with --analytic (t in [0, 1])")
    p.add_argument("--seed", type=int, default=42, help="with --analytic: the viscosity draw")
    p.add_argument("--split", choices=("val", "train", "all"), default=None,
                   help="default: val for --data, all for --analytic")
    p.add_argument("--frame-stride", type=int, default=1)
    p.add_argument("--temporal-length", type=int, default=16, help="input frames T")
    p.add_argument("--rollout", type=int, default=0, help="rollout steps N (0: none)")
    p.add_argument("--windows-per-sample", type=int, default=1)
    p.add_argument("--precision", default="fp32_output", help=f"one of {', '.join(Policy.names())}")
    p.add_argument("--dt", type=float, default=None, help="frame spacing of a file without a time axis")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier evaluation at --out")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    absl_logging.set_verbosity(absl_logging.ERROR)
    compilation_cache.enable()
    try:
        for name in ("frame_stride", "temporal_length", "windows_per_sample", "batch_size", "num_samples"):
            if getattr(args, name) < 1:
                raise EvaluateError(f"--{name.replace('_', '-')} must be >= 1")
        if args.rollout < 0:
            raise EvaluateError("--rollout must be >= 0")
        outputs.check_dir(args.out, OUT_KIND, args.overwrite)
        policy = Policy.named(args.precision)
        params, config = load_model(args.checkpoint, args.lora, policy=policy)
        if args.temporal_length * config.tokens_per_frame > config.transformer.max_position_embeddings:
            raise EvaluateError(f"--temporal-length {args.temporal_length}: more frames than the model's "
                                f"max_position_embeddings allow")
        source, dt = build_source(args)
        split = args.split or ("all" if args.analytic else "val")
        window = args.temporal_length + max(args.rollout, 1)
        items = evaluation_windows(source, split, window, args.frame_stride, args.windows_per_sample)
        out = evaluate(params, config, policy, source, items, temporal_length=args.temporal_length,
                       stride=args.frame_stride, dt=dt, rollout=args.rollout, batch_size=args.batch_size)
        result = out["result"]
        result["config"] = {"checkpoint": str(args.checkpoint), "lora": str(args.lora) if args.lora else None,
                            "data": "analytic" if args.analytic else str(args.data), "split": split,
                            "nu_range": [args.nu_min, args.nu_max] if args.analytic else None,
                            "frame_stride": args.frame_stride, "dt": dt, "window_dt": dt * args.frame_stride,
                            "temporal_length": args.temporal_length, "rollout": args.rollout,
                            "precision": args.precision}
        title = f"Evaluation of {args.checkpoint}" + (f" + {args.lora}" if args.lora else "")

        def fill(tmp: Path) -> None:
            (tmp / "metrics.json").write_text(json.dumps(result, indent=1) + "\n")
            (tmp / "metrics.md").write_text(markdown(result, title))
            plot(result, out["shown"], tmp)
            (tmp / outputs.METADATA_FILE).write_text(json.dumps(outputs.format_marker(OUT_KIND)) + "\n")

        final = outputs.write_dir(args.out, fill, OUT_KIND, args.overwrite)
        print(markdown(result, title))
        print(f"wrote {final}/metrics.json, metrics.md, window.png" + (", rollout.png" if args.rollout else ""))
        return 0
    except (EvaluateError, CheckpointError, ConfigError, data_lib.DataError, outputs.OutputError) as e:
        print(f"burgers-evaluate: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
