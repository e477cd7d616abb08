"""Does label-free fine-tuning make the stand-in better? The protocol behind docs/results.md.

    python scripts/experiment.py [--out experiments/label_free] [--strides 1,10] [--seeds 0,1,2]
        [--plan recipe|lora_only] [--rows precond,supervised,...] [--steps 200]

From the pretrained stand-in (`--plan recipe`: assets/standin/best.pt; `--plan lora_only`:
the second stand-in, assets/standin2/best.pt; converted with `--verify`), each
row fine-tunes on the reference sample set (nu ~ U(0.1, 0.15), seed 42, computed from the
formula; the run's validation windows choose its checkpoint by the validation value of
the loss it trains) and is then evaluated on data no run saw:

- **test**: 8 fresh trajectories of the fine-tuning range (nu ~ U(0.1, 0.15), seed 7);
- **held-out nu**: 8 trajectories at nu ~ U(0.35, 0.45), in neither the stand-in's
  pretraining ranges ([0.03, 0.08] and [0.18, 0.3]) nor the fine-tuning range;

one step (teacher forced) and a rollout (the model fed its own predictions) of 300 steps
at stride 1 (100 on held-out nu) and 60 at stride 10, against persistence and zero-shot. Rows (all float32,
LoRA + decoder, unless named): `precond` (the per-step anchored residual in the
preconditioned norm, the recommended recipe), `per_step` (anchored, plain norm),
`window` (the reference residual), `precond_lora_only` (the reference's trainable set),
`precond_pushforward` (training on the model's own 4-step rollouts half the time),
`precond_fp32_output` (the default precision policy), `precond_bdf2` (the
second-order time difference, at stride 10), `precond_long` (5x the steps), `supervised` (the data loss
against the true next frames, same parts, same steps: the ceiling) and
`supervised_long` (5x the steps: a second ceiling); for the PyTorch recipe's own setting,
LoRA alone: `precond_lora_only`, `supervised_lora_only` (its ceiling: a row's gap is
closed against the supervised row of the same trained parts), `supervised_lora_only_long`
(5x the steps: where LoRA alone saturates) and `window_lora_only` (the PyTorch recipe
itself). "÷ persistence" is the one-step VRMSE over persistence's (below 1: better than
copying the last frame). PLANS say which row runs at which stride with how many seeds.
Everything a run or an evaluation finished is kept: a rerun with the same settings picks
up where the last one stopped. A run in the folder of other settings (another --steps, ...) is neither reported nor resumed as
the one asked for: the rerun is refused before any work, naming it (choose another --out).

Out: results.json, results.md (the table), rollout_stride{S}.png, curves_stride{S}.png,
runs/ and eval/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from burgers_jax.configs import demo
from burgers_jax.errors import UserError
from burgers_jax.evaluation import evaluate, figures
from burgers_jax.io import outputs
from burgers_jax.porting import convert_ckpt
from burgers_jax.training import trainer
from burgers_jax.training.rundir import RUN_FILES, config_changes, config_dict

REPO = Path(__file__).resolve().parents[1]
ROWS = {  # name -> (label, config overrides on top of `base_config`)
    "precond": ("label-free: per-step anchored, preconditioned (recommended)", {}),
    "supervised": ("supervised, same parts and steps (ceiling)",
                   {"training.lambda_pde": 0.0, "training.lambda_data": 1.0}),
    "supervised_long": ("supervised, 5x steps (converged ceiling)",
                        {"training.lambda_pde": 0.0, "training.lambda_data": 1.0, "STEPS": 5}),
    "window": ("label-free: the reference residual [x0, outputs]", {"training.residual": "window"}),
    "per_step": ("label-free: per-step anchored, plain norm", {"training.residual": "per_step"}),
    "precond_lora_only": ("label-free: preconditioned, LoRA only", {"model.trainable": "adapters"}),
    "precond_pushforward": ("label-free: preconditioned + pushforward (m = 4)",
                            {"training.pushforward_steps": 4, "training.pushforward_prob": 0.5}),
    "precond_fp32_output": ("label-free: preconditioned, fp32_output policy", {"model.precision": "fp32_output"}),
    "precond_bdf2": ("label-free: preconditioned, BDF2", {"training.residual_scheme": "bdf2"}),
    "precond_long": ("label-free: preconditioned, 5x steps", {"STEPS": 5}),
    # The PyTorch recipe's setting: LoRA alone (encoder and decoder frozen).
    "supervised_lora_only": ("supervised, LoRA only, same steps (ceiling of the LoRA-only rows)",
                             {"training.lambda_pde": 0.0, "training.lambda_data": 1.0, "model.trainable": "adapters"}),
    "supervised_lora_only_long": ("supervised, LoRA only, 5x steps (converged ceiling of LoRA alone)",
                                  {"training.lambda_pde": 0.0, "training.lambda_data": 1.0,
                                   "model.trainable": "adapters", "STEPS": 5}),
    "window_lora_only": ("label-free: the reference residual, LoRA only (the PyTorch recipe)",
                         {"training.residual": "window", "model.trainable": "adapters"}),
}
# Which row runs at which stride, and with every seed ("all") or the first only ("first"):
# the whole protocol in one place, so one invocation reproduces the whole table. `--plan`
# picks one: "recipe" (the first stand-in's study of the label-free loss) or "lora_only"
# (the PyTorch recipe's own setting, LoRA alone, on a stand-in that has learnt dynamics).
PLAN = [
    ("precond", 1, "all"), ("supervised", 1, "all"), ("precond", 10, "all"), ("supervised", 10, "all"),
    ("supervised_long", 1, "all"), ("supervised_long", 10, "first"),
    ("window", 1, "first"), ("per_step", 1, "first"), ("precond_lora_only", 1, "first"),
    ("precond_pushforward", 1, "first"), ("precond_fp32_output", 1, "all"),
    ("precond_bdf2", 10, "all"), ("precond_long", 1, "first"), ("precond_long", 10, "first"),
]
PLAN_LORA_ONLY = [
    ("precond_lora_only", 1, "all"), ("supervised_lora_only", 1, "all"),
    ("precond_lora_only", 10, "all"), ("supervised_lora_only", 10, "all"),
    ("window_lora_only", 1, "first"), ("window_lora_only", 10, "first"),
    ("precond", 1, "all"), ("precond", 10, "all"), ("supervised", 1, "first"), ("supervised", 10, "first"),
    ("supervised_long", 1, "first"), ("supervised_long", 10, "first"),
    ("precond_long", 1, "first"), ("precond_long", 10, "first"),
    ("supervised_lora_only_long", 10, "first"), ("supervised_lora_only_long", 1, "first"),
]
PLANS = {"recipe": PLAN, "lora_only": PLAN_LORA_ONLY}
STANDINS = {"recipe": REPO / "assets" / "standin" / "best.pt", "lora_only": REPO / "assets" / "standin2" / "best.pt"}


def ceiling_of(row: str, long: bool = False) -> str:
    """The supervised row of the same trained parts and steps (`long`: 5x the steps, the
    converged ceiling): a label-free row's gap is closed against what supervision reaches
    with what that row may change."""
    lora_only = ROWS[row][1].get("model.trainable") == "adapters"
    return ("supervised_lora_only" if lora_only else "supervised") + ("_long" if long else "")


EVAL_SETS = {  # name -> (label, EvalRequest fields)
    "test": ("test (nu in [0.1, 0.15], fresh trajectories)",
             dict(nu_min=0.1, nu_max=0.15, num_samples=8, seed=7, split="all")),
    "heldout": ("held-out nu in [0.35, 0.45]", dict(nu_min=0.35, nu_max=0.45, num_samples=8, seed=11, split="all")),
}
# Rollout steps per (stride, set): 300 steps at stride 1 on the test set (0.3 time units),
# 100 on held-out nu (CPU time); 60 at stride 10 (0.6 time units) on both.
ROLLOUT = {(1, "test"): 300, (1, "heldout"): 100, (10, "test"): 60, (10, "heldout"): 60}
SHOW_H = {(1, "test"): (10, 100, 300), (1, "heldout"): (10, 50, 100), (10, "test"): (10, 30, 60),
          (10, "heldout"): (10, 30, 60)}


def base_config(pretrained: Path, steps: int, stride: int, seed: int, temporal_length: int):
    c = demo.get_config()  # the recommended recipe; every row changes only what it names
    c.model.pretrained_path = str(pretrained)
    c.model.lora.dropout = 0.0
    c.training.residual_scheme = "euler"  # the protocol as measured; `precond_bdf2` names BDF2
    c.dataset.num_samples = 100  # the reference sample set: nu ~ U(0.1, 0.15), seed 42, 1000 frames
    c.dataset.temporal_length = temporal_length
    c.dataset.frame_stride = stride
    c.training.max_steps = steps
    c.training.warmup_steps = max(1, steps // 10)
    c.training.min_lr = 1e-5
    c.training.eval_every_steps = max(1, steps // 8)
    c.training.seed = seed
    c.logging.log_interval = max(1, steps // 40)
    c.logging.plots = False
    c.logging.tensorboard = False
    return c


def row_config(args, pretrained: Path, row: str, stride: int, seed: int):
    overrides = dict(ROWS[row][1])
    steps = args.steps * overrides.pop("STEPS", 1)
    c = base_config(pretrained, steps, stride, seed, args.temporal_length)
    for key, value in overrides.items():
        section, field = key.split(".")
        c[section][field] = value
    return c


class ExperimentError(UserError):
    """An experiment folder that cannot be continued as asked; raised before any training."""


SETTINGS_FILE = "experiment_settings.json"  # a finished run's settings (the config asked for)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ExperimentError(f"{path}: cannot be read ({e}); cannot tell which settings {path.parent} "
                              "was trained with: choose another --out (or delete that run to retrain it)") from None


def settings_changes(cfg, run: Path) -> dict:
    """{'section.field': (the run's value, the value asked for)} for every setting in which
    the run directory `run` differs from `cfg`; {} for a run of the same settings or none yet.

    The run's settings: experiment_settings.json (written when it finished) or, for a run cut
    short, the config.json its training wrote when it started (that one also holds the time
    step the trainer filled in and its resume flag, which are not settings asked for)."""
    wanted = json.loads(cfg.to_json_best_effort())
    settings, started = run / SETTINGS_FILE, run / "config.json"
    if settings.is_file():
        changes = config_changes(_read_json(settings), wanted)
    elif started.is_file():
        changes = config_changes(_read_json(started), wanted)
        if wanted.get("physics", {}).get("dt") is None:
            changes.pop("physics.dt", None)
    elif any((run / name).exists() for name in RUN_FILES):
        raise ExperimentError(f"{run} holds a run without a record of its settings (no {SETTINGS_FILE} or "
                              "config.json); not resuming it under the settings asked for: choose another "
                              "--out (or delete that run to retrain it)")
    else:
        return {}
    changes.pop("training.resume", None)  # set by train_row, not asked for
    return changes


def check_run(cfg, run: Path) -> None:
    """Before any training: `run` is new, or a run of exactly these settings (kept when it
    finished, resumed when it was cut short). A run of other settings is never reported as,
    or resumed into, a run of these: refused naming the run and what differs."""
    changes = settings_changes(cfg, run)
    if not changes:
        return
    listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(changes.items())[:8])
    more = f"; and {len(changes) - 8} more" if len(changes) > 8 else ""
    hint = "choose another --out (or delete that run to retrain it)"
    path = changes.get("model.pretrained_path")
    if len(changes) == 1 and path and all(isinstance(p, str) and os.path.exists(p) for p in path) and \
            os.path.samefile(*path):
        hint = "the same folder spelled differently: rerun with --out spelled as before"
    raise ExperimentError(f"{run} was trained with other settings ({listed}{more}); not reusing or resuming it "
                          f"under these: {hint}")


def train_row(cfg, run: Path) -> dict:
    """Trains (or resumes, or keeps) one run; the same settings are never run twice, and a
    run of other settings is refused (check_run)."""
    summary, settings = run / "summary.json", run / SETTINGS_FILE
    wanted = json.loads(cfg.to_json_best_effort())
    check_run(cfg, run)
    if summary.is_file() and settings.is_file():
        print(f"{run.name}: trained earlier with the same settings, kept")
        return json.loads(summary.read_text())
    cfg.training.resume = (run / "checkpoints").is_dir()  # a run cut short continues exactly
    out = trainer.train_and_evaluate(cfg, run)
    settings.write_text(json.dumps(wanted) + "\n")
    return out


def _newest_mtime(paths) -> float:
    """The newest modification time of any file or folder under `paths` (a folder's own
    mtime misses a file rewritten inside it)."""
    newest = 0.0
    for top in paths:
        if not os.path.exists(top):
            continue
        newest = max(newest, os.stat(top).st_mtime)
        for root, dirs, files in os.walk(top):
            for name in dirs + files:
                try:
                    newest = max(newest, os.stat(os.path.join(root, name)).st_mtime)
                except OSError:
                    pass
    return newest


def run_eval(args, out: Path, lora: Path | None, stride: int, eval_set: str, precision: str) -> dict:
    req = evaluate.EvalRequest(checkpoint=args.out / "pretrained", out=out, lora=lora, analytic=True,
                               temporal_length=args.temporal_length, frame_stride=stride,
                               rollout=args.rollout or ROLLOUT[(stride, eval_set)],
                               precision=precision, overwrite=True, **EVAL_SETS[eval_set][1])
    key = json.loads(json.dumps(dataclasses.asdict(req), default=str))
    done, request = out / "metrics.json", out / "request.json"
    # Reused only when it is newer than every file of what it evaluated (the adapters and
    # the base checkpoint): a run that changed since is evaluated again.
    inputs = [req.checkpoint] + ([lora] if lora is not None else [])
    if done.is_file() and request.is_file() and json.loads(request.read_text()) == key and \
            done.stat().st_mtime > _newest_mtime(inputs):
        return json.loads(done.read_text())
    result, _, _ = evaluate.run_evaluation(req, show_progress=False)
    request.write_text(json.dumps(key) + "\n")
    return result


# ----------------------------------------------------------------------------- the table


def bootstrap_ci(per_traj: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % interval of the mean over trajectories (resampled with replacement)."""
    rng = np.random.default_rng(seed)
    means = per_traj[rng.integers(0, len(per_traj), size=(n, len(per_traj)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def row_stats(evals: list[dict], stride: int) -> dict:
    """One row (its seeds) on one evaluation set."""
    one = [e["one_step"]["model"]["vrmse"] for e in evals]
    per_traj = np.mean([e["per_window_vrmse"]["model"] for e in evals], axis=0)
    roll = np.asarray([e["rollout"]["model"]["vrmse"] for e in evals])  # [seeds, N]
    return {"vrmse": one, "ci": bootstrap_ci(per_traj), "rollout": roll.mean(axis=0).tolist(),
            "h_star": [e["rollout"]["crossover_horizon"] for e in evals], "seeds": len(evals),
            "dct_high": [e["one_step"]["model"]["dct_frmse_high"] for e in evals]}


def summarize(results: dict) -> str:
    lines = []
    for stride_key, per_stride in sorted(results["strides"].items(), key=lambda kv: int(kv[0])):
        stride = int(stride_key)
        for set_name, (set_label, _) in EVAL_SETS.items():
            table = per_stride.get(set_name)
            if not table or "zero-shot" not in table:
                continue
            zs = statistics.mean(table["zero-shot"]["vrmse"])
            pers = table["persistence"]
            n = len(table["zero-shot"]["rollout"])  # shorter with --rollout
            hs = tuple(h for h in SHOW_H[(stride, set_name)] if h < n) + (n,)
            lines += [f"### Stride {stride} (dt = {stride}/999), {set_label}", "",
                      "| row | seeds | one-step VRMSE (mean ± sd) | 95 % CI | closure vs S (same parts) | vs S long (same parts) | "
                      "÷ persistence | " + " | ".join(f"rollout h={h}" for h in hs) + " | h* | ≤ zero-shot at every h |",
                      "|---|---|---|---|---|---|---|" + "---|" * len(hs) + "---|---|"]
            zs_roll = np.asarray(table["zero-shot"]["rollout"])

            def closure(m: float, ceiling: str | None) -> str:
                """How much of zero-shot's gap to the `ceiling` row a row of mean `m` closes
                (empty where the table has no such row)."""
                if ceiling not in table:
                    return ""
                ref = statistics.mean(table[ceiling]["vrmse"])
                return f"{100 * (zs - m) / (zs - ref):.0f} %" if zs != ref else ""

            for name, st in table.items():
                if name == "persistence":
                    continue
                m = statistics.mean(st["vrmse"])
                roll = np.asarray(st["rollout"])
                h_star = ", ".join("none" if h is None else str(h) for h in st["h_star"])
                label = results["labels"].get(name, name)
                same, long = (ceiling_of(name), ceiling_of(name, long=True)) if name in ROWS else (None, None)
                lines.append(
                    f"| {label} | {st['seeds']} | {_mean_sd(st['vrmse'])} | [{st['ci'][0]:.4f}, {st['ci'][1]:.4f}] | "
                    f"{closure(m, same)} | {closure(m, long) if name != long else ''} | "
                    f"{m / pers['vrmse']:.2f} | "
                    + " | ".join(f"{roll[h - 1]:.4f}" for h in hs)
                    + f" | {h_star} | {'yes' if np.all(roll <= zs_roll * (1 + 1e-6)) else 'no'} |")
            lines.append(f"| persistence | | {pers['vrmse']:.4f} | | | | | "
                         + " | ".join(f"{pers['rollout'][h - 1]:.4f}" for h in hs) + " | | |")
            lines.append("")
    return "\n".join(lines) + "\n"


def row_style(name: str, points: int | None = None) -> dict:
    """One colour per role; the rows of one role in shades of it (in ROWS's order: the
    recommended row and the first ceiling keep the role's own colour)."""
    if name in ("zero-shot", "persistence"):
        return figures.role_style(name, points=points)
    return figures.row_style({r: overrides for r, (_, overrides) in ROWS.items()}, name, points)


def make_figures(results: dict) -> dict:
    """{file name: Figure}: per stride, the test set's error against horizon
    (rollout_stride{S}.png) and the validation VRMSE during fine-tuning, one line per
    row and seed (curves_stride{S}.png)."""
    made = {}
    for stride_key, per_stride in results["strides"].items():
        table = per_stride.get("test") or {}
        if "zero-shot" not in table:
            continue
        fig = figures.new_figure(figsize=(10, 4.5))
        ax = fig.subplots()
        horizons = np.arange(1, len(table["zero-shot"]["rollout"]) + 1)
        for name, st in table.items():
            ax.semilogy(horizons, st["rollout"], label=results["labels"].get(name, name),
                        **row_style(name, len(horizons)))
        ax.set_xlabel(f"rollout horizon (model steps of dt = {stride_key}/999)")
        ax.set_ylabel("VRMSE, test set (lower is better)")
        ax.set_title(f"error against horizon, stride {stride_key}: mean over seeds, {EVAL_SETS['test'][0]}",
                     fontsize=10)
        figures.integer_ticks(ax)
        figures.legend_beside(ax, fontsize=7)
        made[f"rollout_stride{stride_key}.png"] = fig
    for stride_key, curves in results["curves"].items():
        fig = figures.new_figure(figsize=(10, 4.5))
        ax = fig.subplots()
        seeds = sorted({int(key.rsplit(" seed ", 1)[1]) for key in curves})
        labelled = set()
        for key, curve in curves.items():
            row, seed = key.rsplit(" seed ", 1)
            style = {**row_style(row, len(curve["steps"])),
                     "linestyle": figures.SEED_LINESTYLES[seeds.index(int(seed)) % len(figures.SEED_LINESTYLES)]}
            ax.semilogy(curve["steps"], curve["vrmse"], label=None if row in labelled else
                        results["labels"].get(row, row), **style)
            labelled.add(row)
        ax.set_xlabel("training step")
        ax.set_ylabel("validation VRMSE (monitor only)")
        ax.set_title(f"validation VRMSE during fine-tuning, stride {stride_key}\n(a monitor: each run keeps its "
                     "checkpoint by its own loss, never by this)", fontsize=10)
        figures.integer_ticks(ax)
        names = ("solid", "dashed", "dotted", "dash-dotted")
        figures.legend_beside(ax, fontsize=7, title_fontsize=7, title="line style = seed: " + ", ".join(
            f"{names[i % len(names)]} {seed}" for i, seed in enumerate(seeds)))
        made[f"curves_stride{stride_key}.png"] = fig
    return made


def plot(results: dict, out: Path) -> None:
    for name, fig in make_figures(results).items():
        figures.save(fig, out / name)


def val_curve(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "val/vrmse" in r]
    return {"steps": [r["step"] for r in rows], "vrmse": [r["val/vrmse"] for r in rows]}


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "experiments" / "label_free")
    ap.add_argument("--standin", type=Path, default=None,
                    help="the pretrained best.pt (default: the plan's stand-in, STANDINS)")
    ap.add_argument("--strides", default="1,10")
    ap.add_argument("--seeds", default="0,1,2", help="seeds of the rows that get every seed (PLANS)")
    ap.add_argument("--plan", choices=sorted(PLANS), default="recipe",
                    help="recipe: the label-free loss's study (first stand-in); lora_only: the PyTorch recipe's "
                         "setting, LoRA alone (second stand-in)")
    ap.add_argument("--rows", default=None, help="a subset of the plan's rows (default: all of them)")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--temporal-length", type=int, default=4)
    ap.add_argument("--rollout", type=int, default=0,
                    help="rollout steps of every evaluation (0: the protocol's, ROLLOUT); a rollout step at "
                         "T = 16 costs several times one at T = 4")
    args = ap.parse_args(argv)
    t0 = time.time()
    args.standin = args.standin or STANDINS[args.plan]
    if not args.standin.is_file() and not (args.out / "pretrained" / "params").is_dir():
        print(f"experiment: error: {args.standin}: no such file (the pretrained stand-in of --plan {args.plan}; "
              "give --standin)", file=sys.stderr)
        return 2
    try:  # an experiment folder is continued, never replaced; one we did not make is refused
        outputs.check_dir(args.out, "experiment", overwrite=True)
    except outputs.OutputError as e:
        print(f"experiment: error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / outputs.METADATA_FILE).write_text(json.dumps(outputs.format_marker("experiment")) + "\n")
    pretrained = args.out / "pretrained"
    strides = [int(s) for s in args.strides.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    chosen = PLANS[args.plan]
    in_plan = list(dict.fromkeys(r for r, _, _ in chosen))
    rows = args.rows.split(",") if args.rows else in_plan
    unknown = sorted(set(rows) - set(in_plan))
    if unknown:
        print(f"experiment: error: rows {unknown} are not in --plan {args.plan}; its rows: {', '.join(in_plan)}",
              file=sys.stderr)
        return 2
    # Zero-shot first, then the plan seed by seed (every row of one seed before the next
    # seed): the most important numbers arrive first, and a cut-short experiment leaves a
    # balanced table.
    plan = [(st, r, s) for s in seeds for r, st, which in chosen
            if r in rows and st in strides and (which == "all" or s == seeds[0])]
    try:  # before any work: every run already in the folder is one of the settings asked for
        for stride, row, seed in plan:
            check_run(row_config(args, pretrained, row, stride, seed), args.out / "runs" / f"{row}_s{stride}_seed{seed}")
    except ExperimentError as e:
        print(f"experiment: error: {e}", file=sys.stderr)
        return 2
    if not (pretrained / "params").is_dir():
        convert_ckpt.convert(args.standin, pretrained, verify=True)
    results: dict = {"config": {**vars(args), "out": str(args.out), "standin": str(args.standin)},
                     "labels": {"zero-shot": "zero-shot", **{k: v[0] for k, v in ROWS.items()}},
                     "strides": {}, "curves": {}}

    def save() -> None:  # after every finished piece: a stopped experiment loses nothing
        (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
        (args.out / "results.md").write_text(summarize(results))

    for stride in strides:
        per_stride = results["strides"].setdefault(str(stride), {})
        for eval_set in EVAL_SETS:
            zs = run_eval(args, args.out / "eval" / f"zero_shot_s{stride}_{eval_set}", None, stride, eval_set,
                          "float32")
            table = per_stride.setdefault(eval_set, {})
            table["zero-shot"] = row_stats([zs], stride)
            p = zs["one_step"]["persistence"]["vrmse"]
            table["persistence"] = {"vrmse": p, "rollout": zs["rollout"]["persistence"]["vrmse"]}
        save()
    done: dict = {}
    for stride, row, seed in plan:
        per_stride = results["strides"][str(stride)]
        cfg = row_config(args, pretrained, row, stride, seed)
        run = args.out / "runs" / f"{row}_s{stride}_seed{seed}"
        print(f"\n=== {row}, stride {stride}, seed {seed} ===", flush=True)
        train_row(cfg, run)
        results["curves"].setdefault(str(stride), {})[f"{row} seed {seed}"] = val_curve(run)
        for eval_set in EVAL_SETS:
            e = run_eval(args, args.out / "eval" / f"{run.name}_{eval_set}", run / "best_adapters", stride,
                         eval_set, cfg.model.precision)
            done.setdefault((stride, row, eval_set), []).append(e)
            per_stride[eval_set][row] = row_stats(done[(stride, row, eval_set)], stride)
        results["config"].setdefault("run_configs", {})[run.name] = config_dict(cfg)
        save()
        plot(results, args.out)
        print(summarize(results), flush=True)
    plot(results, args.out)
    print(f"experiment done in {(time.time() - t0) / 60:.1f} min: {args.out}/results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
