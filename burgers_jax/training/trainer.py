"""The training loop: `Trainer` (compiled steps, mesh, data, frozen weights) and
`train_and_evaluate(config, workdir)`, which the `burgers-train` command calls and
tests call on tiny configs. See configs/burgers.py for the runbook.

Data parallelism: the global batch is split over a 1-D `data` mesh of all devices
(jit with a sharded batch; params replicated), so gradients are averaged by the
compiler. Multi-host: call `jax.distributed.initialize()` on every host first
(`--config.training.distributed=True` does that); each host then feeds the same
stateless batches, as in the single-host case, and only process 0 writes logs, plots,
configs and the best adapters (every process writes its part of the checkpoints).

Ctrl-C stops at the end of the running step, saves a checkpoint, prints how to resume
and exits with status 130.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from burgers_jax.data import loader
from burgers_jax.data import sources as data_lib
from burgers_jax.errors import UserError
from burgers_jax.io import checkpoint as ckpt_io
from burgers_jax.io import disk, outputs, train_state
from burgers_jax.io.progress import make_progress
from burgers_jax.model import network as model_lib
from burgers_jax.model import param_tree
from burgers_jax.model.config import Policy
from burgers_jax.training import reporting, steps
from burgers_jax.training.rundir import RunDir, config_dict
from burgers_jax.training.runtime import StopSignals, global_array, initialize_distributed, to_host
from burgers_jax.training.setup import (
    TrainConfigError,
    build_data,
    check_config,
    load_params,
    print_recipe_warnings,
    with_dt,
)

# Keys of a batch that the compiled steps consume (with their leading batch axis).
STEP_KEYS = ("frames", *data_lib.BOUNDARIES, "nu")


class NonFiniteTraining(UserError):
    """The run stopped: its losses, gradients or updates stayed non-finite (each skipped),
    or no evaluation gave a finite validation value."""


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM: the run stopped at a step boundary after saving a checkpoint."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum


class Trainer:
    """The compiled steps, the mesh, the data and the frozen weights of one training run."""

    def __init__(self, cfg):
        devices = jax.devices()
        wanted = cfg.training.num_devices
        if not isinstance(wanted, int) or not 0 <= wanted <= len(devices):
            raise TrainConfigError(f"training.num_devices={wanted!r} must be an integer in [0, {len(devices)}] "
                                   f"(0: all {len(devices)} devices this process sees)")
        if wanted:
            devices = devices[:wanted]
        check_config(cfg, len(devices))
        self.mesh = Mesh(np.asarray(devices), ("data",))
        self.batch_sharding = NamedSharding(self.mesh, P("data"))
        self.replicated = NamedSharding(self.mesh, P())

        self.source, self.train_idx, self.val_idx, dt, self.dt_note = build_data(cfg)
        self.cfg = cfg = with_dt(cfg, dt)  # the time step in force, saved with the run
        root = jax.random.PRNGKey(cfg.training.seed)
        k_lora, self.k_train = jax.random.split(root)
        self.policy = Policy.named(cfg.model.precision)  # decoded once (check_config has validated it)
        params, self.model_cfg, self.base_identity = load_params(cfg, k_lora, self.policy)
        self.data_identity = self.source.fingerprint()
        self.model = model_lib.PDECausalModel(
            config=self.model_cfg, policy=self.policy, remat=cfg.model.remat,
            attention_impl=cfg.model.attention)
        self.trainable_set = cfg.model.trainable
        trainable, frozen = param_tree.split(params, self.trainable_set)
        self.frozen = global_array(frozen, self.replicated)
        mask = param_tree.trainable_mask(params, self.trainable_set)
        self.tx = steps.make_optimizer(cfg.training, mask)
        self.init_trainable = trainable
        self.train_step = steps.jit_train_step(self.model, self.tx, cfg)
        self.eval_step = jax.jit(steps.make_eval_step(self.model, cfg))
        # A fresh iterator per evaluation: the windows are fixed, and are read lazily.
        self.stride = int(cfg.dataset.frame_stride)
        self.val_batches = lambda: loader.val_batches(
            self.source, self.val_idx, cfg.dataloader.val_batch_size, window=cfg.dataset.temporal_length + 1,
            stride=self.stride)

    def identity(self) -> dict:
        """What the run's results stand for besides its config: the data and the base model."""
        return {"data": self.data_identity, "base": self.base_identity}

    def initial_state(self) -> steps.TrainState:
        full = param_tree.merge(self.init_trainable, self.frozen)
        opt_state = self.tx.init(full)
        state = steps.TrainState(
            step=jnp.zeros((), jnp.int32), trainable=self.init_trainable, opt_state=opt_state,
            rng=self.k_train, nonfinite_in_a_row=jnp.zeros((), jnp.int32),
            nonfinite_total=jnp.zeros((), jnp.int32))
        return global_array(state, self.replicated)

    def shard_batch(self, batch):
        return {k: global_array(batch[k], self.batch_sharding) for k in STEP_KEYS}

    def train_batch(self, step: int):
        # dataset.seed fixes the split (as the reference); training.seed varies the
        # batch order, so two seeds of one split see different stateless streams.
        dc = self.cfg.dataset
        return loader.train_batch(self.source, self.train_idx, self.cfg.dataloader.batch_size,
                                    dc.seed + 1000003 * self.cfg.training.seed, step,
                                    window=steps.window_span(self.cfg), stride=self.stride)

    def evaluate(self, trainable) -> tuple[dict, tuple | None]:
        """Validation metrics (`val/...`, means over every window) and, for a plot, the
        first window's `(pred, true, sample)`."""
        sums, count, worst = {}, 0.0, 0.0
        shown = None
        for batch in self.val_batches():
            per_sample, pred = to_host(self.eval_step(trainable, self.frozen, self.shard_batch(batch)))
            w = np.asarray(batch["valid"], np.float64)
            count += w.sum()
            for k, v in per_sample.items():
                sums[k] = sums.get(k, 0.0) + float(np.sum(w[w > 0] * np.asarray(v)[w > 0]))  # padding never counts
            worst = max(worst, float(np.max(np.where(w > 0, per_sample["constraint_error_max"], 0))))
            if shown is None:
                shown = (np.asarray(pred[0]), np.asarray(batch["frames"][0, ..., :2]), int(batch["sample"][0]))
        metrics = {f"val/{k}": v / count for k, v in sums.items() if k != "constraint_error_max"}
        metrics["val/constraint_error_max"] = worst
        return metrics, shown


def every(step: int, n: int, last: int) -> bool:
    """True at every n-th step and at the last one (the log and eval cadence)."""
    return step % n == 0 or step == last


def restore_or_init(trainer: Trainer, manager, workdir: Path, resume: bool, primary: bool):
    """-> (state, best validation loss, resumed?): the latest intact checkpoint when
    resuming, else the initial state. A resumed run drops log lines after its checkpoint."""
    state = trainer.initial_state()
    if resume and manager.latest_step() is not None:
        restored, best_val, skipped = train_state.restore_state(manager, state)
        for note in skipped:
            print(f"warning: {note}", file=sys.stderr)
        state = global_array(restored, trainer.replicated)
        dropped = reporting.truncate_metrics(workdir / "metrics.jsonl", int(state.step)) if primary else 0
        print(f"resumed from {manager.directory} at step {int(state.step)} (dropped {dropped} log lines after it)")
        return state, best_val, True
    if resume:
        print(f"training.resume=True but {manager.directory} has no checkpoint: starting from step 0")
    return state, math.inf, False


def split_record(trainer: Trainer) -> dict:
    """The run's data split, saved with its result so that evaluation's "val" is the run's."""
    dc = trainer.cfg.dataset
    record = {"source": dc.source, "train_ratio": dc.train_ratio, "seed": dc.seed,
              "val_samples": [int(i) for i in sorted(trainer.val_idx)], "frame_stride": dc.frame_stride,
              "temporal_length": dc.temporal_length, "data": trainer.data_identity}
    if dc.source == "analytic":
        record.update(num_samples=dc.num_samples, nu_min=dc.nu_min, nu_max=dc.nu_max, num_frames=dc.num_frames)
    else:
        record["path"] = str(dc.path)
    return record


def save_best(trainer: Trainer, trainable: dict, workdir: Path, metadata: dict) -> None:
    """The best weights so far in `best_adapters/`: the run's whole result (the LoRA
    adapters and every other leaf it trained, with `trainable` and `trained_parts` in its
    metadata, and the data split), which predict, evaluate and the exports load whole."""
    adapters = param_tree.extract_adapters(trainable)
    others = param_tree.strip_adapters(trainable)
    ckpt_io.save_adapters(workdir / "best_adapters", adapters, trainer.model_cfg.lora, overwrite=True,
                          metadata={**metadata, "trainable": trainer.trainable_set, "split": split_record(trainer),
                                    "precision": trainer.cfg.model.precision, "base": trainer.base_identity},
                          trained=others or None)


def selection_key(cfg) -> str:
    """The validation metric that picks the best adapters (`training.select_metric`)."""
    return f"val/{cfg.training.select_metric}"


def evaluate_and_checkpoint(trainer: Trainer, state, step: int, best_val: float, workdir: Path, manager,
                            writer, primary: bool = True) -> tuple[dict, float, bool]:
    """Validation at `step`: metrics logged, a plot, the best adapters saved (after
    warmup, when the PDE loss improves) and the training state checkpointed.
    -> (metrics, best validation loss, improved?). Only the primary process writes files
    other than the checkpoint."""
    cfg = trainer.cfg
    check_data_unchanged(trainer, step, manager)
    val, shown = trainer.evaluate(state.trainable)
    if primary and cfg.logging.plots and shown is not None:
        pred, true, sample = shown
        png = workdir / "plots" / f"val_step{step:06d}.png"
        reporting.plot_validation_window(
            pred, true, png,
            title=f"step {step}, validation sample {sample}, last frame; val PDE loss {val['val/pde_loss']:.3e}")
        writer.image(step, "val/window", png)
    key = selection_key(cfg)
    if key not in val:  # found at the zero-shot evaluation, before any training step
        raise TrainConfigError(f"training.select_metric={cfg.training.select_metric!r}: validation reports "
                               f"{', '.join(sorted(k.split('/', 1)[1] for k in val))}")
    if step == 0:  # the zero-shot baseline: no checkpoint, no best adapters
        writer.write(0, val)
        return val, best_val, False
    improved = step >= cfg.training.warmup_steps and val[key] < best_val
    if improved:
        best_val = val[key]
        if primary:
            save_best(trainer, to_host(state.trainable), workdir,
                      metadata={"global_step": step, "metrics": {"val_pde_loss": val["val/pde_loss"],
                                                                 f"val_{cfg.training.select_metric}": best_val},
                                "selected_by": key})
    writer.write(step, {**val, "val/best": best_val})
    train_state.save_state(manager, step, state, best_val)
    return val, best_val, improved


def check_data_unchanged(trainer: Trainer, step: int, manager) -> None:
    """Before an evaluation: the data file is still the one the run opened. A file
    rewritten or replaced under a running training would pair its fields with the
    viscosities read at the start: the run stops, keeping the last checkpoint (saved at
    the previous evaluation, when the file was verified unchanged)."""
    changed = trainer.source.changed_on_disk()
    if changed is None:
        return
    last = manager.latest_step()
    kept = (f"the last checkpoint (step {last}, saved while the file was unchanged) is kept in {manager.directory}"
            if last is not None else "no checkpoint was saved yet")
    raise data_lib.DataChangedError(
        f"{trainer.source.name} changed while training ({changed}): stopped at step {step}, before its evaluation; "
        f"{kept}. Put the original file back and resume, or resume with "
        "--config.training.allow_data_change=True to go on with the new file")


def start_run(cfg, workdir) -> tuple[Trainer, RunDir, bool]:
    """Everything before the first step: distributed init, the run directory's checks
    (before any work, and before anything is written), the trainer, the lock.
    -> (trainer, run directory, primary process?)."""
    if cfg.training.distributed:
        # CPU hosts need a collectives library (GPUs and TPUs bring their own): gloo.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        initialize_distributed()
    primary = jax.process_index() == 0
    run_dir = RunDir(workdir)
    run_dir.check_location(cfg.training.resume)
    # The run's result is written at its first improvement: a path there that cannot take
    # it (a symbolic link, a file, a folder of someone else's) is refused now, not after the work.
    outputs.check_dir(run_dir.path / "best_adapters", ckpt_io.ADAPTERS, overwrite=True, claim=False)
    if cfg.logging.wandb:
        reporting.check_wandb_id(run_dir.path)
    notes: list[str] = []
    if cfg.training.resume:
        cfg, notes = run_dir.prepare_resume(cfg)
    trainer = Trainer(cfg)
    if cfg.training.resume:
        notes += run_dir.check_resume(trainer.cfg)
        notes += run_dir.check_identity(trainer.identity(), trainer.cfg)
    if trainer.dt_note:
        notes.append(trainer.dt_note)
    if primary:
        taken = run_dir.lock()
        notes += [taken] if taken else []
    for note in notes:
        print(f"note: {note}")
    print_recipe_warnings(trainer.cfg, trainer.cfg.physics.dt)
    return trainer, run_dir, primary


def log_step(trainer: Trainer, state, m, step: int, rate: float, writer, bar, manager) -> None:
    """One log line of the training loop; stops a run whose losses stay non-finite."""
    training = trainer.cfg.training
    record = {f"train/{k}": v for k, v in to_host(m).items()}
    record["train/steps_per_s"] = rate
    record["train/nonfinite_total"] = int(state.nonfinite_total)
    writer.write(step, record)
    bar.set_postfix(**reporting.progress_fields(record, training))
    if int(state.nonfinite_in_a_row) > training.max_consecutive_nonfinite:
        last = manager.latest_step()
        kept = (f"the last checkpoint (step {last}; skipped updates never reach the weights, so they are finite) is "
                f"kept in {manager.directory}" if last is not None else "no checkpoint was saved yet")
        raise NonFiniteTraining(
            f"step {step}: {int(state.nonfinite_in_a_row)} non-finite losses, gradients or updates in a row, each "
            f"skipped (limit training.max_consecutive_nonfinite={training.max_consecutive_nonfinite}); {kept}. "
            f"Lower training.learning_rate (now {training.learning_rate:g}) or check the data")


def open_writer(trainer: Trainer, workdir: Path, primary: bool) -> reporting.MetricsWriter:
    cfg = trainer.cfg
    wandb = ({"project": cfg.logging.project, "entity": cfg.logging.entity, "mode": cfg.logging.wandb_mode}
             if cfg.logging.wandb else None)
    return reporting.MetricsWriter(workdir, tensorboard=cfg.logging.tensorboard, wandb=wandb,
                                   config=config_dict(cfg), enabled=primary)


def train_and_evaluate(cfg, workdir) -> dict:
    """Runs (or resumes) a fine-tuning run in `workdir`; returns a summary dict."""
    t_start = time.time()
    trainer, run_dir, primary = start_run(cfg, workdir)
    cfg, training, workdir = trainer.cfg, trainer.cfg.training, run_dir.path
    manager = writer = prefetch = None
    stop = StopSignals().install()
    try:
        manager = train_state.state_manager(workdir / "checkpoints")
        state, best_val, resumed = restore_or_init(trainer, manager, workdir, training.resume, primary)
        if primary:  # after the restore: a run whose state cannot be restored keeps its config
            (workdir / "config.json").write_text(cfg.to_json_best_effort(indent=2))
            (workdir / "model_config.json").write_text(json.dumps(trainer.model_cfg.to_dict(), indent=2))
            run_dir.write_identity(trainer.identity())
        n_trainable = param_tree.count(state.trainable)
        print(f"trainable parameters ({trainer.trainable_set}): {n_trainable:,}; "
              f"frozen: {param_tree.count(trainer.frozen):,}; "
              f"devices: {jax.device_count()}; precision: {cfg.model.precision}; dt: {cfg.physics.dt:.9g}"
              + (f"; time difference: {steps.time_scheme(cfg)}" if cfg.training.residual != "window" else ""))
        writer = open_writer(trainer, workdir, primary)
        first_val = last_val = None
        if not resumed:
            first_val, _, _ = evaluate_and_checkpoint(trainer, state, 0, best_val, workdir, manager, writer, primary)
            print("step 0: " + _fmt(first_val))
        step = start_step = int(state.step)  # the step counter lives on the host: no device sync per step
        prefetch = loader.prefetch(trainer.train_batch, range(start_step, training.max_steps),
                                     depth=cfg.dataloader.prefetch)
        bar = make_progress(training.max_steps, "train", unit="step", initial=start_step,
                            every=cfg.logging.log_interval)
        t_last, s_last = time.time(), start_step
        for batch in prefetch:
            state, m = trainer.train_step(state, trainer.frozen, trainer.shard_batch(batch))
            step += 1
            if every(step, cfg.logging.log_interval, training.max_steps):
                rate = (step - s_last) / max(time.time() - t_last, 1e-9)
                t_last, s_last = time.time(), step
                log_step(trainer, state, m, step, rate, writer, bar, manager)
            bar.update(1)
            if every(step, training.eval_every_steps, training.max_steps):
                last_val, best_val, improved = evaluate_and_checkpoint(
                    trainer, state, step, best_val, workdir, manager, writer, primary)
                bar.write(f"step {step}: " + _fmt(last_val) + ("  (best, adapters saved)" if improved else ""))
            requested = stop.agreed()
            if requested and not every(step, training.eval_every_steps, training.max_steps):
                train_state.save_state(manager, step, state, best_val)
            if requested:
                raise TrainingInterrupted(f"stopped at step {step}; checkpoint saved in {manager.directory}",
                                          requested)
        bar.close()
        writer.hparams(_scalars(config_dict(cfg)), {"best_val": best_val})
    except Exception as e:
        if not disk.is_disk_full(e):
            raise
        # A checkpoint, the adapters or a log line did not fit: the step before is intact.
        raise disk.DiskFullError(f"{disk.disk_full_message(workdir, None)} while training; the checkpoints "
                                 f"already in {workdir / 'checkpoints'} are kept: free some space and resume "
                                 "with --config.training.resume=True") from e
    finally:
        stop.restore()
        for closable in (prefetch, writer, manager):
            if closable is not None:
                closable.close()
        run_dir.unlock()
    summary = write_summary(trainer, state, best_val, first_val, last_val, workdir, time.time() - t_start, primary)
    check_result(trainer, summary, last_val)
    return summary


def check_result(trainer: Trainer, summary: dict, last_val: dict | None) -> None:
    """A run that ends without best adapters says why: no evaluation gave a finite
    validation value (an error: nothing was learnt that can be used), or every
    evaluation fell within the warmup (a note)."""
    if summary["best_adapters"] is not None:
        return
    key, training = selection_key(trainer.cfg), trainer.cfg.training
    value = None if last_val is None else last_val.get(key)
    if value is not None and math.isfinite(value):
        print(f"note: no evaluation after the warmup (training.warmup_steps={training.warmup_steps}, "
              f"max_steps={training.max_steps}): no best_adapters were selected", file=sys.stderr)
        return
    raise NonFiniteTraining(
        f"no evaluation gave a finite {key} (last: {value}); no best_adapters were written. The run's checkpoints "
        f"and log are in {summary['save_dir']}. Check the data (fields far beyond float32's range?) and "
        f"training.learning_rate ({training.learning_rate:g})")


def write_summary(trainer, state, best_val, first_val, last_val, workdir: Path, wall_s: float, primary: bool) -> dict:
    summary = {
        "save_dir": str(workdir), "steps": int(state.step), "trainable_params": param_tree.count(state.trainable),
        "nonfinite_total": int(state.nonfinite_total), "best_val": best_val,
        "selected_by": selection_key(trainer.cfg),
        "first_val": first_val, "last_val": last_val, "wall_s": wall_s,
        "metrics": str(workdir / "metrics.jsonl"), "plots": str(workdir / "plots"),
        # only a result that exists: a run with no finite validation value selects none
        "best_adapters": str(workdir / "best_adapters") if (workdir / "best_adapters").is_dir() else None,
    }
    if primary:
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


def _scalars(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_scalars(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float, str, bool)):
            out[f"{prefix}{k}"] = v
    return out


def _fmt(val: dict) -> str:
    keys = ("val/loss", "val/pde_loss", "val/precond_loss", "val/vrmse", "val/constraint_error", "val/nrmse", "val/pred_frame_change", "val/true_frame_change")
    return ", ".join(f"{k.split('/')[1]}={val[k]:.4e}" for k in keys if k in val)
