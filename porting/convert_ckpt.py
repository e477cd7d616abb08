"""Converts a PyTorch `PDECausalModel` checkpoint (SPEC.md section 2) to a Flax/orbax
checkpoint directory that `burgers_jax.predict` and the trainer load.

    python porting/convert_ckpt.py best.pt [--out DIR] [--config train.yaml] [--verify]
    python porting/convert_ckpt.py best_lora.pt [--lora-for CONVERTED_BASE_DIR] [--out DIR]

Accepted inputs (always `torch.load(weights_only=True)`, never a full unpickle):
  * the training checkpoint: a dict with `model_state_dict` and `config`;
  * a bare state dict (then `--config FILE` gives the architecture);
  * keys prefixed with `module.` (DDP) and/or `_orig_mod.` (torch.compile);
  * a LoRA checkpoint (`best_lora.pt`, detected by its `lora_state_dict`), written as
    an adapters directory (`burgers_jax.checkpoint.load_adapters`).

The architecture is read from the config and cross-checked against the tensor shapes
before conversion; a field that disagrees with the weights is an error naming the field
and both values. Memory: the file is memory-mapped, the optimizer state is never
touched, and tensors are popped from the state dict one by one as they are converted,
so the peak stays near the size of the model weights plus their converted copy.

Shape legend: B batch, T frames, H/W grid (128), C channels, S tokens (T*256), D hidden.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

if __package__ in (None, ""):  # run as `python porting/convert_ckpt.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from burgers_jax.model_config import ConfigError, LoraConfig, ModelConfig

PREFIXES = ("module.", "_orig_mod.")
VERIFY_TOLERANCE = 1e-4
PARTS = ("encoder_2d", "transformer", "decoder_2d")


class ConvertError(RuntimeError):
    """A user-facing conversion failure; `main` prints it as one line, no traceback."""


# ----------------------------------------------------------------------------- loading


def load_torch_file(path: str | os.PathLike) -> tuple[Any, bool]:
    """`torch.load(weights_only=True)`, memory-mapped when the file format allows it.

    -> (object, whether its tensors are memory-mapped from the file).
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: no such file")
    try:
        # mmap: tensor bytes stay in the page cache until touched; the optimizer state of a
        # training checkpoint is never read at all.
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True), True
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError) as first:
        if "weights only" in str(first).lower() or "weights_only" in str(first):
            raise ConvertError(f"{path}: refused by torch.load(weights_only=True): it holds objects other "
                               "than tensors and plain containers") from None
        try:  # legacy (non-zip) torch files cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=True), False
        except Exception as e:  # noqa: BLE001 - any failure here means "not a checkpoint"
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConvertError(f"{path}: not a PyTorch checkpoint ({reason[:200]})") from None


def _is_tensor(x: Any) -> bool:
    import torch

    return isinstance(x, torch.Tensor)


def split_checkpoint(obj: Any, path: str | os.PathLike, mmapped: bool = False) -> tuple[str, dict, dict | None, dict]:
    """-> (kind, state_dict, config dict or None, info) for kind 'model' or 'lora'.

    `info` holds the scalar bookkeeping the file carries (global_step, val metrics).
    Consumes `obj`: the state dict is moved out of it (and the optimizer state dropped)
    so that converted tensors can be freed one by one.
    """
    if not isinstance(obj, Mapping):
        raise ConvertError(f"{path}: not a checkpoint: torch.load gave a {type(obj).__name__}, not a dict")
    config = obj.get("config") if isinstance(obj.get("config"), Mapping) else None
    info: dict[str, Any] = {}
    for key in ("global_step", "val_rmse", "val_nrmse", "best_val_nrmse", "metrics"):
        if key in obj:
            info[key] = _jsonable(obj[key])
    if "lora_state_dict" in obj:
        kind, sd = "lora", obj["lora_state_dict"]
    elif "model_state_dict" in obj:
        kind, sd = "model", obj["model_state_dict"]
    elif obj and all(_is_tensor(v) for v in obj.values()):
        kind, sd, info = "model", dict(obj), {}
    else:
        keys = ", ".join(list(map(str, obj.keys()))[:8])
        raise ConvertError(f"{path}: not a checkpoint: a dict without 'model_state_dict' or 'lora_state_dict' "
                           f"whose values are not all tensors (keys: {keys})")
    if not isinstance(sd, Mapping) or not sd or not all(_is_tensor(v) for v in sd.values()):
        raise ConvertError(f"{path}: not a checkpoint: its state dict is empty or holds non-tensor values")
    if isinstance(obj, dict):
        obj.clear()  # drop every other reference to the tensors (and the optimizer state)
    sd = strip_prefixes(sd, path)
    return kind, (PageReleasingDict(sd) if mmapped else sd), config, info


class PageReleasingDict(dict):
    """A state dict of memory-mapped tensors that gives back the file pages of each
    tensor once it has been converted.

    `torch.load(mmap=True)` maps the whole file once; pages a tensor touched stay in the
    process' RSS until *every* tensor of the file is freed, so converting tensor by
    tensor would still end with the whole file resident next to the converted copy. The
    mapping pops each tensor, converts it and drops it before popping the next one, so on
    each `pop` the previously popped tensor is done: its page range is `madvise`d
    MADV_DONTNEED. The mapping is a private, never-written file mapping, so should
    anything read those bytes again they fault back in from the file unchanged. Only
    ever used for tensors that `load_torch_file` memory-mapped itself.
    """

    _last = None

    def pop(self, key, *default):
        value = super().pop(key, *default)
        self.release_last()
        self._last = value if _is_tensor(value) else None
        return value

    def release_last(self) -> None:
        if self._last is not None:
            _release_pages(self._last)
            self._last = None


def _release_pages(tensor: Any) -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import mmap

    storage = tensor.untyped_storage()
    start, size, page = storage.data_ptr(), storage.nbytes(), mmap.PAGESIZE
    lo, hi = -(-start // page) * page, (start + size) // page * page  # whole pages inside only
    if hi > lo:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), 4)  # 4 = MADV_DONTNEED


def _jsonable(x: Any) -> Any:
    if _is_tensor(x):
        return x.item() if x.numel() == 1 else x.tolist()
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (int, float, str, bool)) or x is None:
        return x
    if isinstance(x, np.generic):
        return x.item()
    return str(x)


def strip_prefixes(sd: Mapping[str, Any], path: str | os.PathLike = "") -> dict:
    """Removes any chain of leading `module.` / `_orig_mod.` (DDP, torch.compile)."""
    out: dict[str, Any] = {}
    for key, value in sd.items():
        new = key
        while new.startswith(PREFIXES):
            new = new[len(next(p for p in PREFIXES if new.startswith(p))):]
        if new in out:
            raise ConvertError(f"{path}: two tensors map to {new!r} after stripping module./_orig_mod. prefixes")
        out[new] = value
    return out


def read_config_file(path: str | os.PathLike) -> dict:
    """A YAML or JSON training config (or just its `model` section)."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: config file not found")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            d = json.loads(text)
        else:
            import yaml

            d = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001
        raise ConvertError(f"{path}: cannot parse config ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(d, Mapping):
        raise ConvertError(f"{path}: config is not a mapping")
    return dict(d)


def model_section(config: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if config is None:
        return None
    if isinstance(config.get("model"), Mapping):
        return config["model"]
    if "transformer" in config:  # a bare `model` section
        return config
    return None


def lora_section(config: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The fine-tuning YAML's lora settings: `model.lora` or a top-level `lora`."""
    if config is None:
        return None
    model = model_section(config) or {}
    for candidate in (model.get("lora"), config.get("lora")):
        if isinstance(candidate, Mapping) and candidate:
            return candidate
    return None


# ----------------------------------------------------------------------------- cross-check

_ENC_CONV = re.compile(r"^encoder_2d\.vector_conv\.(\d+)\.weight$")
_ENC_RES = re.compile(r"^encoder_2d\.vector_conv\.\d+\.conv\.")
_LAYER = re.compile(r"^transformer\.layers\.(\d+)\.")


def infer_architecture(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    """What the tensor shapes alone say about the architecture (absent keys are skipped)."""
    arch: dict[str, Any] = {}
    if "transformer.norm.weight" in shapes:
        arch["hidden_size"] = shapes["transformer.norm.weight"][0]
    layers = {int(m.group(1)) for k in shapes if (m := _LAYER.match(k))}
    if layers:
        arch["num_hidden_layers"] = max(layers) + 1
    for name, key in (("intermediate_size", "mlp.gate_proj.weight"), ("q_rows", "self_attn.q_proj.weight"),
                      ("k_rows", "self_attn.k_proj.weight")):
        full = f"transformer.layers.0.{key}"
        if full in shapes:
            arch[name] = shapes[full][0]
    convs = sorted((int(m.group(1)), shapes[k]) for k in shapes if (m := _ENC_CONV.match(k)))
    convs = [s for _, s in convs if len(s) == 4]
    if convs:
        arch["channels"] = tuple(s[0] for s in convs)
    if any(k.startswith("encoder_2d.") for k in shapes):
        arch["use_resblock"] = any(_ENC_RES.match(k) for k in shapes)
    return arch


def cross_check(config: ModelConfig, shapes: Mapping[str, tuple[int, ...]], source: str) -> None:
    """Raises ConfigError naming each config field that disagrees with the weights."""
    arch = infer_architecture(shapes)
    tr = config.transformer
    errors: list[str] = []

    def field(name: str, cfg: Any, weights: Any, how: str) -> None:
        if weights is not None and cfg != weights:
            errors.append(f"config model.{name}={cfg} disagrees with the weights: {how} gives {weights}")

    field("transformer.hidden_size", tr.hidden_size, arch.get("hidden_size"), "transformer.norm.weight")
    field("transformer.num_hidden_layers", tr.num_hidden_layers, arch.get("num_hidden_layers"),
          "the transformer.layers.{i} indices")
    field("transformer.intermediate_size", tr.intermediate_size, arch.get("intermediate_size"),
          "layers.0.mlp.gate_proj.weight rows")
    field("encoder.channels", list(config.encoder.channels),
          list(arch["channels"]) if "channels" in arch else None, "the encoder_2d.vector_conv conv weights")
    field("encoder.use_resblock", config.encoder.use_resblock, arch.get("use_resblock"),
          "the presence of ResBlock tensors (encoder_2d.vector_conv.*.conv.*)")
    hidden = arch.get("hidden_size", tr.hidden_size)
    heads, kv = tr.num_attention_heads, tr.num_key_value_heads
    if hidden % heads:
        errors.append(f"config model.transformer.num_attention_heads={heads} does not divide hidden_size={hidden}")
    elif "k_rows" in arch:
        errors.extend(_head_errors(hidden, heads, kv, arch["k_rows"]))
    if errors:
        raise ConfigError(f"{source}: " + "; ".join(errors))


def _head_errors(hidden: int, heads: int, kv: int, k_rows: int) -> list[str]:
    """Head counts vs k_proj rows.

    Shapes fix only the ratio: k_proj rows = kv * head_dim = kv * hidden / heads (q_proj
    is hidden x hidden whatever the heads). So 16/4 heads on hidden 768 (head_dim 48,
    192 rows) and 12/4 (head_dim 64, 256 rows) are told apart, but 16/4 and 12/3 are not.
    We name num_attention_heads as the field at fault when keeping the configured KV
    heads gives a consistent head count, else num_key_value_heads.
    """
    head_dim = hidden // heads
    if kv * head_dim == k_rows:
        return []
    head = (f"k_proj has {k_rows} rows but num_key_value_heads({kv}) x head_dim({head_dim} = "
            f"hidden_size {hidden} / num_attention_heads {heads}) = {kv * head_dim}")
    implied_heads = kv * hidden / k_rows
    if implied_heads == int(implied_heads) and hidden % int(implied_heads) == 0:
        implied_heads = int(implied_heads)
        return [f"config model.transformer.num_attention_heads={heads} disagrees with the weights: {head}; "
                f"with num_key_value_heads={kv} the weights imply num_attention_heads={implied_heads} "
                f"(head_dim {hidden // implied_heads}), config says {heads}"]
    implied_kv = k_rows / head_dim
    if implied_kv == int(implied_kv):
        return [f"config model.transformer.num_key_value_heads={kv} disagrees with the weights: {head}; "
                f"with num_attention_heads={heads} the weights imply num_key_value_heads={int(implied_kv)}"]
    return [f"config model.transformer.num_attention_heads={heads} / num_key_value_heads={kv} disagree with "
            f"the weights: {head}; the weights need num_key_value_heads/num_attention_heads = {k_rows}/{hidden}"]


def resolve_config(ckpt_config: Mapping | None, config_file: str | None, path: Path) -> tuple[ModelConfig, str]:
    """ModelConfig from --config FILE (when given) or the checkpoint's `config['model']`."""
    if config_file:
        section, source = model_section(read_config_file(config_file)), f"{config_file}"
        if section is None:
            raise ConvertError(f"{config_file}: has no 'model' section with a 'transformer' entry")
    else:
        section, source = model_section(ckpt_config), f"{path} (its config['model'])"
        if section is None:
            raise ConvertError(f"{path}: the checkpoint carries no config['model']; pass --config FILE "
                               "(the training YAML) to give the architecture")
    try:
        return ModelConfig.from_dict(section).with_lora(r=0), source
    except (ConfigError, TypeError, ValueError) as e:
        raise ConvertError(f"{source}: {e}") from None


# ----------------------------------------------------------------------------- conversion


def _rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return float("nan")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def count_params(params: Mapping[str, Any]) -> dict[str, int]:
    from burgers_jax.checkpoint import flatten

    counts = {part: 0 for part in PARTS}
    for path, leaf in flatten(params).items():
        counts[path[0]] = counts.get(path[0], 0) + int(np.prod(np.shape(leaf)))
    counts["total"] = sum(counts.values())
    return counts


def dtype_counts(params: Mapping[str, Any]) -> dict[str, int]:
    from burgers_jax.checkpoint import flatten

    out: dict[str, int] = {}
    for leaf in flatten(params).values():
        name = str(np.asarray(leaf).dtype) if not hasattr(leaf, "dtype") else str(leaf.dtype)
        out[name] = out.get(name, 0) + 1
    return out


def default_out(path: Path) -> Path:
    return path.with_name(f"{path.stem}_flax")


def prepare_model(path: Path, config_file: str | None = None, obj: Any = None, mmapped: bool = False):
    """Load, split, read the config and cross-check it against the shapes.

    -> (state_dict, ModelConfig, config source, info, checkpoint config or None)
    """
    if obj is None:
        obj, mmapped = load_torch_file(path)
    kind, sd, ckpt_config, info = split_checkpoint(obj, path, mmapped)
    if kind != "model":
        raise ConvertError(f"{path}: is a LoRA checkpoint (lora_state_dict), not a full model")
    config, source = resolve_config(ckpt_config, config_file, path)
    cross_check(config, {k: tuple(v.shape) for k, v in sd.items()}, source)
    return sd, config, source, info, ckpt_config


def convert_model(path: Path, out: Path | None, config_file: str | None, obj: Any = None,
                  mmapped: bool = False) -> dict[str, Any]:
    """Converts a full/bare model checkpoint; returns a summary dict."""
    from burgers_jax.checkpoint import save_converted

    t0, rss0 = time.perf_counter(), _rss_mb()
    sd, config, source, info, ckpt_config = prepare_model(path, config_file, obj, mmapped)
    del obj  # the optimizer state (if any) goes with it, never read
    from porting.mapping import torch_to_flax

    n_torch = len(sd)
    torch_dtypes = sorted({str(v.dtype).replace("torch.", "") for v in sd.values()})
    params = torch_to_flax(sd, config, consume=True)  # strict; pops tensors as it converts them
    if isinstance(sd, PageReleasingDict):
        sd.release_last()
    del sd
    out = out or default_out(path)
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
    save_converted(out, params, config, metadata)
    seconds = time.perf_counter() - t0
    metadata.update(seconds=round(seconds, 2), out=str(out), rss_start_mb=round(rss0, 1),
                    peak_rss_mb=round(_peak_rss_mb(), 1))
    return metadata


def convert_lora(path: Path, out: Path | None, lora_for: str | None, config_file: str | None,
                 obj: Any = None) -> dict[str, Any]:
    """Converts `best_lora.pt` into an adapters directory."""
    from burgers_jax.checkpoint import expected_shapes, load_model_config, merge_tree, save_adapters, unflatten
    from porting.mapping import lora_torch_to_flax

    t0 = time.perf_counter()
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
    config = base.with_lora(r=lora.r, alpha=lora.alpha, dropout=lora.dropout, target_modules=lora.target_modules)
    adapters = lora_torch_to_flax(sd, config)
    # The adapters must sit on kernels of the base model: check against its shapes.
    fake_base = unflatten({p: np.empty(s, dtype=np.bool_) for p, s in expected_shapes(config).items()
                           if p[-1] == "kernel" and p[0] == "transformer"})
    merge_tree(fake_base, adapters)
    out = out or default_out(path)
    metadata = {"source": str(path.resolve()), "base_config_source": source, **info,
                "converted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "base_model_config": base.to_dict(),
                "adapter_params": count_params(adapters)["total"]}
    save_adapters(out, adapters, config.lora, metadata)
    metadata.update(seconds=round(time.perf_counter() - t0, 2), out=str(out), lora=config.lora)
    return metadata


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
    return LoraConfig(r=r, alpha=float(section.get("alpha", section.get("lora_alpha"))),
                      dropout=float(section.get("dropout", section.get("lora_dropout", 0.0))),
                      target_modules=tuple(cfg_targets) if cfg_targets is not None else tuple(targets))


# ----------------------------------------------------------------------------- verify


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / ||b|| in float64 (b is the reference)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def verify(path: Path, out: Path, frames: int = 2, batch: int = 1, seed: int = 0,
           config_file: str | None = None) -> dict[str, float]:
    """Per-seam relative L2 error of the converted Flax model against the torch reference.

    Both float32; the torch model is built from the file's own state dict (the
    independent side), the Flax model from the written directory.
    """
    import jax
    import torch

    from burgers_jax.checkpoint import load_converted
    from porting import torch_reference

    _, sd, ckpt_config, _ = split_checkpoint(load_torch_file(path)[0], path)
    config, _ = resolve_config(ckpt_config, config_file, path)
    model = torch_reference.build_model(config.to_dict())
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    model = model.float().eval()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, frames, 128, 128, 6)).astype(np.float32)
    with torch.no_grad():
        ref = torch_reference.run_with_intermediates(model, torch.from_numpy(x))
    ref = {k: v.float().numpy() for k, v in ref.items()}

    from burgers_jax.model import PDECausalModel

    params, config = load_converted(out, precision="float32")
    with jax.default_matmul_precision("highest"):
        y, inter = PDECausalModel(config, precision="float32").apply(
            {"params": params}, x, train=False, return_intermediates=True)
    got = {**{k: np.asarray(v) for k, v in inter.items()}, "output": np.asarray(y)}
    return {k: rel_l2(got[k], ref[k]) for k in ("encoder_tokens", "transformer_output", "decoder_output", "output")}


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="best.pt, a bare state dict, or best_lora.pt")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: <stem>_flax next to it)")
    p.add_argument("--config", default=None, help="training YAML/JSON giving model architecture (overrides the "
                   "checkpoint's config)")
    p.add_argument("--verify", action="store_true", help=f"compare with the torch reference; fail above "
                   f"rel. L2 {VERIFY_TOLERANCE:g}")
    p.add_argument("--verify-frames", type=int, default=2, help="frames T of the verification input")
    p.add_argument("--verify-batch", type=int, default=1, help="batch B of the verification input")
    p.add_argument("--lora-for", default=None, help="converted base directory giving the model config of a "
                   "LoRA checkpoint")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from absl import logging as absl_logging

    from burgers_jax.checkpoint import CheckpointError

    absl_logging.set_verbosity(absl_logging.ERROR)  # orbax warns on every single-process save

    try:
        from porting.mapping import MappingError
    except ImportError:  # keep error handling working even if the mapping module is broken
        MappingError = ConvertError  # type: ignore[misc,assignment]
    path: Path = args.checkpoint
    # Import the heavy libraries first, so the RSS reported as "at start" is the
    # baseline the conversion itself adds to.
    import orbax.checkpoint  # noqa: F401
    import torch  # noqa: F401

    import burgers_jax.model  # noqa: F401
    try:
        obj, mmapped = load_torch_file(path)
        if isinstance(obj, Mapping) and "lora_state_dict" in obj:
            meta = convert_lora(path, args.out, args.lora_for, args.config, obj=obj)
            print(f"converted LoRA adapters {meta['source']} -> {meta['out']} ({meta['adapter_params']:,} "
                  f"adapter parameters, r={meta['lora'].r}, alpha={meta['lora'].alpha}, "
                  f"{meta['seconds']:.1f} s)")
            if args.verify:
                print("note: --verify checks full models; run it on the base checkpoint")
            return 0
        meta = convert_model(path, args.out, args.config, obj=obj, mmapped=mmapped)
        del obj
        _print_summary(meta)
        if args.verify:
            errors = verify(path, Path(meta["out"]), frames=args.verify_frames, batch=args.verify_batch,
                            config_file=args.config)
            # 1e-4: both sides run float32 ("highest" matmuls in JAX); reordered sums give
            # ~1e-6 per op and ~1e-5 through the full-size 10-layer model, while any
            # mis-mapped tensor (transposed kernel, swapped norm) gives errors of order 1.
            print(f"verify (B={args.verify_batch}, T={args.verify_frames}, float32), relative L2 vs torch:")
            for seam, err in errors.items():
                print(f"  {seam:<20} {err:.2e}")
            worst = max(errors.values())
            if not worst <= VERIFY_TOLERANCE:
                print(f"convert_ckpt: error: {path}: verification failed: max relative L2 {worst:.2e} > "
                      f"{VERIFY_TOLERANCE:g}", file=sys.stderr)
                return 1
            print(f"verify ok (max {worst:.2e} <= {VERIFY_TOLERANCE:g})")
        return 0
    except (ConvertError, ConfigError, MappingError, CheckpointError) as e:
        # One headline naming the file; long key listings (strict mapping) are clipped.
        first, *rest = str(e).splitlines() or [type(e).__name__]
        msg = "\n".join([first] + [r if len(r) <= 400 else r[:400] + " ..." for r in rest])
        if str(path) not in msg:
            msg = f"{path}: {msg}"
        print(f"convert_ckpt: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
