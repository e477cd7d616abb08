"""The first study of docs/results.md (the reference residual and its options; kept so
that table stays reproducible; the current protocol is scripts/experiment.py).

    python scripts/experiment_first_study.py [--out experiments/full]          # the full grid (hours on 2 cores)
    python scripts/experiment_first_study.py --quick [--out experiments/quick]  # a reduced version (minutes)

Starting from the pretrained stand-in (assets/standin/best.pt, converted with
`--verify`), fine-tune on 2D Burgers with nu in [0.1, 0.15] (the reference sample set,
computed from the formula) and evaluate every result the same way
(`burgers_jax.evaluate`): one-step metrics on the validation split and on viscosities
outside the range (nu in [0.18, 0.3]), and rollouts.

Rows: zero-shot (the stand-in as it is, in fp32_output and in the reference's bf16);
PDE-only LoRA with the reference recipe (all bf16); PDE-only LoRA with `fp32_output`;
PDE-only + boundary term with LoRA alone, with the decoder trainable, and with encoder and
decoder trainable; supervised LoRA and supervised LoRA + decoder (the data loss against
the true next frames: the upper bounds); persistence and the exact solution (from the
evaluations' baselines). `--rows`, `--strides` and `--seeds` choose a part of the grid;
results of earlier invocations in the same --out are kept and merged into the table. At frame stride 1 (the reference, dt = 1/999) and a coarser one,
two seeds for each fine-tuned row. Every run trains for the same number of steps and
keeps its best adapters by validation PDE loss (as the recipe does); the validation
curves are plotted to show they have flattened.

Out (in --out): results.json, results.md, curves.png, rollout.png, and per run its run
directory and evaluations.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

from burgers_jax.evaluation import evaluate, figures
from burgers_jax.io import outputs
from burgers_jax.porting import convert_ckpt
from burgers_jax.training import trainer as train

REPO = Path(__file__).resolve().parents[1]

# name -> (label, config overrides); every run also gets the common settings of `base_config`.
ROWS = {
    "pde_reference": ("PDE-only LoRA, reference recipe (all bf16)", {"model.precision": "reference"}),
    "pde_fp32_output": ("PDE-only LoRA, fp32_output", {}),
    "pde_bc": ("PDE + boundary, LoRA only", {"training.lambda_bc": "LAMBDA_BC"}),
    "pde_bc_decoder": ("PDE + boundary, LoRA + decoder", {"model.trainable": "adapters+decoder",
                                                         "training.lambda_bc": "LAMBDA_BC"}),
    "pde_bc_encoder_decoder": ("PDE + boundary, LoRA + encoder + decoder",
                               {"model.trainable": "adapters+encoder+decoder", "training.lambda_bc": "LAMBDA_BC"}),
    "supervised": ("supervised LoRA (data loss only: the upper bound)",
                   {"training.lambda_pde": 0.0, "training.lambda_data": 1.0}),
    "supervised_decoder": ("supervised, LoRA + decoder (the upper bound of the decoder rows)",
                           {"training.lambda_pde": 0.0, "training.lambda_data": 1.0,
                            "model.trainable": "adapters+decoder"}),
}
COLUMNS = (("vrmse", "VRMSE"), ("nrmse", "nRMSE"), ("pde_loss", "PDE loss"), ("constraint_error", "abs(u+v-1.5)"))


def _protocol():
    """scripts/experiment.py as a module (its base recipe is this study's starting point too)."""
    spec = importlib.util.spec_from_file_location("experiment_protocol", Path(__file__).with_name("experiment.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def base_config(pretrained: Path, steps: int, stride: int, seed: int, temporal_length: int):
    """experiment.py's base run, with the reference recipe's options this study started
    from; each row changes only what its overrides name."""
    c = _protocol().base_config(pretrained, steps, stride, seed, temporal_length)
    c.model.precision = "fp32_output"
    c.model.trainable = "adapters"
    c.training.lambda_bc = 0.0
    c.training.lambda_pde, c.training.lambda_data = 1.0, 0.0
    c.dataset.source = "analytic"
    c.training.learning_rate = 1e-3
    return c


def apply(c, overrides: dict, lambda_bc: float):
    for key, value in overrides.items():
        section, field = key.split(".")
        c[section][field] = lambda_bc if value == "LAMBDA_BC" else value
    return c


def evaluate_in_and_out(args, checkpoint: Path, tag: str, lora: Path | None, stride: int,
                        precision: str = "fp32_output") -> tuple[dict, dict]:
    """One model on the validation split (nu in range) and on nu outside it -> (in, out)."""
    return tuple(run_eval(args, checkpoint, args.out / "eval" / f"{tag}_{side}", lora, stride, side == "in", precision)
                 for side in ("in", "out"))


def run_eval(args, checkpoint: Path, out: Path, lora: Path | None, stride: int, in_range: bool,
             precision: str = "fp32_output") -> dict:
    """Every result evaluated the same way, in the precision it was trained in; an
    evaluation made earlier by the same command, after its model was written, is kept."""
    req = eval_request(args, checkpoint, out, lora, stride, in_range, precision)
    key = json.loads(json.dumps(dataclasses.asdict(req), default=str))
    done = out / "metrics.json"
    inputs = [checkpoint] + ([lora] if lora is not None else [])
    if done.is_file() and (out / "request.json").is_file() and \
            json.loads((out / "request.json").read_text()) == key and \
            all(done.stat().st_mtime > p.stat().st_mtime for p in inputs):
        print(f"{out.name}: evaluated earlier with the same request, kept")
        return json.loads(done.read_text())
    result, _, _ = evaluate.run_evaluation(req)
    (out / "request.json").write_text(json.dumps(key) + "\n")
    return result


def eval_request(args, checkpoint: Path, out: Path, lora: Path | None, stride: int, in_range: bool,
                 precision: str) -> evaluate.EvalRequest:
    common = dict(checkpoint=checkpoint, out=out, lora=lora, analytic=True, temporal_length=args.temporal_length,
                  frame_stride=stride, rollout=args.rollout, overwrite=True, precision=precision)
    if in_range:
        return evaluate.EvalRequest(**common, nu_min=0.1, nu_max=0.15, num_samples=100, split="val",
                                    windows_per_sample=args.windows_per_sample)
    return evaluate.EvalRequest(**common, nu_min=0.18, nu_max=0.3, num_samples=args.out_samples, split="all")


def summarize(results: dict, args) -> str:
    """The table of docs/results.md: mean (and spread over seeds) per row and stride."""
    horizons = sorted({h for h in (1, 5, args.rollout) if h <= args.rollout})
    head = ["row", "stride"] + [f"{name} (val)" for _, name in COLUMNS] + ["VRMSE nu out"] + \
        [f"rollout VRMSE h={h}" for h in horizons]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for stride, rows in results["strides"].items():
        labels = [("zero_shot", "zero-shot (fp32_output)"), ("zero_shot_reference", "zero-shot (reference: all bf16)")]
        labels += [(k, v[0]) for k, v in ROWS.items() if k in rows]
        labels += [("persistence", "persistence"), ("exact", "exact solution (float32)")]
        for name, label in labels:
            if name not in rows:
                continue
            runs = rows[name]
            cells = [label, str(stride)]
            for key, _ in COLUMNS:
                cells.append(_cell([r["in"][key] for r in runs]))
            cells.append(_cell([r["out"]["vrmse"] for r in runs]))
            for h in horizons:
                cells.append(_cell([r["rollout"][h - 1] for r in runs]) if runs[0].get("rollout") else "")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3e}"
    return f"{statistics.mean(values):.3e} ± {statistics.stdev(values):.1e}"


def _row(metrics_in: dict, metrics_out: dict, method: str) -> dict:
    r = {"in": metrics_in["one_step"][method], "out": metrics_out["one_step"][method]}
    if "rollout" in metrics_in and method in ("model", "persistence"):
        r["rollout"] = metrics_in["rollout"][method]["vrmse"]
    return r


def row_style(name: str, points: int | None = None) -> dict:
    """One colour per role (figures.ROLE_COLOURS); the rows of one role in shades of it."""
    if name in ("zero_shot", "persistence"):
        return figures.role_style(name.replace("_", "-"), points=points)
    return figures.row_style({r: overrides for r, (_, overrides) in ROWS.items()}, name, points)


def _legend(axes) -> None:
    """One legend for the panels (each row once), beside the last."""
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    figures.legend_beside(axes[-1], handles=list(entries.values()), labels=list(entries), fontsize=7)


def make_figures(results: dict) -> dict:
    """{file name: Figure}: the validation PDE loss during fine-tuning (curves.png, one
    line per run: seeds in line styles) and the rollout VRMSE against horizon (rollout.png,
    the mean over seeds), one panel per stride."""
    strides = list(results["strides"])
    fig = figures.new_figure(figsize=(6 * len(strides) + 3, 4.2))
    axes = fig.subplots(1, len(strides), squeeze=False)[0]
    for ax, stride in zip(axes, strides):
        for name, curves in results["curves"][stride].items():
            for i, curve in enumerate(curves):
                steps_, values = zip(*curve)
                style = {**row_style(name, len(steps_)),
                         "linestyle": figures.SEED_LINESTYLES[i % len(figures.SEED_LINESTYLES)]}
                ax.semilogy(steps_, values, label=ROWS[name][0] if i == 0 else None, **style)
        ax.set_title(f"stride {stride} (dt = {stride}/999)", fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel("validation PDE loss (lower is better)")
        figures.integer_ticks(ax)
    _legend(axes)
    fig.suptitle("validation PDE loss during fine-tuning (line style = seed: solid the first, dashed the second)",
                 fontsize=11)
    made = {"curves.png": fig}
    fig = figures.new_figure(figsize=(6 * len(strides) + 3, 4.2))
    axes = fig.subplots(1, len(strides), squeeze=False)[0]
    for ax, stride in zip(axes, strides):
        rows = results["strides"][stride]
        for name in ["zero_shot", *ROWS, "persistence"]:
            if name in rows and rows[name][0].get("rollout"):
                rollout = [statistics.mean(v) for v in zip(*[r["rollout"] for r in rows[name]])]
                label = ROWS[name][0] if name in ROWS else name.replace("_", "-")
                ax.semilogy(range(1, len(rollout) + 1), rollout, label=label, **row_style(name, len(rollout)))
        ax.set_title(f"stride {stride} (dt = {stride}/999)", fontsize=10)
        ax.set_xlabel("rollout horizon (model steps)")
        ax.set_ylabel("VRMSE, validation split (lower is better)")
        figures.integer_ticks(ax)
    _legend(axes)
    fig.suptitle("rollout VRMSE against horizon (the model fed its own predictions; mean over seeds)", fontsize=11)
    made["rollout.png"] = fig
    return made


def plot(results: dict, out: Path) -> None:
    for name, fig in make_figures(results).items():
        figures.save(fig, out / name)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one seed, stride 1, three rows, few steps")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--standin", type=Path, default=REPO / "assets" / "standin" / "best.pt")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--strides", default=None, help="comma-separated frame strides (default 1,10; quick: 1)")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--rows", default=None, help=f"comma-separated, from {','.join(ROWS)}")
    ap.add_argument("--lambda-bc", type=float, default=1e7)
    ap.add_argument("--temporal-length", type=int, default=4)
    ap.add_argument("--rollout", type=int, default=10)
    ap.add_argument("--windows-per-sample", type=int, default=2)
    ap.add_argument("--out-samples", type=int, default=10)
    args = ap.parse_args(argv)
    quick = args.quick
    args.out = args.out or REPO / "experiments" / ("quick" if quick else "full")
    steps = args.steps or (30 if quick else 240)
    strides = [int(s) for s in (args.strides or ("1" if quick else "1,10")).split(",")]
    seeds = args.seeds or (1 if quick else 2)
    rows = (args.rows or ("pde_fp32_output,supervised" if quick else ",".join(ROWS))).split(",")
    if quick:
        args.rollout, args.windows_per_sample, args.out_samples = min(args.rollout, 5), 1, 4
    t0 = time.time()
    # An experiment folder is continued, never replaced; a folder we did not make is refused.
    try:
        outputs.check_dir(args.out, "experiment", overwrite=True)
    except outputs.OutputError as e:
        print(f"experiment: error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / outputs.METADATA_FILE).write_text(json.dumps(outputs.format_marker("experiment")) + "\n")

    pretrained = args.out / "pretrained"
    if not (pretrained / "params").is_dir():
        convert_ckpt.convert(args.standin, pretrained, verify=True)
    results: dict = {"config": {"steps": steps, "strides": strides, "seeds": seeds, "rows": rows,
                                "lambda_bc": args.lambda_bc, "temporal_length": args.temporal_length,
                                "rollout": args.rollout, "standin": str(args.standin)},
                     "strides": {}, "curves": {}, "runs": {}}
    previous = args.out / "results.json"
    if previous.is_file():  # rows run by an earlier invocation (other strides, seeds or rows) are kept
        earlier = json.loads(previous.read_text())
        for key in ("strides", "curves", "runs"):
            results[key].update(earlier.get(key, {}))
    for stride in strides:
        res, curves = results["strides"].setdefault(str(stride), {}), results["curves"].setdefault(str(stride), {})
        runs_info = results["runs"].setdefault(str(stride), {})
        for name in rows:  # this invocation's rows are computed afresh
            res.pop(name, None)
            curves.pop(name, None)
        zs_in, zs_out = evaluate_in_and_out(args, pretrained, f"zero_shot_s{stride}", None, stride)
        res["zero_shot"] = [_row(zs_in, zs_out, "model")]
        res["persistence"] = [_row(zs_in, zs_out, "persistence")]
        res["exact"] = [_row(zs_in, zs_out, "truth")]
        if "pde_reference" in rows:  # the reference row is evaluated in bf16: its zero-shot baseline too
            zr_in, zr_out = evaluate_in_and_out(args, pretrained, f"zero_shot_reference_s{stride}", None, stride,
                                                "reference")
            res["zero_shot_reference"] = [_row(zr_in, zr_out, "model")]
        for name in rows:
            for seed in range(seeds):
                tag = f"{name}_s{stride}_seed{seed}"
                run = args.out / "runs" / tag
                if (run / "summary.json").is_file():
                    print(f"{tag}: done earlier, kept")
                else:
                    cfg = apply(base_config(pretrained, steps, stride, seed, args.temporal_length), ROWS[name][1],
                                args.lambda_bc)
                    cfg.training.resume = (run / "config.json").is_file()  # an interrupted run continues
                    train.train_and_evaluate(cfg, run)
                model, lora = pretrained, run / "best_adapters"  # the run's whole result
                precision = ROWS[name][1].get("model.precision", "fp32_output")
                m_in, m_out = evaluate_in_and_out(args, model, tag, lora, stride, precision)
                res.setdefault(name, []).append(_row(m_in, m_out, "model"))
                log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
                curves.setdefault(name, []).append([(r["step"], r["val/pde_loss"]) for r in log if "val/pde_loss" in r])
        runs_info.update({name: {"steps": steps, "seeds": seeds} for name in rows})
        (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    table = summarize(results, args)
    (args.out / "results.md").write_text(table)
    plot(results, args.out)
    print(table)
    print(f"experiment done in {(time.time() - t0) / 60:.1f} min: {args.out}/results.md, curves.png, rollout.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
