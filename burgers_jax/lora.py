"""LoRA adapters on the param tree: dtype casting, fresh insertion, merging.

Adapters are the leaves named `lora_A` `[in, r]` and `lora_B` `[r, out]` beside the
`kernel` `[in, out]` of a targeted projection
(`transformer/layers_{i}/{self_attn|mlp}/{name}/`). PEFT semantics:
`y = x W + dropout(x) A B * alpha / r`; A starts as PEFT's Kaiming-uniform
(U(-1/sqrt(in), 1/sqrt(in))), B at zero; adapters are float32 on any base dtype.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from burgers_jax.layers import peft_lora_a_init
from burgers_jax.model_config import ATTENTION_PROJECTIONS, MLP_PROJECTIONS, PRECISIONS, ModelConfig

ADAPTER_LEAVES = ("lora_A", "lora_B")


def is_adapter_leaf(name: str) -> bool:
    return name in ADAPTER_LEAVES


def _map_with_names(fn, tree: Mapping[str, Any], path: tuple[str, ...] = ()) -> dict:
    return {k: _map_with_names(fn, v, path + (k,)) if isinstance(v, Mapping) else fn(path + (k,), v)
            for k, v in tree.items()}


def cast_params(params: Mapping[str, Any], precision: str) -> dict:
    """Frozen leaves to bf16 ('reference', 'fp32_output') or float32 ('float32'); adapters float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {PRECISIONS}")
    frozen = jnp.float32 if precision == "float32" else jnp.bfloat16

    def cast(path, leaf):
        want = jnp.float32 if is_adapter_leaf(path[-1]) else frozen
        return leaf if leaf.dtype == want else jnp.asarray(leaf, want)

    return _map_with_names(cast, params)


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
            paths += [("transformer", f"layers_{i}", group, n) for n in names if n in lora.target_modules]
    return paths


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def _copy_nested(tree):
    return {k: _copy_nested(v) if isinstance(v, Mapping) else v for k, v in tree.items()}


def add_lora(params: Mapping[str, Any], config: ModelConfig, rng: jax.Array) -> dict:
    """Inserts fresh adapters (A PEFT Kaiming-uniform, B zero, float32) into a tree without any.

    `config.lora.r == 0` returns the tree unchanged. Fails if the tree already has adapters.
    """
    present = []
    _map_with_names(lambda p, v: present.append("/".join(p)) if is_adapter_leaf(p[-1]) else None, params)
    if present:
        raise ValueError(f"add_lora: the tree already has adapters (e.g. {present[0]}); strip them first")
    out = _copy_nested(params)
    r = config.lora.r
    if r <= 0:
        return out
    for j, path in enumerate(lora_module_paths(config)):
        try:
            module = _get(out, path)
            fan_in, fan_out = np.shape(module["kernel"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"add_lora: no 2-D kernel at {'/'.join(path)}/kernel for a LoRA target") from None
        module["lora_A"] = peft_lora_a_init(jax.random.fold_in(rng, j), (fan_in, r), jnp.float32)
        module["lora_B"] = jnp.zeros((r, fan_out), jnp.float32)
    return out


def merge_lora(params: Mapping[str, Any], config: ModelConfig) -> dict:
    """`kernel += A @ B * alpha / r` (in float32, cast back to the kernel dtype); adapters removed."""
    out = _copy_nested(params)
    scale = config.lora.scale
    for path in lora_module_paths(config) if config.lora.r > 0 else []:
        module = _get(out, path)
        if not all(k in module for k in ADAPTER_LEAVES):
            raise ValueError(f"merge_lora: {'/'.join(path)} lacks lora_A/lora_B although config.lora targets it")
        a, b = module.pop("lora_A"), module.pop("lora_B")
        kernel = module["kernel"]
        delta = jnp.dot(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32),
                        precision=jax.lax.Precision.HIGHEST) * scale
        module["kernel"] = (jnp.asarray(kernel, jnp.float32) + delta).astype(kernel.dtype)
    leftover = []
    _map_with_names(lambda p, v: leftover.append("/".join(p)) if is_adapter_leaf(p[-1]) else None, out)
    if leftover:
        raise ValueError(f"merge_lora: adapters outside config.lora.target_modules: {leftover[:5]}")
    return out
