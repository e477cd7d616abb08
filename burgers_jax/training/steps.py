"""Pure training and evaluation steps for fine-tuning on the PDE residual.

Shapes: B batch, W = T + 1 window frames, T model input frames, H/W grid (128),
C = 6 model channels, (u, v) the first two.

Only the trainable leaves are differentiated (`model.trainable`: the LoRA adapters in
the reference recipe): `loss_fn` takes `(trainable, frozen)` and `jax.grad` is taken
with respect to `trainable` alone, so the compiled step never computes a gradient of a
frozen weight and a frozen encoder does no backward work (its input does not depend on
the adapters). The optimizer is `optax.masked` over the full tree with the trainable
mask: it holds state for the trainable leaves only, and the frozen leaves are passed
through the step untouched (never `frozen + update`).

The loss: `lambda_pde * residual + lambda_bc * boundary term + lambda_data * nRMSE`
against the true next frames (0 by default: no ground truth in the reference recipe).
The residual (`training.residual`):

- `window` (the reference recipe): the PDE residual of the window [input frame 0,
  outputs]; only frame 0 anchors it, later frames difference two predictions;
- `per_step`: each output p_k against the model's own input frame x_k,
  r_k = (p_k - x_k)/dt + N(p_k) (`training.residual_scheme`: euler | bdf2 | auto, BDF2
  from frame stride 2 on: `time_scheme`);
- `precond`: the same residual in a preconditioned norm, dt (I - dt nu lap)^-1 r_k,
  normalised by the input increments, so persistence scores ~1 and the exact solution
  ~1e-5 (`physics.label_free.preconditioned_loss`). To first order its minimiser is the
  implicit-Euler step from the input frame: still the PDE residual, label-free, in a
  norm that weighs smooth and rough errors alike.

Pushforward (`training.pushforward_steps` m > 0): with probability
`training.pushforward_prob`, the input window is replaced by the model's own m-step
rollout from the true window (no gradient through the rollout; the boundaries are those
of the frames the rollout stands for), so training sees the states a rollout meets.

Boundaries: a batch (`data.loader.load_batch`) keeps the four faces as flat keys
`left`, `right`, `bottom`, `top` beside `frames` and `nu`: the loader, the trainer's
per-key sharding (`trainer.STEP_KEYS`) and the compiled steps' inputs are plain dicts of
arrays, laid out as the data file is. The steps make them one `physics.Boundaries` in one
place, `batch_boundaries`, and pass that value on (objective, metrics, pushforward).
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from burgers_jax.model import param_tree
from burgers_jax.model.network import forward_frames
from burgers_jax.physics import label_free, metrics
from burgers_jax.physics import residual as physics
from burgers_jax.physics.boundaries import Boundaries


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # completed updates (int32)
    trainable: Any  # nested dict of the leaves that train (the LoRA adapters, ...), float32
    opt_state: Any  # optax.masked state over the full tree (trainable leaves only)
    rng: jax.Array  # base key; step keys are fold_in(rng, step)
    nonfinite_in_a_row: jax.Array  # consecutive skipped updates
    nonfinite_total: jax.Array


def schedule_length(training) -> int:
    """The step at which the cosine reaches `min_lr`: `schedule_steps`, else `max_steps`."""
    return getattr(training, "schedule_steps", None) or training.max_steps


def lr_schedule(training) -> optax.Schedule:
    """Linear warmup from 0 over `warmup_steps`, then cosine to `min_lr` at
    `schedule_length` (max_steps unless a resumed run kept its shorter schedule), then
    `min_lr` (the PyTorch recipe's LambdaLR: step 0 runs at lr 0). `training`: the config section."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=training.learning_rate, warmup_steps=training.warmup_steps,
        decay_steps=schedule_length(training), end_value=training.min_lr)


def make_optimizer(training, mask) -> optax.GradientTransformation:
    b1, b2 = training.betas
    inner = optax.chain(
        optax.clip_by_global_norm(training.grad_clip),
        optax.adamw(lr_schedule(training), b1=b1, b2=b2, eps=1e-8, weight_decay=training.weight_decay),
    )
    return optax.masked(inner, mask)


def window_dt(cfg) -> float:
    """The time between consecutive frames of a window: the data's frame spacing times
    `dataset.frame_stride`."""
    return float(cfg.physics.dt) * int(cfg.dataset.frame_stride)


def forward(model, params, batch, *, temporal_length: int, train: bool, rng=None):
    """Runs the model on frames[:T] and returns the T+1-frame (u, v) prediction in float32.

    Output frame k predicts frame k + 1, so the prediction is the input frame 0 (as the
    model saw it: cast to the policy's input dtype) followed by the T outputs.
    """
    x = batch["frames"][:, :temporal_length]
    rngs = None
    if train:
        k_drop, k_noise = jax.random.split(rng)
        rngs = {"dropout": k_drop, "noise": k_noise}
    out = forward_frames(model, params, x, train=train, rngs=rngs)[..., :2]
    frame0 = x[:, :1, ..., :2].astype(model.policy.input_dtype).astype(jnp.float32)
    return jnp.concatenate([frame0, out], axis=1)


RESIDUALS = ("window", "per_step", "precond")
SCHEMES = ("euler", "bdf2", "auto")
# `auto`: the second-order time difference from this frame stride on. At stride 1 the
# implicit-Euler step is within VRMSE ~4e-6 of the truth, far below any model; the time
# error grows with the step, and at stride 10 BDF2 gave the better rollouts over three
# seeds (docs/results.md, "The first stand-in at 5× the steps, and BDF2 at stride 10").
BDF2_FROM_STRIDE = 2


def time_scheme(cfg) -> str:
    """The time difference of the per-step residuals: `training.residual_scheme`, with
    `auto` resolved by `dataset.frame_stride` (BDF2_FROM_STRIDE)."""
    scheme = cfg.training.residual_scheme
    if scheme != "auto":
        return scheme
    return "bdf2" if cfg.dataset.frame_stride >= BDF2_FROM_STRIDE else "euler"


def batch_boundaries(batch, frames: int) -> Boundaries:
    """The `Boundaries` of a batch's first `frames` window frames, from its flat keys
    (module docstring, "Boundaries")."""
    return Boundaries.from_mapping(batch).slice_time(frames)


def objective_terms(pred, inputs, bounds: Boundaries, nu, dt, true, training, scheme: str) -> dict:
    """The terms of the training objective per window [B], and the objective itself.

    pred: [B, T+1, H, W, 2] = [input frame 0 as the model saw it, outputs]; inputs: the
    model's input frames (u, v) [B, T, H, W, 2] in float32; bounds: the `Boundaries` of
    the T + 1 window frames; true: the true next frames [B, T, H, W, 2] (used only when
    `lambda_data > 0`: the supervised ceiling). Keys: `residual` (the residual
    `training.residual` trains, with the time difference `scheme`: `time_scheme`), `bc`,
    `data` (nRMSE), `loss` (their weighted sum), and `pde_u`, `pde_v`: the mean squares of the window residual (`physics.pde_loss` of
    pred), what training logs as its PDE loss whatever it trains. Computed once: under
    `window` it is the residual itself; otherwise a separate quantity (which XLA drops
    where no one uses it)."""
    out = pred[:, 1:]
    per_window = lambda r: jnp.mean(jnp.square(r), axis=(1, 2, 3))  # noqa: E731
    _, _, _, pde_res_u, pde_res_v = physics.pde_loss(pred, bounds, nu, dt)
    pde_u, pde_v = per_window(pde_res_u), per_window(pde_res_v)
    if training.residual == "window":
        residual = pde_u + pde_v
    elif training.residual == "per_step":
        res_u, res_v = label_free.anchored_residual(out, inputs, bounds, nu, dt, scheme)
        residual = per_window(res_u) + per_window(res_v)
    else:
        residual = label_free.preconditioned_loss_per_sample(out, inputs, bounds, nu, dt, scheme)
    bc = jax.vmap(lambda p, b: physics.boundary_loss(p[None], b.map(lambda x: x[None])))(pred, bounds)
    data = metrics.nrmse(out, true)
    loss = training.lambda_pde * residual
    if training.lambda_bc:
        loss = loss + training.lambda_bc * bc
    if training.lambda_data:
        loss = loss + training.lambda_data * data
    return {"residual": residual, "bc": bc, "data": data, "loss": loss, "pde_u": pde_u, "pde_v": pde_v}


def window_span(cfg) -> int:
    """Frames of one training window: T inputs, the next frame, and one more per
    pushforward step (the boundaries of the frames the rollout stands for)."""
    return cfg.dataset.temporal_length + 1 + cfg.training.pushforward_steps


# XLA:CPU computes bf16 elementwise work in float32, and its loop-invariant code motion
# then converts each stacked residual of the layer scan ([L, B, S, ...]: gate, up, the
# attention output) to float32 once, before the backward loop, instead of one layer's
# slice per iteration: float32 copies of every layer's residuals at once. Without that
# pass the full-size step (B 4, T 16, fp32_output, remat=projections) needs 7.0 (6.6 today) instead
# of 10.2 GiB of temporaries, and the small architecture's step is no slower (measured
# 687 vs 783 ms fp32_output, 655 vs 673 ms float32; docs/performance.md, "Memory").
CPU_STEP_COMPILER_OPTIONS = {"xla_disable_hlo_passes": "while-loop-invariant-code-motion"}


def jit_train_step(model, tx, cfg) -> Callable:
    """`make_train_step` compiled with its state donated, with the compiler options of
    the backend it runs on (CPU_STEP_COMPILER_OPTIONS on a CPU)."""
    options = CPU_STEP_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
    return jax.jit(make_train_step(model, tx, cfg), donate_argnums=(0,), compiler_options=options)


def make_train_step(model, tx, cfg) -> Callable:
    """Returns `train_step(state, frozen, batch) -> (state, metrics)`."""
    T = cfg.dataset.temporal_length
    training = cfg.training
    dt = window_dt(cfg)
    scheme = time_scheme(cfg)
    schedule = lr_schedule(training)
    m = training.pushforward_steps

    def pushforward(params, batch, rng):
        """(inputs, bounds, true): the window as training sees it. The true window (its
        frames, `Boundaries` of frames 0..T, true next frames 1..T), or (with probability
        pushforward_prob) the model's own m-step rollout in place of its inputs, with the
        boundaries and targets of the frames it stands for."""
        frames = batch["frames"]
        if not m:
            return frames, batch_boundaries(batch, T + 1), frames[:, 1:T + 1, ..., :2]
        use = jax.random.bernoulli(rng, training.pushforward_prob)

        def rolled(_):
            x = frames[:, :T]
            for _ in range(m):  # each application moves the window one frame on
                x = jax.lax.stop_gradient(forward_frames(model, params, x).astype(frames.dtype))
            return x

        inputs = jax.lax.cond(use, rolled, lambda _: frames[:, :T], None)
        shift = jnp.where(use, m, 0)
        take = lambda a: jax.lax.dynamic_slice_in_dim(a, shift, T + 1, axis=1)  # noqa: E731
        return inputs, Boundaries.from_mapping(batch).map(take), take(frames)[:, 1:, ..., :2]

    def loss_fn(trainable, frozen, batch, rng):
        params = param_tree.merge(trainable, frozen)
        k_model, k_pf = jax.random.split(rng)
        frames, bounds, true = pushforward(params, batch, k_pf)
        pred = forward(model, params, {"frames": frames}, temporal_length=T, train=True, rng=k_model)
        inputs = frames[:, :T, ..., :2].astype(jnp.float32)
        terms = objective_terms(pred, inputs, bounds, batch["nu"], dt, true, training, scheme)
        # The logged PDE loss: the window residual's mean squares over all windows (the
        # objective's own `pde_u`, `pde_v`, so it is computed once per step).
        loss_u, loss_v = jnp.mean(terms["pde_u"]), jnp.mean(terms["pde_v"])
        aux = {"pde_loss": loss_u + loss_v, "loss_u": loss_u, "loss_v": loss_v,
               "residual_loss": jnp.mean(terms["residual"]),
               "data_nrmse": jnp.mean(terms["data"]), "bc_loss": jnp.mean(terms["bc"])}
        return jnp.mean(terms["loss"]), aux

    def train_step(state: TrainState, frozen, batch):
        rng = jax.random.fold_in(state.rng, state.step)
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.trainable, frozen, batch, rng)
        # optax.masked needs the full tree; frozen "gradients" are zeros that the mask
        # passes through and that are then dropped, so XLA removes them entirely.
        full_params = param_tree.merge(state.trainable, frozen)
        full_grads = param_tree.merge(grads, jax.tree.map(jnp.zeros_like, frozen))
        updates, new_opt_state = tx.update(full_grads, state.opt_state, full_params)
        trainable_updates = _select(updates, grads)
        new_trainable = optax.apply_updates(state.trainable, trainable_updates)

        grad_norm = optax.tree.norm(grads)
        # A finite loss and gradient can still give a non-finite update (a learning rate
        # of 1e30, an optimizer state that overflowed): such an update is skipped too, so
        # the state (and every checkpoint of it) only ever holds finite weights.
        all_finite = lambda tree: jax.tree.reduce(  # noqa: E731
            jnp.logical_and, jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)), tree), jnp.array(True))
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & all_finite(new_trainable) & all_finite(new_opt_state)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
        new_state = state.replace(
            step=state.step + 1,
            trainable=keep(new_trainable, state.trainable),
            opt_state=keep(new_opt_state, state.opt_state),
            nonfinite_in_a_row=jnp.where(ok, 0, state.nonfinite_in_a_row + 1),
            nonfinite_total=state.nonfinite_total + jnp.where(ok, 0, 1),
        )
        metrics_ = dict(aux, loss=loss, grad_norm=grad_norm, update_norm=optax.tree.norm(trainable_updates),
                        lr=schedule(state.step), skipped=jnp.logical_not(ok))
        return new_state, metrics_

    return train_step


def _select(full: dict, like: dict) -> dict:
    """The leaves of `full` at the paths of `like`."""
    flat = param_tree.flatten(full)
    return param_tree.unflatten({p: flat[p] for p in param_tree.flatten(like)})


def make_eval_step(model, cfg) -> Callable:
    """Returns `eval_step(trainable, frozen, batch) -> (metrics, pred)`: a dict of
    per-sample [B] metrics (the host weights them by `batch['valid']`, so padded items
    never count) and the (u, v) prediction [B, T+1, H, W, 2] in float32."""
    T = cfg.dataset.temporal_length
    dt = window_dt(cfg)
    scheme = time_scheme(cfg)

    def eval_step(trainable, frozen, batch):
        params = param_tree.merge(trainable, frozen)
        pred = forward(model, params, batch, temporal_length=T, train=False)
        true = batch["frames"][:, :T + 1, ..., :2]
        bounds = batch_boundaries(batch, T + 1)
        inputs = true[:, :T].astype(jnp.float32)
        per_window = metrics.window_metrics(pred[:, 1:], true[:, 1:], pred[:, :1], bounds, batch["nu"], dt, inputs)
        terms = objective_terms(pred, inputs, bounds, batch["nu"], dt, true[:, 1:], cfg.training, scheme)
        return {
            **per_window,
            "loss": terms["loss"],  # the objective being trained, on validation windows
            "residual_loss": terms["residual"],
            # Trivial-solution monitors: a collapsed prediction has no spatial
            # structure or stops moving in time, while its residual can look fine.
            "pred_spatial_std": jnp.mean(jnp.std(pred[:, 1:], axis=(2, 3)), axis=(1, 2)),
            "pred_frame_change": jnp.mean(jnp.abs(jnp.diff(pred, axis=1)), axis=(1, 2, 3, 4)),
            "true_frame_change": jnp.mean(jnp.abs(jnp.diff(true, axis=1)), axis=(1, 2, 3, 4)),
        }, pred

    return eval_step
