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

from burgers_jax import cli

PROG = "burgers-evaluate"


def build_parser() -> argparse.ArgumentParser:
    from burgers_jax.model.names import POLICY_NAMES  # jax-free: jax comes after the flags

    p = argparse.ArgumentParser(prog=PROG, description="\n\n".join(__doc__.split("\n\n")[:2]),
                                formatter_class=cli.HelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path, help="converted base model directory (burgers-convert)")
    p.add_argument("--lora", type=Path, default=None,
                   help="adapters directory (a run's best_adapters/ or burgers-convert of a best_lora.pt); "
                        "default: none, the base model alone")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="HDF5 file of the Burgers layout (this or --analytic)")
    src.add_argument("--analytic", action="store_true",
                     help="exact solutions at --nu-min..--nu-max, no file (this or --data)")
    p.add_argument("--nu-min", type=float, default=0.1, help="with --analytic: smallest viscosity")
    p.add_argument("--nu-max", type=float, default=0.15, help="with --analytic: largest viscosity")
    p.add_argument("--num-samples", type=int, default=10, help="with --analytic: number of trajectories")
    p.add_argument("--num-frames", type=int, default=1000, help="with --analytic (t in [0, 1])")
    p.add_argument("--seed", type=int, default=42, help="with --analytic: the viscosity draw")
    p.add_argument("--train-ratio", type=float, default=None,
                   help="fraction of the samples in the train split; default: the run's own (recorded with --lora "
                        "RUN/best_adapters), else 0.9")
    p.add_argument("--split-seed", type=int, default=None,
                   help="seed of the split; default: the run's own, else 42")
    p.add_argument("--split", choices=("val", "train", "all"), default=None,
                   help="which samples to evaluate; default: val for --data, all for --analytic")
    p.add_argument("--frame-stride", type=int, default=1, help="windows of every S-th frame (time step S * dt)")
    p.add_argument("--temporal-length", type=int, default=16, help="model input frames T per window")
    p.add_argument("--rollout", type=int, default=0, help="rollout steps N (0: none)")
    p.add_argument("--windows-per-sample", type=int, default=1,
                   help="evaluation windows per sample, spread over its frames")
    p.add_argument("--precision", default=None, choices=list(POLICY_NAMES),
                   help="precision policy (burgers_jax.model.config.Policy); default: the one the --lora run trained "
                        "at, else float32")
    p.add_argument("--dt", type=float, default=None,
                   help="frame spacing of a file without a time axis; default: the file's own axis, else 1/999 "
                        "(a disagreeing --dt is an error)")
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")
    p.add_argument("--out", "--output", dest="out", required=True, type=Path,
                   help="output folder (metrics.json, metrics.md, plots)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier evaluation at --out")
    p.add_argument("--allow-other-base", action="store_true",
                   help="apply --lora adapters to a base model with other weights than the one they were trained on "
                        "(refused by default: a merged export already contains them)")
    return p


def main(argv=None) -> int:
    return cli.start(PROG, lambda: _main(argv))


def _main(argv) -> int:
    args = build_parser().parse_args(argv)  # --help and a wrong flag answer before the heavy imports
    from absl import logging as absl_logging

    from burgers_jax.evaluation.evaluate import EvalRequest, run_evaluation  # jax: seconds
    from burgers_jax.evaluation.report import few_windows_warning
    from burgers_jax.io import compilation_cache

    absl_logging.set_verbosity(absl_logging.ERROR)
    compilation_cache.enable()

    def body() -> int:
        result, final, table = run_evaluation(EvalRequest(**vars(args)))
        print(table)
        caveat = few_windows_warning(result["windows"])
        if caveat:
            print(f"warning: {caveat}", file=sys.stderr)
        print(f"wrote {final}/metrics.json, metrics.md, window.png, example_window.npz"
              + (", rollout.png" if args.rollout else ""))
        return 0

    return cli.run(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
