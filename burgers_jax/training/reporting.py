"""Run outputs a researcher reads: `metrics.jsonl`, TensorBoard events (scalars, the
validation plots, the config, the hparams: all in the run's own `tensorboard/` folder,
never a new subfolder per invocation), optional Weights & Biases logging, PNG plots
(the validation windows; `loss_curve.png`, train and val, written when the writer closes).

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
LOSS_CURVE_FILE = "loss_curve.png"


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
        self.save_dir = save_dir
        self.path = save_dir / "metrics.jsonl"
        self._last_step = 0
        try:  # named on the loss curve, whose colour is the run's role
            self._training = config["training"] if config else None
            self._objective = objective_name(self._training) if config else None
        except (KeyError, TypeError):
            self._objective = self._training = None
        self._file = open(self.path, "a")
        if tensorboard:
            from tensorboardX import SummaryWriter

            # One event file per invocation, in the run's folder (TensorBoard reads them all as one
            # run); the suffix keeps two opened within a second (the name has seconds) apart.
            self._tb = SummaryWriter(str(save_dir / "tensorboard"), filename_suffix=f".{uuid.uuid4().hex[:8]}")
            if config is not None:
                self._tb.add_text("config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```", 0)
        if wandb:
            self._wandb = _start_wandb(save_dir, wandb, config)

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        self._last_step = max(self._last_step, int(step))
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
        """The run's scalar config against its final results (TensorBoard's HParams tab),
        in the run's own event file: tensorboardX's `add_hparams` opens a new subfolder
        named by the time at every call, so each resume would add a run to TensorBoard."""
        if self.enabled and self._tb is not None:
            from tensorboardX.summary import hparams as hparams_summary

            scalars = {k: v for k, v in hparams.items() if isinstance(v, (int, float, str, bool))}
            metrics = {f"hparams/{k}": float(v) for k, v in results.items()}
            for summary in hparams_summary(scalars, metrics):  # experiment, session start, session end
                self._tb.file_writer.add_summary(summary, self._last_step)
            for tag, value in metrics.items():
                self._tb.add_scalar(tag, value, self._last_step)
            self._tb.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            try:  # the curve of the whole run (a resumed run's log holds every step)
                plot_loss_curve(self.path, self.save_dir / LOSS_CURVE_FILE, self._objective, self._training)
            except Exception as e:  # noqa: BLE001 - a plot must not hide why the run ended
                print(f"warning: {LOSS_CURVE_FILE} not written: {type(e).__name__}: {e}", file=sys.stderr)
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


def objective_name(training) -> str:
    """The training objective in a few characters, as `steps.objective_terms` sums it:
    `precond`, `window+0.1*bc`, `nrmse` (supervised), ... (its residual is
    `training.residual`; weights other than 1 are shown). `training`: the config's
    training section (a ConfigDict, or the dict of config.json)."""
    terms = []
    for weight, name in ((training["lambda_pde"], training["residual"]), (training["lambda_bc"], "bc"),
                         (training["lambda_data"], "nrmse")):
        if weight:
            terms.append(name if weight == 1 else f"{weight:g}*{name}")
    return "+".join(terms) or "0"


def progress_fields(record: Mapping[str, float], training) -> dict[str, str]:
    """The progress line's fields: the loss named by what it sums (`loss(precond)=...`;
    `train/loss` is the weighted total, boundary and data terms included) and the
    learning rate."""
    return {f"loss({objective_name(training)})": f"{float(record['train/loss']):.3e}",
            "lr": f"{float(record['train/lr']):.2e}"}


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl's records; a torn line (a crash mid-write) is skipped."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def plot_loss_curve(metrics_path: Path, png: Path, objective: str | None = None,
                    training: Mapping[str, Any] | None = None):
    """`train/loss` and `val/loss` (the training objective, named `objective` as
    `objective_name` writes it, on training batches and on the validation windows; the
    validation value at step 0 is the zero-shot model's) against the step, in the colour
    of the run's role (`training`: its config's training section, else the run folder's
    config.json; label-free unless it says supervised): validation in the role's colour,
    train in a lighter shade. -> the Figure, or None when the log holds neither (nothing
    is written)."""
    from burgers_jax.evaluation import figures

    if training is None:
        training = figures.run_training(Path(metrics_path).parent)
    role = figures.role_of_training(training)

    rows = read_metrics(metrics_path) if Path(metrics_path).is_file() else []
    curves = {key: [(r["step"], r[key]) for r in rows if key in r] for key in ("train/loss", "val/loss")}
    if not any(curves.values()):
        return None
    fig = figures.new_figure(figsize=(8.5, 4.2))
    ax = fig.subplots()
    for (key, points), shade, marker in zip(curves.items(), (1, 0), (".", "o")):  # markers: one point shows too
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, marker=marker, linestyle="-", ms=4, color=figures.role_colour(role, shade),
                    label=f"{key.split('/')[0]} ({key})")
    values = [v for points in curves.values() for _, v in points]
    if all(np.isfinite(v) and v > 0 for v in values):
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"loss({objective or 'total'}): the training objective")
    kind = {"supervised": "supervised", "fine-tuned": "label-free"}.get(role, "label-free, reference residual")
    ax.set_title(f"loss curve of {figures.short_path(Path(metrics_path).parent)} ({kind} fine-tuning)", fontsize=10)
    figures.integer_ticks(ax)
    figures.legend_beside(ax)
    figures.save(fig, png)
    return fig


def plot_validation_window(pred: np.ndarray, true: np.ndarray, path: Path, title: str = ""):
    """Predicted u and v, the truth (one colour scale per component) and the error (one
    symmetric scale, white = 0) at the last frame of one window. -> the Figure.

    pred, true: [T, H, W, 2] float arrays (T window frames, channels (u, v)).
    """
    from matplotlib.colors import Normalize

    from burgers_jax.evaluation import figures

    err = pred[-1] - true[-1]
    norm = figures.symmetric_norm(err)
    fig = figures.new_figure(figsize=(11, 6.5))
    axes = fig.subplots(2, 3)
    for row, name in enumerate("uv"):
        p, t = pred[-1, ..., row], true[-1, ..., row]
        shared = Normalize(vmin=float(min(p.min(), t.min())), vmax=float(max(p.max(), t.max())))
        figures.show_field(fig, axes[row, 0], p, f"predicted {name}", name, norm=shared)
        figures.show_field(fig, axes[row, 1], t, f"true {name}", name, norm=shared)
        im = figures.show_error(axes[row, 2], err[..., row], f"error in {name} (pred - true)", norm)
    figures.error_colorbar(fig, im, axes[:, 2].tolist(), [err], f"{figures.ERROR_LABEL}, one scale")
    fig.suptitle(title or "a validation window, last frame: prediction, truth and error", fontsize=10)
    figures.save(fig, path, dpi=80)
    return fig
