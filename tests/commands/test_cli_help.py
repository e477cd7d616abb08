"""Discoverable from the command line: every flag of every command has a help text that
shows its default; `burgers-train --help` lists every config field with its default and
meaning; `--print-config` prints the resolved config (overrides, and for a resume the
run's saved config merged with them) and exits 0."""

from __future__ import annotations

import argparse
import importlib
import json

import pytest
import tomllib
from conftest import REPO

from burgers_jax import cli
from burgers_jax import train as train_cmd
from burgers_jax.configs import burgers, demo, flat_leaves
from burgers_jax.train import leaf_paths


def _commands() -> dict[str, str]:
    """Every console command of pyproject.toml -> its module."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    return {name: target.split(":")[0] for name, target in scripts.items()}


def _flat(text: str) -> str:
    return " ".join(text.split())


def help_problems(parser: argparse.ArgumentParser) -> list[str]:
    """Each flag without a help text, or whose default its help does not show: a
    required flag (or one of a required choice) has none; a default of None is said in
    words ("default: ...")."""
    problems = []
    formatter = parser._get_formatter()
    one_of_required = {a for g in parser._mutually_exclusive_groups if g.required for a in g._group_actions}
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        if not (action.help or "").strip():
            problems.append(f"{name}: no help text")
            continue
        shown = _flat(formatter._expand_help(action) if action.help else "")
        if action.required or action in one_of_required or not action.option_strings:
            continue
        if action.default is None:
            if "default:" not in shown.lower() and "default " not in shown.lower():
                problems.append(f"{name}: default None, and the help does not say what happens without it")
        elif f"(default: {action.default})" not in shown and f"default: {action.default}" not in shown:
            problems.append(f"{name}: the help does not show the default {action.default!r}: {shown!r}")
    return problems


COMMANDS = _commands()


def test_the_commands_are_found():
    assert {"burgers-evaluate", "burgers-predict", "burgers-generate", "burgers-floors", "burgers-convert",
            "burgers-export", "burgers-train"} <= set(COMMANDS)


@pytest.mark.parametrize("name", [n for n in sorted(COMMANDS) if n != "burgers-train"])
def test_every_flag_has_help_and_shows_its_default(name):
    """burgers-train has absl flags; its help is tested below."""
    module = importlib.import_module(COMMANDS[name])
    assert hasattr(module, "build_parser"), f"{COMMANDS[name]} has no build_parser()"
    parser = module.build_parser()
    assert parser.prog == name, (parser.prog, name)
    problems = help_problems(parser)
    assert not problems, f"{name}: " + "; ".join(problems)
    text = parser.format_help()
    assert "usage:" in text and parser.description.splitlines()[0] in text


def test_the_help_check_can_fail():
    p = argparse.ArgumentParser(formatter_class=cli.HelpFormatter)
    p.add_argument("--a", type=int, default=3)  # no help
    p.add_argument("--b", default=None, help="a path")  # None, not explained
    p.add_argument("--c", type=int, default=5, help="ok")
    p.add_argument("--d", type=int, help="required: no default to show", required=True)
    problems = help_problems(p)
    assert len(problems) == 2 and problems[0].startswith("--a") and problems[1].startswith("--b"), problems
    q = argparse.ArgumentParser()  # the stdlib formatter shows no defaults
    q.add_argument("--c", type=int, default=5, help="ok")
    assert help_problems(q) == ["--c: the help does not show the default 5: 'ok'"]


def test_train_help_lists_every_config_field_with_default_and_meaning(capsys):
    from burgers_jax.configs.burgers import FIELD_HELP

    cfg = burgers.get_config()
    assert set(FIELD_HELP) == set(leaf_paths(cfg)), "FIELD_HELP describes exactly the fields of get_config()"
    assert all(FIELD_HELP[k].strip() for k in FIELD_HELP)
    assert train_cmd.main(["burgers-train", "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: burgers-train") and "--print-config" in text and "--workdir" in text
    flat = _flat(text)
    for path, value in flat_leaves(cfg):
        assert f"{path} = {value!r}" in text, path
        assert _flat(FIELD_HELP[path]) in flat, path
    # With --config, that config's defaults (configs/demo.py:smoke trains 4 steps, batch 2).
    smoke = demo.get_config("smoke")
    assert train_cmd.main(["burgers-train", "--config", "configs/demo.py:smoke", "--help"]) == 0
    text = capsys.readouterr().out
    assert "defaults of configs/demo.py:smoke" in text
    assert f"training.max_steps = {smoke.training.max_steps!r}" in text
    assert f"dataloader.batch_size = {smoke.dataloader.batch_size!r}" in text
    assert smoke.training.max_steps != cfg.training.max_steps  # premise: the two differ


def test_print_config_prints_the_resolved_config_and_exits(capsys, tmp_path):
    argv = ["burgers-train", "--config", "configs/burgers.py", "--config.training.max_steps=7",
            f"--config.logging.save_dir={tmp_path / 'nowhere'}", "--print-config"]
    assert train_cmd.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    want = json.loads(burgers.get_config().to_json_best_effort())
    want["training"]["max_steps"] = 7
    want["logging"]["save_dir"] = str(tmp_path / "nowhere")
    assert printed == want
    assert not (tmp_path / "nowhere").exists(), "--print-config starts nothing"

    # A resume: the run's saved config, with the fields named on the command line.
    run = tmp_path / "run"
    run.mkdir()
    saved = burgers.get_config("reference")  # not the default: the run's own recipe must win
    saved.training.learning_rate, saved.model.lora.r = 5e-4, 8
    saved.logging.save_dir = str(run)
    (run / "config.json").write_text(saved.to_json_best_effort(indent=2))
    before = sorted(p.name for p in run.iterdir())
    assert train_cmd.main(["burgers-train", "--config", "configs/burgers.py", f"--config.logging.save_dir={run}",
                           "--config.training.resume=True", "--config.training.max_steps=9", "--print-config"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["training"]["learning_rate"] == 5e-4 and resumed["model"]["lora"]["r"] == 8
    assert resumed["model"]["precision"] == "fp32_output" and resumed["training"]["residual"] == "window"
    assert resumed["training"]["max_steps"] == 9 and resumed["training"]["resume"] is True
    assert sorted(p.name for p in run.iterdir()) == before

    assert train_cmd.main(["burgers-train", "--config", "configs/burgers.py", "--config.training.max_stepz=3",
                           "--print-config"]) == 2
    assert "did you mean config.training.max_steps" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["burgers_jax.train", "burgers_jax.evaluate"])
def test_help_from_a_fresh_interpreter(command):
    from conftest import run_cli

    rc, out, err = run_cli(["-m", command, "--help"], timeout=120)
    assert rc == 0 and out.startswith("usage:") and "Traceback" not in err, err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_output_flag_is_out_and_output_everywhere(name):
    """One vocabulary: every command that writes an output takes `--out` and `--output`."""
    if name in ("burgers-train", "burgers-floors"):  # a run directory (--workdir); a report on stdout
        return
    parser = importlib.import_module(COMMANDS[name]).build_parser()
    out = [a for a in parser._actions if "--out" in a.option_strings]
    assert out and "--output" in out[0].option_strings, (name, [a.option_strings for a in parser._actions])


# ----------------------------------------------------------------------------- --help before the heavy imports

# What `--help` and a wrong flag must not load: they answer before jax, torch and the
# array stack are imported (seconds), from the flags alone.
HEAVY = ("jax", "jaxlib", "flax", "torch", "numpy", "scipy", "h5py", "matplotlib", "orbax", "optax", "chex",
         "ml_dtypes", "transformers", "peft", "safetensors", "tensorflow", "pandas")
# The modules `--help` and a wrong flag may import, with margin: measured 33-38 for the argparse
# commands, 131-132 for burgers-train (absl, ml_collections, yaml); jax alone brings ~700.
MAX_NEW_MODULES = {"burgers-train": 250, "python -m burgers_jax.train --config configs/burgers.py": 250}
MAX_NEW_MODULES_ARGPARSE = 100
# Each way to start a command -> (its import, a statement that runs it on the command line ARGV).
ENTRIES = {
    **{name: (f"import {module}", f"rc = {module}.main(ARGV)") for name, module in COMMANDS.items()
       if name != "burgers-train"},
    "burgers-train": ("import burgers_jax.train", "rc = burgers_jax.train.main(['burgers-train', *ARGV])"),
    "python -m burgers_jax.train --config configs/burgers.py": (
        "import burgers_jax.train",
        "rc = burgers_jax.train.main(['burgers-train', '--config', 'configs/burgers.py', *ARGV])"),
    "python porting/convert_ckpt.py": (
        "import runpy", "sys.argv = ['porting/convert_ckpt.py', *ARGV]; "
        "rc = runpy.run_path('porting/convert_ckpt.py', run_name='__main__')"),
}
_LOADED = """
import contextlib, io, json, sys
before = set(sys.modules)
{setup}
answers = []
for ARGV in (['--help'], ['--no-such-flag']):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            {run}
        except SystemExit as e:
            rc = e.code
    answers.append([rc, out.getvalue(), err.getvalue()])
print(json.dumps({{"answers": answers, "new": sorted(set(sys.modules) - before)}}))
"""


def modules_loaded_by_help(setup: str, run: str) -> tuple[list, list[str]]:
    """In a fresh interpreter: `setup`, then `run` on `--help` and on `--no-such-flag` ->
    (their [exit status, stdout, stderr], the modules imported meanwhile, the command's own included)."""
    from conftest import run_cli

    rc, out, err = run_cli(["-c", _LOADED.format(setup=setup, run=run)], timeout=300)
    assert rc == 0, err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    return report["answers"], report["new"]


def heavy_modules(names: list[str]) -> list[str]:
    return sorted({m for m in names if m.split(".")[0] in HEAVY})


@pytest.mark.cli  # starts an interpreter per command
@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_help_and_a_wrong_flag_import_nothing_heavy(entry):
    """Every command answers `--help` and a wrong flag from its flags alone: no jax, torch
    or array stack imported (the flags are parsed first; the work's imports come after)."""
    ((help_rc, help_out, _), (bad_rc, _, bad_err)), new = modules_loaded_by_help(*ENTRIES[entry])
    print(f"{entry}: {len(new)} modules")
    assert help_rc == 0 and help_out.startswith("usage:"), (help_rc, help_out[:300])
    # argparse names a missing required flag before an unknown one
    assert bad_rc == 2 and "error:" in bad_err and "Traceback" not in bad_err, (bad_rc, bad_err[-500:])
    heavy = heavy_modules(new)
    assert not heavy, f"{entry}: --help and a wrong flag import {heavy[:12]} ({len(heavy)} heavy modules)"
    bound = MAX_NEW_MODULES.get(entry, MAX_NEW_MODULES_ARGPARSE)
    assert len(new) < bound, f"{entry}: {len(new)} modules imported (bound {bound}): {new}"


def test_the_flags_list_the_policies_of_the_model():
    """evaluate --precision and predict --dtype take their choices from burgers_jax.model.names
    (jax-free); they are the model's policies, in the same order."""
    from burgers_jax.model import config, names

    assert tuple(config._policies()) == names.POLICY_NAMES == config.Policy.names()
    assert all(config.Policy.named(n).name == n for n in names.POLICY_NAMES)
    assert set(names.INFERENCE_DTYPES.values()) <= set(names.POLICY_NAMES)
    assert config.INFERENCE_DTYPES is names.INFERENCE_DTYPES
    assert config.DEFAULT_LORA_TARGETS is names.DEFAULT_LORA_TARGETS


def test_the_heavy_check_can_fail():
    assert heavy_modules(["json", "jax._src.core", "numpy", "burgers_jax.cli", "jaxtyping"]) == ["jax._src.core",
                                                                                                "numpy"]
