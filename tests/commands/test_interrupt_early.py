"""Ctrl-C while a command starts (importing jax takes seconds, before any work) is the same
one line and exit status 130 as a Ctrl-C during the work (`burgers_jax.cli.start`), not a
KeyboardInterrupt traceback.

Deterministic, not timed: the command runs with a stand-in `jax` package first on its
path, whose import says so on stdout and then waits; the test sends SIGINT only once that
line has come, so the interrupt always lands while `import jax` is in progress."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from burgers_jax import cli

IMPORTING = "stand-in jax: importing"
STAND_IN = f"""import sys, time
print({IMPORTING!r}, flush=True)
time.sleep(120)  # the interrupt comes here
"""
COMMANDS = {"burgers-floors": "burgers_jax.floors", "burgers-predict": "burgers_jax.predict",
            "burgers-evaluate": "burgers_jax.evaluate", "burgers-generate": "burgers_jax.generate",
            "burgers-train": "burgers_jax.train", "burgers-convert": "burgers_jax.convert",
            "burgers-export": "burgers_jax.export"}
# Flags that are harmless should the stand-in not block (refused after the imports, or a report).
ARGV = {"burgers-generate": ["--num-samples", "0", "--out", "/nonexistent/x.h5"],
        "burgers-floors": ["--nu", "0.2"], "burgers-convert": ["/nonexistent/best.pt"],
        "burgers-export": ["--checkpoint", "/nonexistent", "--out", "/nonexistent/best_lora.pt"],
        # flags that parse: jax is imported after them (a wrong flag answers before it)
        "burgers-predict": ["--checkpoint", "/nonexistent", "--input", "/nonexistent/x.npy",
                            "--out", "/nonexistent/y.npy"],
        "burgers-evaluate": ["--checkpoint", "/nonexistent", "--analytic", "--out", "/nonexistent/eval"],
        "burgers-train": ["--config", "configs/demo.py:smoke", "--config.logging.save_dir=/nonexistent/run"]}


@pytest.fixture(scope="module")
def slow_jax(tmp_path_factory) -> Path:
    """A folder holding a `jax` package whose import blocks until interrupted."""
    root = tmp_path_factory.mktemp("slow_jax")
    (root / "jax").mkdir()
    (root / "jax" / "__init__.py").write_text(STAND_IN)
    return root


def _interrupt_while_importing(cmd: list[str], slow_jax: Path) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(slow_jax), str(REPO)]))
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == IMPORTING, (line, proc.poll())
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def _assert_interrupted(prog: str, rc: int, err: str) -> None:
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines == [f"{prog}: interrupted; nothing was written under the output name"], err
    assert rc == cli.EXIT_INTERRUPTED, (rc, err)


@pytest.mark.parametrize("prog", list(COMMANDS))
def test_ctrl_c_while_a_command_imports_jax_is_one_line_and_exit_130(slow_jax, prog):
    rc, err = _interrupt_while_importing([sys.executable, "-m", COMMANDS[prog], *ARGV.get(prog, [])], slow_jax)
    _assert_interrupted(prog, rc, err)


def test_ctrl_c_while_a_console_script_imports_jax(slow_jax):
    script = shutil.which("burgers-floors", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the console scripts are not installed next to this interpreter (pip install -e .)")
    rc, err = _interrupt_while_importing([script, "--nu", "0.2"], slow_jax)
    _assert_interrupted("burgers-floors", rc, err)


def test_the_console_scripts_import_no_jax_before_main():
    """What makes the above hold for every command: importing a command's module (what a
    console script does before it calls `main`) starts nothing heavy."""
    code = ("import importlib, sys\n"
            f"for m in {sorted(COMMANDS.values()) + ['burgers_jax.compare']!r}:\n"
            "    importlib.import_module(m)\n"
            "heavy = sorted(m for m in ('jax', 'numpy', 'torch', 'h5py', 'absl') if m in sys.modules)\n"
            "print(heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
