# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# ruff: noqa: E402  (a notebook: each cell imports what it uses)

# %% [markdown]
# # Label-free fine-tuning of a PDE foundation model, in ten minutes on a laptop
#
# A pretrained PyTorch `PDECausalModel` (here the repository's stand-in,
# `assets/standin/best.pt`: a small model pretrained on *other* PDE families and *other*
# viscosities) is converted to JAX, asked to predict 2D viscous Burgers, compared with the
# exact solution, fine-tuned with **no ground truth at all** (only the PDE residual of its
# own predictions), and compared again on trajectories the fine-tuning never saw.
#
# Run it as a script (6.5 minutes measured on a 2-core CPU that was running another job,
# most of it the 200 training steps; from the repository root after `make demo` or
# `make test` created `.venv`):
#
#     .venv/bin/python examples/tutorial.py            # figures in runs/tutorial/figures/
#
# or open it as a notebook: it is a percent-format script (`# %%` cells) that VS Code and
# Jupyter (with `jupytext`) open as one. `--size smoke` (or `BURGERS_TUTORIAL_SIZE=smoke`)
# runs the same steps in seconds-long sizes (the tests do); `--out DIR` (or
# `BURGERS_TUTORIAL_OUT`) picks the output folder. The Python calls used here are
# documented in docs/api.md.

# %%
import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # a script: write the figures, open no window
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from burgers_jax.evaluation import figures  # one colour per role: zero-shot, fine-tuned, persistence
from burgers_jax.io import compilation_cache

SIZES = {
    # the recommended recipe as configs/demo.py has it: 200 steps on 4-frame windows
    "laptop": {"steps": 200, "temporal_length": 4, "eval_samples": 8, "rollout": 30, "verify": True},
    # every step of the tutorial in seconds (the tests; the converter's --verify is tested elsewhere)
    "smoke": {"steps": 1, "temporal_length": 2, "eval_samples": 1, "rollout": 2, "verify": False},
}
parser = argparse.ArgumentParser(description="the burgers-jax tutorial")
parser.add_argument("--size", choices=sorted(SIZES), default=os.environ.get("BURGERS_TUTORIAL_SIZE", "laptop"))
parser.add_argument("--out", default=os.environ.get("BURGERS_TUTORIAL_OUT", "runs/tutorial"))
args, _ = parser.parse_known_args()  # known only: a notebook kernel passes flags of its own
SIZE = SIZES[args.size]

try:
    REPO = Path(__file__).resolve().parents[1]
except NameError:  # a notebook: started in examples/ or in the repository root
    REPO = Path.cwd() if (Path.cwd() / "assets").is_dir() else Path.cwd().parent
STANDIN = REPO / "assets" / "standin" / "best.pt"
OUT = Path(args.out) if Path(args.out).is_absolute() else REPO / args.out
FIGURES = OUT / "figures"
MARKER = OUT / ".burgers_tutorial"  # this folder is the tutorial's: a rerun replaces it
if OUT.exists() and any(OUT.iterdir()):
    if not MARKER.is_file():
        raise SystemExit(f"tutorial: {OUT} exists and was not made by the tutorial; pass another --out")
    shutil.rmtree(OUT)
FIGURES.mkdir(parents=True)
MARKER.write_text("made by examples/tutorial.py; a rerun replaces this folder\n")
T = SIZE["temporal_length"]
t_start = time.time()
compilation_cache.enable()  # as the commands do: a rerun loads its compiled steps from disk
print(f"size {args.size}: {SIZE}; writing {OUT}")

# %% [markdown]
# ## 1. Convert the PyTorch checkpoint
#
# The architecture is read from the checkpoint's own config and checked against the
# tensor shapes; `verify=True` runs the PyTorch reference (Hugging Face `transformers`)
# and the JAX model on the same input and reports the error at every seam. Same as
# `burgers-convert assets/standin/best.pt --out runs/tutorial/pretrained --verify`.

# %%
from burgers_jax.porting.convert_ckpt import convert

PRETRAINED = OUT / "pretrained"
convert(STANDIN, PRETRAINED, verify=SIZE["verify"])

# %% [markdown]
# ## 2. Predict, and look at the error
#
# The data: the exact travelling-wave solution of 2D viscous Burgers on the unit square
# (docs/model_and_formats.md), computed from its formula (`AnalyticSource`; an HDF5 file
# of the same layout works alike), at ν = 0.125, inside the fine-tuning range and outside
# the stand-in's pretraining ranges. The model takes `T` frames and predicts, for each,
# the next one; we look at the last.

# %%
from burgers_jax.data.sources import AnalyticSource
from burgers_jax.evaluation.predict import predict
from burgers_jax.io.checkpoint import load_model

NU, START = 0.125, 500
source = AnalyticSource([NU])  # 1000 frames on t in [0, 1]: dt = 1/999
window = source.read_window(0, start=START, length=T + 1)["data"]  # [T + 1, 128, 128, 2], (u, v)
inputs, truth = window[None, :T], window[T]  # the model's T input frames; the frame after the last
t_truth = source.times[START + T]
params, model_config = load_model(PRETRAINED)
zero_shot_pred = predict(params, model_config, inputs)[0, -1]  # [128, 128, 2]


def show_error_maps(panels: dict, title: str, path: Path) -> None:
    """u of the truth, then the error of each prediction on one symmetric colour scale
    (white = no error; clipped at the 99.5th percentile of |error|, so that a few edge
    cells do not wash out the rest)."""
    errors = {name: pred[..., 0] - truth[..., 0] for name, pred in panels.items()}
    scale = max(float(np.percentile(np.abs(e), 99.5)) for e in errors.values()) or 1e-12
    fig, axes = plt.subplots(1, 1 + len(errors), figsize=(4.2 * (1 + len(errors)), 3.8), squeeze=False)
    axes = axes[0]
    im = axes[0].imshow(truth[..., 0], origin="lower", extent=(0, 1, 0, 1), cmap="viridis")
    axes[0].set_title(f"u, exact (t = {t_truth:.3f})")
    fig.colorbar(im, ax=axes[0], shrink=0.8, label="u")
    for ax, (name, err) in zip(axes[1:], errors.items()):
        im = ax.imshow(err, origin="lower", extent=(0, 1, 0, 1), cmap="RdBu_r", vmin=-scale, vmax=scale)
        ax.set_title(f"{name}: u error\nRMS {np.sqrt(np.mean(err ** 2)):.1e}, max |err| {np.abs(err).max():.1e}")
        fig.colorbar(im, ax=ax, shrink=0.8, extend="both", label="prediction - truth")
    for ax in axes:
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.show()


show_error_maps({"zero-shot": zero_shot_pred, "persistence": inputs[0, -1]},
                f"one step ahead, ν = {NU}, from {T} input frames (dt = 1/999)", FIGURES / "1_prediction.png")

# %% [markdown]
# Persistence (copying the last input frame) is an excellent predictor at dt = 1/999: the
# stand-in's error is mostly reconstruction error, smooth and large-scale.
#
# ## 3. Fine-tune on the PDE residual alone
#
# `configs/demo.py` is the recommended label-free recipe (docs/results.md): the residual
# of each prediction against its own input frame, in a preconditioned norm, LoRA on every
# projection plus the decoder, float32. The loss uses only the PDE, ν, the boundary values
# and the model's inputs, never a true future frame; the best checkpoint is chosen by the
# validation value of the same loss. Same as `burgers-train --config configs/demo.py
# --config.model.pretrained_path=... --config.logging.save_dir=...`.

# %%
from burgers_jax.configs import demo
from burgers_jax.training.trainer import train_and_evaluate

RUN = OUT / "run"
config = demo.get_config()
config.model.pretrained_path = str(PRETRAINED)
config.logging.save_dir = str(RUN)
config.dataset.temporal_length = T
config.training.max_steps = SIZE["steps"]
if args.size == "smoke":
    config.training.warmup_steps, config.training.eval_every_steps = 0, 1
    config.dataset.num_samples = 10
    config.dataloader.batch_size = config.dataloader.val_batch_size = 2
    config.logging.plots = config.logging.tensorboard = False
summary = train_and_evaluate(config, RUN)

rows = [json.loads(line) for line in (RUN / "metrics.jsonl").read_text().splitlines() if line]
fig, ax = plt.subplots(figsize=(8, 3.8))
train_rows = [r for r in rows if "train/loss" in r]
val_rows = [r for r in rows if "val/loss" in r]
ax.plot([r["step"] for r in train_rows], [r["train/loss"] for r in train_rows], ".-",
        color=figures.role_colour("fine-tuned", 1), label="train")
ax.plot([r["step"] for r in val_rows], [r["val/loss"] for r in val_rows], "o-",
        color=figures.role_colour("fine-tuned"), label="validation")
ax.set_xlabel("training step")
ax.set_ylabel(f"label-free loss ({config.training.residual}; persistence ~ 1)")
ax.set_yscale("log")
ax.xaxis.get_major_locator().set_params(integer=True)
ax.set_title("fine-tuning on the PDE residual alone")
figures.legend_beside(ax)  # beside the axes, not over the curves
fig.tight_layout()
fig.savefig(FIGURES / "2_loss_curve.png", dpi=110)
plt.show()

# %% [markdown]
# ## 4. Compare zero-shot and fine-tuned on trajectories the fine-tuning never saw
#
# Fresh trajectories (another viscosity draw in [0.1, 0.15]), one step ahead and over a
# rollout (the model fed its own predictions), with persistence beside them. VRMSE: the
# RMS error over the RMS deviation of the true field from its mean (lower is better).
# Same as `burgers-evaluate --checkpoint ... [--lora RUN/best_adapters] --analytic ...`.
#
# What to expect: the cell prints what its numbers say (the same sentences `burgers-compare`
# writes), e.g. that the fine-tuned model is better than zero-shot one step ahead and at
# every rollout horizon, and how it stands against persistence, which at dt = 1/999 the
# stand-in does not beat: what remains is its reconstruction error, not its dynamics
# (docs/results.md).

# %%
from burgers_jax.evaluation import report
from burgers_jax.evaluation.evaluate import EvalRequest, run_evaluation

BEST = RUN / "best_adapters"
request = EvalRequest(checkpoint=PRETRAINED, out=OUT / "eval_zero_shot", analytic=True, nu_min=0.1, nu_max=0.15,
                      num_samples=SIZE["eval_samples"], seed=7, split="all", temporal_length=T,
                      rollout=SIZE["rollout"], precision=config.model.precision)
zero_shot, _, _ = run_evaluation(request, show_progress=False)
fine_tuned, _, _ = run_evaluation(dataclasses.replace(request, lora=BEST, out=OUT / "eval_fine_tuned"),
                                  show_progress=False)

print(f"{'':<12} {'one step':>10} {'rollout at ' + str(SIZE['rollout']):>15}")
for name, result, method in (("zero-shot", zero_shot, "model"), ("fine-tuned", fine_tuned, "model"),
                             ("persistence", zero_shot, "persistence")):
    print(f"{name:<12} {result['one_step'][method]['vrmse']:>10.4f} {result['rollout'][method]['vrmse'][-1]:>15.4f}")
vrmse = {name: (r["one_step"][m]["vrmse"], r["rollout"][m]["vrmse"])
         for name, r, m in (("zero-shot", zero_shot, "model"), ("fine-tuned", fine_tuned, "model"),
                            ("persistence", zero_shot, "persistence"))}
for other in ("zero-shot", "persistence"):
    (one, rollout), (other_one, other_rollout) = vrmse["fine-tuned"], vrmse[other]
    print(f"fine-tuned against {other}:", report.versus(one, other_one, rollout, other_rollout))

fig, ax = plt.subplots(figsize=(8, 3.8))
horizons = zero_shot["rollout"]["horizons"]
for name, result, method, role in (("zero-shot", zero_shot, "model", "zero-shot"),
                                   ("fine-tuned (label-free)", fine_tuned, "model", "fine-tuned"),
                                   ("persistence", zero_shot, "persistence", "persistence")):
    ax.plot(horizons, result["rollout"][method]["vrmse"], label=name, **figures.role_style(role))
ax.set_xlabel("rollout horizon (steps of dt = 1/999)")
ax.set_ylabel("VRMSE (lower is better)")
ax.set_yscale("log")
ax.xaxis.get_major_locator().set_params(integer=True)
ax.set_title(f"error vs horizon, {SIZE['eval_samples']} fresh trajectories")
figures.legend_beside(ax)  # beside the axes, not over the curves
fig.tight_layout()
fig.savefig(FIGURES / "3_rollout.png", dpi=110)
plt.show()

# The window of section 2, once more, with the fine-tuned model: the same colour scale.
tuned_params, tuned_config = load_model(PRETRAINED, BEST)
fine_tuned_pred = predict(tuned_params, tuned_config, inputs)[0, -1]
show_error_maps({"zero-shot": zero_shot_pred, "fine-tuned": fine_tuned_pred},
                f"one step ahead, ν = {NU}: before and after label-free fine-tuning", FIGURES / "4_error_maps.png")

# %% [markdown]
# ## What next
#
# - The same steps from the command line: the README's user path.
# - The full-size model: convert your own `best.pt`, generate the reference data
#   (`burgers-generate`), and train with `--config configs/burgers.py` (the recommended recipe).
# - What the label-free recipe achieves and what it does not: docs/results.md.
# - Back to PyTorch: `burgers-export --merged` (docs/api.md, "Export to PyTorch").

# %%
z, f = zero_shot["one_step"]["model"]["vrmse"], fine_tuned["one_step"]["model"]["vrmse"]
print(f"one-step VRMSE on fresh trajectories: zero-shot {z:.4f} -> fine-tuned {f:.4f} "
      f"({'better' if f < z else 'not better'}; {summary['steps']} label-free steps)")
print(f"tutorial finished in {time.time() - t_start:.0f} s; figures: {', '.join(sorted(p.name for p in FIGURES.iterdir()))}"
      f" in {FIGURES}")
