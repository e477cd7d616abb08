"""Exports Flax results back to the PyTorch trainer's checkpoint formats (SPEC.md §2).

    python porting/export_torch.py --checkpoint DIR --lora ADAPTERS --out best_lora.pt
    python porting/export_torch.py --checkpoint DIR [--lora ADAPTERS] --merged --out best.pt

Without `--merged`: a `best_lora.pt` (`lora_state_dict` with PEFT key names, float32
adapters, `config` with the model and its lora section) that loads into the
peft-wrapped PyTorch model. With `--merged`: a `best.pt`-format checkpoint whose
`model_state_dict` holds the base weights with the adapters merged in
(`W + B A * alpha / r`), cast back to the base weights' dtype (bf16 for a converted
pretrained model).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

if __package__ in (None, ""):  # run as `python porting/export_torch.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from absl import logging as absl_logging

from burgers_jax.checkpoint import CheckpointError, load_metadata, load_model
from burgers_jax.model import merge_lora
from burgers_jax.model_config import ConfigError, ModelConfig
from burgers_jax.partition import flatten, strip_adapters, unflatten
from porting.mapping import MappingError, flax_to_torch, lora_flax_to_torch


class ExportError(RuntimeError):
    """A user-facing export failure; printed as one line."""


def _torch_tensor(a: Any, dtype=None):
    """numpy (incl. ml_dtypes bf16) -> torch tensor of `dtype` (default: same dtype)."""
    a = np.asarray(a)
    if a.dtype.name == "bfloat16":
        t = torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16)
    else:
        t = torch.from_numpy(np.ascontiguousarray(a))
    return t if dtype is None else t.to(dtype)


def torch_config_dict(config: ModelConfig, with_lora: bool) -> dict[str, Any]:
    """`config` entry of the checkpoint: the YAML-shaped `{'model': {...}}`."""
    model = config.to_dict()
    lora = model.pop("lora")
    if with_lora:
        model["lora"] = lora
    return {"model": model}


def export_lora(params: Mapping[str, Any], config: ModelConfig, out: Path, metadata: Mapping | None = None) -> dict:
    if config.lora.r <= 0:
        raise ExportError("no adapters to export: pass --lora ADAPTERS (or --merged for a full checkpoint)")
    sd = {k: _torch_tensor(v, torch.float32) for k, v in lora_flax_to_torch(params, config).items()}
    meta = dict(metadata or {})
    ckpt = {
        "global_step": int(meta.get("global_step", 0) or 0),
        "lora_state_dict": sd,
        "optimizer_state_dict": {},
        "scheduler_state_dict": {},
        "metrics": dict(meta.get("metrics", {}) or {}),
        "config": torch_config_dict(config, with_lora=True),
    }
    _save(ckpt, out)
    return {"tensors": len(sd), "parameters": int(sum(t.numel() for t in sd.values()))}


def export_merged(params: Mapping[str, Any], config: ModelConfig, out: Path, metadata: Mapping | None = None) -> dict:
    base_dtypes = {p: np.asarray(v).dtype for p, v in flatten(strip_adapters(params)).items()}
    if config.lora.r > 0:
        merged = strip_adapters(merge_lora(params, config))
    else:
        merged = params
    # merge_lora may compute in float32; the file keeps each weight in its original dtype.
    flat = {p: np.asarray(v).astype(base_dtypes[p]) for p, v in flatten(merged).items()}
    base_config = config.with_lora(r=0)
    sd = {k: _torch_tensor(v) for k, v in flax_to_torch(unflatten(flat), base_config).items()}
    meta = dict(metadata or {})
    ckpt = {
        "global_step": int(meta.get("global_step", 0) or 0),
        "model_state_dict": sd,
        "optimizer_state_dict": {},
        "scheduler_state_dict": {},
        "val_rmse": meta.get("val_rmse"),
        "val_nrmse": meta.get("val_nrmse"),
        "best_val_nrmse": meta.get("best_val_nrmse"),
        "config": torch_config_dict(base_config, with_lora=False),
    }
    _save(ckpt, out)
    return {"tensors": len(sd), "parameters": int(sum(t.numel() for t in sd.values())),
            "dtypes": sorted({str(t.dtype).replace("torch.", "") for t in sd.values()})}


def _save(obj: Any, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, out)  # atomic: never a half-written best.pt under the final name


def load_for_export(checkpoint: Path, lora: Path | None):
    params, config = load_model(checkpoint, lora)
    return params, config, load_metadata(lora if lora is not None else checkpoint)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, type=Path, help="converted base directory (convert_ckpt.py)")
    p.add_argument("--lora", type=Path, default=None, help="adapters directory (training or convert_ckpt.py)")
    p.add_argument("--out", required=True, type=Path, help="output .pt file")
    p.add_argument("--merged", action="store_true", help="write a best.pt with the adapters merged in")
    args = p.parse_args(argv)
    absl_logging.set_verbosity(absl_logging.ERROR)  # orbax warns on every single-process restore
    try:
        params, config, meta = load_for_export(args.checkpoint, args.lora)
        meta = {**meta, "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if args.merged:
            info = export_merged(params, config, args.out, meta)
            print(f"wrote {args.out}: best.pt format, {info['tensors']} tensors, {info['parameters']:,} "
                  f"parameters, dtypes {info['dtypes']}" + (" (adapters merged)" if config.lora.r else ""))
        else:
            info = export_lora(params, config, args.out, meta)
            print(f"wrote {args.out}: best_lora.pt format, {info['tensors']} tensors, {info['parameters']:,} "
                  f"adapter parameters (r={config.lora.r}, alpha={config.lora.alpha})")
        return 0
    except (ExportError, CheckpointError, ConfigError, MappingError) as e:
        print(f"export_torch: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
