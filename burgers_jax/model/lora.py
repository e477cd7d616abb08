"""LoRA adapters on the param tree: dtype casting, fresh insertion, merging.

Adapters are the leaves named `lora_A` `[in, r]` and `lora_B` `[r, out]` beside the
`kernel` `[in, out]` of a targeted projection
(`transformer/layers_{i}/{self_attn|mlp}/{name}/`). PEFT semantics:
`y = x W + dropout(x) A B * alpha / r`; A starts as PEFT's Kaiming-uniform
(U(-1/sqrt(in), 1/sqrt(in))), B at zero; adapters are float32 on any base dtype.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from burgers_jax.model.config import ATTENTION_PROJECTIONS, MLP_PROJECTIONS, ModelConfig, Policy
from burgers_jax.model.layers import peft_lora_a_init
from burgers_jax.model.param_tree import extract_adapters, flatten, is_adapter, path_str, unflatten


def cast_params(params: Mapping[str, Any], policy: Policy, float32_leaf: Callable[[Any], bool] = is_adapter) -> dict:
    """Leaves to `policy.param_dtype`, except those `float32_leaf(path)` selects: float32
    (adapters by default, as PEFT keeps them; any leaf that trains keeps float32 master
    weights, cast to the compute dtype at use)."""

    def cast(path, leaf):
        want = jnp.float32 if float32_leaf(path) else policy.param_dtype
        return leaf if leaf.dtype == want else jnp.asarray(leaf, want)

    return jax.tree_util.tree_map_with_path(cast, dict(params))


def lora_module_paths(config: ModelConfig) -> list[tuple[str, ...]]:
    """Tree paths of the modules that carry adapters under `config.lora`."""
    lora = config.lora
    unknown = set(lora.target_modules) - set(ATTENTION_PROJECTIONS) - set(MLP_PROJECTIONS)
    if unknown:
        raise ValueError(f"lora.target_modules has unknown names {sorted(unknown)}; "
                         f"known: {ATTENTION_PROJECTIONS + MLP_PROJECTIONS}")
    paths = []
    for i in range(config.transformer.num_hidden_layers):
        for group, names in (("self_attn", ATTENTION_PROJECTIONS), ("mlp", MLP_PROJECTIONS)):
            paths += [("transformer", f"layers_{i}", group, n) for n in names if lora.rank_of(n) > 0]
    return paths


def add_lora(params: Mapping[str, Any], config: ModelConfig, rng: jax.Array) -> dict:
    """Inserts fresh adapters (A PEFT Kaiming-uniform, B zero, float32) into a tree without any.

    `config.lora.r == 0` returns the tree unchanged. Fails if the tree already has adapters.
    """
    present = flatten(extract_adapters(params))
    if present:
        raise ValueError(f"add_lora: the tree already has adapters (e.g. {path_str(next(iter(present)))}); "
                         "strip them first")
    flat = flatten(params)
    r = config.lora.r
    for j, path in enumerate(lora_module_paths(config) if r > 0 else []):
        kernel = flat.get(path + ("kernel",))
        if kernel is None or np.ndim(kernel) != 2:
            raise ValueError(f"add_lora: no 2-D kernel at {path_str(path)}/kernel for a LoRA target")
        fan_in, fan_out = np.shape(kernel)
        flat[path + ("lora_A",)] = peft_lora_a_init(jax.random.fold_in(rng, j), (fan_in, r), jnp.float32)
        flat[path + ("lora_B",)] = jnp.zeros((r, fan_out), jnp.float32)
    return unflatten(flat)


def merge_lora(params: Mapping[str, Any], config: ModelConfig) -> dict:
    """`kernel += A @ B * alpha / r` (in float32, cast back to the kernel dtype); adapters removed."""
    flat = flatten(params)
    scale = config.lora.scale
    for path in lora_module_paths(config) if config.lora.r > 0 else []:
        a, b = flat.pop(path + ("lora_A",), None), flat.pop(path + ("lora_B",), None)
        if a is None or b is None:
            raise ValueError(f"merge_lora: {path_str(path)} lacks lora_A/lora_B although config.lora targets it")
        kernel = flat[path + ("kernel",)]
        delta = jnp.dot(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32),
                        precision=jax.lax.Precision.HIGHEST) * scale
        flat[path + ("kernel",)] = (jnp.asarray(kernel, jnp.float32) + delta).astype(kernel.dtype)
    leftover = [path_str(p) for p in flat if is_adapter(p)]
    if leftover:
        raise ValueError(f"merge_lora: adapters outside config.lora.target_modules: {leftover[:5]}")
    return unflatten(flat)
