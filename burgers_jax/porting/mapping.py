"""torch state dict <-> Flax param tree of `PDECausalModel`: a declarative table.

Every entry is `(torch key, tree path, transform)`. The table is generated from a few
module templates (a conv, a ResBlock, a Linear, a norm) placed at the sequential
indices of docs/model_and_formats.md, "The model", so it reads like the architecture. Conversion is strict:
each source tensor is used exactly once and each leaf of the model (from
`jax.eval_shape` of its init for this config, adapters excluded) is filled with the
right shape, or `MappingError` names every missing, unexpected and mismatched key.

Named transforms (torch layout -> Flax layout; each has an exact inverse):
  identity              norms (GroupNorm weight -> `scale`, RMSNorm `weight`) and biases
  linear_to_kernel      Linear `[out, in]` -> kernel `[in, out]`
  conv_oihw_to_hwio     Conv2d `[out, in, kh, kw]` -> kernel `[kh, kw, in, out]`
  conv_transpose_to_flax ConvTranspose2d `[in, out, kh, kw]` -> `[kh, kw, in, out]` of the
                        equivalent forward conv, *spatially flipped*:
                        `flax[h, w, i, o] = torch[i, o, k-1-h, k-1-w]` (burgers_jax/layers.py
                        runs it on the stride-dilated input padded by k-1-p).
  lora_a_to_flax        PEFT lora_A `[r, in]` -> `[in, r]`
  lora_b_to_flax        PEFT lora_B `[out, r]` -> `[r, out]`

dtypes are kept: torch bf16 goes bf16 -> float32 -> numpy -> bf16 (ml_dtypes); numpy
and jax arrays pass through unchanged in dtype.

Key forms: torch `a.b.3.conv.2.weight` <-> tree `a/b/3/conv_2/kernel`;
`transformer.layers.3.…` <-> `transformer/layers_3/…`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, MutableMapping

import ml_dtypes
import numpy as np

from burgers_jax.errors import UserError
from burgers_jax.model.config import ATTENTION_PROJECTIONS, MLP_PROJECTIONS, ModelConfig
from burgers_jax.model.lora import lora_module_paths
from burgers_jax.model.network import param_shapes
from burgers_jax.model.param_tree import flatten, is_adapter, path_str, unflatten


class MappingError(UserError):
    """The state dict and the model disagree (missing, unexpected or mis-shaped tensors)."""


# ----------------------------------------------------------------------------- transforms


def identity(a: np.ndarray) -> np.ndarray:
    return a


def linear_to_kernel(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.T)


def conv_oihw_to_hwio(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(2, 3, 1, 0))


def conv_hwio_to_oihw(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(3, 2, 0, 1))


def conv_transpose_to_flax(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(2, 3, 0, 1)[::-1, ::-1])


def conv_transpose_to_torch(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a[::-1, ::-1].transpose(2, 3, 0, 1))


@dataclass(frozen=True)
class Transform:
    name: str
    forward: Callable[[np.ndarray], np.ndarray]  # torch layout -> Flax layout
    inverse: Callable[[np.ndarray], np.ndarray]  # Flax layout -> torch layout
    target_shape: Callable[[tuple[int, ...]], tuple[int, ...]]


IDENTITY = Transform("identity", identity, identity, lambda s: tuple(s))
LINEAR = Transform("linear_to_kernel", linear_to_kernel, linear_to_kernel, lambda s: tuple(s[::-1]))
CONV = Transform("conv_oihw_to_hwio", conv_oihw_to_hwio, conv_hwio_to_oihw,
                 lambda s: (s[2], s[3], s[1], s[0]) if len(s) == 4 else ("not 4-D", *s))
CONV_T = Transform("conv_transpose_to_flax", conv_transpose_to_flax, conv_transpose_to_torch,
                   lambda s: (s[2], s[3], s[0], s[1]) if len(s) == 4 else ("not 4-D", *s))
LORA_A = Transform("lora_a_to_flax", linear_to_kernel, linear_to_kernel, lambda s: tuple(s[::-1]))
LORA_B = Transform("lora_b_to_flax", linear_to_kernel, linear_to_kernel, lambda s: tuple(s[::-1]))


@dataclass(frozen=True)
class Entry:
    torch_key: str
    path: tuple[str, ...]
    transform: Transform

    @property
    def path_str(self) -> str:
        return "/".join(self.path)


# ----------------------------------------------------------------------------- the table


def _p(tree_path: str) -> tuple[str, ...]:
    return tuple(tree_path.split("/"))


def _conv(t: str, f: str, transform: Transform = CONV) -> Iterator[Entry]:
    yield Entry(f"{t}.weight", _p(f"{f}/kernel"), transform)
    yield Entry(f"{t}.bias", _p(f"{f}/bias"), IDENTITY)


def _group_norm(t: str, f: str) -> Iterator[Entry]:
    yield Entry(f"{t}.weight", _p(f"{f}/scale"), IDENTITY)
    yield Entry(f"{t}.bias", _p(f"{f}/bias"), IDENTITY)


def _resblock(t: str, f: str) -> Iterator[Entry]:
    # torch ResBlock.conv = Sequential(GN 0, GELU 1, conv 2, GN 3, GELU 4, conv 5)
    yield from _group_norm(f"{t}.conv.0", f"{f}/conv_0")
    yield from _conv(f"{t}.conv.2", f"{f}/conv_2")
    yield from _group_norm(f"{t}.conv.3", f"{f}/conv_3")
    yield from _conv(f"{t}.conv.5", f"{f}/conv_5")


def _linear(t: str, f: str, bias: bool) -> Iterator[Entry]:
    yield Entry(f"{t}.weight", _p(f"{f}/kernel"), LINEAR)
    if bias:
        yield Entry(f"{t}.bias", _p(f"{f}/bias"), IDENTITY)


def _seq(t: str, f: str, layout: list[tuple[int, str]]) -> Iterator[Entry]:
    """A torch Sequential: (index, kind) for the modules with parameters (GELUs have none)."""
    for idx, kind in layout:
        if kind == "res":
            yield from _resblock(f"{t}.{idx}", f"{f}/{idx}")
        else:
            yield from _conv(f"{t}.{idx}", f"{f}/{idx}", CONV_T if kind == "convT" else CONV)


def encoder_branch_layout(use_resblock: bool) -> list[tuple[int, str]]:
    # conv 0, GELU 1, ResBlock 2, conv 3, GELU 4, ResBlock 5, conv 6, GELU 7, ResBlock 8
    return [(0, "conv"), (2, "res"), (3, "conv"), (5, "res"), (6, "conv"), (8, "res")] if use_resblock \
        else [(0, "conv"), (2, "conv"), (4, "conv")]  # conv, GELU, conv, GELU, conv, GELU


def mix_layout(use_resblock: bool) -> list[tuple[int, str]]:
    return [(0, "conv"), (2, "res")] if use_resblock else [(0, "conv")]  # conv 1x1, GELU, (ResBlock)


def decoder_branch_layout(use_resblock: bool) -> list[tuple[int, str]]:
    # ResBlock 0, convT 1, GELU 2, ResBlock 3, convT 4, GELU 5, ResBlock 6, convT 7
    return [(0, "res"), (1, "convT"), (3, "res"), (4, "convT"), (6, "res"), (7, "convT")] if use_resblock \
        else [(0, "convT"), (2, "convT"), (4, "convT")]  # convT, GELU, convT, GELU, convT


def mapping_table(config: ModelConfig) -> list[Entry]:
    """Every (torch key, tree path, transform) of the base model (no adapters) for `config`."""
    res = config.encoder.use_resblock
    table: list[Entry] = []
    for branch in ("vector_conv", "scalar_conv"):
        table += _seq(f"encoder_2d.{branch}", f"encoder_2d/{branch}", encoder_branch_layout(res))
    table += _seq("encoder_2d.fusion", "encoder_2d/fusion", mix_layout(res))
    table += _linear("encoder_2d.proj", "encoder_2d/proj", bias=True)
    for i in range(config.transformer.num_hidden_layers):
        t, f = f"transformer.layers.{i}", f"transformer/layers_{i}"
        for name in ATTENTION_PROJECTIONS:
            table += _linear(f"{t}.self_attn.{name}", f"{f}/self_attn/{name}", bias=False)
        for name in MLP_PROJECTIONS:
            table += _linear(f"{t}.mlp.{name}", f"{f}/mlp/{name}", bias=False)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            table.append(Entry(f"{t}.{norm}.weight", _p(f"{f}/{norm}/weight"), IDENTITY))
    table.append(Entry("transformer.norm.weight", _p("transformer/norm/weight"), IDENTITY))
    table += _linear("decoder_2d.proj", "decoder_2d/proj", bias=True)
    table += _seq("decoder_2d.split", "decoder_2d/split", mix_layout(res))
    for branch in ("vector_conv", "scalar_conv"):
        table += _seq(f"decoder_2d.{branch}", f"decoder_2d/{branch}", decoder_branch_layout(res))
    return table


def lora_table(config: ModelConfig) -> list[Entry]:
    """PEFT adapter keys of `config.lora` <-> `transformer/layers_i/.../{lora_A,lora_B}`."""
    table = []
    for path in lora_module_paths(config) if config.lora.r > 0 else []:  # ("transformer", "layers_i", group, name)
        _, layer, group, name = path
        t = f"base_model.model.layers.{layer.removeprefix('layers_')}.{group}.{name}"
        table.append(Entry(f"{t}.lora_A.default.weight", path + ("lora_A",), LORA_A))
        table.append(Entry(f"{t}.lora_B.default.weight", path + ("lora_B",), LORA_B))
    return table


# ----------------------------------------------------------------------------- helpers


def to_numpy(value: Any) -> np.ndarray:
    """torch tensor / jax array / numpy -> numpy, keeping the dtype (bf16 via ml_dtypes)."""
    if type(value).__module__.startswith("torch"):
        import torch

        t = value.detach().cpu()
        if t.dtype == torch.bfloat16:  # numpy has no bf16: exact via float32
            return t.float().numpy().astype(ml_dtypes.bfloat16)
        return t.numpy()
    return np.asarray(value)


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in value.shape)


def _raise(what: str, missing=(), unexpected=(), mismatched=()) -> None:
    lines = [what]
    for title, items in (("missing", missing), ("unexpected", unexpected), ("mismatched", mismatched)):
        items = sorted(items)
        if items:
            lines.append(f"{title} ({len(items)}): " + ", ".join(items[:25]) + (" ..." if len(items) > 25 else ""))
    raise MappingError("\n  ".join(lines))


def _convert(state_dict: Mapping[str, Any], table: list[Entry], want: Mapping[tuple[str, ...], tuple[int, ...]],
             what: str, consume: bool) -> dict:
    by_key = {e.torch_key: e for e in table}
    missing = [f"{k} (-> {e.path_str})" for k, e in by_key.items() if k not in state_dict]
    unexpected = [k for k in state_dict if k not in by_key]
    mismatched = []
    for k, e in by_key.items():
        if k in state_dict:
            got = e.transform.target_shape(_shape(state_dict[k]))
            if got != want[e.path]:
                mismatched.append(f"{k} {_shape(state_dict[k])} -> {e.path_str}: gives {got}, "
                                  f"model wants {want[e.path]} ({e.transform.name})")
    if missing or unexpected or mismatched:
        _raise(what, missing, unexpected, mismatched)
    flat: dict = {}
    for e in table:  # one tensor at a time, so peak memory stays near source + result
        value = state_dict.pop(e.torch_key) if consume else state_dict[e.torch_key]
        array = to_numpy(value)
        del value
        bad = int(array.size - np.count_nonzero(np.isfinite(array.astype(np.float32))))
        if bad:  # a NaN weight would convert, verify as "nan" and predict NaN everywhere
            raise MappingError(f"tensor {e.torch_key} holds {bad} non-finite value(s) (NaN/Inf); refusing to convert")
        flat[e.path] = e.transform.forward(array)
    return unflatten(flat)


# ----------------------------------------------------------------------------- public API


def torch_to_flax(state_dict: Mapping[str, Any], config: ModelConfig, *, consume: bool = False) -> dict:
    """Full torch state dict (keys as in docs/model_and_formats.md, "Files", no prefixes) -> Flax param tree.

    Strict (module docstring). dtypes kept. `consume=True` pops each tensor from a
    mutable `state_dict` once converted, so the source memory is released on the way.
    """
    table = mapping_table(config)
    want = param_shapes(config)
    table_paths = {e.path for e in table}
    if table_paths != set(want):  # the table and the Flax model must describe the same tree
        _raise("burgers_jax/porting/mapping.py: mapping table and Flax model disagree (a bug in the table or the model)",
               missing=["/".join(p) for p in set(want) - table_paths],
               unexpected=["/".join(p) for p in table_paths - set(want)])
    if consume and not isinstance(state_dict, MutableMapping):
        raise TypeError("consume=True needs a mutable state dict")
    return _convert(state_dict, table, want, "torch state dict does not fit the model config", consume)


def flax_to_torch(params: Mapping[str, Any], config: ModelConfig) -> dict[str, np.ndarray]:
    """Inverse of `torch_to_flax` for export: numpy arrays keyed like the torch state dict.

    Adapter leaves (lora_A/lora_B) are skipped; every other leaf must be in the table.
    """
    table = mapping_table(config)
    have = {p: v for p, v in flatten(params).items() if not is_adapter(p)}
    by_path = {e.path: e for e in table}
    missing = [e.path_str for e in table if e.path not in have]
    unexpected = ["/".join(p) for p in have if p not in by_path]
    if missing or unexpected:
        _raise("Flax params do not fit the model config", missing, unexpected)
    out = {e.torch_key: e.transform.inverse(to_numpy(have[e.path])) for e in table}
    want = param_shapes(config)
    mismatched = [f"{e.path_str} {_shape(have[e.path])}: model wants {want[e.path]}" for e in table
                  if _shape(have[e.path]) != want[e.path]]
    if mismatched:
        _raise("Flax params do not fit the model config", mismatched=mismatched)
    return out


def _lora_want(config: ModelConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Adapter shapes from the model's own kernel shapes: lora_A `[in, r]`, lora_B `[r, out]`."""
    r, kernels = config.lora.r, param_shapes(config)
    want = {}
    for e in lora_table(config):
        fan_in, fan_out = kernels[e.path[:-1] + ("kernel",)]
        want[e.path] = (fan_in, r) if e.path[-1] == "lora_A" else (r, fan_out)
    return want


def lora_torch_to_flax(lora_state_dict: Mapping[str, Any], config: ModelConfig) -> dict:
    """PEFT `lora_state_dict` -> nested dict of only the lora_A `[in, r]` / lora_B `[r, out]` leaves.

    Strict against `config.lora` (r, target_modules) and the transformer's shapes.
    """
    if config.lora.r <= 0:
        raise MappingError("lora_torch_to_flax: config.lora.r must be > 0")
    return _convert(lora_state_dict, lora_table(config), _lora_want(config),
                    f"LoRA state dict does not fit r={config.lora.r}, targets {list(config.lora.target_modules)}",
                    consume=False)


def lora_flax_to_torch(params: Mapping[str, Any], config: ModelConfig) -> dict[str, np.ndarray]:
    """Adapter leaves of a tree (full or adapters only) -> PEFT keys (`….lora_A.default.weight` `[r, in]`)."""
    table = lora_table(config)
    want = _lora_want(config)
    flat = flatten(params)
    out, missing, mismatched = {}, [], []
    for e in table:
        leaf = flat.get(e.path)
        if leaf is None:
            missing.append(e.path_str)
            continue
        if _shape(leaf) != want[e.path]:
            mismatched.append(f"{e.path_str} {_shape(leaf)}: expected {want[e.path]}")
            continue
        out[e.torch_key] = e.transform.inverse(to_numpy(leaf))
    extra = [path_str(p) for p in flat if is_adapter(p) and p not in want]
    if missing or mismatched or extra:
        _raise(f"adapters do not fit r={config.lora.r}, targets {list(config.lora.target_modules)}",
               missing, extra, mismatched)
    return out
