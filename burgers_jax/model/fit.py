"""Does a parameter tree fit the model? The rules, beside the model they describe
(`io/` keeps the formats on disk and calls these):

- `check_fits(params, config, source)`: every weight the config's model has, at its shape,
  nothing else; adapters (if any) at the shapes of the kernels they adapt;
- `check_adapters_complete(adapters, config, source)`: every projection the LoRA config
  targets, in every layer, has its `lora_A` and `lora_B`;
- `replace_trained(params, trained, source, base)`: a run's trained non-adapter leaves in
  place of the pretrained ones, each at the shape it replaces.

Each raises `FitError` naming `source` and the leaves at fault.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from burgers_jax.errors import UserError
from burgers_jax.model.config import ModelConfig
from burgers_jax.model.lora import lora_module_paths
from burgers_jax.model.network import param_shapes
from burgers_jax.model.param_tree import (
    ADAPTER_LEAVES,
    ParamTreeError,
    extract_adapters,
    flatten,
    is_adapter,
    merge_adapters,
    path_str,
    strip_adapters,
    unflatten,
)


class FitError(UserError):
    """A parameter tree that does not fit the model config."""


def _listed(items: list[str], limit: int) -> str:
    return ", ".join(items[:limit]) + (" ..." if len(items) > limit else "")


def check_fits(params: Mapping[str, Any], config: ModelConfig, source: str = "params") -> None:
    """Raises FitError listing missing / unexpected / mismatched leaves (adapters aside),
    then any adapter whose shape does not fit the kernel it adapts."""
    want = param_shapes(config)
    have = {p: tuple(np.shape(v)) for p, v in flatten(params).items() if not is_adapter(p)}
    missing = sorted(path_str(p) for p in want.keys() - have.keys())
    unexpected = sorted(path_str(p) for p in have.keys() - want.keys())
    mismatched = sorted(f"{path_str(p)}: stored {have[p]}, model wants {want[p]}"
                        for p in want.keys() & have.keys() if have[p] != want[p])
    if missing or unexpected or mismatched:
        lines = [f"{source} does not fit the model config"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("mismatched", mismatched)):
            if items:
                lines.append(f"{title} ({len(items)}): {_listed(items, 20)}")
        raise FitError("\n  ".join(lines))
    adapters = extract_adapters(params)
    if adapters:
        try:
            merge_adapters(strip_adapters(params), adapters)  # validates adapter shapes
        except ParamTreeError as e:
            raise FitError(f"{source}: {e}") from None


def check_adapters_complete(adapters: Mapping[str, Any], config: ModelConfig, source: str) -> None:
    """Every projection `config.lora` targets, in every layer, has both adapter leaves."""
    want = {path + (leaf,) for path in lora_module_paths(config) for leaf in ADAPTER_LEAVES}
    missing = sorted(path_str(p) for p in want - set(flatten(adapters)))
    if missing:
        raise FitError(f"{source}: lora_config.json targets {list(config.lora.target_modules)} in every layer, "
                       f"but {len(missing)} adapter leaves are missing: {_listed(missing, 6)}")


def replace_trained(params: Mapping[str, Any], trained: Mapping[str, Any], source, base) -> dict:
    """`params` with a run's trained non-adapter leaves (`trained`, from `source`) in place
    of the pretrained ones of `base`; trained weights keep their float32 values."""
    flat, new = flatten(params), flatten(trained)
    wrong = [f"{path_str(p)} {np.shape(v)}" + (f" (base {np.shape(flat[p])})" if p in flat else " (not in base)")
             for p, v in new.items() if p not in flat or np.shape(flat[p]) != np.shape(v)]
    if wrong:
        raise FitError(f"{source}: trained leaves do not fit the base model {base}: {_listed(wrong, 5)}")
    return unflatten({**flat, **{p: np.asarray(v, np.float32) for p, v in new.items()}})
