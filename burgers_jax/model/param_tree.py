"""Param trees: the one home of path helpers, the adapter predicate and the partition
of a tree into trainable and frozen leaves (by a named rule set, `model.trainable`).

Trees are plain nested dicts whose keys mirror the PyTorch module names. A path is a
tuple of keys (`("transformer", "layers_0", "self_attn", "q_proj", "lora_A")`), or the
same keys '/'-joined in messages and rules.

Adapters are the leaves named `lora_A` `[in, r]` / `lora_B` `[r, out]` beside the kernel
`[in, out]` they adapt; `is_adapter(path)` is the only test for one.

Every leaf must match exactly one named rule (big_vision style); an unmatched or
doubly-matched path is an error, so a new parameter cannot silently become trainable
or silently stay frozen.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Mapping

import flax
import jax
import numpy as np

from burgers_jax.errors import UserError

TRAINABLE = "trainable"
FROZEN = "frozen"
ADAPTER_LEAVES = ("lora_A", "lora_B")

_ADAPTER = r"^transformer/layers_\d+/(self_attn|mlp)/\w+_proj/lora_[AB]$"
_NOT_ADAPTER = r"(?<!lora_A)(?<!lora_B)$"
# Which leaves train, by name (`model.trainable`): each a tuple of (label, regex over the
# '/'-joined path). "adapters" is the reference recipe (LoRA only); the others also train
# the decoder, or the encoder and decoder; "all" is full training (pretraining).
TRAINABLE_SETS: dict[str, tuple[tuple[str, str], ...]] = {
    "adapters": (
        (TRAINABLE, _ADAPTER),
        (FROZEN, r"^(encoder_2d|transformer|decoder_2d)/.*" + _NOT_ADAPTER),
    ),
    "adapters+decoder": (
        (TRAINABLE, _ADAPTER),
        (TRAINABLE, r"^decoder_2d/"),
        (FROZEN, r"^(encoder_2d|transformer)/.*" + _NOT_ADAPTER),
    ),
    "adapters+encoder+decoder": (
        (TRAINABLE, _ADAPTER),
        (TRAINABLE, r"^(encoder_2d|decoder_2d)/"),
        (FROZEN, r"^transformer/.*" + _NOT_ADAPTER),
    ),
    "all": ((TRAINABLE, r"^(encoder_2d|transformer|decoder_2d)/"),),
}


class ParamTreeError(UserError):
    """A param tree that does not fit the rules or the tree it is merged into."""


# ----------------------------------------------------------------------------- paths


def path_str(path) -> str:
    """'/'-joined keys of a tuple path or a `jax.tree_util` key path."""
    if isinstance(path, str):
        return path
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def is_adapter(path) -> bool:
    """True for a LoRA adapter leaf (`.../lora_A`, `.../lora_B`); any path form."""
    return path_str(path).rsplit("/", 1)[-1] in ADAPTER_LEAVES


def flatten(tree: Mapping[str, Any]) -> dict[tuple[str, ...], Any]:
    """Nested dict -> {path tuple: leaf}."""
    return flax.traverse_util.flatten_dict(dict(tree))


def unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    """{path tuple: leaf} -> nested dict (plain dicts)."""
    return flax.traverse_util.unflatten_dict(dict(flat))


def count(params) -> int:
    return int(sum(np.prod(np.shape(x)) for x in jax.tree.leaves(params)))


# ----------------------------------------------------------------------------- rules


def fingerprint(params: Mapping[str, Any]) -> str:
    """A digest of a tree's values, dtypes, shapes and paths (blake2b, 32 hex digits): the
    identity of a base model. Two trees share it only if every leaf is bit-identical."""
    digest = hashlib.blake2b(digest_size=16)
    for path, leaf in sorted(flatten(params).items()):
        a = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{path_str(path)}|{a.dtype}|{a.shape}|".encode())
        digest.update(a.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def rules(trainable: str = "adapters") -> tuple[tuple[str, str], ...]:
    if trainable not in TRAINABLE_SETS:
        raise ParamTreeError(f"model.trainable={trainable!r} is not one of {', '.join(TRAINABLE_SETS)}")
    return TRAINABLE_SETS[trainable]


def label_of(path, trainable: str = "adapters") -> str:
    """TRAINABLE or FROZEN: the label of the one rule of `trainable` that `path` matches."""
    path = path_str(path)
    hits = [label for label, pattern in rules(trainable) if re.search(pattern, path)]
    if len(hits) != 1:
        what = "no rule" if not hits else f"several rules {hits}"
        raise ParamTreeError(f"param {path!r} matches {what} of model.trainable={trainable!r}; "
                             "see burgers_jax.model.param_tree.TRAINABLE_SETS")
    return hits[0]


def labels(params, trainable: str = "adapters") -> Any:
    """A tree of TRAINABLE/FROZEN strings with the structure of `params`."""
    return jax.tree_util.tree_map_with_path(lambda p, _: label_of(p, trainable), params)


def trainable_mask(params, trainable: str = "adapters") -> Any:
    """Boolean tree for `optax.masked`: True on the leaves that train."""
    return jax.tree.map(lambda lab: lab == TRAINABLE, labels(params, trainable))


def split(params, trainable: str = "adapters") -> tuple[dict, dict]:
    """(trainable, frozen) as two nested dicts that together hold every leaf once."""
    flat = flatten(params)
    labs = {path: label_of(path, trainable) for path in flat}
    return (unflatten({p: v for p, v in flat.items() if labs[p] == TRAINABLE}),
            unflatten({p: v for p, v in flat.items() if labs[p] == FROZEN}))


def merge(a: Mapping, b: Mapping) -> dict:
    """Union of two nested dicts with disjoint leaves (inverse of `split`)."""
    flat_a, flat_b = flatten(a), flatten(b)
    both = flat_a.keys() & flat_b.keys()
    if both:
        raise ParamTreeError(f"leaf {path_str(min(both))!r} present in both trees")
    return unflatten({**flat_a, **flat_b})


# ----------------------------------------------------------------------------- adapters


def extract_adapters(params: Mapping[str, Any]) -> dict[str, Any]:
    """The nested dict of only the lora_A/lora_B leaves of a full param tree."""
    return unflatten({p: v for p, v in flatten(params).items() if is_adapter(p)})


def strip_adapters(params: Mapping[str, Any]) -> dict[str, Any]:
    """A full param tree without its lora_A/lora_B leaves (the frozen base)."""
    return unflatten({p: v for p, v in flatten(params).items() if not is_adapter(p)})


def merge_adapters(base: Mapping[str, Any], adapters: Mapping[str, Any]) -> dict[str, Any]:
    """Inserts adapter leaves beside the kernels they adapt; returns a new tree.

    Fails naming the path when an adapter has no kernel to sit beside, when its
    shapes do not fit that kernel (`lora_A` `[in, r]`, `lora_B` `[r, out]` for a
    kernel `[in, out]`), when A and B disagree on the rank, or when one of the pair
    is missing. Adapters already present in `base` are replaced.
    """
    flat_base = flatten(base)
    flat_ad = flatten(adapters)
    errors = []
    modules: dict[tuple[str, ...], dict[str, Any]] = {}
    for path, value in flat_ad.items():
        if not is_adapter(path):
            errors.append(f"{path_str(path)}: not an adapter leaf (expected a name in {ADAPTER_LEAVES})")
            continue
        modules.setdefault(path[:-1], {})[path[-1]] = value
    for module, leaves in sorted(modules.items()):
        name = path_str(module)
        kernel = flat_base.get(module + ("kernel",))
        if kernel is None:
            errors.append(f"{name}: adapter has no kernel to sit beside (no {name}/kernel in the model)")
            continue
        missing = [k for k in ADAPTER_LEAVES if k not in leaves]
        if missing:
            errors.append(f"{name}: adapter lacks {missing}")
            continue
        a_shape, b_shape = tuple(np.shape(leaves["lora_A"])), tuple(np.shape(leaves["lora_B"]))
        k_in, k_out = tuple(np.shape(kernel))
        if len(a_shape) != 2 or len(b_shape) != 2 or a_shape[1] != b_shape[0]:
            errors.append(f"{name}: lora_A {a_shape} and lora_B {b_shape} are not [in, r] and [r, out]")
        elif a_shape[0] != k_in or b_shape[1] != k_out:
            errors.append(
                f"{name}: adapter shapes lora_A {a_shape}, lora_B {b_shape} do not fit the kernel "
                f"{(k_in, k_out)} (need lora_A [{k_in}, r], lora_B [r, {k_out}])")
    if errors:
        raise ParamTreeError("adapters do not fit the model:\n  " + "\n  ".join(errors))
    return unflatten({**flat_base, **flat_ad})
