"""What a path or a folder stands for: the data behind a file name, the base model behind
a set of adapters, and a run that never produced a finite number. Each case gave a wrong
result silently before it was fixed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import smoke_config

from burgers_jax.data import sources as data_lib
from burgers_jax.data.writer import write_dataset
from burgers_jax.io import checkpoint as ckpt_io
from burgers_jax.io import train_state
from burgers_jax.training import rundir, trainer

DT = 0.001001001001


def _data(path, nu=(0.1, 0.15), num_samples=4, frames=12, scale=None):
    write_dataset(path, num_samples=num_samples, num_frames=frames, resolution=128, nu_min=nu[0], nu_max=nu[1],
                  dt=DT, progress=False)
    if scale is not None:
        with h5py.File(path, "r+") as f:
            for i in range(num_samples):
                f[f"{i}/vector/data"][...] = f[f"{i}/vector/data"][...] * scale
    return path


def _cfg(base, save_dir, data, **training):
    c = smoke_config(base, save_dir, **training)
    c.dataset.source = "hdf5"
    c.dataset.path = str(data)
    return c


# ----------------------------------------------------------------------------- data identity


def test_a_data_file_replaced_under_a_running_training_stops_it(tiny_converted, tmp_path, monkeypatch):
    live = _data(tmp_path / "live.h5")
    other = _data(tmp_path / "other.h5", nu=(0.5, 0.6))
    real_evaluate, calls = trainer.Trainer.evaluate, []

    def evaluate_then_replace(self, trainable):  # after the step-2 evaluation, before its checkpoint
        out = real_evaluate(self, trainable)
        calls.append(1)
        if len(calls) == 2:
            os.replace(other, live)  # `mv other.h5 live.h5`
        return out

    monkeypatch.setattr(trainer.Trainer, "evaluate", evaluate_then_replace)
    run = tmp_path / "run"
    with pytest.raises(data_lib.DataChangedError) as e:
        trainer.train_and_evaluate(_cfg(tiny_converted, run, live), run)
    msg = str(e.value)
    assert f"{live} changed while training (" in msg and "replaced by another file" in msg, msg
    assert "stopped at step 4, before its evaluation" in msg and "last checkpoint (step 2" in msg, msg
    assert "allow_data_change=True" in msg, msg
    assert len(calls) == 2  # the step-4 evaluation did not run on the new file


def test_a_file_rewritten_in_place_is_seen(tmp_path):
    path = _data(tmp_path / "a.h5")
    source = data_lib.HDF5Source(path, min_frames=3)
    assert source.changed_on_disk() is None
    shutil.copyfile(_data(tmp_path / "b.h5", num_samples=5), path)  # `cp b.h5 a.h5`: same inode, new bytes
    changed = source.changed_on_disk()
    assert changed is not None and "size" in changed and "modified" in changed, changed


def test_resume_after_the_data_changed_under_the_same_path_is_refused(tiny_converted, tmp_path, capsys):
    data, run = _data(tmp_path / "same.h5"), tmp_path / "run"
    trainer.train_and_evaluate(_cfg(tiny_converted, run, data), run)
    saved = json.loads((run / rundir.IDENTITY_FILE).read_text())
    assert saved["data"]["kind"] == "hdf5" and saved["base"]["fingerprint"]
    meta = ckpt_io.load_metadata(run / "best_adapters")
    assert meta["base"] == saved["base"] and meta["split"]["data"] == saved["data"]

    data.unlink()
    _data(data, nu=(0.5, 0.6))  # burgers-generate ... --out same.h5 --overwrite
    resume = _cfg(tiny_converted, run, data, resume=True, max_steps=6)
    with pytest.raises(rundir.RunDirError) as e:
        trainer.train_and_evaluate(resume, run)
    msg = str(e.value)
    assert "its data changed since the run started" in msg and "viscosities (digest)" in msg, msg
    assert "allow_data_change=True" in msg and "viscosity range" in msg, msg
    assert not (run / ".lock").exists() and json.loads((run / rundir.IDENTITY_FILE).read_text()) == saved

    resume.training.allow_data_change = True
    trainer.train_and_evaluate(resume, run)
    assert "note: resuming on other data than the run started with" in capsys.readouterr().out


def test_evaluate_split_val_on_other_data_is_refused(tiny_converted, tmp_path):
    from burgers_jax.evaluation import evaluate

    data, run = _data(tmp_path / "a.h5"), tmp_path / "run"
    trainer.train_and_evaluate(_cfg(tiny_converted, run, data), run)
    other = _data(tmp_path / "other.h5", nu=(0.5, 0.6))
    req = evaluate.EvalRequest(checkpoint=tiny_converted, out=tmp_path / "eval", lora=run / "best_adapters",
                               data=other, temporal_length=2)
    with pytest.raises(evaluate.EvaluateError) as e:
        evaluate.run_evaluation(req, show_progress=False)
    assert "not the data that run was split on" in str(e.value) and "--split all" in str(e.value), str(e.value)
    assert not (tmp_path / "eval").exists()
    # a copy of the run's file elsewhere is the same data
    shutil.copyfile(data, tmp_path / "copy.h5")
    req.data = tmp_path / "copy.h5"
    result, _, _ = evaluate.run_evaluation(req, show_progress=False)
    assert result["config"]["split_from"].startswith("the run")


# ----------------------------------------------------------------------------- base identity


@pytest.fixture(scope="module")
def merged_run(tiny_converted, tmp_path_factory):
    """A run, its merged export (`burgers-export --merged`) and that export converted back."""
    from porting import convert_ckpt, export_torch

    root = tmp_path_factory.mktemp("merged")
    run = root / "run"
    trainer.train_and_evaluate(smoke_config(tiny_converted, run), run)
    export_torch.export(tiny_converted, root / "merged.pt", lora=run / "best_adapters", kind="merged")
    convert_ckpt.convert_model(root / "merged.pt", root / "merged_base", None)
    return run, root / "merged_base"


def test_adapters_over_a_base_that_already_contains_them_are_refused(tiny_converted, merged_run):
    run, merged_base = merged_run
    with pytest.raises(ckpt_io.CheckpointError) as e:
        ckpt_io.load_model(merged_base, run / "best_adapters")
    msg = str(e.value)
    assert "was trained on another base model" in msg and str(tiny_converted.resolve()) in msg, msg
    assert str(merged_base.resolve()) in msg and "--allow-other-base" in msg and "twice" in msg, msg
    params, _ = ckpt_io.load_model(merged_base, run / "best_adapters", allow_other_base=True)
    assert "lora_A" in str(jax_paths(params))
    ckpt_io.load_model(tiny_converted, run / "best_adapters")  # its own base: fine


def jax_paths(params):
    from burgers_jax.model.param_tree import flatten

    return list(flatten(params))


@pytest.mark.parametrize("command", ["predict", "evaluate", "export"])
def test_commands_refuse_adapters_on_another_base_in_one_line(merged_run, tmp_path, command, capsys):
    run, merged_base = merged_run
    lora = ["--checkpoint", str(merged_base), "--lora", str(run / "best_adapters")]
    if command == "predict":
        from burgers_jax.predict import main

        np.save(tmp_path / "x.npy", np.zeros((1, 2, 128, 128, 2), np.float32))
        argv = lora + ["--input", str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy")]
    elif command == "evaluate":
        from burgers_jax.evaluate import main

        argv = lora + ["--analytic", "--num-samples", "1", "--num-frames", "20", "--temporal-length", "2",
                       "--out", str(tmp_path / "eval")]
    else:
        from porting.export_torch import main

        argv = lora + ["--out", str(tmp_path / "best_lora.pt")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "was trained on another base model" in err, err
    assert not any(p.name in ("y.npy", "eval", "best_lora.pt") for p in tmp_path.iterdir())


def test_resume_on_a_base_whose_weights_changed_is_refused(tiny_converted, merged_run, tmp_path, capsys):
    _, merged_base = merged_run
    base = tmp_path / "base"
    shutil.copytree(tiny_converted, base)
    run = tmp_path / "run"
    trainer.train_and_evaluate(smoke_config(base, run), run)
    shutil.rmtree(base)
    shutil.copytree(merged_base, base)  # another model under the same path
    resume = smoke_config(base, run, resume=True, max_steps=6)
    with pytest.raises(rundir.RunDirError, match="the base model's weights changed since the run started"):
        trainer.train_and_evaluate(resume, run)
    resume.model.allow_other_base = True
    trainer.train_and_evaluate(resume, run)
    assert "note: resuming on another base model" in capsys.readouterr().out


# ----------------------------------------------------------------------------- non-finite


def _latest_state_is_finite(run):
    manager = train_state.state_manager(run / "checkpoints")
    step = manager.latest_step()
    restored = manager.restore(step)
    manager.close()
    leaves = [np.asarray(x) for x in _leaves(restored["state"]["trainable"])]
    return step, all(np.all(np.isfinite(x)) for x in leaves)


def _leaves(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v)
    else:
        yield tree


def test_a_run_with_no_finite_validation_value_fails_and_names_no_result(tiny_converted, tmp_path):
    """Every field x1e30 (finite in float32): the residual overflows on every window."""
    data, run = _data(tmp_path / "big.h5", scale=1e30), tmp_path / "run"
    with pytest.raises(trainer.NonFiniteTraining) as e:
        trainer.train_and_evaluate(_cfg(tiny_converted, run, data), run)
    assert "no evaluation gave a finite val/loss" in str(e.value) and "no best_adapters" in str(e.value)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_adapters"] is None and not (run / "best_adapters").exists()


def test_huge_learning_rate_never_puts_non_finite_weights_in_a_checkpoint(tiny_converted, tmp_path):
    run = tmp_path / "run"
    cfg = smoke_config(tiny_converted, run, learning_rate=1e30)
    with pytest.raises(trainer.NonFiniteTraining):
        trainer.train_and_evaluate(cfg, run)
    step, finite = _latest_state_is_finite(run)
    assert step == 4 and finite
    assert json.loads((run / "summary.json").read_text())["nonfinite_total"] > 0


def test_the_non_finite_stop_is_one_line_and_names_a_finite_checkpoint(tiny_converted, tmp_path):
    data, run = _data(tmp_path / "big.h5", scale=1e30), tmp_path / "run"
    cmd = [sys.executable, "-m", "burgers_jax.train", "--config", "configs/demo.py:smoke",
           f"--config.model.pretrained_path={tiny_converted}", "--config.dataset.source=hdf5",
           f"--config.dataset.path={data}", f"--config.logging.save_dir={run}", "--config.training.max_steps=8",
           "--config.training.max_consecutive_nonfinite=2"]
    from conftest import REPO

    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert p.returncode == 2, p.stderr
    err = [line for line in p.stderr.splitlines() if "error" in line]
    assert len(err) == 1 and "non-finite losses, gradients or updates in a row" in err[0], p.stderr
    assert "Traceback" not in p.stderr and "last checkpoint (step 2" in err[0], p.stderr
    assert _latest_state_is_finite(run) == (2, True)


def test_predict_checks_its_input_as_the_model_sees_it(tiny_converted, tmp_path, capsys):
    from burgers_jax.predict import main

    np.save(tmp_path / "big.npy", 7.5e38 * np.ones((1, 2, 128, 128, 2)))
    assert main(["--checkpoint", str(tiny_converted), "--input", str(tmp_path / "big.npy"),
                 "--out", str(tmp_path / "y.npy")]) == 2
    err = capsys.readouterr().err
    assert "non-finite value(s) or beyond float32's range" in err and not (tmp_path / "y.npy").exists(), err


# ----------------------------------------------------------------------------- data files


def test_hdf5_oddities_are_one_line(tmp_path):
    path = _data(tmp_path / "a.h5")
    with h5py.File(path, "r+") as f:
        f.attrs["num_samples"] = "four"
    with pytest.raises(data_lib.DataError, match=r"attribute 'num_samples'='four' is not a whole number"):
        data_lib.HDF5Source(path, min_frames=3)
    path = _data(tmp_path / "b.h5")
    with h5py.File(path, "r+") as f:
        del f["0/nu"]
        f["0/nu"] = np.bytes_(b"0.12")
    with pytest.raises(data_lib.DataError, match=r"sample 0 \(group '0'\): '0/nu' holds .* not numbers"):
        data_lib.HDF5Source(path, min_frames=3)


def test_a_file_locked_by_a_writer_is_named_as_locked(tmp_path):
    path = _data(tmp_path / "a.h5")
    writer = subprocess.Popen([sys.executable, "-c", "import h5py, sys, time\n"
                               f"f = h5py.File({str(path)!r}, 'a'); print('open', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "open"
        with pytest.raises(data_lib.DataError) as e:
            data_lib.HDF5Source(path, min_frames=3)
        assert "locked by another process" in str(e.value) and "truncated" not in str(e.value), str(e.value)
    finally:
        writer.kill()
        writer.wait()


# ----------------------------------------------------------------------------- the run directory


def test_a_symlinked_best_adapters_is_refused_before_the_work(tiny_converted, tmp_path):
    from burgers_jax.io.outputs import OutputError

    run = tmp_path / "run"
    trainer.train_and_evaluate(smoke_config(tiny_converted, run), run)
    shutil.move(run / "best_adapters", tmp_path / "elsewhere")
    (run / "best_adapters").symlink_to(tmp_path / "elsewhere")
    log = (run / "metrics.jsonl").read_text()
    with pytest.raises(OutputError, match=r"best_adapters: is a symbolic link"):
        trainer.train_and_evaluate(smoke_config(tiny_converted, run, resume=True, max_steps=6), run)
    assert (run / "metrics.jsonl").read_text() == log and not (run / "checkpoints" / "6").exists()


def test_a_folder_with_another_programs_config_json_is_not_a_run(tiny_converted, tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "config.json").write_text('{"name": "my webapp"}')
    for resume in (False, True):
        with pytest.raises(rundir.RunDirError) as e:
            trainer.train_and_evaluate(smoke_config(tiny_converted, folder, resume=resume), folder)
        assert "holds files that are not a training run" in str(e.value) and "resume" not in str(e.value)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]
