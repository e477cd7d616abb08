"""What a training run is made of, checked before any work: the config, the data (and
its time step), the parameters (base weights + adapters). The command line and its help
are `burgers_jax.train`'s.

Every config problem is found up front and reported together, each naming its field.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import sys
from pathlib import Path

from burgers_jax.configs import flat_leaves
from burgers_jax.data import sources as data_lib
from burgers_jax.errors import TrainConfigError, UserError  # noqa: F401 (TrainConfigError: re-exported)
from burgers_jax.io import checkpoint as ckpt_io
from burgers_jax.model import attention, param_tree
from burgers_jax.model import lora as lora_lib
from burgers_jax.model.config import ATTENTION_PROJECTIONS, GRID, MLP_PROJECTIONS, ConfigError, LoraConfig, Policy
from burgers_jax.model.transformer import remat_mode
from burgers_jax.training import steps

# dt agreement between the data's time axis and an explicit physics.dt: the PyTorch YAML
# writes 1/999 as 0.001001001 (relative difference 1e-9).




def _optimizer_problems(training, log_interval) -> list[str]:
    t = training
    problems = []
    if not t.learning_rate > 0:
        problems.append(f"training.learning_rate={t.learning_rate} must be > 0 (a negative rate ascends the loss)")
    if not 0 <= t.min_lr <= max(t.learning_rate, 0):
        problems.append(f"training.min_lr={t.min_lr} must be in [0, learning_rate={t.learning_rate}]")
    betas = tuple(t.betas)
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        problems.append(f"training.betas={betas} must be two numbers in [0, 1)")
    if not t.grad_clip > 0:
        problems.append(f"training.grad_clip={t.grad_clip} must be > 0")
    if not t.weight_decay >= 0:
        problems.append(f"training.weight_decay={t.weight_decay} must be >= 0")
    sched = getattr(t, "schedule_steps", None)
    if sched is not None and not sched > t.warmup_steps:
        problems.append(f"training.schedule_steps={sched} must exceed training.warmup_steps={t.warmup_steps} "
                        "(or None: max_steps)")
    if t.warmup_steps < 0 or t.max_steps <= t.warmup_steps:
        problems.append(f"training.max_steps={t.max_steps} must exceed training.warmup_steps={t.warmup_steps} >= 0")
    for name, value in (("training.eval_every_steps", t.eval_every_steps), ("logging.log_interval", log_interval)):
        if value < 1:
            problems.append(f"{name}={value} must be >= 1")
    if t.lambda_pde < 0 or t.lambda_data < 0 or t.lambda_pde + t.lambda_data <= 0:
        problems.append(f"training.lambda_pde={t.lambda_pde}, lambda_data={t.lambda_data}: both >= 0, not both 0")
    return problems


def _nonfinite_fields(cfg) -> list[str]:
    """Every float field that is NaN or infinite: a NaN weight or rate passes every `<`
    test below (all comparisons with NaN are false), and a NaN loss skips every update."""
    return [f"{path}={value} must be a finite number" for path, value in flat_leaves(cfg)
            if isinstance(value, float) and not math.isfinite(value)]


def _lora_rank_problems(model) -> list[str]:
    """A rank above the smallest dimension of an adapted kernel adds parameters (and disk)
    but no expressiveness: A B of a [in, out] kernel has rank <= min(in, out). The widths
    come from the base model's model_config.json (its absence is load_params' to report)."""
    lc = model.lora
    known = ATTENTION_PROJECTIONS + MLP_PROJECTIONS
    unknown = sorted(set(lc.target_modules) - set(known))
    if unknown:
        return [f"model.lora.target_modules has unknown names {unknown}; known: {', '.join(known)}"]
    if not model.pretrained_path or not Path(model.pretrained_path).is_dir():
        return []  # reported by check_config
    try:
        shapes = ckpt_io.load_model_config(model.pretrained_path).transformer.projection_shapes()
    except UserError:
        return []
    widths = {name: min(shapes[name]) for name in lc.target_modules}
    if not widths:
        return []
    limit = min(widths.values())
    if lc.r > limit:
        narrowest = sorted(name for name, w in widths.items() if w == limit)
        return [f"model.lora.r={lc.r} exceeds {limit}, the smallest dimension of the adapted kernels "
                f"({', '.join(narrowest)}: {shapes[narrowest[0]][0]}x{shapes[narrowest[0]][1]}); a higher rank "
                f"adds parameters but no expressiveness: use r <= {limit}"]
    return []


def check_config(cfg, num_devices: int) -> None:
    """Raises TrainConfigError listing every problem of `cfg`, each naming its field."""
    dc, lc = cfg.dataset, cfg.model.lora
    nonfinite = _nonfinite_fields(cfg)
    if nonfinite:  # the checks below compare numbers; report these alone
        raise TrainConfigError("bad configuration:\n  " + "\n  ".join(nonfinite))
    problems = _optimizer_problems(cfg.training, cfg.logging.log_interval)
    try:
        Policy.named(cfg.model.precision)
    except ConfigError as e:
        problems.append(f"model.precision: {e}")
    try:
        remat_mode(cfg.model.remat)
    except ValueError as e:
        problems.append(str(e))
    if cfg.model.attention not in attention.IMPLS:
        problems.append(f"model.attention={cfg.model.attention!r}: one of {', '.join(attention.IMPLS)}")
    if not cfg.model.pretrained_path or not Path(cfg.model.pretrained_path).is_dir():
        problems.append(f"model.pretrained_path={cfg.model.pretrained_path!r} is not a directory "
                        "(convert best.pt with burgers-convert first)")
    if lc.r <= 0:
        problems.append(f"model.lora.r={lc.r}: LoRA fine-tuning needs r > 0")
    else:
        problems += _lora_rank_problems(cfg.model)
    if not lc.alpha > 0 or not 0 <= lc.dropout < 1:
        problems.append(f"model.lora.alpha={lc.alpha} must be > 0 and model.lora.dropout={lc.dropout} in [0, 1)")
    if lc.init_path and not Path(lc.init_path).is_dir():
        problems.append(f"model.lora.init_path={lc.init_path!r} is not an adapters directory")
    if dc.source not in ("hdf5", "analytic"):
        problems.append(f"dataset.source={dc.source!r} is not 'hdf5' or 'analytic'")
    if dc.source == "hdf5" and not Path(dc.path).is_file():
        problems.append(f"dataset.path={dc.path!r} does not exist")
    if not 0 < dc.train_ratio < 1:
        problems.append(f"dataset.train_ratio={dc.train_ratio} must be in (0, 1)")
    for name in ("batch_size", "val_batch_size"):
        b = cfg.dataloader[name]
        if b <= 0 or b % num_devices:
            problems.append(f"dataloader.{name}={b} is not a positive multiple of the {num_devices} devices")
    if dc.temporal_length < 1:
        problems.append(f"dataset.temporal_length={dc.temporal_length} must be >= 1")
    if dc.frame_stride < 1:
        problems.append(f"dataset.frame_stride={dc.frame_stride} must be >= 1")
    if cfg.training.lambda_bc < 0:
        problems.append(f"training.lambda_bc={cfg.training.lambda_bc} must be >= 0")
    if cfg.model.trainable not in param_tree.TRAINABLE_SETS:
        problems.append(f"model.trainable={cfg.model.trainable!r} is not one of {', '.join(param_tree.TRAINABLE_SETS)}")
    if cfg.physics.dt is not None and not cfg.physics.dt > 0:
        problems.append(f"physics.dt={cfg.physics.dt} must be > 0 (or None: from the data)")
    tr = cfg.training
    if tr.residual not in steps.RESIDUALS:
        problems.append(f"training.residual={tr.residual!r} is not one of {', '.join(steps.RESIDUALS)}")
    if tr.residual_scheme not in steps.SCHEMES:
        problems.append(f"training.residual_scheme={tr.residual_scheme!r} is not one of {', '.join(steps.SCHEMES)}")
    if tr.residual == "precond" and dc.temporal_length < 2:
        problems.append(f"training.residual='precond' normalises by the input increments: it needs "
                        f"dataset.temporal_length >= 2, got {dc.temporal_length}")
    if tr.pushforward_steps < 0 or not 0 <= tr.pushforward_prob <= 1:
        problems.append(f"training.pushforward_steps={tr.pushforward_steps} must be >= 0 and "
                        f"training.pushforward_prob={tr.pushforward_prob} in [0, 1]")
    if problems:
        raise TrainConfigError("bad configuration:\n  " + "\n  ".join(problems))


def build_data(cfg):
    """-> (source, train indices, validation indices, dt, note); windows of
    temporal_length + 1 frames must fit every sample."""
    dc = cfg.dataset
    window = steps.window_span(cfg)
    stride = int(dc.frame_stride)
    if dc.source == "hdf5":
        source = data_lib.HDF5Source(dc.path, min_frames=data_lib.span(window, stride))
    else:
        source = data_lib.AnalyticSource.reference(
            num_samples=dc.num_samples, seed=dc.seed, nu_range=(dc.nu_min, dc.nu_max),
            num_frames=dc.num_frames, resolution=dc.resolution)
    if source.resolution != GRID:
        raise TrainConfigError(f"dataset resolution {source.resolution}: the model needs {GRID}x{GRID}")
    if source.num_frames < data_lib.span(window, stride):
        raise TrainConfigError(f"dataset.temporal_length={dc.temporal_length} with frame_stride={stride} needs "
                               f"{data_lib.span(window, stride)} frames; {source.name} has {source.num_frames}")
    dt, note = data_lib.resolve_dt(cfg.physics.dt, source.dt, source.name, flag="physics.dt")
    train_idx, val_idx = data_lib.split_indices(source.num_samples, dc.train_ratio, dc.seed)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise TrainConfigError(f"dataset has {source.num_samples} samples: the split with "
                               f"train_ratio={dc.train_ratio} leaves no train or no validation sample")
    return source, train_idx, val_idx, dt, note


def with_dt(cfg, dt: float):
    """A copy of `cfg` whose physics.dt is the resolved time step (saved with the run)."""
    out = copy.deepcopy(cfg)
    out.physics.dt = float(dt)
    return out


def load_params(cfg, rng, policy: Policy):
    """Converted base weights + LoRA adapters (from `model.lora.init_path`, or fresh), cast
    to `policy` (the trainable leaves stay float32)
    -> (params, model config, the base's identity: `checkpoint.base_identity`)."""
    lc = cfg.model.lora
    want = LoraConfig(r=int(lc.r), alpha=float(lc.alpha), dropout=float(lc.dropout),
                      target_modules=tuple(lc.target_modules))
    init_path = lc.init_path
    base, model_cfg = ckpt_io.load_converted(cfg.model.pretrained_path)
    identity = ckpt_io.base_identity(base, cfg.model.pretrained_path)
    params, model_cfg = ckpt_io.apply_result(base, model_cfg, cfg.model.pretrained_path, init_path or None,
                                             allow_other_base=bool(cfg.model.get("allow_other_base", False)),
                                             allow_hint="--config.model.allow_other_base=True", identity=identity)
    tokens = cfg.dataset.temporal_length * model_cfg.tokens_per_frame
    if tokens > model_cfg.transformer.max_position_embeddings:
        raise TrainConfigError(f"dataset.temporal_length={cfg.dataset.temporal_length} gives {tokens} "
                               f"tokens > max_position_embeddings={model_cfg.transformer.max_position_embeddings}")
    _check_architecture(cfg.model.expected_architecture, model_cfg, cfg.model.pretrained_path)
    model_cfg = dataclasses.replace(model_cfg, noise_level=float(cfg.model.noise_level))
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
        params = lora_lib.add_lora(param_tree.strip_adapters(params), model_cfg, rng)
    trainable = cfg.model.trainable
    keep_float32 = lambda path: param_tree.label_of(path, trainable) == param_tree.TRAINABLE  # noqa: E731
    return lora_lib.cast_params(params, policy, keep_float32), model_cfg, identity


def _check_architecture(expected_json: str, model_cfg, pretrained_path: str) -> None:
    """The architecture a YAML declares must be the checkpoint's (as the PyTorch script's
    strict load would insist)."""
    if not expected_json:
        return
    have = model_cfg.to_dict()
    problems = []
    for section, fields in json.loads(expected_json).items():
        for field, value in fields.items():
            if field in have.get(section, {}):
                got = have[section][field]
                if (list(value) if isinstance(value, (list, tuple)) else value) != got:
                    problems.append(f"model.{section}.{field}={value!r} but the checkpoint has {got!r}")
    if problems:
        raise TrainConfigError(f"the config's architecture disagrees with {pretrained_path}: " + "; ".join(problems))


# ----------------------------------------------------------------------------- recipes known to fail

# The all-bf16 `reference` policy rounds the model's input and output to bf16, whose
# spacing near the Burgers fields' |u| ~ 0.75 is 2**-8 = 3.9e-3. The reference data's
# fastest change is |u_t| <= 1/(512 nu) = 0.02 at nu = 0.1, so one step's change stays
# below half that spacing up to a step of ~0.1: measured on the reference trajectories,
# the bf16-rounded change of one frame is 0 at dt = 1/999 (no cell changes), 5x off at
# 1e-2 and 1.2x off at 0.1. docs/results.md: at dt = 1/999 the recipe's PDE loss barely
# moves and the model gets worse.
BF16_BLIND_STEP = 0.1


def recipe_warnings(cfg, dt: float) -> list[str]:
    """One-line warnings for a run that selects a recipe the project's results show
    failing; `dt` is the data's frame spacing (the window step is dt * frame_stride)."""
    warnings = []
    step = float(dt) * int(cfg.dataset.frame_stride)
    if cfg.model.precision == "reference" and step < BF16_BLIND_STEP:
        warnings.append(
            f"model.precision='reference' (all bf16) at a time step of {step:.3g}: bf16 cannot represent one "
            f"step's change of the fields (below ~{BF16_BLIND_STEP:g}), so the PDE residual cannot see the "
            "dynamics and the model gets worse (docs/results.md); use --config.model.precision=float32 "
            "(configs/burgers.py, its default)")
    if cfg.training.residual == "window":
        warnings.append(
            "training.residual='window' (the PyTorch recipe's residual of [input frame 0, predictions]) closed "
            "35 % of the gap to supervised training on the stand-in and its rollouts ended worse than the "
            "pretrained model's, where the default 'precond' closed 96 % (docs/results.md); expect the validation "
            "VRMSE to grow while the loss falls. The recommended recipe: configs/burgers.py without ':reference'")
    return warnings


def print_recipe_warnings(cfg, dt: float, file=None) -> list[str]:
    """Prints `recipe_warnings` as `warning: ...` lines (stderr); -> them."""
    warnings = recipe_warnings(cfg, dt)
    for line in warnings:
        print(f"warning: {line}", file=file or sys.stderr, flush=True)
    return warnings
