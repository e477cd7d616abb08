"""A training run's directory: who may write it, what it already holds, and whether a
resumed run is the same run.

- One process at a time: an exclusive lock (`.lock`, holding the pid) for the whole run.
  A second training on the same directory is refused naming the first one's pid; the
  lock of a process that died is taken over, with a message.
- A directory that holds files but no run is never written into; one that holds a run
  is refused unless `training.resume`.
- A resumed run is the saved run: `config.json` is compared with the new config before
  anything is written. Fields that change the run (LoRA alpha, optimizer, data, model,
  physics) may differ only with `training.allow_config_change=True`; fields that change
  the shapes of the saved state (LoRA rank and targets, the trainable set) never;
  extending `training.max_steps` and the logging or device settings may always. A longer
  run keeps its learning-rate schedule (the extra steps run at `min_lr`) unless
  `training.schedule_steps` asks for a new one.
- A run directory that holds metrics but no checkpoint (deleted `checkpoints/`), or
  checkpoints without a readable `config.json`, is not resumed by accident: the first
  is refused (it would mix two runs in one log), the second needs
  `training.allow_config_change=True` (the given config then becomes the run's).
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any, Mapping

import ml_collections

from burgers_jax.configs import flat_leaves
from burgers_jax.data.sources import identity_changes
from burgers_jax.errors import UserError
from burgers_jax.io import outputs

CONFIG_FILE = "config.json"
IDENTITY_FILE = "identity.json"  # the data and the base model the run trains on
LOCK_FILE = ".lock"
# Markers of a training run directory (any one of them).
RUN_FILES = (CONFIG_FILE, "checkpoints", "metrics.jsonl")
# Fields a resumed run may change without changing what it computes.
RESUMABLE_CHANGES = (
    "training.resume", "training.max_steps", "training.allow_config_change", "training.allow_data_change",
    "model.allow_other_base", "training.num_devices",
    "training.distributed", "training.max_consecutive_nonfinite", "training.eval_every_steps",
    "dataloader.prefetch", "logging.", "training.schedule_steps",
    # how the step computes, not what: the attention kernel and what the backward keeps
    "model.attention", "model.remat",
)
# Values older runs saved in another type: {field: converter to today's}.
LEGACY_VALUES = {"model.remat": lambda v: {True: "full", False: "none"}.get(v, v)}
# Fields that change the shapes of the saved state: a resume cannot restore it under them.
SHAPE_FIELDS = ("model.lora.r", "model.lora.target_modules", "model.trainable")


class RunDirError(UserError):
    """A run directory that cannot be (re)used as asked."""


def _flat(d: Mapping[str, Any]) -> dict[str, Any]:
    """{'section.field': value} with tuples as lists, as a saved config.json holds them."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in flat_leaves(d)}


def config_dict(cfg) -> dict[str, Any]:
    """A config (ConfigDict or mapping) as plain JSON-able nested dicts."""
    return json.loads(cfg.to_json_best_effort()) if hasattr(cfg, "to_json_best_effort") else json.loads(
        json.dumps(dict(cfg), default=str))


def config_changes(saved: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{'section.field': (saved value, new value)} for every field that differs."""
    a, b = _flat(saved), _flat(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def forbidden_changes(changes: Mapping[str, tuple[Any, Any]]) -> dict[str, tuple[Any, Any]]:
    return {k: v for k, v in changes.items()
            if not any(k == p or (p.endswith(".") and k.startswith(p)) for p in RESUMABLE_CHANGES)}


def merge_saved(cfg, saved: Mapping[str, Any], overrides: Mapping[str, Any]):
    """The config a resumed run uses: the saved values, except the fields the user named
    on the command line (`overrides`, flat 'section.field' keys). Types follow `cfg`."""
    out = ml_collections.ConfigDict(cfg.to_dict())
    for key, value in _flat(saved).items():
        if key in overrides:
            continue
        *sections, field = key.split(".")
        node = out
        for s in sections:
            if s not in node:
                node[s] = ml_collections.ConfigDict()
            node = node[s]
        current = node.get(field)
        value = LEGACY_VALUES.get(key, lambda v: v)(value)
        node[field] = tuple(value) if isinstance(current, tuple) and isinstance(value, list) else value
    return out


class RunDir:
    """The directory of one training run (`workdir`), locked while the run lives."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser().absolute()
        self._lock_fd: int | None = None

    def holds_run(self) -> bool:
        """A training run lives here: checkpoints, a metrics log, or a config.json of ours
        (any other program's config.json does not make a folder a run)."""
        if any((self.path / name).exists() for name in RUN_FILES if name != CONFIG_FILE):
            return True
        path = self.path / CONFIG_FILE
        if not path.is_file():
            return False
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            return True  # a torn config.json of a run: prepare_resume names it
        return isinstance(saved, dict) and {"model", "training"} <= saved.keys()

    def saved_config(self) -> dict[str, Any] | None:
        path = self.path / CONFIG_FILE
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except ValueError as e:
            raise RunDirError(f"{path}: not valid JSON ({e}); cannot resume this run") from None

    def check_location(self, resume: bool) -> None:
        """Before any work: the place can be written, is not someone else's folder, is not
        in use by another training, and holds a run only when resuming."""
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"logging.save_dir={self.path} exists and is a file")
        outputs.check_writable(self.path, "training run")
        lock = self.path / LOCK_FILE
        if lock.exists():
            fd = os.open(lock, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                raise RunDirError(f"{self.path} is in use by another training (pid {holder}, lock {lock}); "
                                  "wait for it to finish or choose another save_dir") from None
            finally:
                os.close(fd)
        if self.path.is_dir() and any(p.name != LOCK_FILE for p in self.path.iterdir()) and not self.holds_run():
            raise RunDirError(f"logging.save_dir={self.path} holds files that are not a training run; "
                              "not writing into it (choose a new or empty directory)")
        if self.holds_run() and not resume:
            raise RunDirError(f"logging.save_dir={self.path} already holds a run; pass "
                              "--config.training.resume=True to continue it or choose another save_dir")

    def has_checkpoint(self) -> bool:
        ckpts = self.path / "checkpoints"
        return ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir())

    def has_logged_steps(self) -> bool:
        metrics = self.path / "metrics.jsonl"
        return metrics.is_file() and metrics.stat().st_size > 0

    def prepare_resume(self, cfg) -> tuple[Any, list[str]]:
        """Before the trainer is built: may this directory be resumed under `cfg`?
        -> (the config to run, notes). Keeps the saved schedule length when max_steps grows."""
        if not self.holds_run():
            return cfg, []
        if self.has_logged_steps() and not self.has_checkpoint():
            raise RunDirError(f"cannot resume {self.path}: it holds metrics.jsonl but no checkpoint (was "
                              f"{self.path / 'checkpoints'} deleted?); starting again from step 0 would mix two runs "
                              "in one log. Choose a new save_dir for a fresh run")
        config_file = self.path / CONFIG_FILE
        try:
            saved = self.saved_config()
        except RunDirError as e:
            saved, why = None, f"its {CONFIG_FILE} is torn or not JSON ({e})"
        else:
            why = f"it has no {CONFIG_FILE}"
        if saved is None:
            if not cfg.training.allow_config_change:
                raise RunDirError(f"cannot resume {self.path}: {why}, so nothing says which config the run had. "
                                  f"Restore {config_file}, or resume under the config you give (same LoRA rank, "
                                  "targets and trainable set) with --config.training.allow_config_change=True")
            return cfg, [f"{why}: resuming under the given config, which is written as the run's {CONFIG_FILE}"]
        notes = []
        saved_training = saved.get("training", {})
        saved_length = saved_training.get("schedule_steps") or saved_training.get("max_steps")
        if cfg.training.max_steps != saved_training.get("max_steps") and cfg.training.schedule_steps is None \
                and saved_length is not None:
            cfg = ml_collections.ConfigDict(cfg.to_dict())
            cfg.training.schedule_steps = int(saved_length)
            notes.append(f"training.max_steps {saved_training.get('max_steps')} -> {cfg.training.max_steps}: the "
                         f"learning-rate schedule keeps its length ({saved_length} steps), so steps after "
                         f"{saved_length} run at min_lr={cfg.training.min_lr:g}; for a new cosine over the longer run "
                         f"pass --config.training.schedule_steps={cfg.training.max_steps} (a warm restart: the rate "
                         "jumps back up)")
        elif cfg.training.schedule_steps is not None and cfg.training.schedule_steps != saved_length:
            notes.append(f"training.schedule_steps {saved_length} -> {cfg.training.schedule_steps}: a new schedule "
                         "for the resumed run (a warm restart: the learning rate jumps to the new schedule's value)")
        return cfg, notes

    def check_resume(self, cfg) -> list[str]:
        """Before anything is written: is `cfg` the saved run? -> notes on allowed changes."""
        try:
            saved = self.saved_config() if self.holds_run() else None
        except RunDirError:
            saved = None  # torn: prepare_resume has allowed it (allow_config_change) or refused
        if saved is None:
            return []
        changes = config_changes(saved, config_dict(cfg))
        shapes = {k: v for k, v in changes.items() if k in SHAPE_FIELDS}
        if shapes:
            listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in shapes.items())
            raise RunDirError(f"cannot resume {self.path}: the config changes the shapes of the saved state ({listed}); "
                              "no resume can restore it under them, even with allow_config_change. Start a new run "
                              "(another save_dir; --config.model.lora.init_path can start it from these adapters if "
                              "the rank is the same)")
        forbidden = forbidden_changes(changes)
        if forbidden and not cfg.training.allow_config_change:
            listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in forbidden.items())
            raise RunDirError(f"cannot resume {self.path}: the config changes the run ({listed}). Resume with "
                              "the saved config (--config.training.resume=True --config.logging.save_dir=DIR "
                              "alone), or pass --config.training.allow_config_change=True to change it anyway")
        saved_keys = _flat(saved).keys()
        kept_schedule = saved.get("training", {}).get("max_steps")

        def reported(key, old, new) -> bool:
            if key == "training.resume":
                return False
            if key not in saved_keys and not new:  # a field the run predates, at its "off" value
                return False
            # the schedule length prepare_resume kept (and explained in its own note)
            return not (key == "training.schedule_steps" and old is None and new == kept_schedule)

        return [f"resuming with a changed config: {k}: {a!r} -> {b!r}" for k, (a, b) in changes.items()
                if reported(k, a, b)]

    # ------------------------------------------------------------------ identity

    def write_identity(self, identity: Mapping[str, Any]) -> None:
        path = self.path / IDENTITY_FILE
        tmp = path.with_name(f".{IDENTITY_FILE}.tmp")
        tmp.write_text(json.dumps(identity, indent=2, default=str) + "\n")
        os.replace(tmp, path)

    def check_identity(self, identity: Mapping[str, Any], cfg) -> list[str]:
        """Before anything is written: are the data and the base model the ones the run
        started with (`identity.json`)? A changed data identity (another file under the
        same path, a rewritten file) needs `training.allow_data_change`, a base with other
        weights `model.allow_other_base`, unless the config's own change says so
        (dataset.* or model.pretrained_path changed under allow_config_change).
        -> notes. A run that recorded no identity (older runs) is not checked."""
        path = self.path / IDENTITY_FILE
        try:
            saved = json.loads(path.read_text()) if path.is_file() else None
        except ValueError:
            saved = None
        if not isinstance(saved, dict):
            return []
        try:
            changed_fields = set(config_changes(self.saved_config() or {}, config_dict(cfg)))
        except RunDirError:
            changed_fields = set()
        notes = []
        data_changes = identity_changes(saved.get("data") or {}, identity["data"])
        if data_changes:
            listed = "; ".join(data_changes)
            name = identity["data"].get("file") or "the analytic source"
            if any(k.startswith("dataset.") for k in changed_fields) or cfg.training.allow_data_change:
                notes.append(f"resuming on other data than the run started with ({name}: {listed})")
            else:
                raise RunDirError(
                    f"cannot resume {self.path}: its data changed since the run started ({name}: {listed}); its "
                    "checkpoints and best adapters belong to the data it had. Put that data back, start a new run "
                    "(another save_dir), or pass --config.training.allow_data_change=True to go on with this data")
        old_base, new_base = saved.get("base") or {}, identity["base"]
        if old_base.get("fingerprint") and old_base["fingerprint"] != new_base["fingerprint"]:
            listed = (f"{old_base.get('path', '?')} (weights {old_base['fingerprint'][:12]}) -> {new_base['path']} "
                      f"(weights {new_base['fingerprint'][:12]})")
            if "model.pretrained_path" in changed_fields or cfg.model.get("allow_other_base", False):
                notes.append(f"resuming on another base model: {listed}")
            else:
                raise RunDirError(
                    f"cannot resume {self.path}: the base model's weights changed since the run started ({listed}); "
                    "its adapters were trained on the other weights. Put that model back, or pass "
                    "--config.model.allow_other_base=True to go on with this one")
        return notes

    # ------------------------------------------------------------------ lock

    def lock(self) -> str | None:
        """Takes the run's exclusive lock; -> a message when a dead process's lock was taken over."""
        self.path.mkdir(parents=True, exist_ok=True)
        path = self.path / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunDirError(f"{self.path} is in use by another training (pid {holder}, lock {path}); "
                              "wait for it to finish or choose another save_dir") from None
        previous = os.pread(fd, 64, 0).decode(errors="replace").strip()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        if previous and previous != str(os.getpid()):
            return f"took over the lock of process {previous}, which is no longer running ({path})"
        return None

    def unlock(self) -> None:
        if self._lock_fd is not None:
            try:
                (self.path / LOCK_FILE).unlink(missing_ok=True)
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
                self._lock_fd = None
