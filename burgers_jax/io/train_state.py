"""A training run's state on disk (orbax): the manager of its checkpoints (the latest
few steps), one save, and the restore that falls back past an unreadable step and
refuses, without moving it, a step saved under another config."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from burgers_jax.io.checkpoint import CheckpointError
from burgers_jax.io.orbax_logs import quiet_closed_event_loop, quiet_failed_restore_echoes


def state_manager(directory: str | os.PathLike, keep: int = 2) -> ocp.CheckpointManager:
    """Orbax manager of a run's training states (the latest `keep` steps), synchronous."""
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.LatestN(keep), create=True,
        enable_async_checkpointing=False)
    return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def save_state(manager: ocp.CheckpointManager, step: int, state: Any, best_val: float) -> None:
    payload = {"state": jax.device_get(state), "best_val": np.asarray(best_val, np.float64)}
    manager.save(int(step), args=ocp.args.StandardSave(payload), force=True)
    manager.wait_until_finished()


# The config fields that decide which leaves a training state has, and their shapes.
STATE_SHAPE_FIELDS = ("model.lora.target_modules", "model.lora.r", "model.trainable")


def _key_name(key: Any) -> str:
    for attr in ("key", "idx", "name"):  # DictKey / FlattenedIndexKey, SequenceKey, GetAttrKey
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _array_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """'a/b/c' -> shape of every array leaf. Empty nodes are left out on both sides:
    orbax stores optax's masked entries as None, which a template holds as empty nodes."""
    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)[0]
    return {"/".join(_key_name(k) for k in path): tuple(leaf.shape)
            for path, leaf in flat if leaf is not None and hasattr(leaf, "shape")}


def _stored_shapes(directory: Path, step: int) -> dict[str, tuple[int, ...]] | None:
    """The array leaves saved at `step` and their shapes, from orbax's metadata of the
    step (no array is read), or None when that metadata cannot be read: the restore then
    finds out whether the step is readable at all."""
    handler = ocp.StandardCheckpointHandler()
    try:
        meta = handler.metadata(directory / str(step) / ocp.checkpoint_manager.DEFAULT_ITEM_NAME)
        return _array_shapes(meta.tree)
    except Exception:  # noqa: BLE001 - a torn or corrupt step: restore() names it
        quiet_failed_restore_echoes()
        return None
    finally:
        handler.close()


def _misfit(stored: Mapping[str, tuple], wanted: Mapping[str, tuple], limit: int = 3) -> str | None:
    """How a saved state differs from the one the config builds (None: it fits), naming a
    few leaves of each kind, the shortest paths (the parameters, not their optimizer moments) first."""
    def few(paths):
        paths = sorted(paths, key=lambda p: (p.count("/"), p))
        return ", ".join(paths[:limit]) + (", ..." if len(paths) > limit else "")

    parts = []
    unexpected, missing = stored.keys() - wanted.keys(), wanted.keys() - stored.keys()
    shapes = [p for p in stored.keys() & wanted.keys() if stored[p] != wanted[p]]
    if unexpected:
        parts.append(f"{len(unexpected)} saved leaves this config has no place for ({few(unexpected)})")
    if missing:
        parts.append(f"{len(missing)} leaves of this config not saved ({few(missing)})")
    if shapes:
        shown = sorted(shapes, key=lambda p: (p.count("/"), p))[:limit]
        parts.append(f"{len(shapes)} leaves of another shape ("
                     + ", ".join(f"{p}: saved {stored[p]}, config {wanted[p]}" for p in shown)
                     + (", ..." if len(shapes) > limit else "") + ")")
    return "; ".join(parts) or None


def restore_state(manager: ocp.CheckpointManager, template_state: Any) -> tuple[Any, float, list[str]]:
    """The latest intact saved `(state, best_val)` with the structure of `template_state`,
    and a note for each newer step that could not be read (a save cut short, a corrupt
    file): resuming falls back to the previous step rather than failing. Unreadable
    steps are moved aside to `corrupt_checkpoints/` beside the checkpoints (kept for a
    look, out of the way of the steps the resumed run saves again).

    A readable step whose leaves or shapes are not those of `template_state` (saved under
    other `STATE_SHAPE_FIELDS`) is not corrupt: it stays where it is and the resume is a
    CheckpointError naming the step, a few of the leaves that differ and those fields."""
    target = {"state": jax.device_get(template_state), "best_val": np.asarray(0.0, np.float64)}
    wanted = _array_shapes(target)
    skipped = []
    directory = Path(manager.directory)
    quiet_closed_event_loop()
    for step in sorted(manager.all_steps(), reverse=True):
        stored = _stored_shapes(directory, step)
        misfit = _misfit(stored, wanted) if stored is not None else None
        if misfit:
            raise CheckpointError(
                f"{directory}: the checkpoint of step {step} is intact but does not fit this config: {misfit}. "
                f"The leaves and shapes follow {', '.join(STATE_SHAPE_FIELDS)}: resume with the values the run was "
                "saved with, or start a new run in another directory; the checkpoint was left in place"
                + "".join(f"\n  {s}" for s in skipped))
        try:
            restored = manager.restore(step, args=ocp.args.StandardRestore(target))
        except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types for a bad file
            quiet_failed_restore_echoes()
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            aside = directory.parent / "corrupt_checkpoints" / f"{step}-{int(time.time())}"
            aside.parent.mkdir(exist_ok=True)
            os.rename(directory / str(step), aside)
            skipped.append(f"the checkpoint of step {step} is unreadable ({reason}); moved to {aside}, "
                           "falling back to the previous one")
            continue
        if skipped:
            manager.reload()
        return restored["state"], float(restored["best_val"]), skipped
    raise CheckpointError(f"{directory}: no intact training checkpoint to resume from"
                          + "".join(f"\n  {s}" for s in skipped))
