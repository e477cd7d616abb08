"""Partition of the param tree into LoRA adapters and frozen weights.

Every leaf must match exactly one named rule (big_vision style); an unmatched or
doubly-matched path is an error, so a new parameter cannot silently become trainable
or silently stay frozen. Paths are '/'-joined tree keys, e.g.
`transformer/layers_0/self_attn/q_proj/lora_A`.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import numpy as np

ADAPTER = "adapter"
FROZEN = "frozen"

# (label, regex over the full path). Adapters are the lora_A/lora_B leaves that sit
# beside the kernel they adapt; everything else in the three model parts is frozen.
RULES: tuple[tuple[str, str], ...] = (
    (ADAPTER, r"^transformer/layers_\d+/(self_attn|mlp)/\w+_proj/lora_[AB]$"),
    (FROZEN, r"^(encoder_2d|transformer|decoder_2d)/.*(?<!lora_A)(?<!lora_B)$"),
)


class PartitionError(ValueError):
    pass


def path_str(path) -> str:
    parts = []
    for k in path:
        key = getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))
        parts.append(str(key))
    return "/".join(parts)


def label_of(path: str) -> str:
    hits = [label for label, pattern in RULES if re.search(pattern, path)]
    if len(hits) != 1:
        what = "no rule" if not hits else f"several rules {hits}"
        raise PartitionError(f"param {path!r} matches {what}; see burgers_jax.partition.RULES")
    return hits[0]


def labels(params) -> Any:
    """A tree of ADAPTER/FROZEN strings with the structure of `params`."""
    return jax.tree_util.tree_map_with_path(lambda p, _: label_of(path_str(p)), params)


def adapter_mask(params) -> Any:
    """Boolean tree for `optax.masked`: True on adapter leaves."""
    return jax.tree.map(lambda lab: lab == ADAPTER, labels(params))


def flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Nested dict -> {path tuple: leaf}."""
    out: dict[tuple[str, ...], Any] = {}
    for key, value in tree.items():
        path = prefix + (str(key),)
        if isinstance(value, Mapping):
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out


def unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def split(params) -> tuple[dict, dict]:
    """(adapters, frozen) as two nested dicts that together hold every leaf once."""
    flat = flatten(params)
    labs = {path: label_of("/".join(path)) for path in flat}
    return (unflatten({p: v for p, v in flat.items() if labs[p] == ADAPTER}),
            unflatten({p: v for p, v in flat.items() if labs[p] == FROZEN}))


def merge(a: dict, b: dict) -> dict:
    """Union of two nested dicts with disjoint leaves (inverse of `split`)."""
    out = dict(a)
    for k, v in b.items():
        if k in out:
            if not (isinstance(out[k], dict) and isinstance(v, dict)):
                raise PartitionError(f"leaf {k!r} present in both trees")
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def count(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
