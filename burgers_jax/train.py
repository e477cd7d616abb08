"""LoRA fine-tuning of the ported PDECausalModel on the Burgers PDE residual.

    python -m burgers_jax.train --config configs/burgers.py [--config.a.b=value ...]

The entry point only parses flags; `train_and_evaluate(config, workdir)` does the work
and is what tests call on tiny configs. See configs/burgers.py for the runbook.

Data parallelism: the global batch is split over a 1-D `data` mesh of all devices
(jit with a sharded batch; params replicated), so gradients are averaged by the
compiler. Multi-host: call `jax.distributed.initialize()` on every host first
(`--config.training.distributed=True` does that); each host then feeds the same
stateless batches, as in the single-host case.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from burgers_jax import checkpoint as ckpt_io
from burgers_jax import data as data_lib
from burgers_jax import model as model_lib
from burgers_jax import partition, reporting, steps
from burgers_jax.model_config import ConfigError, LoraConfig, Policy


class TrainConfigError(ValueError):
    """A configuration that cannot run; raised before any work is done."""


# Keys of a batch that the compiled steps consume (with their leading batch axis).
STEP_KEYS = ("frames", "left", "right", "bottom", "top", "nu")


def check_config(cfg, num_devices: int) -> None:
    tc, dc = cfg.training, cfg.dataset
    problems = []
    try:
        Policy.named(cfg.model.precision)
    except ConfigError as e:
        problems.append(f"model.precision: {e}")
    if not cfg.model.pretrained_path or not Path(cfg.model.pretrained_path).is_dir():
        problems.append(f"model.pretrained_path={cfg.model.pretrained_path!r} is not a directory "
                        "(convert best.pt with porting/convert_ckpt.py first)")
    if cfg.model.lora.r <= 0:
        problems.append(f"model.lora.r={cfg.model.lora.r}: LoRA fine-tuning needs r > 0")
    if dc.source not in ("hdf5", "analytic"):
        problems.append(f"dataset.source={dc.source!r} is not 'hdf5' or 'analytic'")
    if dc.source == "hdf5" and not Path(dc.path).is_file():
        problems.append(f"dataset.path={dc.path!r} does not exist")
    for name in ("batch_size", "val_batch_size"):
        b = cfg.dataloader[name]
        if b <= 0 or b % num_devices:
            problems.append(f"dataloader.{name}={b} is not a positive multiple of the "
                            f"{num_devices} devices")
    if tc.max_steps <= tc.warmup_steps:
        problems.append(f"training.max_steps={tc.max_steps} must exceed "
                        f"training.warmup_steps={tc.warmup_steps}")
    if tc.eval_every_steps <= 0 or cfg.logging.log_interval <= 0:
        problems.append("training.eval_every_steps and logging.log_interval must be positive")
    if dc.temporal_length < 1:
        problems.append(f"dataset.temporal_length={dc.temporal_length} must be >= 1")
    if problems:
        raise TrainConfigError("bad configuration:\n  " + "\n  ".join(problems))


def build_data(cfg):
    dc = cfg.dataset
    if dc.source == "hdf5":
        source = data_lib.HDF5Source(dc.path)
    else:
        source = data_lib.AnalyticSource.reference(
            num_samples=dc.num_samples, seed=dc.seed, nu_range=(dc.nu_min, dc.nu_max),
            num_frames=dc.num_frames, resolution=dc.resolution)
    if source.resolution != 128:
        raise TrainConfigError(f"dataset resolution {source.resolution}: the model needs 128x128")
    if abs(source.dt - cfg.physics.dt) > 1e-9 * max(1.0, cfg.physics.dt):
        raise TrainConfigError(f"physics.dt={cfg.physics.dt} disagrees with the data's time step "
                               f"{source.dt} ({dc.source} source)")
    train_idx, val_idx = data_lib.split_indices(source.num_samples, dc.train_ratio, dc.seed)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise TrainConfigError(f"dataset has {source.num_samples} samples: the split with "
                               f"train_ratio={dc.train_ratio} leaves no train or no validation sample")
    return source, train_idx, val_idx


def load_params(cfg, rng):
    """Converted base weights + LoRA adapters (from `model.lora.init_path`, or fresh)."""
    lc = cfg.model.lora
    want = LoraConfig(r=int(lc.r), alpha=float(lc.alpha), dropout=float(lc.dropout),
                      target_modules=tuple(lc.target_modules))
    init_path = lc.get("init_path", None)
    params, model_cfg = ckpt_io.load_model(cfg.model.pretrained_path, init_path or None)
    tokens = cfg.dataset.temporal_length * model_cfg.tokens_per_frame
    if tokens > model_cfg.transformer.max_position_embeddings:
        raise TrainConfigError(f"dataset.temporal_length={cfg.dataset.temporal_length} gives {tokens} "
                               f"tokens > max_position_embeddings={model_cfg.transformer.max_position_embeddings}")
    if init_path:
        got = model_cfg.lora
        if (got.r, got.alpha, sorted(got.target_modules)) != (want.r, want.alpha, sorted(want.target_modules)):
            raise TrainConfigError(f"model.lora.init_path={init_path}: adapters have r={got.r}, alpha={got.alpha}, "
                                   f"targets {sorted(got.target_modules)}; config has r={lc.r}, alpha={lc.alpha}, "
                                   f"targets {sorted(want.target_modules)}")
        model_cfg = model_cfg.with_lora(want)
    else:
        # A base checkpoint might carry adapters of its own: start from fresh ones.
        model_cfg = model_cfg.with_lora(want)
        params = model_lib.add_lora(partition.strip_adapters(params), model_cfg, rng)
    return model_lib.cast_params(params, Policy.named(cfg.model.precision)), model_cfg


class Trainer:
    """The compiled steps, the mesh, the data and the frozen weights of one training run."""

    def __init__(self, cfg):
        self.cfg = cfg
        devices = jax.devices()
        if cfg.training.get("num_devices", 0):
            devices = devices[: cfg.training.num_devices]
        check_config(cfg, len(devices))
        self.mesh = Mesh(np.asarray(devices), ("data",))
        self.batch_sharding = NamedSharding(self.mesh, P("data"))
        self.replicated = NamedSharding(self.mesh, P())

        self.source, self.train_idx, self.val_idx = build_data(cfg)
        root = jax.random.PRNGKey(cfg.training.seed)
        k_lora, self.k_train = jax.random.split(root)
        params, self.model_cfg = load_params(cfg, k_lora)
        self.model = model_lib.PDECausalModel(
            config=self.model_cfg, policy=Policy.named(cfg.model.precision), remat=bool(cfg.model.remat))
        adapters, frozen = partition.split(params)
        self.frozen = jax.device_put(frozen, self.replicated)
        mask = partition.adapter_mask(params)
        self.tx = steps.make_optimizer(cfg.training, mask)
        self.init_adapters = adapters
        self.train_step = jax.jit(steps.make_train_step(self.model, self.tx, cfg), donate_argnums=(0,))
        self.eval_step = jax.jit(steps.make_eval_step(self.model, cfg))
        # A fresh iterator per evaluation: the windows are fixed, and are read lazily.
        self.val_batches = lambda: data_lib.val_batches(
            self.source, self.val_idx, cfg.dataloader.val_batch_size, window=cfg.dataset.temporal_length + 1)

    def initial_state(self) -> steps.TrainState:
        full = partition.merge(self.init_adapters, self.frozen)
        opt_state = self.tx.init(full)
        state = steps.TrainState(
            step=jnp.zeros((), jnp.int32), adapters=self.init_adapters, opt_state=opt_state,
            rng=self.k_train, nonfinite_in_a_row=jnp.zeros((), jnp.int32),
            nonfinite_total=jnp.zeros((), jnp.int32))
        return jax.device_put(state, self.replicated)

    def shard_batch(self, batch):
        return {k: jax.device_put(batch[k], self.batch_sharding) for k in STEP_KEYS}

    def train_batch(self, step: int):
        # dataset.seed fixes the split (as the reference); training.seed varies the
        # batch order, so two seeds of one split see different stateless streams.
        dc = self.cfg.dataset
        return data_lib.train_batch(self.source, self.train_idx, self.cfg.dataloader.batch_size,
                                    dc.seed + 1000003 * self.cfg.training.seed, step,
                                    window=dc.temporal_length + 1)

    def evaluate(self, adapters) -> tuple[dict, tuple | None]:
        """Validation metrics (`val/...`, means over every window) and, for a plot, the
        first window's `(pred, true, sample)`."""
        sums, count, worst = {}, 0.0, 0.0
        shown = None
        for batch in self.val_batches():
            per_sample, pred = self.eval_step(adapters, self.frozen, self.shard_batch(batch))
            per_sample = jax.device_get(per_sample)
            w = np.asarray(batch["valid"], np.float64)
            count += w.sum()
            for k, v in per_sample.items():
                sums[k] = sums.get(k, 0.0) + float(np.sum(w * v))
            worst = max(worst, float(np.max(np.where(w > 0, per_sample["constraint_error_max"], 0))))
            if shown is None:
                shown = (np.asarray(pred[0]), np.asarray(batch["frames"][0, ..., :2]), int(batch["sample"][0]))
        metrics = {f"val/{k}": v / count for k, v in sums.items() if k != "constraint_error_max"}
        metrics["val/constraint_error_max"] = worst
        return metrics, shown


def every(step: int, n: int, last: int) -> bool:
    """True at every n-th step and at the last one (the log and eval cadence)."""
    return step % n == 0 or step == last


def open_run_dir(workdir: Path, cfg, model_cfg) -> Path:
    """Creates the run directory and writes its configs; refuses one that already holds a
    run unless `training.resume`."""
    ckpt_dir = workdir / "checkpoints"
    if ckpt_dir.exists() and any(ckpt_dir.iterdir()) and not cfg.training.resume:
        raise TrainConfigError(f"logging.save_dir={workdir} already holds a run; pass "
                               "--config.training.resume=True to continue it or choose another save_dir")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(cfg.to_json_best_effort(indent=2))
    (workdir / "model_config.json").write_text(json.dumps(model_cfg.to_dict(), indent=2))
    return workdir


def restore_or_init(trainer: Trainer, manager, workdir: Path, resume: bool):
    """-> (state, best validation loss, resumed?): the latest checkpoint when resuming,
    else the initial state. A resumed run drops log lines written after its checkpoint."""
    state = trainer.initial_state()
    if resume and manager.latest_step() is not None:
        restored, best_val = ckpt_io.restore_state(manager, state)
        state = jax.device_put(restored, trainer.replicated)
        dropped = reporting.truncate_metrics(workdir / "metrics.jsonl", int(state.step))
        print(f"resumed from {manager.directory} at step {int(state.step)} (dropped {dropped} log lines after it)")
        return state, best_val, True
    if resume:
        print(f"training.resume=True but {manager.directory} has no checkpoint: starting from step 0")
    return state, math.inf, False


def evaluate_and_checkpoint(trainer: Trainer, state, step: int, best_val: float, workdir: Path, manager,
                            writer) -> tuple[dict, float, bool]:
    """Validation at `step`: metrics logged, a plot, the best adapters saved (after
    warmup, when the PDE loss improves) and the training state checkpointed.
    -> (metrics, best validation loss, improved?)."""
    cfg = trainer.cfg
    val, shown = trainer.evaluate(state.adapters)
    if cfg.logging.plots and shown is not None:
        pred, true, sample = shown
        reporting.plot_validation_window(
            pred, true, workdir / "plots" / f"val_step{step:06d}.png",
            title=f"step {step}, validation sample {sample}, last frame; val PDE loss {val['val/pde_loss']:.3e}")
    if step == 0:  # the zero-shot baseline: no checkpoint, no best adapters
        writer.write(0, val)
        return val, best_val, False
    improved = step >= cfg.training.warmup_steps and val["val/pde_loss"] < best_val
    if improved:
        best_val = val["val/pde_loss"]
        ckpt_io.save_adapters(workdir / "best_adapters", jax.device_get(state.adapters), trainer.model_cfg.lora,
                              metadata={"step": step, "val/pde_loss": best_val})
    writer.write(step, {**val, "val/best_pde_loss": best_val})
    ckpt_io.save_state(manager, step, state, best_val)
    return val, best_val, improved


def train_and_evaluate(cfg, workdir) -> dict:
    """Runs (or resumes) a fine-tuning run in `workdir`; returns a summary dict."""
    from absl import logging as absl_logging
    from tqdm import tqdm

    absl_logging.set_verbosity(absl_logging.ERROR)  # orbax logs every save at INFO/WARNING
    if cfg.training.get("distributed", False):
        jax.distributed.initialize()
    t_start = time.time()
    trainer = Trainer(cfg)
    training = cfg.training
    workdir = open_run_dir(Path(workdir), cfg, trainer.model_cfg)
    manager = ckpt_io.state_manager(workdir / "checkpoints")
    state, best_val, resumed = restore_or_init(trainer, manager, workdir, training.resume)

    n_trainable = partition.count(state.adapters)
    print(f"trainable (LoRA) parameters: {n_trainable:,}; frozen: {partition.count(trainer.frozen):,}; "
          f"devices: {jax.device_count()}; precision: {cfg.model.precision}")
    writer = reporting.MetricsWriter(workdir, tensorboard=cfg.logging.tensorboard)
    first_val = last_val = None
    prefetch = None
    try:
        if not resumed:
            first_val, _, _ = evaluate_and_checkpoint(trainer, state, 0, best_val, workdir, manager, writer)
            print("step 0: " + _fmt(first_val))

        start_step = int(state.step)
        prefetch = data_lib.Prefetcher(trainer.train_batch, range(start_step, training.max_steps),
                                       depth=cfg.dataloader.prefetch)
        bar = tqdm(total=training.max_steps, initial=start_step, desc="train", dynamic_ncols=True,
                   disable=None)  # None: shown on a terminal, silent in logs and CI
        t_last, s_last = time.time(), start_step
        for batch in prefetch:
            state, m = trainer.train_step(state, trainer.frozen, trainer.shard_batch(batch))
            step = int(state.step)
            bar.update(1)
            if every(step, cfg.logging.log_interval, training.max_steps):
                m = jax.device_get(m)
                rate = (step - s_last) / max(time.time() - t_last, 1e-9)
                t_last, s_last = time.time(), step
                record = {f"train/{k}": v for k, v in m.items()}
                record["train/steps_per_s"] = rate
                record["train/nonfinite_total"] = int(state.nonfinite_total)
                writer.write(step, record)
                bar.set_postfix(loss=f"{float(m['loss']):.3e}", lr=f"{float(m['lr']):.2e}", it_s=f"{rate:.2f}")
            if int(state.nonfinite_in_a_row) > training.max_consecutive_nonfinite:
                raise FloatingPointError(
                    f"step {step}: {int(state.nonfinite_in_a_row)} non-finite losses or gradients in a row "
                    f"(limit training.max_consecutive_nonfinite={training.max_consecutive_nonfinite}); "
                    f"last checkpoint kept in {manager.directory}")
            if every(step, training.eval_every_steps, training.max_steps):
                last_val, best_val, improved = evaluate_and_checkpoint(
                    trainer, state, step, best_val, workdir, manager, writer)
                bar.write(f"step {step}: " + _fmt(last_val) + ("  (best, adapters saved)" if improved else ""))
        bar.close()
    finally:
        if prefetch is not None:
            prefetch.close()
        writer.close()
        manager.close()

    summary = {
        "save_dir": str(workdir), "steps": int(state.step), "trainable_params": n_trainable,
        "nonfinite_total": int(state.nonfinite_total), "best_val_pde_loss": best_val,
        "first_val": first_val, "last_val": last_val, "wall_s": time.time() - t_start,
        "metrics": str(workdir / "metrics.jsonl"), "plots": str(workdir / "plots"),
        "best_adapters": str(workdir / "best_adapters"),
    }
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


def _fmt(val: dict) -> str:
    keys = ("val/pde_loss", "val/constraint_error", "val/nrmse", "val/pred_frame_change", "val/true_frame_change")
    return ", ".join(f"{k.split('/')[1]}={val[k]:.4e}" for k in keys if k in val)


def main(argv=None) -> None:
    from absl import app, flags
    from ml_collections import config_flags

    flags.DEFINE_string("workdir", None, "Run directory (default: the config's logging.save_dir).")
    config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).", lock_config=True)

    def run(_):
        cfg = flags.FLAGS.config
        if cfg is None:
            raise app.UsageError("--config is required, e.g. --config configs/burgers.py")
        try:
            summary = train_and_evaluate(cfg, flags.FLAGS.workdir or cfg.logging.save_dir)
        except (TrainConfigError, data_lib.DataError, ckpt_io.CheckpointError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        print(json.dumps({k: summary[k] for k in ("save_dir", "steps", "best_val_pde_loss", "metrics",
                                                    "plots", "best_adapters", "wall_s")}, indent=2, default=float))

    app.run(run, argv=argv)


if __name__ == "__main__":
    main()
