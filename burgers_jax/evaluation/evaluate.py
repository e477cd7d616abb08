"""Evaluates a model on Burgers windows against the truth and two baselines (the library
behind `burgers-evaluate`).

Windows are deterministic and cover every sample of the split (training's split,
`data.sources.split_indices`, with the run's train ratio and seed); their
`(sample, start)` pairs are written out.

One step (teacher forced: T true frames in, the T predicted next frames out), for three
methods: the model; persistence (next frame = this frame: at dt = 1/999 already an
excellent predictor); the truth rounded to the model's output dtype (the floor). Per
method: PDE loss and the RMS of the residual's parts (u_t, advection, diffusion) on the
window [input frame 0, predictions], the constraint error |u + v - 1.5| (mean, max),
RMSE, nRMSE, VRMSE, bRMSE, fRMSE in low/mid/high wavenumber bands (periodic FFT and,
for these non-periodic fields, DCT) and, with T >= 2, the label-free preconditioned loss
(~1 for persistence; burgers_jax/physics/metrics.py defines each); the per-window VRMSE
(for intervals).

Rollout (`--rollout N`): the model fed its own predictions (a sliding window of T
frames) for N steps; VRMSE and nRMSE against the truth at each horizon, for the model and
for persistence (the last true frame, held); the last horizon up to which the model
beats persistence at every step, and h* (`crossover_horizon`): the first horizon from
which it beats persistence at every later one.

Out: metrics.json (`windows`, `one_step.{model,persistence,truth}.{...}`,
`rollout.{horizons,model,persistence,...}`), metrics.md (the tables), rollout.png (error
vs horizon), window.png (fields and errors of the first window) and example_window.npz
(that window's last frame: `true`, and the one-step `model`, `persistence` and `floor`
predictions, [H, W, 2] float32; `sample`, `start`, `frame`, `t`, `nu`), from which
`burgers-compare` draws several evaluations' errors of the same window.

Shapes: B windows, T frames, H/W grid (128), last axis (u, v).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from burgers_jax.data import loader
from burgers_jax.data import sources as data_lib
from burgers_jax.errors import UserError
from burgers_jax.evaluation import report
from burgers_jax.io import outputs
from burgers_jax.io.checkpoint import load_metadata, load_model
from burgers_jax.io.progress import progress
from burgers_jax.model.config import GRID, Policy
from burgers_jax.model.network import PDECausalModel, forward_and_rollout
from burgers_jax.physics import metrics
from burgers_jax.physics.boundaries import Boundaries
from burgers_jax.physics.label_free import crossover_horizon

METHODS = ("model", "persistence", "truth")
OUT_KIND = "evaluation"


class EvaluateError(UserError):
    pass


def frame_metrics(pred, true) -> dict:
    return {"vrmse": metrics.vrmse(pred, true), "nrmse": metrics.nrmse(pred, true)}


@dataclasses.dataclass
class EvalRequest:
    """One evaluation, as the `burgers-evaluate` flags describe it (defaults alike)."""
    checkpoint: Path
    out: Path
    lora: Path | None = None
    data: Path | None = None  # an HDF5 file of the Burgers layout, or
    analytic: bool = False  # exact solutions at nu_min..nu_max
    nu_min: float = data_lib.REFERENCE_NU_RANGE[0]
    nu_max: float = data_lib.REFERENCE_NU_RANGE[1]
    num_samples: int = 10
    num_frames: int = 1000
    seed: int = data_lib.REFERENCE_SEED
    split: str | None = None  # val | train | all; default val for data, all for analytic
    # The split: the run's own (recorded in its best_adapters/) when --lora is a run's
    # result, else these flags, else the reference (0.9, 42).
    train_ratio: float | None = None
    split_seed: int | None = None
    frame_stride: int = 1
    temporal_length: int = 16
    rollout: int = 0
    windows_per_sample: int = 1
    precision: str | None = None  # None: the precision the --lora run trained at, else float32
    dt: float | None = None
    batch_size: int = 4
    overwrite: bool = False
    allow_other_base: bool = False  # apply --lora to a base with other weights than the run's


def build_source(req: EvalRequest):
    """-> (source, dt): the analytic source, or the HDF5 file with the one time-step rule
    of training (`data.sources.resolve_dt`: the file's time axis wins over `--dt`)."""
    if req.analytic:
        nus = data_lib.reference_nus(req.num_samples, req.seed, (req.nu_min, req.nu_max))
        source = data_lib.AnalyticSource(nus, num_frames=req.num_frames)
        return source, data_lib.resolve_dt(req.dt, source.dt, "the analytic source (t in [0, 1])", flag="--dt")[0]
    window = data_lib.span(req.temporal_length + max(req.rollout, 1), req.frame_stride)
    source = data_lib.HDF5Source(req.data, min_frames=window)
    if source.resolution != GRID:  # as training refuses it: before the model sees it
        raise EvaluateError(f"{source.name}: {source.resolution}x{source.resolution} grid; the model needs "
                            f"{GRID}x{GRID}")
    dt, note = data_lib.resolve_dt(req.dt, source.dt, source.name, flag="--dt")
    if note:
        print(f"note: {note}")
    return source, dt


def evaluation_windows(source, split: str, window: int, stride: int, per_sample: int,
                       train_ratio: float = data_lib.REFERENCE_TRAIN_RATIO,
                       split_seed: int = data_lib.REFERENCE_SEED) -> list[tuple[int, int]]:
    """Deterministic windows covering every sample of `split`; the split is training's
    (`data.sources.split_indices` with the run's train_ratio and seed)."""
    train_idx, val_idx = data_lib.split_indices(source.num_samples, train_ratio, split_seed)
    idx = {"val": val_idx, "train": train_idx, "all": np.arange(source.num_samples)}[split]
    if len(idx) == 0:
        raise EvaluateError(f"the {split} split of {source.name} is empty ({source.num_samples} samples)")
    return loader.val_windows(source.num_frames, sorted(idx), window, per_sample, stride)


def evaluate(params, config, policy: Policy, source, items, *, temporal_length: int, stride: int, dt: float,
             rollout: int = 0, batch_size: int = 4, show_progress: bool = True) -> dict:
    """The metrics of one evaluation (module docstring) as plain Python numbers."""
    T = temporal_length
    model = PDECausalModel(config, policy=policy)
    window = T + max(rollout, 1)
    step_dt = dt * stride

    @jax.jit
    def evaluate_batch(p, frames, bounds: Boundaries, nu):
        """One program for the one-step metrics and the rollout (one compiled model; the
        rollout starts from the one-step pass's tokens: `forward_and_rollout`)."""
        x, true = frames[:, :T], frames[:, 1:T + 1]
        model_pred, rolled = forward_and_rollout(model, p, x, rollout)
        preds = {"model": model_pred, "persistence": x,
                 "truth": true.astype(policy.output_dtype).astype(jnp.float32)}
        b = bounds.slice_time(T + 1)
        per = {m: metrics.window_metrics(pr, true, frames[:, :1], b, nu, step_dt, x) for m, pr in preds.items()}
        if not rollout:
            return per, preds, None
        true_r = frames[:, T:T + rollout]
        held = jnp.repeat(frames[:, T - 1:T], rollout, axis=1)
        per_h = lambda a: jax.vmap(frame_metrics, in_axes=(1, 1))(a[:, :, None], true_r[:, :, None])  # noqa: E731
        return per, preds, {"model": per_h(rolled), "persistence": per_h(held)}

    sums: dict = {}
    count = 0.0
    shown = None
    per_window: dict = {m: [] for m in METHODS}  # one-step VRMSE of each window (for intervals)
    batches = loader.window_batches(source, items, batch_size, window, stride)
    total = -(-len(items) // batch_size)
    with jax.default_matmul_precision(policy.matmul_precision):
        for batch in progress(batches, desc="evaluate", unit="batch", total=total, enabled=show_progress):
            frames = jnp.asarray(batch["frames"][..., :2])
            bounds = Boundaries.from_mapping(batch).map(jnp.asarray)
            w = np.asarray(batch["valid"], np.float64)
            per, preds, rolled = evaluate_batch(params, frames, bounds, jnp.asarray(batch["nu"]))
            parts = {"one_step": jax.device_get(per)}
            if rollout:
                parts["rollout"] = jax.device_get(rolled)
            _accumulate(sums, parts, w)
            for m in METHODS:
                per_window[m] += [float(v) for v, ok in zip(parts["one_step"][m]["vrmse"], w) if ok > 0]
            count += w.sum()
            if shown is None:  # the first window (items[0]) at its last predicted frame
                shown = {m: np.asarray(pr[0, -1]) for m, pr in preds.items()} | {"true": np.asarray(frames[0, T])}
                sample, start = items[0]
                frame = start + T * stride
                shown["meta"] = {"sample": int(sample), "start": int(start), "frame": int(frame),
                                 "t": frame * dt, "nu": float(batch["nu"][0])}
    result = jax.tree.map(lambda s: s / count, sums)
    result["windows"] = [[int(i), int(s)] for i, s in items]
    result["per_window_vrmse"] = per_window
    if rollout:
        r = result["rollout"]
        r["horizons"] = list(range(1, rollout + 1))
        better = np.asarray(r["model"]["vrmse"]) < np.asarray(r["persistence"]["vrmse"])
        r["model_beats_persistence_until"] = int(np.argmin(better)) if not better.all() else rollout
        # h*: the first horizon from which the model beats persistence at every later one
        r["crossover_horizon"] = crossover_horizon(r["model"]["vrmse"], r["persistence"]["vrmse"])
    return {"result": _plain(result), "shown": shown}


def _accumulate(sums: dict, parts, weights: np.ndarray) -> None:
    for key, value in parts.items():
        if isinstance(value, dict):
            _accumulate(sums.setdefault(key, {}), value, weights)
        else:
            v = np.asarray(value, np.float64)  # [B] or [N, B] (rollout: horizons first)
            sums[key] = sums.get(key, 0.0) + (v * weights).sum(axis=-1)


def _plain(tree):
    if tree is None:  # e.g. no crossover horizon
        return None
    if isinstance(tree, dict):
        return {k: _plain(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_plain(v) for v in tree]
    a = np.asarray(tree)
    if a.ndim:
        return a.tolist()
    return int(a) if np.issubdtype(a.dtype, np.integer) else float(a)


# ----------------------------------------------------------------------------- report


def markdown(result: dict, title: str) -> str:
    return report.metrics_markdown(result, title)


EXAMPLE_FILE = "example_window.npz"


def example_arrays(shown: dict) -> dict:
    """The first window's fields as `example_window.npz` holds them (module docstring)."""
    arrays = {"true": shown["true"], "model": shown["model"], "persistence": shown["persistence"],
              "floor": shown["truth"]}
    return {k: np.asarray(v, np.float32) for k, v in arrays.items()} | dict(shown["meta"])


def plot(result: dict, shown: dict, out: Path) -> list[Path]:
    """rollout.png (with a rollout) and window.png into `out`."""
    from burgers_jax.evaluation import figures

    config = result.get("config", {})
    meta = {"checkpoint": config.get("checkpoint"), "lora": config.get("lora"),
            "window_dt": config.get("window_dt"), **shown.get("meta", {})}
    paths = []
    if "rollout" in result:
        paths.append(figures.save(figures.rollout_figure(result["rollout"], meta), out / "rollout.png"))
    window = figures.window_figure(example_arrays(shown), meta, floor_dtype=config.get("output_dtype", "the output dtype"))
    return paths + [figures.save(window, out / "window.png", dpi=80)]


REFERENCE_SPLIT = (data_lib.REFERENCE_TRAIN_RATIO, data_lib.REFERENCE_SEED)


def recorded_split(adapters_dir: Path) -> dict | None:
    """The `split` record a training run saved in its result's metadata.json (None when
    there is none), its train_ratio and seed checked: a missing or ill-typed field is an
    EvaluateError naming the file and the field."""
    meta_path = Path(adapters_dir) / outputs.METADATA_FILE
    meta = load_metadata(adapters_dir)
    if not isinstance(meta, dict):
        raise EvaluateError(f"{meta_path}: holds a JSON {type(meta).__name__}, not an object")
    record = meta.get("split")
    if record is None:
        return None
    if not isinstance(record, dict):
        raise EvaluateError(f"{meta_path}: field 'split' is a {type(record).__name__}, not an object with "
                            "train_ratio and seed")
    for field, ok, want in (
            ("train_ratio", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1,
             "a number in (0, 1)"),
            ("seed", lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32,
             "an integer in [0, 2**32)")):
        if field not in record:
            raise EvaluateError(f"{meta_path}: the split record lacks field 'split.{field}' (the run's "
                                "data split cannot be known)")
        if not ok(record[field]):
            raise EvaluateError(f"{meta_path}: field 'split.{field}' is {record[field]!r}, not {want}")
    return record


def run_split(req: EvalRequest) -> tuple[float, int, str]:
    """-> (train_ratio, seed, where they came from): explicit flags win, then the split a
    training run recorded with its result (`--lora RUN/best_adapters`), then the
    reference split. A flag that contradicts the run's record is an error: its "val"
    would hold samples the run trained on."""
    record = recorded_split(req.lora) if req.lora is not None else None
    if record is not None:
        for flag, mine, theirs in (("--train-ratio", req.train_ratio, record["train_ratio"]),
                                   ("--split-seed", req.split_seed, record["seed"])):
            if mine is not None and mine != theirs:
                raise EvaluateError(f"{flag} {mine} contradicts the split the run in {req.lora} trained with "
                                    f"({theirs}); drop the flag to evaluate on the run's own validation samples")
        return record["train_ratio"], record["seed"], f"the run ({req.lora})"
    if req.train_ratio is not None or req.split_seed is not None:
        return (req.train_ratio if req.train_ratio is not None else REFERENCE_SPLIT[0],
                req.split_seed if req.split_seed is not None else REFERENCE_SPLIT[1], "flags")
    return (*REFERENCE_SPLIT, "the reference split")


# What defines the samples of a data set, as a run records them (`identity.json`'s data):
# a copy of the same file elsewhere (another size on disk, another mtime) is the same data.
SAMPLE_IDENTITY = ("kind", "num_samples", "num_frames", "resolution", "dt", "nu")


def check_split_data(req: EvalRequest, source) -> None:
    """`--split val|train` with a run's adapters picks the run's samples by index: on other
    data than the run's, those indices are other samples (the run may have trained on
    them). Refused, naming what differs; runs that recorded no data identity are
    checked on what they did record (the kind of source, the sample indices)."""
    record = load_metadata(req.lora).get("split") if req.lora is not None else None
    if not isinstance(record, dict):
        return
    kind = "analytic" if req.analytic else "hdf5"
    saved = record.get("data") if isinstance(record.get("data"), dict) else {"kind": record.get("source")}
    now = source.fingerprint()
    differ = [f"{k}: {saved.get(k)!r} (run) vs {now.get(k)!r}" for k in SAMPLE_IDENTITY
              if k in saved and saved.get(k) != now.get(k)]
    if saved.get("kind") is None and record.get("source") not in (None, kind):
        differ.append(f"source: {record.get('source')!r} (run) vs {kind!r}")
    val = record.get("val_samples") or []
    if val and max(val) >= source.num_samples:
        differ.append(f"the run's validation samples go up to {max(val)}, {source.name} holds {source.num_samples}")
    if differ:
        raise EvaluateError(
            f"--split {req.split or 'val'} picks the samples of the run in {req.lora} by index, but {source.name} is "
            f"not the data that run was split on ({'; '.join(differ)}); there its indices are other samples. "
            "Evaluate on the run's data, or with --split all on this one")


DEFAULT_PRECISION = "float32"  # the README's recommendation: the parity policy


def run_precision(req: EvalRequest) -> tuple[str, str]:
    """-> (precision, where it came from): `--precision` when given, else the one the run
    behind `--lora` trained at (its result records it), else float32. A run's precision
    travels with its result, like its split."""
    if req.precision is not None:
        return req.precision, "--precision"
    recorded = load_metadata(req.lora).get("precision") if req.lora is not None else None
    if isinstance(recorded, str) and recorded in Policy.names():
        return recorded, f"the run ({req.lora})"
    return DEFAULT_PRECISION, "the default"


def run_evaluation(req: EvalRequest, show_progress: bool = True) -> tuple[dict, Path, str]:
    """Evaluates `req` and writes metrics.json, metrics.md and the plots into `req.out`
    (refusing a folder we did not write). -> (result, the folder written, markdown)."""
    for name in ("frame_stride", "temporal_length", "windows_per_sample", "batch_size", "num_samples"):
        if getattr(req, name) < 1:
            raise EvaluateError(f"--{name.replace('_', '-')} must be >= 1")
    if req.rollout < 0:
        raise EvaluateError("--rollout must be >= 0")
    if req.analytic == (req.data is not None):
        raise EvaluateError("give exactly one of --data FILE.h5 and --analytic")
    outputs.check_dir(req.out, OUT_KIND, req.overwrite)
    precision, precision_from = run_precision(req)
    policy = Policy.named(precision)
    params, config = load_model(req.checkpoint, req.lora, policy=policy, allow_other_base=req.allow_other_base)
    if req.temporal_length * config.tokens_per_frame > config.transformer.max_position_embeddings:
        raise EvaluateError(f"--temporal-length {req.temporal_length}: more frames than the model's "
                            f"max_position_embeddings allow")
    source, dt = build_source(req)
    split = req.split or ("all" if req.analytic else "val")
    train_ratio, split_seed, split_from = run_split(req)
    if split != "all":
        check_split_data(req, source)
    window = req.temporal_length + max(req.rollout, 1)
    items = evaluation_windows(source, split, window, req.frame_stride, req.windows_per_sample,
                               train_ratio, split_seed)
    out = evaluate(params, config, policy, source, items, temporal_length=req.temporal_length,
                   stride=req.frame_stride, dt=dt, rollout=req.rollout, batch_size=req.batch_size,
                   show_progress=show_progress)
    result = out["result"]
    result["config"] = {"checkpoint": str(req.checkpoint), "lora": str(req.lora) if req.lora else None,
                        "data": "analytic" if req.analytic else str(req.data), "split": split,
                        "train_ratio": train_ratio, "split_seed": split_seed, "split_from": split_from,
                        "nu_range": [req.nu_min, req.nu_max] if req.analytic else None,
                        "analytic_seed": req.seed if req.analytic else None,
                        "frame_stride": req.frame_stride, "dt": dt, "window_dt": dt * req.frame_stride,
                        "temporal_length": req.temporal_length, "rollout": req.rollout,
                        "precision": precision, "precision_from": precision_from,
                        "output_dtype": jnp.dtype(policy.output_dtype).name}
    title = f"Evaluation of {req.checkpoint}" + (f" + {req.lora}" if req.lora else "")

    def fill(tmp: Path) -> None:
        (tmp / "metrics.json").write_text(json.dumps(result, indent=1) + "\n")
        (tmp / "metrics.md").write_text(markdown(result, title))
        plot(result, out["shown"], tmp)
        np.savez_compressed(tmp / EXAMPLE_FILE, **example_arrays(out["shown"]))
        (tmp / outputs.METADATA_FILE).write_text(json.dumps(outputs.format_marker(OUT_KIND)) + "\n")

    final = outputs.write_dir(req.out, fill, OUT_KIND, req.overwrite)
    return result, final, markdown(result, title)
