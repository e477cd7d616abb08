"""Checkpoint formats on disk (orbax), shared by the converter, predict, export and the
trainer: converted models, adapters and `load_model`, the one loader of "base weights +
optional adapters" (the training state: `io/train_state.py`; what orbax prints:
`io/orbax_logs.py`).

Layouts on disk:

    converted model DIR/            adapters DIR/
      params/          orbax tree     adapters/        orbax tree of lora_A/lora_B
      model_config.json               lora_config.json
      metadata.json                   metadata.json

`params` mirror the PyTorch module names (docs/model_and_formats.md); the frozen weights keep the dtype
they were saved with (bf16 for a converted `best.pt`). Adapter trees hold only the
`lora_A` `[in, r]` / `lora_B` `[r, out]` leaves, float32, at the path of the kernel
they adapt (`transformer/layers_0/self_attn/q_proj/lora_A`).

Every write goes to a temporary sibling directory first and is renamed into place, so a
crash never leaves a half-written checkpoint under the final name; a full disk is one
named error (`burgers_jax.io.disk.DiskFullError`) and leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from burgers_jax.errors import UserError
from burgers_jax.io import disk, outputs
from burgers_jax.io.orbax_logs import quiet_closed_event_loop, quiet_disk_full_thread_logs, quiet_no_ocdbt_merge_notice
from burgers_jax.model.config import ConfigError, LoraConfig, ModelConfig, Policy
from burgers_jax.model.fit import check_adapters_complete, check_fits, replace_trained
from burgers_jax.model.lora import cast_params
from burgers_jax.model.param_tree import (
    ParamTreeError,
    fingerprint,
    flatten,
    is_adapter,
    merge_adapters,
    path_str,
    strip_adapters,
    unflatten,
)

PARAMS_DIR = "params"
ADAPTERS_DIR = "adapters"
TRAINED_DIR = "trained_params"  # non-adapter leaves a run trained (decoder, encoder), float32
MODEL_CONFIG_FILE = "model_config.json"
LORA_CONFIG_FILE = "lora_config.json"
METADATA_FILE = outputs.METADATA_FILE
SOURCE_CONFIG_FILE = "source_config.json"  # the PyTorch checkpoint's full training config, verbatim
CONVERTED, ADAPTERS = "converted_model", "adapters"  # output kinds (outputs.format_marker)


class CheckpointError(UserError):
    """A checkpoint directory that is missing, incomplete or does not fit the model."""


def check_finite(tree: Mapping[str, Any], source: str) -> None:
    """Raises CheckpointError naming the first leaf holding NaN or Inf."""
    for path, leaf in flatten(tree).items():
        a = np.asarray(leaf)
        if np.issubdtype(a.dtype, np.floating) or a.dtype.name == "bfloat16":
            bad = int(np.size(a) - np.count_nonzero(np.isfinite(a.astype(np.float32))))
            if bad:
                raise CheckpointError(f"{source}: leaf {path_str(path)} holds {bad} non-finite value(s) (NaN/Inf)")


# ----------------------------------------------------------------------------- helpers


def _to_numpy(tree: Mapping[str, Any]) -> dict[str, Any]:
    # Host numpy leaves (bf16 via ml_dtypes) carry no device sharding, so the files
    # restore on any backend without a target sharding.
    return jax.tree.map(np.asarray, dict(tree))


# ----------------------------------------------------------------------------- files


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def _THIS_PROCESS() -> ocp.options.MultiprocessingOptions:
    """Converted models and adapters are whole files of host arrays, written by one
    process (process 0 in a multi-host run) and read by each process on its own: no
    barrier with the other processes (the training state, sharded, uses all of them)."""
    me = jax.process_index()
    return ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me},
                                              barrier_sync_key_prefix=f"burgers_jax_p{me}")


def _save_tree(path: Path, tree: Mapping[str, Any]) -> None:
    # Synchronous Checkpointer: the async StandardCheckpointer first copies every array
    # for its background writer. Plain zarr (no OCDBT): tensorstore's OCDBT writer
    # buffers more. Measured on the full-size model (211 MB of bf16 params): save peak
    # +1.7x the tree (async, OCDBT), +1.5x (sync, OCDBT), +1.2x (sync, zarr).
    quiet_closed_event_loop()
    quiet_disk_full_thread_logs()
    quiet_no_ocdbt_merge_notice()
    ckptr = ocp.Checkpointer(ocp.StandardCheckpointHandler(use_ocdbt=False), multiprocessing_options=_THIS_PROCESS())
    try:
        ckptr.save(path, args=ocp.args.StandardSave(_to_numpy(tree)))
    except BaseException:
        _wait_for_writes_to_settle(path.parent)
        raise
    finally:
        ckptr.close()


def _snapshot(directory: Path) -> set:
    entries = set()
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            entries.add((root, name, st.st_size, st.st_mtime_ns))
    return entries


def _wait_for_writes_to_settle(directory: Path, quiet_s: float = 0.5, limit_s: float = 30.0) -> None:
    """After a failed save (a full disk, Ctrl-C), orbax raises at the first failed array
    while tensorstore's writes of the others are still in flight; they go on creating
    directories and files, so a temporary output removed at once would reappear. Returns
    once nothing under `directory` has changed for `quiet_s` (at most `limit_s`)."""
    start = last = time.monotonic()
    before = _snapshot(directory)
    while time.monotonic() - last < quiet_s and time.monotonic() - start < limit_s:
        time.sleep(0.02)
        now = _snapshot(directory)
        if now != before:
            before, last = now, time.monotonic()


def _restore_tree(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise CheckpointError(f"{path}: orbax tree directory is missing")
    quiet_closed_event_loop()
    ckptr = ocp.Checkpointer(ocp.StandardCheckpointHandler(), multiprocessing_options=_THIS_PROCESS())
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


def check_converted_out(directory: str | os.PathLike, overwrite: bool = False) -> Path:
    """Before any work: may a converted model be written at `directory`? (outputs.check_dir)"""
    return outputs.check_dir(directory, CONVERTED, overwrite)


def check_adapters_out(directory: str | os.PathLike, overwrite: bool = False) -> Path:
    return outputs.check_dir(directory, ADAPTERS, overwrite)


def save_converted(directory: str | os.PathLike, params: Mapping[str, Any], model_config: ModelConfig,
                   metadata: Mapping[str, Any] | None = None, source_config: Mapping[str, Any] | None = None,
                   overwrite: bool = False) -> Path:
    """Writes params (dtypes kept, bf16 stays bf16), model_config.json, metadata.json and,
    when known, the source checkpoint's full training config (source_config.json), which
    the export to PyTorch writes back verbatim."""

    def fill(tmp: Path) -> None:
        _save_tree(tmp / PARAMS_DIR, params)
        _write_json(tmp / MODEL_CONFIG_FILE, model_config.to_dict())
        if source_config is not None:
            _write_json(tmp / SOURCE_CONFIG_FILE, dict(source_config))
        _write_json(tmp / METADATA_FILE, {**dict(metadata or {}), **outputs.format_marker(CONVERTED)})

    with disk.named_when_full(directory, disk.tree_bytes(params)):
        return outputs.write_dir(directory, fill, CONVERTED, overwrite)


def load_model_config(directory: str | os.PathLike) -> ModelConfig:
    d = _require_dir(directory, "converted checkpoint")
    raw = _read_json(d / MODEL_CONFIG_FILE, "model_config.json (is this a converted checkpoint?)")
    try:
        return ModelConfig.from_dict(raw)
    except (ConfigError, TypeError, ValueError) as e:
        raise CheckpointError(f"{d / MODEL_CONFIG_FILE}: {e}") from None


def load_converted(directory: str | os.PathLike, policy: Policy | None = None):
    """Returns `(params, ModelConfig)`.

    policy None keeps the stored dtypes (host numpy arrays); otherwise the tree is
    cast with `burgers_jax.model.cast_params(params, policy)`.
    """
    d = _require_dir(directory, "converted checkpoint")
    config = load_model_config(d)
    params = _restore_tree(d / PARAMS_DIR)
    check_fits(params, config, source=str(d / PARAMS_DIR))
    check_finite(params, str(d / PARAMS_DIR))
    if policy is not None:
        params = cast_params(params, policy)
    return params, config


def load_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    d = _require_dir(directory, "checkpoint")
    path = d / METADATA_FILE
    return _read_json(path, "metadata.json") if path.is_file() else {}


def load_source_config(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The full training config of the PyTorch checkpoint a converted model (or adapters
    directory) came from, when it carried one."""
    path = _require_dir(directory, "checkpoint") / SOURCE_CONFIG_FILE
    return _read_json(path, SOURCE_CONFIG_FILE) if path.is_file() else None


# ----------------------------------------------------------------------------- adapters


def trained_parts(trained: Mapping[str, Any] | None) -> list[str]:
    """The top-level modules (`decoder_2d`, `encoder_2d`, ...) of a tree of trained leaves."""
    return sorted({p[0] for p in flatten(trained or {})})


def save_adapters(directory: str | os.PathLike, adapter_params: Mapping[str, Any], lora_config: LoraConfig,
                  metadata: Mapping[str, Any] | None = None, overwrite: bool = False,
                  source_config: Mapping[str, Any] | None = None, trained: Mapping[str, Any] | None = None) -> Path:
    """Writes the lora_A/lora_B leaves (float32), lora_config.json and, when a run trained
    more than the adapters, those leaves too (`trained`, float32, under trained_params/;
    metadata `trained_parts` names their modules), so that the directory is the run's
    whole result: `load_model(base, directory)` gives the trained model.

    `metadata` carries the bookkeeping the PyTorch format keeps (`global_step`,
    `metrics`), so it survives an export to `best_lora.pt` and back."""
    flat = flatten(adapter_params)
    bad = [path_str(p) for p in flat if not is_adapter(p)]
    if bad:
        raise CheckpointError(f"save_adapters: non-adapter leaves given: {bad[:5]}")
    if not flat:
        raise CheckpointError("save_adapters: the adapter tree is empty")
    extra = flatten(trained or {})
    if any(is_adapter(p) for p in extra):
        raise CheckpointError("save_adapters: `trained` holds adapter leaves; pass them as adapter_params")
    tree = unflatten({p: np.asarray(v, dtype=np.float32) for p, v in flat.items()})
    metadata = {**dict(metadata or {}), "trained_parts": trained_parts(trained)}

    def fill(tmp: Path) -> None:
        _save_tree(tmp / ADAPTERS_DIR, tree)
        if extra:
            _save_tree(tmp / TRAINED_DIR, unflatten({p: np.asarray(v, np.float32) for p, v in extra.items()}))
        _write_json(tmp / LORA_CONFIG_FILE, lora_config.to_dict())
        if source_config is not None:
            _write_json(tmp / SOURCE_CONFIG_FILE, dict(source_config))
        _write_json(tmp / METADATA_FILE, {**dict(metadata or {}), **outputs.format_marker(ADAPTERS)})

    with disk.named_when_full(directory, disk.tree_bytes(tree) + disk.tree_bytes(extra)):
        return outputs.write_dir(directory, fill, ADAPTERS, overwrite)


def load_adapters(directory: str | os.PathLike):
    """Returns `(adapter_params, LoraConfig)`; adapter leaves are float32 numpy arrays."""
    d = _require_dir(directory, "adapters")
    raw = _read_json(d / LORA_CONFIG_FILE, "lora_config.json (is this an adapters directory?)")
    try:
        lora = LoraConfig.from_dict(raw, source=str(d / LORA_CONFIG_FILE))
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    tree = _restore_tree(d / ADAPTERS_DIR)
    flat = flatten(tree)
    bad = [path_str(p) for p in flat if not is_adapter(p)]
    if bad:
        raise CheckpointError(f"{d}: adapter tree holds non-adapter leaves: {bad[:5]}")
    ranks = {np.shape(v)[1] for p, v in flat.items() if p[-1] == "lora_A"}
    if ranks != {lora.r}:
        raise CheckpointError(f"{d}: lora_config.json says r={lora.r} but lora_A leaves have rank(s) {sorted(ranks)}")
    check_finite(tree, str(d))
    return unflatten({p: np.asarray(v, dtype=np.float32) for p, v in flat.items()}), lora


def load_trained(directory: str | os.PathLike) -> dict[str, Any]:
    """The non-adapter leaves a run trained, saved beside its adapters ({} if none)."""
    d = _require_dir(directory, "adapters")
    if not (d / TRAINED_DIR).is_dir():
        return {}
    tree = _restore_tree(d / TRAINED_DIR)
    check_finite(tree, str(d / TRAINED_DIR))
    return tree


# ----------------------------------------------------------------------------- base + adapters


def base_identity(params: Mapping[str, Any], base_dir: str | os.PathLike) -> dict[str, str]:
    """The identity of a base model a run trains on, recorded with everything it saves:
    where it was read and the fingerprint of its weights (adapters aside)."""
    return {"path": str(Path(base_dir).expanduser().resolve()), "fingerprint": fingerprint(strip_adapters(params))}


def load_model(base_dir: str | os.PathLike, adapters_dir: str | os.PathLike | None = None,
               policy: Policy | None = None, allow_other_base: bool = False) -> tuple[dict[str, Any], ModelConfig]:
    """Converted base weights plus, when given, a run's result (an adapters directory):
    its adapters beside the kernels they adapt and any non-adapter leaves it trained in
    place of the pretrained ones: `(params, ModelConfig)`, the config's `lora` read from
    the adapters. `policy` casts the tree (None keeps the stored dtypes). Adapters that do
    not fit the base model, or that record another base than `base_dir` (a merged export
    of themselves included: they would be applied twice), are a CheckpointError naming
    both directories; `allow_other_base` applies them anyway."""
    params, config = load_converted(base_dir)
    return apply_result(params, config, base_dir, adapters_dir, policy, allow_other_base)


def apply_result(params: Mapping[str, Any], config: ModelConfig, base_dir: str | os.PathLike,
                 adapters_dir: str | os.PathLike | None = None, policy: Policy | None = None,
                 allow_other_base: bool = False, allow_hint: str = "--allow-other-base",
                 identity: Mapping[str, str] | None = None) -> tuple[dict[str, Any], ModelConfig]:
    """`load_model` on base weights already loaded from `base_dir` (`identity`: their
    `base_identity`, when the caller has it)."""
    trained_paths: set = set()
    if adapters_dir is not None:
        adapters, lora = load_adapters(adapters_dir)
        if not allow_other_base:
            check_same_base(adapters_dir, identity or base_identity(params, base_dir), allow_hint)
        try:
            params = merge_adapters(strip_adapters(params), adapters)
        except ParamTreeError as e:
            raise CheckpointError(f"{adapters_dir}: {e} (base model: {base_dir})") from None
        config = config.with_lora(lora)
        trained = load_trained(adapters_dir)
        trained_paths = {path_str(p) for p in flatten(trained)}
        params = replace_trained(params, trained, adapters_dir, base_dir)
        check_adapters_complete(adapters, config, str(adapters_dir))
    if policy is not None:  # adapters and trained leaves stay float32, as in training
        params = cast_params(params, policy, lambda path: is_adapter(path) or path_str(path) in trained_paths)
    return params, config


def check_same_base(adapters_dir: str | os.PathLike, identity: Mapping[str, str],
                    allow_hint: str = "--allow-other-base") -> None:
    """Adapters record the base model they were trained on (`metadata.json` "base"); a
    base with other weights is refused, naming both. Adapters that record none (older
    runs, a converted best_lora.pt) are not checked."""
    recorded = load_metadata(adapters_dir).get("base")
    if not isinstance(recorded, dict) or not recorded.get("fingerprint"):
        return
    if recorded["fingerprint"] == identity["fingerprint"]:
        return
    raise CheckpointError(
        f"{adapters_dir} was trained on another base model: it records {recorded.get('path', '?')} (weights "
        f"{recorded['fingerprint'][:12]}), and {identity['path']} holds other weights ({identity['fingerprint'][:12]}). "
        f"Applying adapters to a model that already contains them (a merged export of this run) applies them "
        f"twice; use that model without adapters, or pass {allow_hint} to apply them anyway")
