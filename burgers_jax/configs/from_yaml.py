"""The PyTorch recipe's own YAML (`finetune_burgers.yaml`) as a training config:

  python -m burgers_jax.train --config configs/from_yaml.py:path/to/finetune_burgers.yaml \
      [--config.a.b=value ...]

`configs/finetune_burgers.yaml` is an example: the recipe's own YAML, every section and
key (add `--print-config` to see the config it becomes).

Every key of the YAML maps to a field of configs/burgers.py, or is accepted and has no
counterpart here (named below); any other key is an error naming it, as is a YAML of
the project's later versions (`max_epochs`, `eval_interval`, `t_input`): a different
recipe, not this one.

- `model.pretrained_path` names the PyTorch `best.pt`; training reads its conversion,
  `<stem>_flax` beside it (what `burgers-convert best.pt` writes by default).
- `model.encoder` / `model.transformer` must agree with the converted checkpoint:
  training compares them field by field.
- `training.mixed_precision: bf16` is the all-bf16 recipe, `model.precision=reference`
  (`--config.model.precision=fp32_output` keeps the output in float32, see the README).
- `physics.dx` must be 1/128; `training.gradient_accumulation_steps` must be 1.
- `model.gradient_checkpointing: true` is `model.remat=full` (each layer recomputed);
  `false` keeps the default `projections`, which costs ~1 % more compute and is what
  lets the full-size step fit (docs/performance.md, "Memory").
- Accepted without effect: `model.use_flash_attention` (the attention kernel is chosen
  by backend), `dataloader.num_workers`, `dataloader.pin_memory`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from burgers_jax.configs import burgers
from burgers_jax.errors import UserError

LATER_VERSION_KEYS = ("max_epochs", "eval_interval", "t_input")
PRECISION_OF = {"bf16": "reference", "bfloat16": "reference", "fp32": "float32", "no": "float32",
                "float32": "float32"}

# section -> {yaml key: our 'section.field', or None: accepted, no counterpart}
KEYS = {
    "model": {"pretrained_path": "model.pretrained_path", "in_channels": None, "noise_level": "model.noise_level",
              "use_flash_attention": None, "gradient_checkpointing": None, "encoder": None,
              "transformer": None, "lora": None},
    "dataset": {"path": "dataset.path", "temporal_length": "dataset.temporal_length",
                "train_ratio": "dataset.train_ratio", "seed": "dataset.seed"},
    "physics": {"dt": "physics.dt", "dx": None},
    "dataloader": {"batch_size": "dataloader.batch_size", "num_workers": None, "pin_memory": None},
    "training": {"max_steps": "training.max_steps", "warmup_steps": "training.warmup_steps",
                 "learning_rate": "training.learning_rate", "min_lr": "training.min_lr",
                 "weight_decay": "training.weight_decay", "betas": "training.betas",
                 "grad_clip": "training.grad_clip", "lambda_data": "training.lambda_data",
                 "lambda_pde": "training.lambda_pde", "mixed_precision": None,
                 "gradient_accumulation_steps": None, "eval_every_steps": "training.eval_every_steps"},
    "logging": {"project": "logging.project", "entity": "logging.entity", "save_dir": "logging.save_dir",
                "log_interval": "logging.log_interval"},
}
LORA_KEYS = {"r": "r", "alpha": "alpha", "lora_alpha": "alpha", "dropout": "dropout", "lora_dropout": "dropout",
             "target_modules": "target_modules"}


class YamlConfigError(UserError):
    pass


def _walk_keys(d, prefix=""):
    for k, v in d.items():
        yield f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _walk_keys(v, f"{prefix}{k}.")


def read_yaml(path: str) -> dict:
    p = Path(path).expanduser()
    if not p.is_file():
        raise YamlConfigError(f"{p}: no such YAML file")
    try:
        d = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise YamlConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(d, dict):
        raise YamlConfigError(f"{p}: the YAML is not a mapping of sections")
    return d


def _as_field_type(value, current, where: str):
    """YAML 1.1 (PyYAML) reads `1e-3` (no dot) as the string '1e-3'; the PyTorch script
    passes it to float() and so do we, for float fields only. Anything else that does not
    fit the field's type is an error naming the key."""
    if current is None or isinstance(value, (list, tuple)):
        return value  # a field without a type yet, or a sequence (converted by the caller)
    if isinstance(current, float) and not isinstance(value, bool):
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise YamlConfigError(f"{where}={value!r} is not a number") from None
        if isinstance(value, (int, float)):
            return float(value)
    if type(current) is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, type(current)):
        raise YamlConfigError(f"{where}={value!r}: expected {type(current).__name__}")
    return value


def get_config(path: str = ""):
    if not path:
        raise YamlConfigError("give the YAML file: --config configs/from_yaml.py:path/to/finetune_burgers.yaml")
    y = read_yaml(path)
    later = [k for k in _walk_keys(y) if k.rsplit(".", 1)[-1] in LATER_VERSION_KEYS]
    if later:
        raise YamlConfigError(f"{path}: key {later[0]!r} belongs to a later version of the PyTorch project, a "
                              "different recipe (epochs, input windows); only the finetune_burgers.yaml recipe "
                              "(max_steps, temporal_length, eval_every_steps) is supported")
    c = burgers.get_config("reference")  # the recipe the YAML writes; its values below
    unknown = [s for s in y if s not in KEYS]
    for section, values in y.items():
        if section not in KEYS:
            continue
        if not isinstance(values, dict):
            raise YamlConfigError(f"{path}: section {section!r} is not a mapping")
        unknown += [f"{section}.{k}" for k in values if k not in KEYS[section]]
    lora = (y.get("model") or {}).get("lora") or {}
    unknown += [f"model.lora.{k}" for k in lora if k not in LORA_KEYS]
    if unknown:
        raise YamlConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; known sections and keys: "
                              + "; ".join(f"{s}: {', '.join(ks)}" for s, ks in KEYS.items()))

    for section, mapping in KEYS.items():
        for key, target in mapping.items():
            if target is not None and key in (y.get(section) or {}):
                sec, field = target.split(".")
                value = _as_field_type(y[section][key], c[sec].get(field), f"{path}: {section}.{key}")
                c[sec][field] = tuple(value) if isinstance(value, list) else value
    for key, value in lora.items():
        field = LORA_KEYS[key]
        c.model.lora[field] = tuple(value) if field == "target_modules" else value
    model, physics, training = y.get("model") or {}, y.get("physics") or {}, y.get("training") or {}
    c.dataloader.val_batch_size = c.dataloader.batch_size
    if model.get("pretrained_path"):
        pt = Path(model["pretrained_path"])
        c.model.pretrained_path = str(pt.with_name(f"{pt.stem}_flax") if pt.suffix == ".pt" else pt)
    if int(model.get("in_channels", 6)) != 6:
        raise YamlConfigError(f"{path}: model.in_channels={model['in_channels']}: the v2 encoder takes 6 channels")
    arch = {k: model[k] for k in ("encoder", "transformer") if isinstance(model.get(k), dict)}
    c.model.expected_architecture = json.dumps(arch) if arch else ""
    if "mixed_precision" in training:
        mp = str(training["mixed_precision"]).lower()
        if mp not in PRECISION_OF:
            raise YamlConfigError(f"{path}: training.mixed_precision={mp!r}; known: {', '.join(PRECISION_OF)}")
        c.model.precision = PRECISION_OF[mp]
    if model.get("gradient_checkpointing") is True:  # PyTorch's whole-layer checkpointing: `full`
        c.model.remat = "full"  # false keeps our default, which already fits (docs/performance.md)
    if int(training.get("gradient_accumulation_steps", 1)) != 1:
        raise YamlConfigError(f"{path}: training.gradient_accumulation_steps="
                              f"{training['gradient_accumulation_steps']}: only 1 is supported")
    if "dx" in physics and not math.isclose(float(physics["dx"]), 1 / 128, rel_tol=1e-6):
        raise YamlConfigError(f"{path}: physics.dx={physics['dx']}: the model's grid has dx = 1/128")
    return c
