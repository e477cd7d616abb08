"""The package's layering, checked from its imports so that it stays true.

- `burgers_jax.model` and `burgers_jax.physics` import nothing above them (no training,
  evaluation, io, data, commands, torch or porting);
- the import graph of `burgers_jax` has no cycle;
- every `burgers_jax` module imports and a tiny forward runs with torch (and the
  Hugging Face stack) made unimportable: torch is an optional extra. The exceptions are
  the torch side's modules that need torch (`TORCH_ONLY`): their import raises an
  ImportError naming the install command (no exit, so a script can catch it);
- the torch-only commands say in one line what to install when torch is missing.
"""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

import burgers_jax

LOW_LAYERS = ("burgers_jax.model", "burgers_jax.physics")
# What a low layer may import from the project: itself, the other low layer's lower
# half (physics is pure arrays; model never needs it) and the error base.
ALLOWED = {"burgers_jax.model": ("burgers_jax.model", "burgers_jax.errors"),
           "burgers_jax.physics": ("burgers_jax.physics", "burgers_jax.errors")}
TORCH_STACK = ("torch", "transformers", "peft", "safetensors")
# The modules that import torch themselves; the rest of burgers_jax.porting (the package,
# mapping, architecture) and the commands burgers_jax.convert / burgers_jax.export do not.
TORCH_ONLY = ("burgers_jax.porting.convert_ckpt", "burgers_jax.porting.export_torch",
              "burgers_jax.porting.torch_checkpoint", "burgers_jax.porting.torch_reference",
              "burgers_jax.porting.verify")
INSTALL_LINE = ("pip install torch==2.13.0", "burgers-jax[torch]")


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(burgers_jax.__path__, "burgers_jax."))


def _project_imports(module: str) -> set[str]:
    """Project modules `module` imports at any depth of its source (functions too)."""
    spec = importlib.util.find_spec(module)
    tree = ast.parse(open(spec.origin).read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    known = set(_modules()) | {"burgers_jax"}
    return {m for m in found if (m.startswith(("burgers_jax", "porting")) and (m in known or m.startswith("porting")))}


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_low_layers_import_nothing_above_them_statically():
    for module in _modules():
        low = next((layer for layer in LOW_LAYERS if module == layer or module.startswith(layer + ".")), None)
        if low is None:
            continue
        bad = {m for m in _project_imports(module) if not m.startswith(ALLOWED[low])}
        assert not bad, f"{module} imports {sorted(bad)}: {low} may import only {ALLOWED[low]}"


def test_importing_model_and_physics_loads_nothing_above_them():
    proc = _run("""
        import sys, pkgutil, importlib
        import burgers_jax.model, burgers_jax.physics
        for pkg in (burgers_jax.model, burgers_jax.physics):
            for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
                importlib.import_module(m.name)
        above = ("burgers_jax.training", "burgers_jax.evaluation", "burgers_jax.io", "burgers_jax.data",
                 "burgers_jax.train", "burgers_jax.evaluate", "burgers_jax.predict", "burgers_jax.generate",
                 "burgers_jax.floors", "burgers_jax.cli", "burgers_jax.porting", "porting", "torch")
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "porting") or m.startswith(above)))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"loaded from above the low layers: {proc.stdout}"


def test_no_import_cycle():
    nodes = set(_modules())
    graph = {m: {d for d in _project_imports(m) if d in nodes} for m in nodes}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if dep == node or node.startswith(dep + "."):
                continue  # a module importing its parent package's name
            if state.get(dep) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(path + [node, dep])}")
            if dep not in state:
                visit(dep, path + [node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


@pytest.mark.cli  # a whole training, or a big compilation: out of the fast loop
def test_every_module_imports_and_a_tiny_forward_runs_without_torch():
    blocked = ", ".join(repr(m) for m in TORCH_STACK)
    proc = _run(f"""
        import sys
        for name in ({blocked},):
            sys.modules[name] = None  # `import name` now raises ImportError
        import importlib, pkgutil
        import burgers_jax
        names = [m.name for m in pkgutil.walk_packages(burgers_jax.__path__, "burgers_jax.")]
        torch_only = {TORCH_ONLY!r}
        assert set(torch_only) <= set(names), sorted(set(torch_only) - set(names))
        for name in names:
            try:
                importlib.import_module(name)
            except ImportError as e:
                assert name in torch_only, f"{{name}} needs torch: {{e}}"
                assert all(part in str(e) for part in {INSTALL_LINE!r}), f"{{name}}: {{e}}"
            else:
                assert name not in torch_only, f"{{name}} imported without torch: drop it from TORCH_ONLY"
        import porting, porting.architecture, porting.mapping  # the old paths, the torch-free part
        import jax, jax.numpy as jnp
        from burgers_jax.model.config import FLOAT32, tiny_config
        from burgers_jax.model.network import PDECausalModel, forward_frames, init_params
        config = tiny_config()
        model = PDECausalModel(config, policy=FLOAT32)
        params = init_params(config, jax.random.PRNGKey(0))
        out = forward_frames(model, params, jnp.full((1, 2, 128, 128, 2), 0.75))
        assert out.shape == (1, 2, 128, 128, 2) and bool(jnp.all(jnp.isfinite(out))), out.shape
        print(len(names), "modules")
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.split()[0]) >= 30, proc.stdout


@pytest.mark.parametrize("entry", [
    "from burgers_jax.convert import main; sys.exit(main(['best.pt']))",
    "from burgers_jax.export import main; sys.exit(main(['--checkpoint', 'c', '--out', 'o.pt']))",
    "import runpy; sys.argv = ['porting/convert_ckpt.py', 'best.pt']; "
    "runpy.run_path('porting/convert_ckpt.py', run_name='__main__')",
])
def test_torch_commands_say_what_to_install_when_torch_is_missing(entry):
    proc = _run(f"""
        import sys
        sys.modules["torch"] = None
        {entry}
    """)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "pip install torch==2.13.0" in lines[0] and "burgers-jax[torch]" in lines[0], lines[0]


def test_a_missing_torch_is_an_import_error_a_script_can_catch():
    proc = _run("""
        import sys
        sys.modules["torch"] = None
        try:
            from porting import convert_ckpt  # the old path: the same module
        except ImportError as e:
            print("caught:", e)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("caught:") and "pip install torch==2.13.0" in proc.stdout, proc.stdout


MAX_MODULE_LINES = 450


def test_no_package_module_grows_past_a_readable_size():
    """A module over ~450 lines holds more than one job: split it by role, as the rooms are."""
    long = {str(path.relative_to(REPO)): n for path in sorted((REPO / "burgers_jax").rglob("*.py"))
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"
