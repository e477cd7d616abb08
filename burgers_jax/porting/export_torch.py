"""The export library: Flax results back to the PyTorch side, in the trainer's checkpoint
formats (`best_lora.pt`, `best.pt`) and as a PEFT adapter directory. `export(...)` is
`burgers-export` (burgers_jax/export.py: its flags and messages); `export_lora`,
`export_merged` and `export_peft` write one format each.

kind "lora": a `best_lora.pt` (`lora_state_dict` with PEFT key names, float32
adapters, `config` with the model and its lora section) that loads into the
peft-wrapped PyTorch model. kind "merged": a `best.pt`-format checkpoint whose
`model_state_dict` holds the base weights with the adapters merged in
(`W + B A * alpha / r`), cast back to the base weights' dtype (bf16 for a converted
pretrained model). kind "peft": `adapter_config.json` + `adapter_model.safetensors`,
which `peft.PeftModel.from_pretrained(model.transformer, DIR)` loads.

Bookkeeping survives the trip: `global_step` and `metrics` (the best validation PDE
loss of a training run) go into both `.pt` formats, and `config` is the source
checkpoint's full training config, verbatim as the converter kept it (with the adapters'
`model.lora` section in `best_lora.pt`), so the PyTorch code finds every key it reads.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from burgers_jax.errors import UserError
from burgers_jax.io import disk, outputs
from burgers_jax.io.checkpoint import load_metadata, load_model, load_source_config
from burgers_jax.model.config import ModelConfig
from burgers_jax.model.lora import merge_lora
from burgers_jax.model.param_tree import flatten, strip_adapters, unflatten
from burgers_jax.porting import torch_missing
from burgers_jax.porting.mapping import flax_to_torch, lora_flax_to_torch

try:
    import torch
except ImportError as e:  # the optional `torch` extra
    raise torch_missing(__name__) from e

EXPORT_KINDS = ("lora", "merged", "peft")


class ExportError(UserError):
    """A user-facing export failure; printed as one line."""


def _torch_tensor(a: Any, dtype=None):
    """numpy (incl. ml_dtypes bf16) -> torch tensor of `dtype` (default: same dtype)."""
    a = np.asarray(a)
    if a.dtype.name == "bfloat16":
        t = torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16)
    else:
        t = torch.from_numpy(np.ascontiguousarray(a))
    return t if dtype is None else t.to(dtype)


def torch_config_dict(config: ModelConfig, source_config: Mapping[str, Any] | None, with_lora: bool) -> dict:
    """The checkpoint's `config`: the source's full training config verbatim when known,
    else the YAML-shaped `{'model': {...}}` built from `config` (with
    `use_flash_attention: false`, which the PyTorch code otherwise defaults to true).
    `with_lora` sets `model.lora` to the adapters' r, alpha, dropout and targets."""
    if source_config is not None:
        out = copy.deepcopy(dict(source_config))
        out["model"] = dict(out.get("model") or {})
    else:
        model = config.to_dict()
        model.pop("lora")
        out = {"model": {**model, "use_flash_attention": False}}
    if with_lora:
        out["model"]["lora"] = config.lora.to_dict()
    return out


def _save_pt(obj: Any, out: Path, overwrite: bool, what: str) -> None:
    """torch.save into a Python file object: its write errors keep their errno (a path
    goes through torch's C++ writer, which turns a full disk into "unexpected pos ...")."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    with disk.named_when_full(out, disk.tree_bytes(_state_dict(obj))):
        outputs.write_file(out, write, overwrite, what)


def _state_dict(ckpt: Mapping[str, Any]) -> Mapping[str, Any]:
    return ckpt.get("model_state_dict") or ckpt.get("lora_state_dict") or {}


def _refuse_symlink(out: Path) -> None:
    """A PEFT directory is renamed into place: through a symbolic link that would fail
    after the work (NotADirectoryError) or replace the link, not its target."""
    if out.is_symlink():
        target = os.readlink(out)
        state = "which does not exist" if not out.exists() else "a directory" if out.is_dir() else "a file"
        raise ExportError(f"{out}: is a symbolic link (to {target}, {state}); the PEFT directory is written at a "
                          "real path: give the link's target or a new path as --out")


def _bookkeeping(meta: Mapping[str, Any]) -> tuple[int, dict]:
    """(global_step, metrics) from adapter or converted-model metadata."""
    step = meta.get("global_step", meta.get("step", 0))
    metrics = dict(meta.get("metrics") or {})
    return int(step or 0), metrics


def _lora_tensors(params: Mapping[str, Any], config: ModelConfig) -> dict[str, torch.Tensor]:
    if config.lora.r <= 0:
        raise ExportError("no adapters to export: pass --lora ADAPTERS (or --merged for a full checkpoint)")
    return {k: _torch_tensor(v, torch.float32) for k, v in lora_flax_to_torch(params, config).items()}


def export_lora(params: Mapping[str, Any], config: ModelConfig, out: Path, metadata: Mapping | None = None,
                source_config: Mapping[str, Any] | None = None, overwrite: bool = False) -> dict:
    sd = _lora_tensors(params, config)
    step, metrics = _bookkeeping(metadata or {})
    ckpt = {
        "global_step": step,
        "lora_state_dict": sd,
        "optimizer_state_dict": {},
        "scheduler_state_dict": {},
        "metrics": metrics,
        "config": torch_config_dict(config, source_config, with_lora=True),
    }
    _save_pt(ckpt, out, overwrite, "best_lora.pt")
    return {"tensors": len(sd), "parameters": int(sum(t.numel() for t in sd.values()))}


def export_merged(params: Mapping[str, Any], config: ModelConfig, out: Path, metadata: Mapping | None = None,
                  source_config: Mapping[str, Any] | None = None, overwrite: bool = False) -> dict:
    # Parts a run trained (the decoder, ...) keep their float32 values; the rest its dtype.
    trained = set((metadata or {}).get("trained_parts") or ())
    base_dtypes = {p: (np.dtype(np.float32) if p[0] in trained else np.asarray(v).dtype)
                   for p, v in flatten(strip_adapters(params)).items()}
    if config.lora.r > 0:
        merged = strip_adapters(merge_lora(params, config))
    else:
        merged = params
    # merge_lora may compute in float32; the file keeps each weight in its original dtype.
    flat = {p: np.asarray(v).astype(base_dtypes[p]) for p, v in flatten(merged).items()}
    base_config = config.with_lora(r=0)
    sd = {k: _torch_tensor(v) for k, v in flax_to_torch(unflatten(flat), base_config).items()}
    meta = dict(metadata or {})
    step, metrics = _bookkeeping(meta)
    ckpt = {
        "global_step": step,
        "model_state_dict": sd,
        "optimizer_state_dict": {},
        "scheduler_state_dict": {},
        "val_rmse": meta.get("val_rmse"),
        "val_nrmse": meta.get("val_nrmse"),
        "best_val_nrmse": meta.get("best_val_nrmse"),
        "metrics": metrics,
        "config": torch_config_dict(base_config, source_config, with_lora=False),
    }
    _save_pt(ckpt, out, overwrite, "best.pt")
    return {"tensors": len(sd), "parameters": int(sum(t.numel() for t in sd.values())),
            "dtypes": sorted({str(t.dtype).replace("torch.", "") for t in sd.values()})}


def export_peft(params: Mapping[str, Any], config: ModelConfig, out: Path, metadata: Mapping | None = None,
                overwrite: bool = False) -> dict:
    """A PEFT adapter directory for the reference transformer (`PeftModel.from_pretrained`)."""
    try:
        from peft import LoraConfig as PeftLoraConfig
        from safetensors.torch import save_file
    except ImportError as e:
        raise ExportError(f"--peft needs the torch extra (pip install 'burgers-jax[torch]'): {e}") from None
    # PEFT files hold the adapter weights without the adapter name ("default").
    sd = {k.replace(".default.", "."): v.contiguous() for k, v in _lora_tensors(params, config).items()}
    lora = config.lora
    peft_config = PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                 target_modules=sorted(lora.target_modules), bias="none")
    step, metrics = _bookkeeping(metadata or {})

    def fill(tmp: Path) -> None:
        peft_config.save_pretrained(str(tmp))
        save_file(sd, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        (tmp / outputs.METADATA_FILE).write_text(json.dumps(
            {"global_step": step, "metrics": metrics, **outputs.format_marker("peft_adapters")}, indent=2) + "\n")

    with disk.named_when_full(out, disk.tree_bytes(sd)):
        outputs.write_dir(out, fill, "peft_adapters", overwrite)
    return {"tensors": len(sd), "parameters": int(sum(t.numel() for t in sd.values()))}


def load_for_export(checkpoint: Path, lora: Path | None, allow_other_base: bool = False):
    """-> (params, config, metadata, source config): the adapters' bookkeeping and
    config when exporting adapters, else the converted model's."""
    params, config = load_model(checkpoint, lora, allow_other_base=allow_other_base)
    meta = load_metadata(lora if lora is not None else checkpoint)
    source = (load_source_config(lora) if lora is not None else None) or load_source_config(checkpoint)
    return params, config, meta, source


def export(checkpoint: Path, out: Path, *, lora: Path | None = None, kind: str = "lora",
           overwrite: bool = False, allow_other_base: bool = False) -> str:
    """Exports a converted model (plus adapters) to PyTorch: `kind` "lora" (best_lora.pt,
    PEFT keys), "merged" (a best.pt with the adapters merged in) or "peft" (a PEFT
    adapter directory). Every output check runs before the work. -> a one-line summary."""
    if kind not in EXPORT_KINDS:
        raise ExportError(f"export kind {kind!r}: one of {', '.join(EXPORT_KINDS)}")
    if kind == "peft":
        _refuse_symlink(Path(out))
        outputs.check_dir(out, "peft_adapters", overwrite)
    else:
        outputs.check_file(out, overwrite)
    params, config, meta, source = load_for_export(checkpoint, lora, allow_other_base)
    parts = meta.get("trained_parts") or [] if lora is not None else []
    if parts and kind != "merged":
        raise ExportError(f"{lora}: the run trained {', '.join(parts)} besides the adapters "
                          f"(model.trainable={meta.get('trainable')}); a {'PEFT directory' if kind == 'peft' else 'best_lora.pt'} "
                          "holds adapters only and would silently drop them. Export the whole model with --merged")
    if kind == "merged":
        info = export_merged(params, config, out, meta, source, overwrite)
        return (f"wrote {out}: best.pt format, {info['tensors']} tensors, {info['parameters']:,} "
                f"parameters, dtypes {info['dtypes']}" + (" (adapters merged)" if config.lora.r else ""))
    if kind == "peft":
        info = export_peft(params, config, out, meta, overwrite)
        return (f"wrote {out}: PEFT adapter directory, {info['tensors']} tensors, {info['parameters']:,} "
                f"adapter parameters (r={config.lora.r}, alpha={config.lora.alpha})")
    info = export_lora(params, config, out, meta, source, overwrite)
    return (f"wrote {out}: best_lora.pt format, {info['tensors']} tensors, {info['parameters']:,} "
            f"adapter parameters (r={config.lora.r}, alpha={config.lora.alpha})")
