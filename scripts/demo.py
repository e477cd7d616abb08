"""The story in five minutes on a laptop (`make demo`):

1. the physics floors report (what a PDE loss value means at dt = 1/999);
2. the pretrained stand-in (assets/standin2/best.pt, a small model pretrained on other
   PDE families and other viscosities, whose autoencoder is good and whose dynamics are
   what is off for this PDE) converted to Flax with `--verify` against PyTorch;
3. label-free fine-tuning (the PDE residual, per step, in a preconditioned norm; no
   ground truth) in the PyTorch recipe's own setting, LoRA alone with the encoder and
   decoder frozen, at frame stride 10: configs/demo.py:lora_only;
4. the evaluation (`burgers-evaluate`) of the zero-shot and the fine-tuned model on data
   the fine-tuning never saw (fresh trajectories, and held-out viscosities), one step and
   rollouts, with persistence as the baseline;
5. the tables and where the plots are;
6. the comparison (`burgers-compare`) of the zero-shot and the fine-tuned model on the
   fresh trajectories: one table and one figure, whose folder is the last line printed.

    python scripts/demo.py [--out demo_run] [--steps N] [--temporal-length T] [--skip-floors]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from burgers_jax.configs import demo
from burgers_jax.evaluation import report
from burgers_jax.evaluation.compare import compare, conclusions, load
from burgers_jax.evaluation.evaluate import EvalRequest, run_evaluation
from burgers_jax.physics import floors
from burgers_jax.porting.convert_ckpt import convert
from burgers_jax.training.trainer import train_and_evaluate

REPO = Path(__file__).resolve().parents[1]
DEMO_MARKER = ".burgers_demo"  # marks a folder this script made (and may replace)
STANDIN = REPO / "assets" / "standin2" / "best.pt"
VARIANT = "lora_only"  # configs/demo.py:lora_only, the PyTorch recipe's setting


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def show(cmd: str) -> None:
    """The command line a user would type for the step the demo runs next."""
    print(f"$ {cmd}", flush=True)


# Data the fine-tuning never saw: fresh trajectories of its viscosity range, and viscosities
# outside both it and the stand-in's pretraining ranges ([0.03, 0.08], [0.18, 0.3]).
EVAL_SETS = {"test": ("fresh trajectories, nu in [0.1, 0.15]", 0.1, 0.15, 7),
             "heldout": ("held-out nu in [0.35, 0.45]", 0.35, 0.45, 11)}
ROLLOUT = 30


def evaluate(pretrained: Path, out: Path, config, eval_set: str, lora: Path | None = None) -> dict:
    """One model on one evaluation set: one step and a ROLLOUT-step rollout."""
    _, nu_min, nu_max, seed = EVAL_SETS[eval_set]
    req = EvalRequest(checkpoint=pretrained, out=out, lora=lora, analytic=True, nu_min=nu_min, nu_max=nu_max,
                      num_samples=8, seed=seed, split="all", temporal_length=config.dataset.temporal_length,
                      frame_stride=config.dataset.frame_stride, rollout=ROLLOUT, precision=config.model.precision)
    show(f"burgers-evaluate --checkpoint {pretrained}" + (f" --lora {lora}" if lora else "") +
         f" --analytic --nu-min {nu_min} --nu-max {nu_max} --num-samples 8 --seed {seed} --split all"
         f" --temporal-length {req.temporal_length} --frame-stride {req.frame_stride} --rollout {ROLLOUT}"
         f" --precision {req.precision} --out {out}")
    result, _, _ = run_evaluation(req, show_progress=False)
    return result


def results_table(zero: dict, tuned: dict) -> str:
    """Zero-shot, fine-tuned and persistence on one evaluation set: VRMSE one step ahead
    and at the end of the rollout, and the one-step PDE loss in both norms (the
    preconditioned one is what the fine-tuning lowers)."""
    rows = [[row, f"{e['one_step'][m]['vrmse']:.4f}", f"{e['rollout'][m]['vrmse'][-1]:.4f}",
             f"{e['one_step'][m]['precond_loss']:.3g}", f"{e['one_step'][m]['pde_loss']:.3g}"]
            for row, e, m in (("zero-shot", zero, "model"), ("fine-tuned (label-free)", tuned, "model"),
                              ("persistence", zero, "persistence"))]
    return "\n".join(report.table(["", "one step", f"rollout at {len(zero['rollout']['horizons'])} steps",
                                    "PDE loss, preconditioned (trained)", "PDE loss, plain"], rows))


# Printed under the first table when the plain PDE loss says the opposite of the VRMSE.
PLAIN_NORM_NOTE = ("The plain PDE loss (the mean square of the residual) is ruled by grid-scale error, which the "
                   "diffusion term amplifies thousands of times over smooth error; it can rise while the fields get "
                   "closer to the truth, as here. The preconditioned norm the fine-tuning lowers orders the rows as the VRMSE "
                   "does (docs/results.md, \"The loss\").")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="demo_run", help="output folder (replaced if an earlier demo made it)")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: configs/demo.py)")
    ap.add_argument("--temporal-length", type=int, default=None, help="model input frames")
    ap.add_argument("--skip-floors", action="store_true", help="skip the physics floors report")
    args = ap.parse_args(argv)
    t0 = time.time()
    out = (REPO / args.out).resolve()
    if out.exists() and any(out.iterdir()):
        if not (out / DEMO_MARKER).is_file():  # never delete a folder the demo did not make
            print(f"demo: error: {out} exists and was not made by the demo; choose another --out", file=sys.stderr)
            return 2
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text("made by scripts/demo.py; `make demo` replaces this folder\n")

    if not args.skip_floors:
        banner("1. Physics floors: the PDE loss of reference fields (nu = 0.125, 17 frames, 128^2)")
        print(floors.format_floors_report(floors.floors_report(nu=0.125)))

    banner(f"2. The pretrained stand-in ({STANDIN.relative_to(REPO)}), converted and verified against PyTorch")
    pretrained = out / "pretrained"
    show(f"burgers-convert {STANDIN.relative_to(REPO)} --out {pretrained} --verify")
    convert(STANDIN, pretrained, verify=True)

    config = demo.get_config(VARIANT)
    banner(f"3. Label-free fine-tuning (configs/demo.py:{VARIANT}: residual {config.training.residual}, "
           f"{config.model.trainable} (encoder and decoder frozen), frame stride {config.dataset.frame_stride}, "
           f"{config.model.precision}, {config.training.max_steps} steps)")
    save_dir = out / "train"
    overrides = {"model.pretrained_path": str(pretrained), "logging.save_dir": str(save_dir)}
    if args.steps is not None:
        overrides.update({"training.max_steps": args.steps, "training.eval_every_steps": max(1, args.steps // 2),
                          "training.warmup_steps": max(0, min(10, args.steps - 1))})
    if args.temporal_length is not None:
        overrides["dataset.temporal_length"] = args.temporal_length
    for key, value in overrides.items():
        section, field = key.split(".")
        config[section][field] = value
    show(f"burgers-train --config configs/demo.py:{VARIANT} " + " ".join(f"--config.{k}={v}" for k, v in overrides.items()))
    train_and_evaluate(config, save_dir)

    banner("4. Evaluation on data the fine-tuning never saw: zero-shot vs fine-tuned, with persistence")
    evals = {(who, name): evaluate(pretrained, out / f"eval_{who}_{name}", config, name,
                                   lora=save_dir / "best_adapters" if who == "finetuned" else None)
             for name in EVAL_SETS for who in ("zero_shot", "finetuned")}

    banner("5. Results")
    better, noted = True, False
    for name, (label, *_) in EVAL_SETS.items():
        zero, tuned = evals[("zero_shot", name)], evals[("finetuned", name)]
        print(f"\n{label} (VRMSE, lower is better):\n")
        print(results_table(zero, tuned))
        z, f = zero["one_step"]["model"]["vrmse"], tuned["one_step"]["model"]["vrmse"]
        if not noted and f < z and tuned["one_step"]["model"]["pde_loss"] > zero["one_step"]["model"]["pde_loss"]:
            print(f"\n{PLAIN_NORM_NOTE}")
            noted = True
        zr, fr = zero["rollout"]["model"]["vrmse"], tuned["rollout"]["model"]["vrmse"]
        wins_rollout = all(a <= b for a, b in zip(fr, zr))
        better &= f < z and wins_rollout
        print(f"\nOne step: {z:.4f} -> {f:.4f} ({100 * (z - f) / z:.0f} % of its error removed); rollout at {ROLLOUT}: "
              f"{zr[-1]:.4f} -> {fr[-1]:.4f}; the fine-tuned rollout is "
              f"{'no worse than zero-shot at every horizon' if wins_rollout else 'worse than zero-shot somewhere'}.")
    print("\n" + ("The fine-tuned model is BETTER than the pretrained one it started from, one step ahead and in "
                  "its rollouts, on data it never saw; no ground truth was used to train or to choose it."
                  if better else "The fine-tuned model is NOT better than zero-shot everywhere here (see above)."))
    print(f"\nrun directory: {save_dir} (metrics.jsonl, loss_curve.png, plots/, tensorboard/, best_adapters/)")
    print(f"evaluations:   {out}/eval_*/ (metrics.md, rollout.png, window.png)")

    # Last: the one picture of the demo (the fresh trajectories: one data set, so one window's maps).
    banner("6. Zero-shot and fine-tuned side by side (fresh trajectories)")
    evals = [out / f"eval_{who}_test" for who in ("zero_shot", "finetuned")]
    comparison = out / "comparison"
    show(f"burgers-compare {' '.join(map(str, evals))} --labels zero-shot,fine-tuned --out {comparison}")
    labels = ["zero-shot", "fine-tuned"]
    final, files, notes = compare(evals, comparison, labels=labels)
    for note in notes:
        print(f"note: {note}")
    # What the comparison says, in sentences written from its numbers (comparison.md has them too).
    for line in conclusions([load(p, label) for p, label in zip(evals, labels)]):
        print(f"- {line}.")
    print(f"demo finished in {time.time() - t0:.0f} s")
    print(f"comparison (table and figure: {', '.join(files)}):")
    print(final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
