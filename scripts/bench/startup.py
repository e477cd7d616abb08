"""How long a fresh process takes before its first result: the first LoRA step of a
training, `burgers-evaluate` (one-step metrics and a rollout) and `burgers-predict`, each
with an empty compilation cache (cold) and again with the cache the cold run filled
(warm), beside the PyTorch original's first eager step.

    python scripts/bench/startup.py [--out startup.json] [--runs 1]

The small architecture (as `scripts/bench/step.py`), B = 1, T = 16, float32. The train
rows run `step.py --child` in a fresh process: imports, setup (the converted
checkpoint loaded, adapters and optimizer state initialised) and the first step
(trace, lower, compile or load from the cache, run), timed inside; that child imports
both torch and JAX, so its imports count for neither side. The evaluate and predict
rows are the commands' wall time from process start to exit, on an analytic window set
(2 windows, T = 16, a 16-step rollout) and on one [1, 16, 128, 128, 2] input; evaluate
also from process start to its first result (the metrics computed, before its report
and figures), timed inside the process. The
PyTorch rows are the original's first step in float32 and bf16 (eager: nothing to
compile).
"""

from __future__ import annotations

import time

PROCESS_START = time.perf_counter()  # the evaluate child counts its imports
# ruff: noqa: E402 (the imports below come after that clock on purpose)

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - t0
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return wall, out.stdout


def evaluate_child(argv: list[str]) -> None:
    """`burgers-evaluate ARGV` in this fresh process, printing JSON with the seconds from
    process start to its first result (`evaluation.evaluate.evaluate` returned: metrics
    in memory, before the report and figures) and to exit."""
    from burgers_jax import evaluate as command
    from burgers_jax.evaluation import evaluate as library

    marks = {}
    inner = library.evaluate

    def timed_evaluate(*args, **kwargs):
        out = inner(*args, **kwargs)
        marks["first_result_s"] = time.perf_counter() - PROCESS_START
        return out

    library.evaluate = timed_evaluate  # run_evaluation looks it up at call time
    command.main(argv)
    print(json.dumps(marks | {"wall_s": time.perf_counter() - PROCESS_START}))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child-evaluate"]:
        evaluate_child(argv[1:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1, help="cold + warm rounds, each with a fresh cache")
    ap.add_argument("--out", type=Path, default=None, help="JSON with every number")
    args = ap.parse_args(argv)
    import step as B

    from burgers_jax.porting import convert_ckpt
    from burgers_jax.porting import torch_reference as R

    work = Path(tempfile.mkdtemp(prefix="bench_startup_"))
    config = B.model_config(False)
    best_pt, pretrained = work / "best.pt", work / "pretrained"
    R.write_best_pt(best_pt, R.randomize_(R.build_model(config), seed=0, scale=0.1), config)
    convert_ckpt.convert_model(best_pt, pretrained, None)
    np.save(work / "x.npy", B.batch_for(1, 16)["frames"][:, :16, ..., :2])
    py = sys.executable
    child = [py, str(REPO / "scripts" / "bench" / "step.py"), "--best-pt", str(best_pt), "--pretrained", str(pretrained),
             "--batch", "1", "--frames", "16", "--child"]
    commands = {
        "evaluate": [py, str(REPO / "scripts" / "bench" / "startup.py"), "--child-evaluate", "--checkpoint", str(pretrained),
                     "--analytic", "--num-samples", "2",
                     "--num-frames", "40", "--temporal-length", "16", "--rollout", "16", "--precision", "float32",
                     "--batch-size", "2", "--out", str(work / "eval"), "--overwrite"],
        "predict": [py, "-m", "burgers_jax.predict", "--checkpoint", str(pretrained), "--input", str(work / "x.npy"),
                    "--out", str(work / "y.npy"), "--overwrite"],
    }
    results: dict = {"rounds": []}
    for r in range(args.runs):
        env = dict(os.environ, BURGERS_JAX_CACHE=str(work / f"jax_cache_{r}"), PYTHONUNBUFFERED="1")
        row: dict = {}
        for kind in ("torch_float32", "torch_bf16"):
            row[kind] = json.loads(timed(child + [kind], env)[1].strip().splitlines()[-1])
        for state in ("cold", "warm"):
            row[f"train_float32_{state}"] = json.loads(timed(child + ["float32"], env)[1].strip().splitlines()[-1])
            for name, cmd in commands.items():
                wall, out = timed(cmd, env)
                row[f"{name}_{state}"] = {"wall_s": wall}
                if name == "evaluate":
                    row[f"{name}_{state}"].update(json.loads(out.strip().splitlines()[-1]))
        results["rounds"].append(row)
        report(row)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


def report(row: dict) -> None:
    print("\n| | imports s | setup s | first step s | setup + first step s | first result s | wall s |")
    print("|---|---|---|---|---|---|---|")
    for k, v in row.items():
        if "first_step_s" in v:
            print(f"| {k} | {v['imports_s']:.1f} | {v['setup_s']:.1f} | {v['first_step_s']:.1f} | "
                  f"{v['setup_s'] + v['first_step_s']:.1f} | — | — |")
        else:
            first = f"{v['first_result_s']:.1f}" if "first_result_s" in v else "—"
            print(f"| {k} | — | — | — | — | {first} | {v['wall_s']:.1f} |")


if __name__ == "__main__":
    sys.exit(main())
