"""`burgers-train`: LoRA fine-tuning of the ported PDECausalModel on the Burgers PDE residual.

    python -m burgers_jax.train --config configs/burgers.py [--config.a.b=value ...] [--workdir DIR]
    python -m burgers_jax.train --config configs/burgers.py \\
        --config.logging.save_dir=DIR --config.training.resume=True      # resume DIR's run

This module only parses flags; `burgers_jax.training.trainer.train_and_evaluate(config,
workdir)` does the work. See configs/burgers.py for the runbook.
"""

from __future__ import annotations

import json
import sys

from burgers_jax import cli
from burgers_jax.io import compilation_cache
from burgers_jax.training.setup import parse_command_line
from burgers_jax.training.trainer import Trainer, TrainingInterrupted, train_and_evaluate  # noqa: F401  (Trainer: the contract benchmarks use)

PROG = "burgers-train"
HELP_FLAGS = ("-h", "--help", "-help", "--helpfull")
SUMMARY_KEYS = ("save_dir", "steps", "best_val", "selected_by", "metrics", "plots", "best_adapters",
                "wall_s")


def _resume_hint(argv: list[str], workdir) -> str:
    config_arg = next((a for a in argv if a.startswith("--config=")), None) or (
        f"--config {argv[argv.index('--config') + 1]}" if "--config" in argv[:-1] else "--config CONFIG")
    return f"{PROG} {config_arg} --config.logging.save_dir={workdir} --config.training.resume=True"


def main(argv=None) -> int:
    argv = list(sys.argv if argv is None else argv)
    if any(a in HELP_FLAGS for a in argv[1:]):
        print(__doc__)
        print("flags: --config FILE[:variant] (required), --config.SECTION.FIELD=VALUE (any config field), "
              "--workdir DIR (default: logging.save_dir)")
        return 0
    compilation_cache.enable()

    def body() -> int:
        cfg, workdir = parse_command_line(argv)
        try:
            summary = train_and_evaluate(cfg, workdir)
        except TrainingInterrupted as e:
            print(f"interrupted: {e}. Resume with:\n  {_resume_hint(argv, workdir)}", file=sys.stderr)
            return 128 + int(e.signum)  # the shell's status for the signal: 130 (Ctrl-C), 143 (SIGTERM)
        print(json.dumps({k: summary[k] for k in SUMMARY_KEYS if k in summary}, indent=2, default=float))
        return 0

    return cli.run(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
