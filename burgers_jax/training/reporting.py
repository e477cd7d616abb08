"""Run outputs a researcher reads: `metrics.jsonl`, TensorBoard events (scalars, the
validation plots, the config), optional Weights & Biases logging, PNG plots.

In a multi-host run only process 0 writes these (`enabled=False` elsewhere): one log,
one set of plots, not one per host.
"""

from __future__ import annotations

import json
import os
import re
import sys
import uuid
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from burgers_jax.errors import UserError

WANDB_RUN_ID_FILE = "wandb_run_id.txt"


class MetricsWriter:
    """Appends one JSON object per log step to `save_dir/metrics.jsonl` (flushed each
    time, so a crash loses nothing already logged) and mirrors scalars and images to
    TensorBoard and, when asked, to Weights & Biases (`wandb`: a dict with `project`,
    `entity`, `mode` ("online" or "offline": no network needed), the same run resumed)."""

    def __init__(self, save_dir: Path, tensorboard: bool = True, wandb: Mapping[str, Any] | None = None,
                 config: Mapping[str, Any] | None = None, enabled: bool = True):
        self.enabled = enabled
        self._file = self._tb = self._wandb = None
        if not enabled:
            return
        save_dir = Path(save_dir)
        self.path = save_dir / "metrics.jsonl"
        self._file = open(self.path, "a")
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(save_dir / "tensorboard"))
            if config is not None:
                self._tb.add_text("config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```", 0)
        if wandb:
            self._wandb = _start_wandb(save_dir, wandb, config)

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(k, float(v), int(step))
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log({k: float(v) for k, v in metrics.items()}, step=int(step))

    def image(self, step: int, tag: str, png: Path) -> None:
        """A plot already saved as PNG, to TensorBoard and W&B."""
        if not self.enabled:
            return
        if self._tb is not None:
            import matplotlib.image

            img = matplotlib.image.imread(str(png))[..., :3]
            self._tb.add_image(tag, img, int(step), dataformats="HWC")
            self._tb.flush()
        if self._wandb is not None:
            import wandb

            self._wandb.log({tag: wandb.Image(str(png))}, step=int(step))

    def hparams(self, hparams: Mapping[str, Any], results: Mapping[str, float]) -> None:
        """The run's scalar config against its final results (TensorBoard's HParams tab)."""
        if self.enabled and self._tb is not None:
            scalars = {k: v for k, v in hparams.items() if isinstance(v, (int, float, str, bool))}
            self._tb.add_hparams(scalars, {f"hparams/{k}": float(v) for k, v in results.items()})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


class ReportingError(UserError):
    """A logging backend that cannot start as configured."""


WANDB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_wandb_id(save_dir: Path) -> str | None:
    """The run's saved wandb id (None: none yet); checked before any work, because wandb
    refuses a bad one only after starting its service."""
    id_file = Path(save_dir) / WANDB_RUN_ID_FILE
    if not id_file.is_file():
        return None
    run_id = id_file.read_text().strip()
    if not WANDB_ID.fullmatch(run_id):
        raise ReportingError(f"{id_file}: {run_id!r} is not a Weights & Biases run id (letters, digits, '-' and "
                             "'_', at most 64); fix the file, or delete it to start a new wandb run")
    return run_id


def _start_wandb(save_dir: Path, settings: Mapping[str, Any], config: Mapping[str, Any] | None):
    try:
        import wandb
    except ImportError:
        raise ReportingError("logging.wandb=True needs the wandb package (pip install wandb)") from None
    id_file = save_dir / WANDB_RUN_ID_FILE
    run_id = check_wandb_id(save_dir) or uuid.uuid4().hex[:12]
    try:
        run = wandb.init(project=settings.get("project") or None, entity=settings.get("entity") or None,
                         mode=settings.get("mode", "online"), dir=str(save_dir), config=dict(config or {}),
                         id=run_id, resume="allow")
    except Exception as e:  # noqa: BLE001 - wandb raises its own kinds (UsageError, CommError, ...)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ReportingError(f"Weights & Biases refused the run (id {run_id} from {id_file}): {reason}. "
                             "--config.logging.wandb_mode=offline logs without the service; "
                             "--config.logging.wandb=False turns it off") from None
    id_file.write_text(run_id + "\n")
    return run


def truncate_metrics(path: Path, last_step: int) -> int:
    """Drops records after `last_step` (a resumed run re-logs them) and torn lines (a
    write cut short by a crash), with a warning; returns how many lines were dropped."""
    path = Path(path)
    if not path.exists():
        return 0
    lines = path.read_text().splitlines()
    keep, torn = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            torn += 1
            continue
        if step <= last_step:
            keep.append(line)
    if torn:
        print(f"warning: {path}: dropped {torn} torn line(s) (a write cut short by a crash)", file=sys.stderr)
    path.write_text("".join(l + "\n" for l in keep))
    return len(lines) - len(keep)


def plot_validation_window(pred: np.ndarray, true: np.ndarray, path: Path, title: str = "") -> None:
    """Predicted u and v, the truth and the error at the last frame of one window.

    pred, true: [T, H, W, 2] float arrays (T window frames, channels (u, v)).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(11, 6.5), constrained_layout=True)
    for row, name in enumerate("uv"):
        p, t = pred[-1, ..., row], true[-1, ..., row]
        lo, hi = float(min(p.min(), t.min())), float(max(p.max(), t.max()))
        for col, (img, label, kw) in enumerate([
            (p, f"predicted {name}", dict(vmin=lo, vmax=hi, cmap="viridis")),
            (t, f"true {name}", dict(vmin=lo, vmax=hi, cmap="viridis")),
            (p - t, f"error {name} (pred - true)", dict(cmap="RdBu_r")),
        ]):
            ax = axes[row, col]
            im = ax.imshow(img, origin="lower", extent=(0, 1, 0, 1), **kw)
            ax.set_title(label)
            ax.set_xlabel("x")
            ax.set_ylabel("y")
            fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(title)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
