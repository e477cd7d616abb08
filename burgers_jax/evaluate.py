"""`burgers-evaluate`: a model on Burgers windows against the truth and two baselines.

    burgers-evaluate --checkpoint DIR [--lora DIR] --data FILE.h5 \\
        [--split val|train|all] [--train-ratio R --split-seed S] [--frame-stride S] \\
        [--temporal-length T] [--rollout N] [--precision P] --out DIR
    burgers-evaluate --checkpoint DIR --analytic --nu-min 0.18 --nu-max 0.3 --out DIR

(also `python -m burgers_jax.evaluate`). What is measured and written:
`burgers_jax.evaluation.evaluate`, which this module calls.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from absl import logging as absl_logging

from burgers_jax import cli
from burgers_jax.evaluation.evaluate import EvalRequest, run_evaluation
from burgers_jax.io import compilation_cache
from burgers_jax.model.config import Policy

PROG = "burgers-evaluate"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
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
    p.add_argument("--train-ratio", type=float, default=None,
                   help="the split: default the run's own (recorded with --lora RUN/best_adapters), else 0.9")
    p.add_argument("--split-seed", type=int, default=None,
                   help="the split's seed: default the run's own, else 42")
    p.add_argument("--split", choices=("val", "train", "all"), default=None,
                   help="default: val for --data, all for --analytic")
    p.add_argument("--frame-stride", type=int, default=1)
    p.add_argument("--temporal-length", type=int, default=16, help="input frames T")
    p.add_argument("--rollout", type=int, default=0, help="rollout steps N (0: none)")
    p.add_argument("--windows-per-sample", type=int, default=1)
    p.add_argument("--precision", default="fp32_output", help=f"one of {', '.join(Policy.names())}")
    p.add_argument("--dt", type=float, default=None, help="frame spacing of a file without a time axis (a file's own time axis wins; a disagreeing --dt is an error)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier evaluation at --out")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    absl_logging.set_verbosity(absl_logging.ERROR)
    compilation_cache.enable()

    def body() -> int:
        result, final, table = run_evaluation(EvalRequest(**vars(args)))
        print(table)
        print(f"wrote {final}/metrics.json, metrics.md, window.png" + (", rollout.png" if args.rollout else ""))
        return 0

    return cli.run(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
