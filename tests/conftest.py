"""Test setup. Two host CPU devices are forced *before* jax is imported, so the
data-parallel tests (pmap residual, sharded train step) run on any machine; code
that is not sharded explicitly runs on device 0 as usual."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    # The unit loop compiles the same small programs on every run: JAX's persistent
    # compilation cache (the commands' own, burgers_jax/io/compilation_cache.py; off with
    # BURGERS_JAX_CACHE=off) loads them from disk from the second run on.
    from burgers_jax.io import compilation_cache

    compilation_cache.enable()
    # Tests Ctrl-C the commands they start. A shell without job control starts `cmd &`
    # with SIGINT ignored, and children inherit an ignored signal (Python then installs no
    # KeyboardInterrupt handler): a suite run in the background would fail those tests.
    # A handled signal is reset to its default in a child, as for a user at a terminal.
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def tiny_best_pt(tmp_path_factory):
    """A tiny model written by the PyTorch reference as `best.pt` (docs/model_and_formats.md, "Files"), with a
    full training config that carries keys only PyTorch reads (use_flash_attention)."""
    import torch

    from porting import torch_reference as R

    root = tmp_path_factory.mktemp("tiny_pt")
    torch.manual_seed(0)
    config = R.small_model_config_dict()
    config["model"]["use_flash_attention"] = False
    config["training"] = {"learning_rate": 1e-4, "max_steps": 10}
    model = R.randomize_(R.build_model(config), seed=0)
    R.write_best_pt(root / "best.pt", model, config, global_step=7, val_nrmse=0.25)
    return root / "best.pt"


@pytest.fixture(scope="session")
def tiny_converted(tiny_best_pt, tmp_path_factory):
    """`tiny_best_pt` converted to a Flax checkpoint directory."""
    from porting import convert_ckpt

    out = tmp_path_factory.mktemp("tiny_flax") / "pretrained"
    convert_ckpt.convert_model(tiny_best_pt, out, None)
    return out


def run_cli(args, cwd=REPO, timeout=600, **kwargs):
    """A command line in a fresh interpreter: (returncode, stdout, stderr)."""
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          **kwargs)
    return proc.returncode, proc.stdout, proc.stderr


def metrics_rows(save_dir):
    return [json.loads(line) for line in (Path(save_dir) / "metrics.jsonl").read_text().splitlines() if line]


def smoke_config(pretrained, save_dir, **training):
    """configs/demo.py:smoke on `pretrained`, writing to `save_dir`, with training overrides."""
    from burgers_jax.configs import demo

    c = demo.get_config("smoke")
    c.model.pretrained_path = str(pretrained)
    c.logging.save_dir = str(save_dir)
    for k, v in training.items():
        c.training[k] = v
    return c


# ----------------------------------------------------------------------------- the fast loop

# A test is `cli` (out of the fast loop `pytest -m "not slow and not cli"`) when it, or a
# fixture it uses, starts a process or runs a whole command or training. Found from the
# source, so a new test is placed without anyone remembering a marker.
_WHOLE_RUNS = ("subprocess", "Popen", "run_cli", "train_and_evaluate", "run_evaluation", "main([", "main(argv",
               ".main(", "convert_model(", "export(", "pretrain(")
_SHARED_SETUP = {"tiny_best_pt", "tiny_converted"}  # built once per session: not what makes a test slow


def _runs_whole_things(func, seen: set) -> bool:
    import inspect

    if func in seen:
        return False
    seen.add(func)
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        return False
    return any(word in source for word in _WHOLE_RUNS)


def pytest_collection_modifyitems(config, items):
    for item in items:
        func = getattr(item, "function", None)
        if func is None:
            continue
        seen: set = set()
        whole = _runs_whole_things(func, seen)
        info = getattr(item, "_fixtureinfo", None)
        for name in (info.names_closure if info else ()):
            if whole or name in _SHARED_SETUP:
                continue
            for fixturedef in info.name2fixturedefs.get(name, ()):
                if _runs_whole_things(fixturedef.func, seen):
                    whole = True
                    break
        if whole:
            item.add_marker(pytest.mark.cli)
