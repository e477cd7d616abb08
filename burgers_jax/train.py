"""`burgers-train`: LoRA fine-tuning of the ported PDECausalModel on the Burgers PDE residual.

    python -m burgers_jax.train --config configs/burgers.py [--config.a.b=value ...] [--workdir DIR]
    python -m burgers_jax.train --config configs/burgers.py \\
        --config.logging.save_dir=DIR --config.training.resume=True      # resume DIR's run
    python -m burgers_jax.train --config configs/burgers.py [...] --print-config   # the config, and exit

This module owns the command line (flags, `--help`, overrides, a resume's saved config);
`burgers_jax.training.trainer.train_and_evaluate(config, workdir)` does the work. See
configs/burgers.py for the runbook.
"""

from __future__ import annotations

import difflib
import json
import sys

from burgers_jax import cli
from burgers_jax.errors import TrainConfigError, UserError

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
      the training config (required): configs/burgers.py (the recommended recipe),
      configs/burgers.py:reference (the PyTorch recipe as written), configs/demo.py,
      configs/from_yaml.py:FILE.yaml (the PyTorch recipe's YAML) or a file of your own
      with get_config()
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


# ----------------------------------------------------------------------------- the command line
# Light imports only at the top: `--help` and a wrong flag answer before jax loads.


def leaf_paths(cfg) -> list[str]:
    from burgers_jax.configs import flat_leaves

    return [path for path, _ in flat_leaves(cfg)]


def unknown_override(argv: list[str], cfg) -> str | None:
    """A message for the first `--config.a.b=...` naming no field of `cfg`, with the closest."""
    fields = leaf_paths(cfg)
    for arg in argv:
        if arg.startswith("--config.") and arg != "--config.":
            name = arg[len("--config."):].split("=", 1)[0]
            if name not in fields:
                close = difflib.get_close_matches(name, fields, n=1, cutoff=0.5)
                hint = f"; did you mean config.{close[0]}?" if close else ""
                return f"unknown config field config.{name}{hint}"
    return None


def parse_command_line(argv: list[str]):
    """-> (config, workdir) from the command line, or raises TrainConfigError.

    Resuming (`--config.training.resume=True`) takes the run's saved config and applies
    only the fields named on the command line, so a resume needs no repeated overrides."""
    from absl import flags
    from ml_collections import config_flags

    fv = flags.FlagValues()  # a registry of our own: main() can run twice in one process
    flags.DEFINE_string("workdir", None, "Run directory (default: the config's logging.save_dir).", flag_values=fv)
    # sys_argv: the overrides are found in `argv`, not in the process's sys.argv (main(argv) in-process).
    config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py[:variant]).",
                                    flag_values=fv, lock_config=True, sys_argv=list(argv))
    try:
        fv(argv)
    except Exception as e:  # noqa: BLE001 - absl and ml_collections raise many kinds; one line each
        message = None
        try:
            if fv["config"].value is not None:
                message = unknown_override(argv, fv["config"].value)
        except Exception:  # noqa: BLE001
            pass
        if message is None:
            config_path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
            if config_path is None and "--config" in argv[:-1]:
                config_path = argv[argv.index("--config") + 1]
            message = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            if config_path:
                message = _config_error(argv, config_path) or message
        raise TrainConfigError(message) from None
    cfg = fv.config
    if cfg is None:
        raise TrainConfigError("--config is required, e.g. --config configs/burgers.py")
    try:
        cfg.logging  # noqa: B018 - a config file that failed to load reports it on first use
    except OSError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise TrainConfigError(f"--config {fv['config'].config_filename}: cannot load it ({lines[-1]})") from None
    overrides = config_flags.get_override_values(fv["config"])
    workdir = fv.workdir or cfg.logging.save_dir
    if cfg.training.resume:
        from burgers_jax.training.rundir import RunDir, merge_saved  # h5py and jax, via the data sources

        try:
            saved = RunDir(workdir).saved_config()
        except UserError:
            saved = None  # torn: the run's start refuses it or, with allow_config_change, runs the given config
        if saved is not None:
            cfg = merge_saved(cfg, saved, overrides)
            cfg.logging.save_dir = str(workdir)
    return cfg, workdir


def load_config_file(config_path: str):
    """The config a `--config FILE[:variant]` names, loaded without the command line's
    overrides (`config_flags` loads it the same way)."""
    import importlib.util

    path, _, variant = config_path.partition(":")
    spec = importlib.util.spec_from_file_location("_burgers_user_config", path)
    if spec is None:
        raise FileNotFoundError(path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant) if variant else module.get_config()


def _config_error(argv: list[str], config_path: str) -> str | None:
    """Loads the config file alone to name an unknown override field, if that was the error."""
    try:
        cfg = load_config_file(config_path)
    except Exception as e:  # noqa: BLE001
        return f"{config_path.partition(':')[0]}: cannot load the config ({type(e).__name__}: {e})"
    return unknown_override(argv, cfg)


def config_argument(argv: list[str]) -> str | None:
    """The value of `--config FILE` / `--config=FILE` on a command line, if any."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def config_fields_help(cfg, width: int = 100) -> str:
    """Every field of `cfg` with its value (the default of that config) and its meaning
    (`configs/burgers.py:FIELD_HELP`, the one source of the meanings), for `--help`."""
    import textwrap

    from burgers_jax.configs import flat_leaves
    from burgers_jax.configs.burgers import FIELD_HELP

    order = {path: i for i, path in enumerate(FIELD_HELP)}  # get_config's order; fields of its own last
    lines = []
    for path, value in sorted(flat_leaves(cfg), key=lambda item: (order.get(item[0], len(order)), item[0])):
        lines.append(f"  {path} = {value!r}")
        meaning = FIELD_HELP.get(path, "(a field of this config; configs/burgers.py does not describe it)")
        lines += textwrap.wrap(meaning, width, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)


def resolved_config_json(cfg) -> str:
    """The resolved config as `--print-config` prints it (JSON, as the run saves it)."""
    return json.dumps(json.loads(cfg.to_json_best_effort()), indent=2)




def _resume_hint(argv: list[str], workdir) -> str:
    config_arg = next((a for a in argv if a.startswith("--config=")), None) or (
        f"--config {argv[argv.index('--config') + 1]}" if "--config" in argv[:-1] else "--config CONFIG")
    return f"{PROG} {config_arg} --config.logging.save_dir={workdir} --config.training.resume=True"


def help_text(argv: list[str]) -> str:
    """The usage, the flags and every config field with its default and meaning: those
    of the `--config` on the command line when it loads, else configs/burgers.py's."""
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
    argv = list(sys.argv if argv is None else argv)
    if any(a in HELP_FLAGS for a in argv[1:]):
        print(help_text(argv[1:]))
        return 0
    print_config = PRINT_CONFIG in argv[1:]
    argv = [a for a in argv if a != PRINT_CONFIG]

    def body() -> int:
        # --help, a wrong flag and --print-config answer before jax and the trainer load (seconds).
        cfg, workdir = parse_command_line(argv)
        if print_config:
            print(resolved_config_json(cfg))
            return 0
        from absl import logging as absl_logging

        from burgers_jax.io import compilation_cache
        from burgers_jax.training.trainer import TrainingInterrupted, train_and_evaluate

        absl_logging.set_verbosity(absl_logging.ERROR)  # the command's own lines only: orbax logs saves at INFO
        compilation_cache.enable()
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
