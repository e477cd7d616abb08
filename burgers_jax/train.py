"""`burgers-train`: LoRA fine-tuning of the ported PDECausalModel on the Burgers PDE residual.

    python -m burgers_jax.train --config configs/burgers.py [--config.a.b=value ...] [--workdir DIR]
    python -m burgers_jax.train --config configs/burgers.py \\
        --config.logging.save_dir=DIR --config.training.resume=True      # resume DIR's run
    python -m burgers_jax.train --config configs/burgers.py [...] --print-config   # the config, and exit

This module only parses flags; `burgers_jax.training.trainer.train_and_evaluate(config,
workdir)` does the work. See configs/burgers.py for the runbook.
"""

from __future__ import annotations

import json
import sys

from burgers_jax import cli

# jax and the trainer are imported in main (under cli.start, where a Ctrl-C is one line);
# `burgers_jax.train.Trainer` (the contract benchmarks use) and these come on first use.
TRAINER_NAMES = ("Trainer", "TrainingInterrupted", "train_and_evaluate")


def __getattr__(name: str):
    if name in TRAINER_NAMES:
        from burgers_jax.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


PROG = "burgers-train"
HELP_FLAGS = ("-h", "--help", "-help", "--helpfull")
PRINT_CONFIG = "--print-config"
USAGE = (f"usage: {PROG} --config FILE[:VARIANT] [--config.SECTION.FIELD=VALUE ...] [--workdir DIR] "
         f"[{PRINT_CONFIG}]")
FLAGS_HELP = f"""flags:
  --config FILE[:VARIANT]
      the training config (required): configs/burgers.py (the reference recipe),
      configs/burgers.py:recommended, configs/demo.py, configs/from_yaml.py:FILE.yaml (the
      PyTorch recipe's YAML) or a file of your own with get_config()
  --config.SECTION.FIELD=VALUE
      override one field of the config (the fields below); a misspelt one is named
  --workdir DIR
      the run directory (default: the config's logging.save_dir)
  {PRINT_CONFIG}
      print the resolved config as JSON (after the overrides; with
      --config.training.resume=True the run's saved config merged with them) and exit
  -h, --help
      this help; with --config FILE, the fields below show that config's defaults"""
SUMMARY_KEYS = ("save_dir", "steps", "best_val", "selected_by", "metrics", "plots", "best_adapters",
                "wall_s")


def _resume_hint(argv: list[str], workdir) -> str:
    config_arg = next((a for a in argv if a.startswith("--config=")), None) or (
        f"--config {argv[argv.index('--config') + 1]}" if "--config" in argv[:-1] else "--config CONFIG")
    return f"{PROG} {config_arg} --config.logging.save_dir={workdir} --config.training.resume=True"


def help_text(argv: list[str]) -> str:
    """The usage, the flags and every config field with its default and meaning: those
    of the `--config` on the command line when it loads, else configs/burgers.py's."""
    from burgers_jax.training.setup import config_argument, config_fields_help, load_config_file

    source, note = config_argument(argv), ""
    cfg = None
    if source:
        try:
            cfg = load_config_file(source)
        except Exception as e:  # noqa: BLE001 - the help still shows the reference fields
            note = f" (--config {source} did not load: {type(e).__name__}: {e})"
    if cfg is None:
        from burgers_jax.configs import burgers

        cfg, source = burgers.get_config(), "configs/burgers.py"
    return "\n\n".join([USAGE, __doc__.strip(), FLAGS_HELP,
                         f"config fields, with the defaults of {source}{note}:\n" + config_fields_help(cfg)])


def main(argv=None) -> int:
    return cli.start(PROG, lambda: _main(argv))


def _main(argv) -> int:
    from burgers_jax.io import compilation_cache
    from burgers_jax.training.setup import parse_command_line, resolved_config_json
    from burgers_jax.training.trainer import TrainingInterrupted, train_and_evaluate

    argv = list(sys.argv if argv is None else argv)
    if any(a in HELP_FLAGS for a in argv[1:]):
        print(help_text(argv[1:]))
        return 0
    print_config = PRINT_CONFIG in argv[1:]
    argv = [a for a in argv if a != PRINT_CONFIG]
    if not print_config:
        compilation_cache.enable()

    def body() -> int:
        cfg, workdir = parse_command_line(argv)
        if print_config:
            print(resolved_config_json(cfg))
            return 0
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
