"""Bad inputs and faults across the commands (config values, resume, data files,
evaluation, writing): each case once gave a wrong result silently, lost a file, or
answered with a traceback. Every test here failed on the code before its fix."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from conftest import REPO, metrics_rows, smoke_config

from burgers_jax.configs import from_yaml
from burgers_jax.data import sources as data_lib
from burgers_jax.data.writer import write_dataset
from burgers_jax.evaluation import evaluate
from burgers_jax.io import outputs
from burgers_jax.training import reporting, rundir, runtime, trainer
from burgers_jax.training.setup import TrainConfigError, check_config

# ----------------------------------------------------------------------------- config values


@pytest.mark.parametrize("field", ["lambda_bc", "lambda_pde", "lambda_data", "learning_rate", "min_lr"])
def test_nonfinite_float_fields_are_refused_naming_them(tiny_converted, tmp_path, field):
    cfg = smoke_config(tiny_converted, tmp_path / "run", **{field: math.nan})
    with pytest.raises(TrainConfigError, match=rf"training\.{field}=nan must be a finite number"):
        check_config(cfg, 1)
    cfg.training[field] = math.inf
    with pytest.raises(TrainConfigError, match=rf"training\.{field}=inf must be a finite number"):
        check_config(cfg, 1)


def test_num_devices_out_of_range_is_a_named_error(tiny_converted, tmp_path):
    for bad in (-1, 10_000):
        cfg = smoke_config(tiny_converted, tmp_path / "run", num_devices=bad)
        with pytest.raises(TrainConfigError, match=rf"training\.num_devices={bad} must be an integer in \[0, "):
            trainer.Trainer(cfg)


def test_distributed_without_a_coordinator_names_the_variables(monkeypatch):
    for k in runtime.DISTRIBUTED_ENV:
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(TrainConfigError) as e:
        runtime.initialize_distributed()
    msg = str(e.value)
    assert "training.distributed=True" in msg and all(k in msg for k in runtime.DISTRIBUTED_ENV), msg


def test_yaml_numbers_without_a_dot_are_numbers(tmp_path):
    """YAML 1.1 reads `1e-3` as a string; the PyTorch script float()s it, and so do we."""
    from test_user_path import _finetune_yaml

    path = _finetune_yaml(tmp_path)
    text = path.read_text()
    assert "learning_rate: 0.0001" in text  # test premise: the line we rewrite
    path.write_text(text.replace("learning_rate: 0.0001", "learning_rate: 1e-3"))
    c = from_yaml.get_config(str(path))
    assert c.training.learning_rate == 1e-3 and isinstance(c.training.learning_rate, float)
    path.write_text(text.replace("learning_rate: 0.0001", "learning_rate: fast"))
    with pytest.raises(from_yaml.YamlConfigError, match=r"training\.learning_rate='fast' is not a number"):
        from_yaml.get_config(str(path))


# ----------------------------------------------------------------------------- the time step


@pytest.fixture(scope="module")
def small_h5(tmp_path_factory):
    path = tmp_path_factory.mktemp("h5") / "small.h5"
    write_dataset(path, num_samples=2, num_frames=24, progress=False)
    return path


@pytest.mark.parametrize("bad", [-0.001, 0.0, "fast", np.nan])
def test_a_bad_recorded_dt_is_refused(small_h5, tmp_path, bad):
    path = tmp_path / "bad_dt.h5"
    shutil.copy(small_h5, path)
    with h5py.File(path, "a") as f:
        f.attrs["dt"] = bad
    with pytest.raises(data_lib.DataError, match=r"attribute 'dt'="):
        data_lib.HDF5Source(path)


@pytest.mark.parametrize("explicit", [-1.0, 0.0, math.nan, math.inf])
def test_an_explicit_dt_must_be_a_positive_finite_number(explicit):
    with pytest.raises(data_lib.DataError, match=r"--dt=.* must be a finite time step > 0"):
        data_lib.resolve_dt(explicit, None, "file.h5", flag="--dt")
    with pytest.raises(data_lib.DataError, match="--dt="):
        data_lib.resolve_dt(explicit, 1 / 999, "file.h5", flag="--dt")


def test_evaluate_dt_contradicting_the_file_or_the_analytic_axis(small_h5, tiny_converted, tmp_path):
    req = dict(checkpoint=tiny_converted, temporal_length=2, rollout=0, out=tmp_path / "ev")
    with pytest.raises(data_lib.DataError, match=r"--dt=0.5 disagrees with the time axis"):
        evaluate.run_evaluation(evaluate.EvalRequest(data=small_h5, dt=0.5, **req), show_progress=False)
    with pytest.raises(data_lib.DataError, match=r"--dt=0.5 disagrees with the time axis of the analytic source"):
        evaluate.run_evaluation(evaluate.EvalRequest(analytic=True, num_samples=1, num_frames=24, dt=0.5, **req),
                                show_progress=False)
    assert not (tmp_path / "ev").exists()


def test_evaluate_refuses_another_grid_before_the_model_runs(tiny_converted, tmp_path):
    path = tmp_path / "grid64.h5"
    write_dataset(path, num_samples=2, num_frames=8, resolution=64, progress=False)
    req = evaluate.EvalRequest(checkpoint=tiny_converted, data=path, temporal_length=2, split="all",
                               out=tmp_path / "ev")
    with pytest.raises(evaluate.EvaluateError, match=r"64x64 grid; the model needs 128x128"):
        evaluate.run_evaluation(req, show_progress=False)


# ----------------------------------------------------------------------------- outputs


def _fill(text):
    def fill(tmp):
        (tmp / "result.txt").write_text(text)
        (tmp / outputs.METADATA_FILE).write_text(json.dumps(outputs.format_marker("evaluation")))
    return fill


def test_overwrite_replaces_only_what_we_wrote(tmp_path):
    out = tmp_path / "ev"
    outputs.write_dir(out, _fill("first"), "evaluation")
    assert json.loads((out / outputs.METADATA_FILE).read_text())["files"] == ["metadata.json", "result.txt"]
    (out / "NOTES.txt").write_text("the user's notes")
    (out / "best_lora.pt").write_bytes(b"an export the user wrote here")
    outputs.write_dir(out, _fill("second"), "evaluation", overwrite=True)
    assert (out / "result.txt").read_text() == "second"
    assert (out / "NOTES.txt").read_text() == "the user's notes"
    assert (out / "best_lora.pt").read_bytes() == b"an export the user wrote here"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ev.")]  # no temporaries, no claim


def test_overwrite_refuses_when_a_users_file_has_the_new_outputs_name(tmp_path):
    out = tmp_path / "ev"
    outputs.write_dir(out, _fill("first"), "evaluation")
    meta = json.loads((out / outputs.METADATA_FILE).read_text())
    (out / outputs.METADATA_FILE).write_text(json.dumps({**meta, "files": ["metadata.json"]}))
    (out / "result.txt").write_text("the user's")  # not in the list: the user's
    with pytest.raises(outputs.OutputError, match="result.txt, which this tool did not write"):
        outputs.write_dir(out, _fill("second"), "evaluation", overwrite=True)
    assert (out / "result.txt").read_text() == "the user's"


def test_an_output_of_an_older_version_keeps_what_the_new_one_does_not_write(tmp_path):
    out = tmp_path / "ev"
    out.mkdir()
    (out / outputs.METADATA_FILE).write_text(json.dumps(outputs.format_marker("evaluation")))  # no file list
    (out / "result.txt").write_text("old")
    (out / "NOTES.txt").write_text("notes")
    outputs.write_dir(out, _fill("new"), "evaluation", overwrite=True)
    assert (out / "result.txt").read_text() == "new" and (out / "NOTES.txt").read_text() == "notes"


CLAIM_AND_WAIT = textwrap.dedent("""
    import sys, time
    from burgers_jax.io import outputs
    outputs.check_{what}(sys.argv[1]{args})
    print("claimed", flush=True)
    time.sleep(60)
""")


@pytest.mark.parametrize("what, args", [("dir", ", 'evaluation'"), ("file", "")])
def test_a_second_writer_of_the_same_new_output_is_refused(tmp_path, what, args):
    out = tmp_path / ("ev" if what == "dir" else "pred.npy")
    first = subprocess.Popen([sys.executable, "-c", CLAIM_AND_WAIT.format(what=what, args=args), str(out)],
                             cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "claimed"
        with pytest.raises(outputs.OutputError, match=rf"being written by another command \(pid {first.pid}\)"):
            if what == "dir":
                outputs.write_dir(out, _fill("second"), "evaluation")
            else:
                outputs.write_file(out, lambda p: p.write_text("second"))
        assert not out.exists()
    finally:
        first.kill()
        first.wait()
    # The claim of a process that died is taken over.
    if what == "dir":
        outputs.write_dir(out, _fill("third"), "evaluation")
        assert (out / "result.txt").read_text() == "third"
    else:
        outputs.write_file(out, lambda p: p.write_text("third"))
        assert out.read_text() == "third"
    assert not (tmp_path / f".{out.name}.claim").exists()


def test_a_symlinked_output_directory_is_refused_before_work(tmp_path):
    (tmp_path / "real").mkdir()
    for name, target in (("link", tmp_path / "real"), ("dangling", tmp_path / "missing")):
        os.symlink(target, tmp_path / name)
        with pytest.raises(outputs.OutputError, match="is a symbolic link"):
            outputs.check_dir(tmp_path / name, "peft_adapters")


# ----------------------------------------------------------------------------- resume


@pytest.fixture(scope="module")
def finished(tiny_converted, tmp_path_factory):
    """A 4-step smoke run (checkpoints at steps 2 and 4), trained in this process."""
    save_dir = tmp_path_factory.mktemp("resume") / "run"
    trainer.train_and_evaluate(smoke_config(tiny_converted, save_dir), save_dir)
    return save_dir


def _copy(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    return run


def test_resume_without_config_json_is_refused_unless_asked(finished, tiny_converted, tmp_path):
    run = _copy(finished, tmp_path)
    (run / "config.json").unlink()
    before = (run / "metrics.jsonl").read_text()
    cfg = smoke_config(tiny_converted, run, resume=True, max_steps=6, learning_rate=5e-2)
    with pytest.raises(rundir.RunDirError, match="it has no config.json.*allow_config_change=True"):
        trainer.train_and_evaluate(cfg, run)
    assert (run / "metrics.jsonl").read_text() == before and not (run / "config.json").exists()


@pytest.mark.parametrize("torn", ['{"model": {"pretr', ""])
def test_a_torn_config_json_offers_the_way_out(finished, tiny_converted, tmp_path, torn):
    run = _copy(finished, tmp_path)
    (run / "config.json").write_text(torn)
    cfg = smoke_config(tiny_converted, run, resume=True, max_steps=6)
    with pytest.raises(rundir.RunDirError, match="torn or not JSON.*allow_config_change=True"):
        trainer.train_and_evaluate(cfg, run)
    cfg.training.allow_config_change = True
    summary = trainer.train_and_evaluate(cfg, run)
    assert summary["steps"] == 6
    assert json.loads((run / "config.json").read_text())["training"]["max_steps"] == 6


def test_resume_without_checkpoints_never_mixes_two_runs(finished, tiny_converted, tmp_path):
    run = _copy(finished, tmp_path)
    shutil.rmtree(run / "checkpoints")
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    cfg = smoke_config(tiny_converted, run, resume=True)
    with pytest.raises(rundir.RunDirError, match="holds metrics.jsonl but no checkpoint"):
        trainer.train_and_evaluate(cfg, run)
    assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_shape_change_is_refused_even_when_changes_are_allowed(finished, tiny_converted, tmp_path):
    run = _copy(finished, tmp_path)
    config_before = (run / "config.json").read_text()
    cfg = smoke_config(tiny_converted, run, resume=True, allow_config_change=True)
    cfg.model.lora.r = 8
    with pytest.raises(rundir.RunDirError, match=r"changes the shapes of the saved state \(model\.lora\.r: 16 -> 8\)"):
        trainer.train_and_evaluate(cfg, run)
    assert (run / "config.json").read_text() == config_before
    # ... and the plain resume still works afterwards.
    summary = trainer.train_and_evaluate(smoke_config(tiny_converted, run, resume=True, max_steps=5), run)
    assert summary["steps"] == 5


def test_a_longer_resumed_run_keeps_its_schedule(finished, tiny_converted, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    trainer.train_and_evaluate(smoke_config(tiny_converted, run, resume=True, max_steps=7), run)
    out = capsys.readouterr().out
    assert "the learning-rate schedule keeps its length (4 steps)" in out, out
    lrs = {r["step"]: r["train/lr"] for r in metrics_rows(run) if "train/lr" in r}
    cfg = smoke_config(tiny_converted, run)
    assert lrs[5] == pytest.approx(cfg.training.min_lr) and lrs[7] == pytest.approx(cfg.training.min_lr), lrs
    assert json.loads((run / "config.json").read_text())["training"]["schedule_steps"] == 4
    # A warm restart only when asked, and said so.
    trainer.train_and_evaluate(smoke_config(tiny_converted, run, resume=True, max_steps=9, schedule_steps=9), run)
    assert "warm restart" in capsys.readouterr().out
    lrs = {r["step"]: r["train/lr"] for r in metrics_rows(run) if "train/lr" in r}
    assert lrs[8] > 10 * cfg.training.min_lr, lrs


def test_a_bad_wandb_run_id_is_refused_before_work(finished, tiny_converted, tmp_path):
    run = _copy(finished, tmp_path)
    (run / reporting.WANDB_RUN_ID_FILE).write_text("not/a valid id\n")
    before = (run / "metrics.jsonl").read_text()
    cfg = smoke_config(tiny_converted, run, resume=True, max_steps=6)
    cfg.logging.wandb, cfg.logging.wandb_mode = True, "offline"
    with pytest.raises(reporting.ReportingError, match=r"wandb_run_id.txt: 'not/a valid id' is not a Weights"):
        trainer.train_and_evaluate(cfg, run)
    assert (run / "metrics.jsonl").read_text() == before


def test_a_full_disk_while_training_is_one_line_keeping_the_checkpoints(finished, tiny_converted, tmp_path,
                                                                         monkeypatch):
    import errno

    from burgers_jax.io import disk, train_state

    run = _copy(finished, tmp_path)
    saved = sorted(p.name for p in (run / "checkpoints").iterdir())

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(train_state, "save_state", full)
    with pytest.raises(disk.DiskFullError, match=r"no space left on .* while training; the checkpoints already in"):
        trainer.train_and_evaluate(smoke_config(tiny_converted, run, resume=True, max_steps=6), run)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == saved
    assert not (run / ".lock").exists()


def test_ctrl_c_in_evaluate_is_one_line_and_exit_130(tiny_converted, tmp_path, monkeypatch, capsys):
    from burgers_jax import evaluate as evaluate_cmd

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate.data_lib, "HDF5Source", interrupted)  # mid-way: after the model is loaded
    rc = evaluate_cmd.main(["--checkpoint", str(tiny_converted), "--data", str(tmp_path / "x.h5"),
                            "--temporal-length", "2", "--out", str(tmp_path / "ev")])
    err = capsys.readouterr().err
    assert rc == 130 and "interrupted" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "ev").exists() and not list(tmp_path.glob(".ev.*"))
