"""Reading PyTorch checkpoint files (docs/model_and_formats.md, "Files") without unpickling code.

Always `torch.load(weights_only=True)`, memory-mapped when the file format allows it.
Accepted: the training checkpoint (`model_state_dict` + `config`), a bare state dict,
keys prefixed with `module.` (DDP) and/or `_orig_mod.` (torch.compile), and the LoRA
checkpoint (`best_lora.pt`, `lora_state_dict`). The architecture comes from the
checkpoint's `config['model']` or from a training YAML/JSON given by the user.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import pickle
import re
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

from burgers_jax.errors import UserError
from burgers_jax.model.config import ConfigError, ModelConfig
from burgers_jax.porting import torch_missing

try:
    import torch
except ImportError as e:  # the optional `torch` extra
    raise torch_missing(__name__) from e

PREFIXES = ("module.", "_orig_mod.")


class ConvertError(UserError):
    """A user-facing conversion failure; the CLIs print it as one line, no traceback."""


NOT_WEIGHTS_ONLY = ("not a weights-only PyTorch checkpoint (it needs pickle to load, which this tool never "
                    "does for safety)")
# torch's refusal of a file ends in advice to load it unsafely ("Re-running `torch.load`
# with `weights_only` set to `False` will likely succeed", add_safe_globals): never shown.
_PICKLE_ADVICE = ("weights only", "weights_only", "safe_globals", "trusted source", "arbitrary code")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_GLOBAL = re.compile(r"GLOBAL (\S+)")


def _message(e: BaseException, path: Path) -> str:
    """torch's message without terminal escapes and without the path (whose name must not
    decide what the file is: a folder called `weights_only/`)."""
    return _ANSI.sub("", str(e)).replace(str(path), "PATH").strip()


def _refused_for_pickle(e: BaseException, path: Path) -> bool:
    text = _message(e, path)
    return "WeightsUnpickler error:" in text or any(w in text.lower() for w in _PICKLE_ADVICE)


def _load_error(path: Path, e: BaseException) -> ConvertError:
    """One line for a file that torch.load(weights_only=True) refused, without torch's advice.

    A pickled object (a custom class or function: "Unsupported global") is
    `NOT_WEIGHTS_ONLY`; a pickle that no torch.save wrote (an .npy, a plain pickle:
    "Unsupported operand") is "not a PyTorch checkpoint"."""
    text = _message(e, path)
    if "WeightsUnpickler error:" in text:
        detail = next((line.strip() for line in text.split("WeightsUnpickler error:", 1)[1].splitlines()
                       if line.strip()), "")
        if "global" in detail.lower():
            name = _GLOBAL.search(detail)
            return ConvertError(f"{path}: {NOT_WEIGHTS_ONLY}" + (f"; it refers to {name.group(1)}" if name else ""))
        if detail and not any(w in detail.lower() for w in _PICKLE_ADVICE):
            return ConvertError(f"{path}: not a PyTorch checkpoint (not a file torch.save wrote: {detail[:200]})")
    if any(w in text.lower() for w in _PICKLE_ADVICE):
        return ConvertError(f"{path}: {NOT_WEIGHTS_ONLY}")
    reason = text.splitlines()[0] if text else ""
    reason = f"{type(e).__name__}: {reason}" if reason else type(e).__name__
    return ConvertError(f"{path}: not a PyTorch checkpoint ({reason[:200]})")


def load_torch_file(path: str | os.PathLike) -> tuple[Any, bool]:
    """`torch.load(weights_only=True)`, memory-mapped when the file format allows it.

    -> (object, whether its tensors are memory-mapped from the file). A file that needs
    pickle (a custom class, any object beyond tensors and plain containers) is a
    ConvertError saying so (`NOT_WEIGHTS_ONLY`); torch's hint to load it unsafely is
    never passed on.
    """
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: no such file")
    try:
        # mmap: tensor bytes stay in the page cache until touched; the optimizer state of a
        # training checkpoint is never read at all.
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True), True
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError) as first:
        if _refused_for_pickle(first, path):
            raise _load_error(path, first) from None
        try:  # legacy (non-zip) torch files cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=True), False
        except Exception as e:  # noqa: BLE001 - any failure here means "not a checkpoint"
            raise _load_error(path, e) from None


def _is_tensor(x: Any) -> bool:
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
            d = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001
        raise ConvertError(f"{path}: cannot parse config ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(d, Mapping):
        raise ConvertError(f"{path}: config is not a mapping")
    return dict(d)


def model_section(config: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """`config['model']` of a full training config, the model section itself (it has a
    `transformer`), or None."""
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
