"""configs/finetune_burgers.yaml (the PyTorch recipe's YAML) is a training config with
the recipe's values, and a run that selects the recipe the project's results show failing
(the all-bf16 `reference` policy at dt = 1/999) is warned, in one line."""

from __future__ import annotations

import io
import json

import ml_dtypes
import numpy as np
import yaml
from conftest import REPO

from burgers_jax import train as train_cmd
from burgers_jax.configs import burgers, from_yaml
from burgers_jax.data.sources import AnalyticSource
from burgers_jax.model.config import ARCHITECTURES
from burgers_jax.physics.residual import REFERENCE_DT
from burgers_jax.training.setup import BF16_BLIND_STEP, print_recipe_warnings, recipe_warnings

YAML = REPO / "configs" / "finetune_burgers.yaml"


def test_the_example_yaml_is_the_reference_recipe():
    raw = yaml.safe_load(YAML.read_text())
    c = from_yaml.get_config(str(YAML))
    ref = burgers.get_config("reference")  # the PyTorch recipe, as the JAX config writes it
    # The YAML's own values, key by key.
    tr, lora = raw["training"], raw["model"]["lora"]
    assert (c.training.max_steps, c.training.warmup_steps, c.training.eval_every_steps) == (
        tr["max_steps"], tr["warmup_steps"], tr["eval_every_steps"])
    assert (c.training.learning_rate, c.training.min_lr, c.training.weight_decay, c.training.grad_clip) == (
        float(tr["learning_rate"]), float(tr["min_lr"]), float(tr["weight_decay"]), float(tr["grad_clip"]))
    assert c.training.betas == tuple(tr["betas"])
    assert (c.model.lora.r, c.model.lora.alpha, c.model.lora.dropout) == (lora["r"], lora["alpha"], lora["dropout"])
    assert tuple(c.model.lora.target_modules) == tuple(lora["target_modules"])
    assert c.dataset.path == raw["dataset"]["path"] and c.physics.dt == raw["physics"]["dt"]
    assert c.model.pretrained_path == "checkpoints/best_flax"  # the conversion of checkpoints/best.pt
    assert c.model.precision == "reference"  # mixed_precision: bf16
    # ... which are the reference recipe's (configs/burgers.py), field for field.
    for section, field in [("training", f) for f in ("max_steps", "warmup_steps", "learning_rate", "min_lr",
                                                     "weight_decay", "betas", "grad_clip", "lambda_pde",
                                                     "lambda_data", "eval_every_steps")] + \
            [("dataset", f) for f in ("path", "temporal_length", "train_ratio", "seed")] + \
            [("dataloader", "batch_size"), ("logging", "save_dir"), ("logging", "log_interval"),
             ("logging", "project")]:
        assert c[section][field] == ref[section][field], f"{section}.{field}"
    for field in ("r", "alpha", "dropout", "target_modules"):
        assert c.model.lora[field] == ref.model.lora[field], f"model.lora.{field}"
    # The architecture it declares is the reference model's.
    full = ARCHITECTURES["full"].to_dict()
    for section, fields in json.loads(c.model.expected_architecture).items():
        for field, value in fields.items():
            assert value == full[section][field], f"model.{section}.{field}"


def test_the_example_yaml_loads_from_the_command_line(capsys):
    assert train_cmd.main(["burgers-train", "--config", f"configs/from_yaml.py:{YAML.relative_to(REPO)}",
                           "--config.training.max_steps=12", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["model"]["precision"] == "reference" and printed["training"]["max_steps"] == 12
    assert printed["model"]["lora"]["r"] == 16


def test_gradient_checkpointing_maps_to_remat(tmp_path):
    """`model.gradient_checkpointing: true` (PyTorch's whole-layer checkpointing) is
    `model.remat=full`; `false`, as the example YAML says, keeps the default `projections`."""
    raw = yaml.safe_load(YAML.read_text())
    assert raw["model"]["gradient_checkpointing"] is False  # the example's own value
    assert from_yaml.get_config(str(YAML)).model.remat == "projections"
    assert burgers.get_config().model.remat == "projections"  # the default it keeps
    for value, remat in ((True, "full"), (False, "projections")):
        raw["model"]["gradient_checkpointing"] = value
        path = tmp_path / f"gradient_checkpointing_{value}.yaml"
        path.write_text(yaml.safe_dump(raw))
        assert from_yaml.get_config(str(path)).model.remat == remat, f"gradient_checkpointing: {value}"


def test_bf16_cannot_see_one_time_step_below_the_warning_threshold():
    """The premise of the warning, measured on the reference trajectories: rounded to
    bf16, one frame's change at dt = 1/999 vanishes, and just below BF16_BLIND_STEP it
    is still wrong by more than its own size; well above it, bf16 sees it."""
    src = AnalyticSource.reference(num_samples=3)  # nu in [0.1, 0.15]

    def bf16_change_error(i: int, stride: int) -> float:
        w = src.read_window(i, 0, 2, stride)["data"].astype(np.float64)
        b = w.astype(ml_dtypes.bfloat16).astype(np.float64)
        return float(np.linalg.norm((b[1] - b[0]) - (w[1] - w[0])) / np.linalg.norm(w[1] - w[0]))

    below = int(BF16_BLIND_STEP / REFERENCE_DT) - 1
    for i in range(src.num_samples):
        w = src.read_window(i, 0, 2)["data"].astype(ml_dtypes.bfloat16)
        assert np.array_equal(w[0], w[1]), "at dt = 1/999 no cell changes in bf16"
        assert bf16_change_error(i, below) > 1.0
        assert bf16_change_error(i, 4 * below) < 1.0


def test_recipe_warnings():
    c = from_yaml.get_config(str(YAML))  # the PyTorch recipe: reference precision, the window residual
    precision, residual = recipe_warnings(c, REFERENCE_DT)
    assert "model.precision='reference'" in precision and "precision=float32" in precision
    assert "training.residual='window'" in residual and "configs/burgers.py without ':reference'" in residual
    assert "\n" not in precision + residual
    assert recipe_warnings(c, 0.5) == [residual]  # a step bf16 can represent
    c.dataset.frame_stride = int(BF16_BLIND_STEP / REFERENCE_DT) + 1  # the window step, not the frame spacing
    assert recipe_warnings(c, REFERENCE_DT) == [residual]
    for precision in ("float32", "fp32_output"):  # float32 input and output
        c = burgers.get_config("reference")
        c.model.precision = precision
        assert recipe_warnings(c, REFERENCE_DT) == [residual]
    # The documented entry's recipe warns about nothing; :recommended is the same recipe.
    assert recipe_warnings(burgers.get_config(), REFERENCE_DT) == []
    assert burgers.get_config().to_dict() == burgers.get_config("recommended").to_dict()

    out = io.StringIO()
    c = from_yaml.get_config(str(YAML))
    assert print_recipe_warnings(c, REFERENCE_DT, file=out) == recipe_warnings(c, REFERENCE_DT)
    assert out.getvalue().count("\n") == 2 and out.getvalue().startswith("warning: model.precision='reference'")
