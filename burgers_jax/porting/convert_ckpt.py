"""The conversion library: a PyTorch `PDECausalModel` checkpoint
(docs/model_and_formats.md) to a Flax/orbax checkpoint directory that predict, evaluate
and the trainer load. `convert(...)` is `burgers-convert` (burgers_jax/convert.py: its
flags and messages); `convert_model` and `convert_lora` are its two halves.

Accepted inputs (always `torch.load(weights_only=True)`, never a full unpickle): the
training checkpoint, a bare state dict (then `config_file` gives the architecture),
`module.` / `_orig_mod.` key prefixes, and a LoRA checkpoint (`best_lora.pt`, written
as an adapters directory); see torch_checkpoint.py.

The architecture is read from the config and cross-checked against the tensor shapes
before conversion (architecture.py); a field that disagrees with the weights is
an error naming the field and both values. Memory: the file is memory-mapped, the
optimizer state is never touched, and tensors are popped from the state dict one by one
as they are converted, so the peak stays near the size of the model weights plus their
converted copy.

Shape legend: B batch, T frames, H/W grid (128), C channels, S tokens (T*256), D hidden.
"""

from __future__ import annotations

import re
import resource
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import psutil

from burgers_jax.io import outputs
from burgers_jax.io.checkpoint import (
    CONVERTED,
    check_adapters_out,
    check_converted_out,
    load_model_config,
    save_adapters,
    save_converted,
)
from burgers_jax.model.config import LoraConfig, ModelConfig
from burgers_jax.model.param_tree import flatten
from burgers_jax.porting import VERIFY_TOLERANCE
from burgers_jax.porting.architecture import cross_check
from burgers_jax.porting.mapping import lora_torch_to_flax, torch_to_flax
from burgers_jax.porting.torch_checkpoint import (
    ConvertError,
    PageReleasingDict,
    load_torch_file,
    lora_section,
    model_section,
    read_config_file,
    resolve_config,
    split_checkpoint,
)
from burgers_jax.porting.verify import verify, worst

PARTS = ("encoder_2d", "transformer", "decoder_2d")


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def count_params(params: Mapping[str, Any]) -> dict[str, int]:
    counts = {part: 0 for part in PARTS}
    for path, leaf in flatten(params).items():
        counts[path[0]] = counts.get(path[0], 0) + int(np.prod(np.shape(leaf)))
    counts["total"] = sum(counts.values())
    return counts


def dtype_counts(params: Mapping[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for leaf in flatten(params).values():
        name = str(np.asarray(leaf).dtype) if not hasattr(leaf, "dtype") else str(leaf.dtype)
        out[name] = out.get(name, 0) + 1
    return out


def default_out(path: Path) -> Path:
    return path.with_name(f"{path.stem}_flax")


def prepare_model(path: Path, config_file: str | None = None, obj: Any = None, mmapped: bool = False):
    """Load, split, read the config and cross-check it against the shapes.

    -> (state_dict, ModelConfig, config source, info, full training config or None):
    the config is the checkpoint's own or, with `config_file`, that file's.
    """
    if obj is None:
        obj, mmapped = load_torch_file(path)
    kind, sd, ckpt_config, info = split_checkpoint(obj, path, mmapped)
    if kind != "model":
        raise ConvertError(f"{path}: is a LoRA checkpoint (lora_state_dict), not a full model")
    config, source = resolve_config(ckpt_config, config_file, path)
    cross_check(config, {k: tuple(v.shape) for k, v in sd.items()}, source)
    if config_file:
        ckpt_config = read_config_file(config_file)
    return sd, config, source, info, ckpt_config


def convert_model(path: Path, out: Path | None, config_file: str | None, obj: Any = None,
                  mmapped: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Converts a full/bare model checkpoint; returns a summary dict."""
    t0, rss0 = time.perf_counter(), _rss_mb()
    out = out or default_out(path)
    check_converted_out(out, overwrite)
    sd, config, source, info, ckpt_config = prepare_model(path, config_file, obj, mmapped)
    del obj  # the optimizer state (if any) goes with it, never read
    n_torch = len(sd)
    torch_dtypes = sorted({str(v.dtype).replace("torch.", "") for v in sd.values()})
    params = torch_to_flax(sd, config, consume=True)  # strict; pops tensors as it converts them
    if isinstance(sd, PageReleasingDict):
        sd.release_last()
    del sd
    counts = count_params(params)
    metadata = {
        "source": str(path.resolve()),
        "source_kind": "training checkpoint" if ckpt_config is not None else "state dict",
        "config_source": source,
        **info,
        "converted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "param_counts": counts,
        "torch_tensors": n_torch,
        "torch_dtypes": torch_dtypes,
        "flax_dtypes": dtype_counts(params),
    }
    # The full training config goes along verbatim: the export writes it back, so the
    # PyTorch code finds every key it reads (e.g. model.use_flash_attention).
    save_converted(out, params, config, metadata, source_config=ckpt_config, overwrite=overwrite)
    seconds = time.perf_counter() - t0
    metadata.update(seconds=round(seconds, 2), out=str(out), rss_start_mb=round(rss0, 1),
                    peak_rss_mb=round(_peak_rss_mb(), 1))
    return metadata


def convert_lora(path: Path, out: Path | None, lora_for: str | None, config_file: str | None,
                 obj: Any = None, overwrite: bool = False) -> dict[str, Any]:
    """Converts `best_lora.pt` into an adapters directory; strict against the base model's
    shapes (the mapping checks every adapter against the transformer's widths)."""
    t0 = time.perf_counter()
    out = out or default_out(path)
    _refuse_base_as_out(out, lora_for)
    check_adapters_out(out, overwrite)
    obj = load_torch_file(path)[0] if obj is None else obj
    kind, sd, ckpt_config, info = split_checkpoint(obj, path)
    del obj
    if kind != "lora":
        raise ConvertError(f"{path}: has no lora_state_dict; not a LoRA checkpoint")
    file_config = read_config_file(config_file) if config_file else None
    if lora_for:
        base = load_model_config(lora_for)
        source = f"{lora_for}/model_config.json"
    else:
        section = model_section(file_config) or model_section(ckpt_config)
        if section is None:
            raise ConvertError(f"{path}: no base model config: the checkpoint carries no config['model']; "
                               "pass --lora-for CONVERTED_BASE_DIR or --config FILE")
        base, source = ModelConfig.from_dict(section).with_lora(r=0), f"{path} (its config['model'])"
    lora = lora_config_from_checkpoint(sd, lora_section(file_config) or lora_section(ckpt_config), path)
    config = base.with_lora(lora)
    adapters = lora_torch_to_flax(sd, config)
    metadata = {"source": str(path.resolve()), "base_config_source": source, **info,
                "converted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "base_model_config": base.to_dict(),
                "adapter_params": count_params(adapters)["total"]}
    save_adapters(out, adapters, config.lora, metadata, overwrite=overwrite, source_config=ckpt_config)
    metadata.update(seconds=round(time.perf_counter() - t0, 2), out=str(out), lora=config.lora)
    return metadata


def _refuse_base_as_out(out: Path, lora_for: str | None) -> None:
    """Adapters are never written over a converted base model: not over the `--lora-for`
    base this command reads (that would overwrite its own input), nor over any other
    (--overwrite replaces only an earlier adapters output, so it is no way out either)."""
    where = Path(out).expanduser()
    if lora_for is not None and where.exists() and where.resolve() == Path(lora_for).expanduser().resolve():
        raise ConvertError(f"--out {out} is the --lora-for base this command reads: writing the adapters there "
                           "would overwrite its own input; choose another --out")
    if where.is_dir() and outputs.is_ours(where, CONVERTED):
        raise ConvertError(f"--out {out} holds a converted base model: the adapters would overwrite it; "
                           "choose another --out")


_LORA_KEY = re.compile(r"layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])\.")


def lora_config_from_checkpoint(sd: Mapping[str, Any], section: Mapping | None, path: Path) -> LoraConfig:
    """r and targets from the tensors, alpha/dropout from the config (cross-checked)."""
    ranks = {int(v.shape[0]) for k, v in sd.items() if ".lora_A." in k}
    targets = sorted({m.group(3) for k in sd if (m := _LORA_KEY.search(k))})
    if len(ranks) != 1 or not targets:
        raise ConvertError(f"{path}: lora_state_dict has no consistent lora_A ranks ({sorted(ranks)}) / targets")
    r = ranks.pop()
    if section is None or "alpha" not in section and "lora_alpha" not in section:
        raise ConvertError(f"{path}: the checkpoint's config has no lora section with 'alpha' "
                           "(alpha/r scales the adapters and cannot be read from the tensors); pass --config FILE")
    cfg_r = section.get("r", section.get("rank", r))
    if int(cfg_r) != r:
        raise ConvertError(f"{path}: config lora.r={cfg_r} disagrees with the weights: lora_A has {r} rows")
    cfg_targets = section.get("target_modules")
    if cfg_targets is not None and sorted(cfg_targets) != targets:
        raise ConvertError(f"{path}: config lora.target_modules={sorted(cfg_targets)} disagrees with the weights: "
                           f"adapters exist for {targets}")
    return LoraConfig.from_dict({**section, "r": r, "target_modules": cfg_targets or targets},
                                source=f"{path} (its config's lora section)")


# ----------------------------------------------------------------------------- CLI


def _print_summary(meta: Mapping[str, Any]) -> None:
    counts = meta["param_counts"]
    print(f"converted {meta['source']} -> {meta['out']}")
    for part in PARTS:
        print(f"  {part:<12} {counts.get(part, 0):>12,} parameters")
    print(f"  {'total':<12} {counts['total']:>12,} parameters")
    print(f"  torch dtypes {meta['torch_dtypes']}, flax leaf dtypes {meta['flax_dtypes']}")
    if "global_step" in meta:
        print(f"  global_step {meta['global_step']}" + "".join(
            f", {k} {meta[k]}" for k in ("val_rmse", "val_nrmse", "best_val_nrmse") if k in meta))
    print(f"  time {meta['seconds']:.1f} s, RSS at start {meta['rss_start_mb']:.0f} MiB, "
          f"peak RSS {meta['peak_rss_mb']:.0f} MiB (+{meta['peak_rss_mb'] - meta['rss_start_mb']:.0f} MiB)")


def _verify_converted(path: Path, out: Path, config_file: str | None, frames: int, batch: int) -> dict:
    """Per-seam relative L2 of the converted model against the PyTorch reference; a
    worse one than `VERIFY_TOLERANCE` (or NaN) is a `ConvertError`."""
    config = load_model_config(out)
    max_frames = config.transformer.max_position_embeddings // config.tokens_per_frame
    if frames > max_frames:
        raise ConvertError(f"--verify-frames {frames}: the model takes at most {max_frames} frames "
                           f"(max_position_embeddings {config.transformer.max_position_embeddings} / "
                           f"{config.tokens_per_frame} tokens per frame)")
    errors = verify(path, out, frames=frames, batch=batch, config_file=config_file)
    print(f"verify (B={batch}, T={frames}, float32), relative L2 vs torch:")
    for seam, err in errors.items():
        print(f"  {seam:<20} {err:.2e}")
    max_err = worst(errors)
    if not max_err <= VERIFY_TOLERANCE:  # NaN fails too
        raise ConvertError(f"{path}: verification failed: max relative L2 {max_err:.2e} > {VERIFY_TOLERANCE:g}")
    print(f"verify ok (max {max_err:.2e} <= {VERIFY_TOLERANCE:g})")
    return errors


def convert(path: Path, out: Path | None = None, *, config_file: str | None = None, lora_for: str | None = None,
            verify: bool = False, verify_frames: int = 2, verify_batch: int = 1, overwrite: bool = False) -> dict:
    """Converts `best.pt` (or a bare state dict, or `best_lora.pt`) to a Flax directory,
    printing a summary; with `verify`, checks every seam against PyTorch.
    -> the conversion's metadata (`out`: the directory written)."""
    if verify_frames < 1 or verify_batch < 1:
        raise ConvertError(f"--verify-frames ({verify_frames}) and --verify-batch ({verify_batch}) must be >= 1")
    path = Path(path)
    obj, mmapped = load_torch_file(path)
    if isinstance(obj, Mapping) and "lora_state_dict" in obj:
        meta = convert_lora(path, out, lora_for, config_file, obj=obj, overwrite=overwrite)
        print(f"converted LoRA adapters {meta['source']} -> {meta['out']} ({meta['adapter_params']:,} "
              f"adapter parameters, r={meta['lora'].r}, alpha={meta['lora'].alpha}, {meta['seconds']:.1f} s)")
        if verify:
            print("note: --verify checks full models; run it on the base checkpoint")
        return meta
    if lora_for is not None:
        raise ConvertError(f"{path}: is a full model checkpoint (model_state_dict), not a LoRA one; --lora-for "
                           "applies to LoRA checkpoints (best_lora.pt) only: drop it to convert the full model")
    meta = convert_model(path, out, config_file, obj=obj, mmapped=mmapped, overwrite=overwrite)
    del obj
    _print_summary(meta)
    if verify:
        meta["verify"] = _verify_converted(path, Path(meta["out"]), config_file, verify_frames, verify_batch)
    return meta
