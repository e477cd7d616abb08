"""Converted-checkpoint and adapter I/O (orbax), shared by the converter, predict and
the trainer.

Layouts on disk:

    converted model DIR/            adapters DIR/
      params/          orbax tree     adapters/        orbax tree of lora_A/lora_B
      model_config.json               lora_config.json
      metadata.json                   metadata.json

`params` mirror the PyTorch module names (DESIGN.md); the frozen weights keep the dtype
they were saved with (bf16 for a converted `best.pt`). Adapter trees hold only the
`lora_A` `[in, r]` / `lora_B` `[r, out]` leaves, float32, at the path of the kernel
they adapt (`transformer/layers_0/self_attn/q_proj/lora_A`).

Every write goes to a temporary sibling directory first and is renamed into place, so a
crash never leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np

from burgers_jax.lora import ADAPTER_LEAVES
from burgers_jax.model_config import LoraConfig, ModelConfig
from burgers_jax.partition import flatten, unflatten  # noqa: F401  (re-exported for callers)

PARAMS_DIR = "params"
ADAPTERS_DIR = "adapters"
MODEL_CONFIG_FILE = "model_config.json"
LORA_CONFIG_FILE = "lora_config.json"
METADATA_FILE = "metadata.json"


class CheckpointError(ValueError):
    """A checkpoint directory that is missing, incomplete or does not fit the model."""


# ----------------------------------------------------------------------------- trees


def _path_str(path: tuple[str, ...]) -> str:
    return "/".join(path)


def is_adapter_path(path: tuple[str, ...]) -> bool:
    return bool(path) and path[-1] in ADAPTER_LEAVES


def extract_adapters(params: Mapping[str, Any]) -> dict[str, Any]:
    """The nested dict of only the lora_A/lora_B leaves of a full param tree."""
    return unflatten({p: v for p, v in flatten(params).items() if is_adapter_path(p)})


def strip_adapters(params: Mapping[str, Any]) -> dict[str, Any]:
    """A full param tree without its lora_A/lora_B leaves (the frozen base)."""
    return unflatten({p: v for p, v in flatten(params).items() if not is_adapter_path(p)})


def merge_tree(base: Mapping[str, Any], adapters: Mapping[str, Any]) -> dict[str, Any]:
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
        if not is_adapter_path(path):
            errors.append(f"{_path_str(path)}: not an adapter leaf (expected a name in {ADAPTER_LEAVES})")
            continue
        modules.setdefault(path[:-1], {})[path[-1]] = value
    for module, leaves in sorted(modules.items()):
        name = _path_str(module)
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
        raise CheckpointError("adapters do not fit the model:\n  " + "\n  ".join(errors))
    merged = dict(flat_base)
    merged.update(flat_ad)
    return unflatten(merged)


def _to_numpy(tree: Mapping[str, Any]) -> dict[str, Any]:
    # Host numpy leaves (bf16 via ml_dtypes) carry no device sharding, so the files
    # restore on any backend without a target sharding.
    return jax.tree.map(np.asarray, dict(tree))


# ----------------------------------------------------------------------------- atomic writes


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def _atomic_dir_write(directory: str | os.PathLike, fill) -> Path:
    """Calls `fill(tmp_dir)` and then renames tmp_dir to `directory` (replacing it)."""
    import orbax.checkpoint  # noqa: F401  (import cost paid once, before the tmp dir exists)

    final = Path(directory).expanduser().resolve()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        fill(tmp)
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.rename(final, old / "x")
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _save_tree(path: Path, tree: Mapping[str, Any]) -> None:
    import orbax.checkpoint as ocp

    # Synchronous Checkpointer: the async StandardCheckpointer first copies every array
    # for its background writer. Plain zarr (no OCDBT): tensorstore's OCDBT writer
    # buffers more. Measured on the full-size model (211 MB of bf16 params): save peak
    # +1.7x the tree (async, OCDBT), +1.5x (sync, OCDBT), +1.2x (sync, zarr).
    ckptr = ocp.Checkpointer(ocp.StandardCheckpointHandler(use_ocdbt=False))
    ckptr.save(path, args=ocp.args.StandardSave(_to_numpy(tree)))
    ckptr.close()


def _restore_tree(path: Path) -> dict[str, Any]:
    import orbax.checkpoint as ocp

    if not path.is_dir():
        raise CheckpointError(f"{path}: orbax tree directory is missing")
    ckptr = ocp.StandardCheckpointer()
    try:
        return ckptr.restore(path)
    except Exception as e:  # orbax raises many types; name the directory
        raise CheckpointError(f"{path}: cannot restore the orbax tree ({type(e).__name__}: {e})") from e
    finally:
        ckptr.close()


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing {what}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def _require_dir(directory: str | os.PathLike, what: str) -> Path:
    d = Path(directory).expanduser()
    if not d.exists():
        raise CheckpointError(f"{d}: {what} directory does not exist")
    if not d.is_dir():
        raise CheckpointError(f"{d}: expected a {what} directory, found a file")
    return d.resolve()


# ----------------------------------------------------------------------------- converted models


def save_converted(directory: str | os.PathLike, params: Mapping[str, Any], model_config: ModelConfig,
                   metadata: Mapping[str, Any] | None = None) -> Path:
    """Writes params (dtypes kept, bf16 stays bf16), model_config.json, metadata.json."""

    def fill(tmp: Path) -> None:
        _save_tree(tmp / PARAMS_DIR, params)
        _write_json(tmp / MODEL_CONFIG_FILE, model_config.to_dict())
        _write_json(tmp / METADATA_FILE, dict(metadata or {}))

    return _atomic_dir_write(directory, fill)


def expected_shapes(config: ModelConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Leaf path -> shape of the base (adapter-free) model, via jax.eval_shape."""
    return dict(_expected_shapes(config.with_lora(r=0)))


@functools.lru_cache(maxsize=8)
def _expected_shapes(base: ModelConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    # Tracing the 128x128 init takes seconds; configs are frozen (hashable) dataclasses.
    from burgers_jax.model import init_params

    tree = jax.eval_shape(lambda: init_params(base, jax.random.key(0)))
    return {p: tuple(v.shape) for p, v in flatten(tree).items() if not is_adapter_path(p)}


def check_params_fit(params: Mapping[str, Any], config: ModelConfig, source: str = "params") -> None:
    """Raises CheckpointError listing missing / unexpected / mismatched leaves."""
    want = expected_shapes(config)
    flat = flatten(params)
    have = {p: tuple(np.shape(v)) for p, v in flat.items() if not is_adapter_path(p)}
    missing = sorted(_path_str(p) for p in want.keys() - have.keys())
    unexpected = sorted(_path_str(p) for p in have.keys() - want.keys())
    mismatched = sorted(f"{_path_str(p)}: stored {have[p]}, model wants {want[p]}"
                        for p in want.keys() & have.keys() if have[p] != want[p])
    if missing or unexpected or mismatched:
        lines = [f"{source} does not fit the model config"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("mismatched", mismatched)):
            if items:
                lines.append(f"{title} ({len(items)}): " + ", ".join(items[:20])
                             + (" ..." if len(items) > 20 else ""))
        raise CheckpointError("\n  ".join(lines))
    adapters = extract_adapters(params)
    if adapters:
        merge_tree(strip_adapters(params), adapters)  # validates adapter shapes


def load_model_config(directory: str | os.PathLike) -> ModelConfig:
    d = _require_dir(directory, "converted checkpoint")
    return ModelConfig.from_dict(_read_json(d / MODEL_CONFIG_FILE, "model_config.json (is this a converted checkpoint?)"))


def load_converted(directory: str | os.PathLike, precision: str | None = None):
    """Returns `(params, ModelConfig)`.

    precision None keeps the stored dtypes (host numpy arrays); otherwise the tree is
    cast with `burgers_jax.model.cast_params(params, precision)`.
    """
    d = _require_dir(directory, "converted checkpoint")
    config = load_model_config(d)
    params = _restore_tree(d / PARAMS_DIR)
    check_params_fit(params, config, source=str(d / PARAMS_DIR))
    if precision is not None:
        from burgers_jax.model import cast_params

        params = cast_params(params, precision)
    return params, config


def load_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    d = _require_dir(directory, "checkpoint")
    path = d / METADATA_FILE
    return _read_json(path, "metadata.json") if path.is_file() else {}


# ----------------------------------------------------------------------------- adapters


def lora_config_to_dict(lora: LoraConfig) -> dict[str, Any]:
    return {"r": lora.r, "alpha": lora.alpha, "dropout": lora.dropout,
            "target_modules": list(lora.target_modules)}


def lora_config_from_dict(d: Mapping[str, Any], source: str = "lora config") -> LoraConfig:
    try:
        return LoraConfig(r=int(d["r"]), alpha=float(d["alpha"]), dropout=float(d.get("dropout", 0.0)),
                          target_modules=tuple(d.get("target_modules", LoraConfig().target_modules)))
    except KeyError as e:
        raise CheckpointError(f"{source}: lacks field {e}") from None


def save_adapters(directory: str | os.PathLike, adapter_params: Mapping[str, Any], lora_config: LoraConfig,
                  metadata: Mapping[str, Any] | None = None) -> Path:
    """Writes only the lora_A/lora_B leaves (float32) plus lora_config.json."""
    flat = flatten(adapter_params)
    bad = [_path_str(p) for p in flat if not is_adapter_path(p)]
    if bad:
        raise CheckpointError(f"save_adapters: non-adapter leaves given: {bad[:5]}")
    if not flat:
        raise CheckpointError("save_adapters: the adapter tree is empty")
    tree = unflatten({p: np.asarray(v, dtype=np.float32) for p, v in flat.items()})

    def fill(tmp: Path) -> None:
        _save_tree(tmp / ADAPTERS_DIR, tree)
        _write_json(tmp / LORA_CONFIG_FILE, lora_config_to_dict(lora_config))
        _write_json(tmp / METADATA_FILE, dict(metadata or {}))

    return _atomic_dir_write(directory, fill)


def load_adapters(directory: str | os.PathLike):
    """Returns `(adapter_params, LoraConfig)`; adapter leaves are float32 numpy arrays."""
    d = _require_dir(directory, "adapters")
    lora = lora_config_from_dict(_read_json(d / LORA_CONFIG_FILE, "lora_config.json (is this an adapters directory?)"),
                                 source=str(d / LORA_CONFIG_FILE))
    tree = _restore_tree(d / ADAPTERS_DIR)
    flat = flatten(tree)
    bad = [_path_str(p) for p in flat if not is_adapter_path(p)]
    if bad:
        raise CheckpointError(f"{d}: adapter tree holds non-adapter leaves: {bad[:5]}")
    ranks = {np.shape(v)[1] for p, v in flat.items() if p[-1] == "lora_A"}
    if ranks != {lora.r}:
        raise CheckpointError(f"{d}: lora_config.json says r={lora.r} but lora_A leaves have rank(s) {sorted(ranks)}")
    return unflatten({p: np.asarray(v, dtype=np.float32) for p, v in flat.items()}), lora
