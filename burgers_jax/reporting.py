"""Run outputs a researcher reads: `metrics.jsonl`, TensorBoard events, PNG plots."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


class MetricsWriter:
    """Appends one JSON object per log step to `save_dir/metrics.jsonl` (flushed each
    time, so a crash loses nothing already logged) and mirrors scalars to TensorBoard."""

    def __init__(self, save_dir: Path, tensorboard: bool = True):
        self.path = Path(save_dir) / "metrics.jsonl"
        self._file = open(self.path, "a")
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(Path(save_dir) / "tensorboard"))

    def write(self, step: int, metrics: dict) -> None:
        record = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(k, float(v), int(step))
            self._tb.flush()

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def truncate_metrics(path: Path, last_step: int) -> int:
    """Drops records after `last_step` (a resumed run re-logs them); returns how many."""
    path = Path(path)
    if not path.exists():
        return 0
    lines = path.read_text().splitlines()
    keep = [l for l in lines if l.strip() and json.loads(l)["step"] <= last_step]
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
