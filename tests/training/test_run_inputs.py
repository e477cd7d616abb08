"""What a run reads back, refused by name instead of a traceback, a silent waste or a
wrong verdict: a run's split record lacking a field (evaluate), a LoRA rank above the
adapted kernels' width (train, at config-check time), and a training checkpoint that is
intact but saved under another config (resume: it does not fit, it is not "unreadable",
and it stays where it is). Every test here failed on the code before the fix."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import REPO, smoke_config

from burgers_jax import evaluate as evaluate_cmd
from burgers_jax import train as train_cmd
from burgers_jax.io import checkpoint as ck
from burgers_jax.io import train_state
from burgers_jax.model.config import DEFAULT_LORA_TARGETS
from burgers_jax.model.param_tree import flatten
from burgers_jax.training import trainer
from burgers_jax.training.setup import TrainConfigError, check_config


def _one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def finished(tiny_converted, tmp_path_factory):
    """A 4-step smoke run (checkpoints at steps 2 and 4, best_adapters/), trained in this process."""
    save_dir = tmp_path_factory.mktemp("run_inputs") / "run"
    trainer.train_and_evaluate(smoke_config(tiny_converted, save_dir), save_dir)
    return save_dir


# ----------------------------------------------------------------------------- a run's split record (evaluate)


@pytest.mark.parametrize("change, field, says", [
    (lambda s: s.pop("train_ratio"), "split.train_ratio", "lacks field 'split.train_ratio'"),
    (lambda s: s.pop("seed"), "split.seed", "lacks field 'split.seed'"),
    (lambda s: s.update(train_ratio="0.9"), "split.train_ratio", "is '0.9', not a number in (0, 1)"),
    (lambda s: s.update(seed=4.5), "split.seed", "is 4.5, not an integer"),
])
def test_a_split_record_lacking_or_mistyping_a_field_is_one_line(finished, tiny_converted, tmp_path, capsys,
                                                                 change, field, says):
    adapters = shutil.copytree(finished / "best_adapters", tmp_path / "best_adapters")
    meta_path = adapters / "metadata.json"
    meta = json.loads(meta_path.read_text())
    change(meta["split"])
    meta_path.write_text(json.dumps(meta))
    out = tmp_path / "ev"
    rc = evaluate_cmd.main(["--checkpoint", str(tiny_converted), "--lora", str(adapters), "--analytic",
                            "--num-samples", "2", "--num-frames", "20", "--split", "val", "--out", str(out)])
    assert rc == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"burgers-evaluate: error: {meta_path}: "), line
    assert field in line and says in line, line
    assert not out.exists()


# ----------------------------------------------------------------------------- LoRA rank (train)


def _narrowest_kernel(pretrained, targets=DEFAULT_LORA_TARGETS) -> int:
    """min(in, out) over the kernels the targets adapt, read from the converted weights."""
    params, _ = ck.load_converted(pretrained)
    return min(min(np.shape(v)) for p, v in flatten(params).items()
               if p[0] == "transformer" and p[-1] == "kernel" and p[-2] in targets)


def test_a_lora_rank_above_the_adapted_kernels_is_refused_at_config_check(tiny_converted, tmp_path):
    limit = _narrowest_kernel(tiny_converted)
    cfg = smoke_config(tiny_converted, tmp_path / "run")
    cfg.model.lora.r = 10_000
    with pytest.raises(TrainConfigError) as e:
        check_config(cfg, 1)
    assert f"model.lora.r=10000 exceeds {limit}, the smallest dimension of the adapted kernels" in str(e.value)
    assert f"use r <= {limit}" in str(e.value)
    cfg.model.lora.r = limit  # the limit itself is fine
    check_config(cfg, 1)
    # only the targeted layers count: the MLP alone is wider
    cfg.model.lora.target_modules = ("gate_proj", "up_proj", "down_proj")
    wider = _narrowest_kernel(tiny_converted, cfg.model.lora.target_modules)
    assert wider > limit, "test premise"
    cfg.model.lora.r = wider
    check_config(cfg, 1)
    cfg.model.lora.r = wider + 1
    with pytest.raises(TrainConfigError, match=rf"model\.lora\.r={wider + 1} exceeds {wider},"):
        check_config(cfg, 1)


def test_burgers_train_refuses_a_huge_rank_before_any_work(tiny_converted, tmp_path, capsys):
    run = tmp_path / "run"
    rc = train_cmd.main(["burgers-train", "--config", f"{REPO / 'configs/demo.py'}:smoke",
                         f"--config.model.pretrained_path={tiny_converted}", f"--config.logging.save_dir={run}",
                         "--config.model.lora.r=10000"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    problems = [line.strip() for line in err.strip().splitlines()[1:]]
    assert len(problems) == 1 and problems[0].startswith("model.lora.r=10000 exceeds "), err
    assert not (run / "checkpoints").exists()


def test_unknown_lora_targets_are_a_named_config_problem(tiny_converted, tmp_path):
    cfg = smoke_config(tiny_converted, tmp_path / "run")
    cfg.model.lora.target_modules = ("q_proj", "qkv")
    with pytest.raises(TrainConfigError, match=r"model\.lora\.target_modules has unknown names \['qkv'\]"):
        check_config(cfg, 1)


# ----------------------------------------------------------------------------- a checkpoint of another config (resume)


def _state(**leaves):
    return {"step": np.asarray(3, np.int32),
            "trainable": {name: np.zeros(shape, np.float32) for name, shape in leaves.items()}}


def _saved(tmp_path, state, steps=(3,)):
    manager = train_state.state_manager(tmp_path / "checkpoints")
    for step in steps:
        train_state.save_state(manager, step, state, 0.5)
    manager.close()
    return train_state.state_manager(tmp_path / "checkpoints")


@pytest.mark.parametrize("template, says", [
    (_state(q_lora_A=(4, 2), v_lora_A=(4, 2)),
     ["1 saved leaves this config has no place for (state/trainable/k_lora_A)",
      "1 leaves of this config not saved (state/trainable/v_lora_A)"]),
    (_state(q_lora_A=(4, 8), k_lora_A=(4, 2)),
     ["1 leaves of another shape (state/trainable/q_lora_A: saved (4, 2), config (4, 8))"]),
])
def test_a_checkpoint_of_another_config_does_not_fit_and_stays(tmp_path, template, says):
    manager = _saved(tmp_path, _state(q_lora_A=(4, 2), k_lora_A=(4, 2)))
    with pytest.raises(ck.CheckpointError) as e:
        train_state.restore_state(manager, template)
    msg = str(e.value)
    assert "\n" not in msg, msg
    assert "the checkpoint of step 3 is intact but does not fit this config" in msg, msg
    assert all(s in msg for s in says), msg
    assert "model.lora.target_modules, model.lora.r, model.trainable" in msg, msg
    assert "unreadable" not in msg, msg
    assert (tmp_path / "checkpoints" / "3").is_dir() and not (tmp_path / "corrupt_checkpoints").exists()


def test_an_unreadable_checkpoint_is_still_moved_aside(tmp_path):
    state = _state(q_lora_A=(4, 2))
    manager = _saved(tmp_path, state, steps=(2, 4))
    chunks = [p for p in (tmp_path / "checkpoints" / "4").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert chunks, "test premise: the orbax data files of step 4"
    for p in chunks:
        p.write_bytes(b"corrupt")
    restored, best_val, skipped = train_state.restore_state(manager, state)
    assert int(restored["step"]) == 3 and best_val == 0.5
    assert len(skipped) == 1 and "step 4 is unreadable" in skipped[0], skipped
    assert [p.name.split("-")[0] for p in (tmp_path / "corrupt_checkpoints").iterdir()] == ["4"]


def test_resume_under_other_lora_targets_names_the_misfit_and_keeps_the_checkpoints(finished, tiny_converted,
                                                                                    tmp_path):
    run = shutil.copytree(finished, tmp_path / "run")
    (run / "config.json").unlink()  # the run directory's own check of shape changes needs it
    steps_before = sorted(os.listdir(run / "checkpoints"))
    cfg = smoke_config(tiny_converted, run, resume=True, allow_config_change=True, max_steps=6)
    cfg.model.lora.target_modules = ("q_proj", "v_proj")
    with pytest.raises(ck.CheckpointError) as e:
        trainer.train_and_evaluate(cfg, run)
    msg = str(e.value)
    assert f"{run / 'checkpoints'}: the checkpoint of step 4 is intact but does not fit this config" in msg, msg
    assert "saved leaves this config has no place for (state/trainable/transformer/layers_0/" in msg, msg
    assert "model.lora.target_modules" in msg and "unreadable" not in msg, msg
    assert sorted(os.listdir(run / "checkpoints")) == steps_before
    assert not (run / "corrupt_checkpoints").exists()
    # ... and the run's own config still resumes from it.
    cfg.model.lora.target_modules = DEFAULT_LORA_TARGETS
    assert trainer.train_and_evaluate(cfg, run)["steps"] == 6


def test_orbax_stores_masked_optimizer_entries_as_none(tmp_path):
    """The premise of comparing array leaves only: optax's masked entries (empty nodes in
    the template) come back from orbax's metadata as None, and are left out on both sides."""
    import optax

    params = {"a": np.zeros((2, 3), np.float32), "b": np.zeros(4, np.float32)}
    opt = optax.masked(optax.adam(1e-3), {"a": True, "b": False}).init(params)
    state = {"params": params, "opt": opt}
    manager = _saved(tmp_path, state)
    handler = ocp.StandardCheckpointHandler()
    meta = handler.metadata(tmp_path / "checkpoints" / "3" / ocp.checkpoint_manager.DEFAULT_ITEM_NAME)
    handler.close()
    assert train_state.restore_state(manager, state)[1] == 0.5
    assert train_state._array_shapes(meta.tree) == train_state._array_shapes({"state": state, "best_val": np.asarray(0.0)})
