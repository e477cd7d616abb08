"""The documentation's Python runs as written: every ```python block of docs/api.md in
order (convert, load, predict, the forward, evaluate, fine-tune, load the result,
export), and the PEFT loading snippet of docs/model_and_formats.md on the PEFT directory
that api.md exported. A block's inputs are the CAPITALISED names it assigns first
(api.md: its first block; the PEFT snippet: its two paths); the test binds them to a tiny
PyTorch checkpoint, a temporary folder and 4 steps. What the blocks produce is checked
against the PyTorch reference (porting/torch_reference.py), not against the code's own
output."""

from __future__ import annotations

import ast
import contextlib
import copy
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from test_convert import assert_float32_parity

from porting import torch_reference as R
from porting.verify import rel_l2

API_DOC = REPO / "docs" / "api.md"
FORMATS_DOC = REPO / "docs" / "model_and_formats.md"
pytestmark = pytest.mark.cli  # runs the docs' convert, training and export
PARITY = 1e-5  # float32 round-off, for the premise below (parity itself: assert_float32_parity)


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def bind_inputs(code: str, inputs: dict) -> tuple[ast.Module, set[str]]:
    """`code` with each top-level `NAME = ...` of a name in `inputs` replaced by that
    input (`NAME = __inputs__["NAME"]`) -> (module, the names replaced)."""
    tree = ast.parse(code)
    replaced = set()
    for i, node in enumerate(tree.body):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id in inputs):
            name = node.targets[0].id
            tree.body[i] = ast.parse(f"{name} = __inputs__[{name!r}]").body[0]
            replaced.add(name)
    return ast.fix_missing_locations(tree), replaced


def run_blocks(blocks: list[str], inputs: dict, namespace: dict, where: str) -> dict:
    """Executes `blocks` in order in `namespace`; the inputs must be assigned, each once,
    before anything else uses them (else the doc and its test drifted apart)."""
    namespace["__inputs__"] = inputs
    seen: set[str] = set()
    for k, code in enumerate(blocks):
        tree, replaced = bind_inputs(code, inputs)
        assert not replaced & seen, f"{where} block {k + 1} assigns {sorted(replaced & seen)} again"
        seen |= replaced
        exec(compile(tree, f"{where}[block {k + 1}]", "exec"), namespace)  # noqa: S102 - our own documentation
    assert seen == set(inputs), f"{where}: the inputs {sorted(set(inputs) - seen)} are not assigned in the doc"
    return namespace


def capital_names(code: str) -> set[str]:
    return {n.targets[0].id for n in ast.parse(code).body
            if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name) and n.targets[0].id.isupper()}


@pytest.fixture(scope="module")
def api_run(tiny_best_pt, tmp_path_factory):
    """docs/api.md executed once: (its namespace, WORK, what it printed)."""
    work = tmp_path_factory.mktemp("api") / "work"
    blocks = python_blocks(API_DOC)
    assert capital_names(blocks[0]) == {"TORCH_CHECKPOINT", "WORK", "STEPS"}, "the first block names the inputs"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        ns = run_blocks(blocks, {"TORCH_CHECKPOINT": tiny_best_pt, "WORK": work, "STEPS": 4}, {}, "docs/api.md")
    return ns, work, printed.getvalue()


def test_the_blocks_are_found_and_cover_the_api():
    blocks = python_blocks(API_DOC)
    text = "\n".join(blocks)
    assert len(blocks) >= 8, len(blocks)
    for call in ("convert(", "load_model(", "predict(", "forward_frames(", "EvalRequest(", "run_evaluation(",
                 "train_and_evaluate(", 'kind="merged"', 'kind="lora"', 'kind="peft"'):
        assert call in text, f"docs/api.md has no example of {call}"
    with pytest.raises(AssertionError, match="not assigned"):  # the check can fail
        run_blocks(["x = 1"], {"WORK": 0}, {}, "probe")


def test_api_convert_load_and_predict_match_pytorch(api_run, tiny_best_pt):
    ns, work, out = api_run
    assert (work / "pretrained" / "model_config.json").is_file() and "verify ok" in out
    window, pred = ns["window"], ns["pred"]
    assert window.shape == (5, 128, 128, 2) and pred.shape == (1, 4, 128, 128, 2) and pred.dtype == np.float32
    ckpt = torch.load(tiny_best_pt, weights_only=True)
    ref = R.build_model(ckpt["config"])
    ref.load_state_dict({k: v.float() for k, v in ckpt["model_state_dict"].items()})
    x = np.concatenate([window[None, :4], np.zeros((1, 4, 128, 128, 4), np.float32)], axis=-1)
    want = R.run_with_intermediates(ref, torch.from_numpy(x))["output"].numpy()[..., :2]
    want64 = R.run_with_intermediates(copy.deepcopy(ref).double(), torch.from_numpy(x).double())["output"].numpy()
    assert_float32_parity(pred, want, want64[..., :2], "api.md's predict")
    assert np.allclose(ns["same"], pred, rtol=0, atol=1e-5) and "forward == predict: True" in out


def test_api_evaluate_and_fine_tune(api_run):
    ns, work, out = api_run
    for name, result in (("eval_zero_shot", ns["zero_shot"]), ("eval_fine_tuned", ns["fine_tuned"])):
        on_disk = json.loads((work / name / "metrics.json").read_text())
        assert on_disk["one_step"]["model"]["vrmse"] == result["one_step"]["model"]["vrmse"]
        assert set(on_disk["one_step"]) == {"model", "persistence", "truth"}
        assert len(on_disk["rollout"]["horizons"]) == 10 and (work / name / "metrics.md").is_file()
    assert ns["fine_tuned"]["config"]["lora"] == str(work / "run" / "best_adapters")
    assert ns["zero_shot"]["config"]["lora"] is None
    summary = json.loads((work / "run" / "summary.json").read_text())
    assert summary["steps"] == ns["summary"]["steps"] == 4
    assert ns["tuned_config"].lora.r == ns["config"].model.lora.r > 0
    assert ns["fine_tuned"]["one_step"]["model"]["vrmse"] != ns["zero_shot"]["one_step"]["model"]["vrmse"], \
        "the fine-tuned adapters change the model"


def test_api_exports_load_in_pytorch(api_run, tiny_best_pt):
    ns, work, _ = api_run
    merged = torch.load(work / "best.pt", weights_only=True)
    R.build_model(merged["config"]).load_state_dict({k: v.float() for k, v in merged["model_state_dict"].items()},
                                                    strict=True)
    lora = torch.load(work / "best_lora.pt", weights_only=True)
    assert lora["lora_state_dict"] and all(".lora_" in k for k in lora["lora_state_dict"])
    assert lora["config"]["model"]["lora"]["r"] == ns["config"].model.lora.r
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (work / "peft_adapters").iterdir()}


def test_peft_snippet_reproduces_the_jax_model(api_run, tiny_best_pt):
    """The snippet of docs/model_and_formats.md, on the PEFT directory the api.md run
    exported: PyTorch with the adapters equals the JAX model with the same adapters."""
    import jax

    from burgers_jax.io.checkpoint import load_model
    from burgers_jax.model.config import FLOAT32
    from burgers_jax.model.network import PDECausalModel, forward_frames

    _, work, _ = api_run
    snippets = [b for b in python_blocks(FORMATS_DOC) if "PeftModel.from_pretrained" in b]
    assert len(snippets) == 1, "docs/model_and_formats.md has one PEFT loading snippet"
    ns = run_blocks(snippets, {"BASE_CHECKPOINT": str(tiny_best_pt), "PEFT_DIR": str(work / "peft_adapters")}, {},
                    "docs/model_and_formats.md")
    x, y = ns["x"].numpy(), ns["y"].numpy()
    assert x.shape == y.shape == (1, 2, 128, 128, 6)

    params, config = load_model(work / "pretrained", work / "run" / "best_adapters", policy=FLOAT32)
    model = PDECausalModel(config, policy=FLOAT32)
    with jax.default_matmul_precision("highest"):
        jax_out = np.asarray(forward_frames(model, params, x))
    # The snippet's input is unseeded and the adapters are whatever the run learnt: the
    # tolerance is PyTorch float32's own distance from float64 on this very input.
    with torch.no_grad():
        y64 = copy.deepcopy(ns["model"]).double()(ns["x"].double()).numpy()
    assert_float32_parity(jax_out, y, y64, "the PEFT snippet's output")

    ckpt = torch.load(tiny_best_pt, weights_only=True)
    base = R.build_model(ckpt["config"])
    base.load_state_dict({k: v.float() for k, v in ckpt["model_state_dict"].items()})
    base_out = R.run_with_intermediates(base, ns["x"])["output"].numpy()
    assert rel_l2(base_out, y) > 100 * PARITY, "test premise: the run's adapters change the output"
