"""Nothing lost, nothing silent: each bad input or fault a user can hit becomes a named
error (exit 2, one line, no traceback) or a correct result, and no command deletes or
replaces what it did not write. One test per case; each failed on the code before.

Tiny model, tiny files, float32.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import REPO, metrics_rows, run_cli

from burgers_jax import generate as generate_cmd
from burgers_jax import predict as predict_cmd
from burgers_jax import train as train_cmd
from burgers_jax.configs import demo
from burgers_jax.data import sources as data
from burgers_jax.data import writer
from burgers_jax.io import checkpoint as ck
from burgers_jax.io import outputs
from burgers_jax.model.config import LoraConfig
from burgers_jax.training import rundir
from burgers_jax.training import trainer as train
from burgers_jax.training.setup import TrainConfigError
from porting import convert_ckpt as cc
from porting import export_torch


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err and "asyncio" not in err, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def readonly_dir(tmp_path):
    """A directory nobody may write, root included (chmod does not stop root; the
    immutable attribute does)."""
    d = tmp_path / "readonly"
    d.mkdir()
    if os.geteuid() != 0:
        d.chmod(0o555)
    elif subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode != 0:
        pytest.skip("running as root without chattr: no way to make a read-only directory here")
    yield d
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(d)], capture_output=True)
    d.chmod(0o755)


# ----------------------------------------------------------------------------- 1. never delete what we did not write


@pytest.mark.parametrize("where", ["user_dir", "file", "input_folder", "cwd"])
def test_convert_never_replaces_what_it_did_not_write(tiny_best_pt, tmp_path, monkeypatch, capsys, where):
    src = tmp_path / "in" / "best.pt"
    src.parent.mkdir()
    shutil.copy(tiny_best_pt, src)
    if where == "user_dir":
        out = tmp_path / "mine"
        out.mkdir()
        (out / "notes.txt").write_text("my notes")
    elif where == "file":
        out = tmp_path / "a_file"
        out.write_text("my file")
    elif where == "input_folder":
        out = src.parent
    else:
        out = Path(".")
        (tmp_path / "notes.txt").write_text("my notes")
        monkeypatch.chdir(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert cc.main([str(src), "--out", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "did not write" in line or "is a file" in line, line
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before, "every file is still there, unchanged"


def test_own_output_replaced_only_with_overwrite(tiny_best_pt, tmp_path, capsys):
    out = tmp_path / "flax"
    assert cc.main([str(tiny_best_pt), "--out", str(out)]) == 0
    first = (out / "params").stat().st_ino
    assert cc.main([str(tiny_best_pt), "--out", str(out)]) == 2
    assert "--overwrite" in _one_error_line(capsys.readouterr().err)
    assert (out / "params").stat().st_ino == first
    assert cc.main([str(tiny_best_pt), "--out", str(out), "--overwrite"]) == 0
    assert (out / "params").stat().st_ino != first, "replaced by a new conversion"
    assert oct((out).stat().st_mode & 0o777) == oct(0o777 & ~_umask()), "normal permissions, not mkdtemp's 0700"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_adapters_and_exports_refuse_user_paths(tiny_converted, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("x")
    adapters = {"transformer": {f"layers_{i}": {"self_attn": {"q_proj": {
        "lora_A": np.zeros((64, 2), np.float32), "lora_B": np.zeros((2, 64), np.float32)}}} for i in (0, 1)}}
    lora = LoraConfig(r=2, alpha=4.0, target_modules=("q_proj",))
    with pytest.raises(outputs.OutputError, match="did not write"):
        ck.save_adapters(mine, adapters, lora)
    ck.save_adapters(tmp_path / "ad", adapters, lora)
    with pytest.raises(outputs.OutputError, match="--overwrite"):
        ck.save_adapters(tmp_path / "ad", adapters, lora)
    ck.save_adapters(tmp_path / "ad", adapters, lora, overwrite=True)
    existing = tmp_path / "best_lora.pt"
    existing.write_bytes(b"precious")
    args = ["--checkpoint", str(tiny_converted), "--lora", str(tmp_path / "ad"), "--out", str(existing)]
    assert export_torch.main(args) == 2
    assert "--overwrite" in _one_error_line(capsys.readouterr().err)
    assert existing.read_bytes() == b"precious"
    assert export_torch.main(args[:-1] + [str(mine)]) == 2  # a directory where the .pt should go
    assert "is a directory" in _one_error_line(capsys.readouterr().err)
    assert export_torch.main(args + ["--overwrite"]) == 0
    assert torch.load(existing, weights_only=True)["lora_state_dict"]


def test_leftovers_of_a_killed_save_are_cleaned(tmp_path):
    dead_pid = 2**22 + 12345  # above pid_max's default: no such process
    left = tmp_path / f".ad.tmp-{dead_pid}-deadbeef"
    left.mkdir()
    (left / "half.bin").write_bytes(b"x")
    live = tmp_path / f".ad.tmp-{os.getpid()}-cafecafe"  # a write in progress: kept
    live.mkdir()
    adapters = {"transformer": {"layers_0": {"mlp": {"up_proj": {
        "lora_A": np.ones((64, 2), np.float32), "lora_B": np.ones((2, 128), np.float32)}}}}}
    ck.save_adapters(tmp_path / "ad", adapters, LoraConfig(r=2, alpha=4.0, target_modules=("up_proj",)))
    assert not left.exists() and live.exists()


def test_nan_weight_refused_at_conversion_naming_the_tensor(tiny_best_pt, tmp_path, capsys):
    ckpt = torch.load(tiny_best_pt, weights_only=True)
    ckpt["model_state_dict"]["decoder_2d.proj.weight"][3, 5] = float("nan")
    path = tmp_path / "nan.pt"
    torch.save(ckpt, path)
    assert cc.main([str(path), "--out", str(tmp_path / "out"), "--verify"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "decoder_2d.proj.weight" in line and "non-finite" in line, line
    assert not (tmp_path / "out").exists()


def test_predict_refuses_nonfinite_inputs_and_adapters(tiny_converted, tmp_path, capsys):

    x = np.random.default_rng(0).standard_normal((2, 2, 128, 128, 6)).astype(np.float32)
    x[1, 1, 7, 9, 0] = np.nan
    np.save(tmp_path / "in.npy", x)
    args = ["--checkpoint", str(tiny_converted), "--input", str(tmp_path / "in.npy"), "--output",
            str(tmp_path / "out.npy")]
    assert predict_cmd.main(args) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "sample 1, frame 1" in line and "non-finite" in line, line
    x[1, 1, 7, 9, 0] = np.inf
    np.save(tmp_path / "in.npy", x)
    assert predict_cmd.main(args) == 2
    assert "sample 1, frame 1" in capsys.readouterr().err
    bad = {"transformer": {f"layers_{i}": {"mlp": {"down_proj": {
        "lora_A": np.full((128, 2), np.nan if i else 0.0, np.float32), "lora_B": np.ones((2, 64), np.float32)}}}
        for i in (0, 1)}}
    ck.save_adapters(tmp_path / "nan_ad", bad, LoraConfig(r=2, alpha=4.0, target_modules=("down_proj",)))
    np.save(tmp_path / "in.npy", np.zeros((1, 1, 128, 128, 6), np.float32))
    assert predict_cmd.main(args + ["--lora", str(tmp_path / "nan_ad")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "transformer/layers_1/mlp/down_proj/lora_A" in line and "non-finite" in line, line
    assert not (tmp_path / "out.npy").exists()


@pytest.mark.parametrize("field,value,named", [
    ("learning_rate", -1e-3, "training.learning_rate=-0.001"),
    ("min_lr", 1.0, "training.min_lr=1.0"),
    ("betas", (0.9, 1.0), "training.betas=(0.9, 1.0)"),
    ("grad_clip", 0.0, "training.grad_clip=0.0"),
    ("weight_decay", -1e-4, "training.weight_decay=-0.0001"),
    ("eval_every_steps", 0, "training.eval_every_steps=0"),
])
def test_bad_optimizer_fields_refused_before_any_work(tiny_converted, tmp_path, field, value, named):
    cfg = demo.get_config("smoke")
    cfg.model.pretrained_path = str(tiny_converted)
    cfg.training[field] = value
    with pytest.raises(TrainConfigError, match=named.replace(".", r"\.").replace("(", r"\(")
                       .replace(")", r"\)")):
        train.train_and_evaluate(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_log_interval_zero_refused(tiny_converted, tmp_path):
    cfg = demo.get_config("smoke")
    cfg.model.pretrained_path = str(tiny_converted)
    cfg.logging.log_interval = 0
    with pytest.raises(TrainConfigError, match=r"logging\.log_interval=0"):
        train.train_and_evaluate(cfg, tmp_path / "run")


def _h5(path, frames=20, n=8, samples=2, nu=0.1, attrs=None):
    with h5py.File(path, "w") as f:
        f.attrs.update(attrs or {})
        for i in range(samples):
            g = f.create_group(str(i))
            g.create_dataset("nu", data=np.float32(nu if i == 1 else 0.1))
            g.create_dataset("vector/data", data=np.full((frames, n, n, 2), 0.75, np.float32))
            for b, shape in [("left", (frames, n, 1, 2)), ("right", (frames, n, 1, 2)),
                             ("bottom", (frames, 1, n, 2)), ("top", (frames, 1, n, 2))]:
                g.create_dataset(f"vector/boundary/{b}", data=np.full(shape, 0.75, np.float32))
    return path


def test_negative_or_zero_viscosity_refused(tmp_path, capsys):
    for nu in (-0.1, 0.0):
        with pytest.raises(data.DataError, match=rf"sample 1 .*nu={nu:g} is not a positive"):
            data.HDF5Source(_h5(tmp_path / f"nu{nu}.h5", nu=nu))
        argv = ["--output", str(tmp_path / f"gen{nu}.h5"), "--num-samples", "2", "--num-frames", "4",
                "--resolution", "8", "--nu-min", str(nu)]
        assert generate_cmd.main(argv) == 2
        assert "--nu-min" in _one_error_line(capsys.readouterr().err)
        assert not (tmp_path / f"gen{nu}.h5").exists()


def test_a_second_training_on_the_same_dir_is_refused(tmp_path, capsys):
    held = rundir.RunDir(tmp_path / "run")
    assert held.lock() is None
    try:
        other = rundir.RunDir(tmp_path / "run")
        with pytest.raises(rundir.RunDirError, match=rf"in use by another training \(pid {os.getpid()}"):
            other.check_location(resume=True)
        with pytest.raises(rundir.RunDirError, match="in use"):
            other.lock()
    finally:
        held.unlock()
    assert not (tmp_path / "run" / ".lock").exists()
    # The lock of a process that died (file left behind, no flock held) is taken over.
    (tmp_path / "run" / ".lock").write_text("4194303\n")
    run = rundir.RunDir(tmp_path / "run")
    run.check_location(resume=False)
    assert "4194303" in run.lock()
    run.unlock()


def test_generation_interrupted_leaves_no_file(tmp_path, monkeypatch):
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C during the third sample
        return real(*args, **kwargs)

    real = writer.burgers_fields32
    monkeypatch.setattr(writer, "burgers_fields32", flaky)
    with pytest.raises(KeyboardInterrupt):
        writer.write_dataset(tmp_path / "d.h5", num_samples=5, num_frames=4, resolution=8, progress=False)
    assert list(tmp_path.iterdir()) == [], "neither the file nor its temporary may remain"


def test_loader_refuses_a_file_with_fewer_samples_than_written(tmp_path):
    path = _h5(tmp_path / "short.h5", samples=3, attrs={"num_samples": 5, "dt": 0.1})
    with pytest.raises(data.DataError, match="holds 3 samples but was written for 5"):
        data.HDF5Source(path, min_frames=2)


# ----------------------------------------------------------------------------- 2. one-line named errors


def test_read_only_outputs_refused_before_work(readonly_dir, tiny_best_pt, tiny_converted, tmp_path, capsys):

    target = readonly_dir / "sub" / "out"
    assert cc.main([str(tiny_best_pt), "--out", str(target)]) == 2
    assert "not writable" in _one_error_line(capsys.readouterr().err)
    assert export_torch.main(["--checkpoint", str(tiny_converted), "--merged", "--out", str(target)]) == 2
    assert "not writable" in _one_error_line(capsys.readouterr().err)
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 128, 128, 6), np.float32))
    assert predict_cmd.main(["--checkpoint", str(tiny_converted), "--input", str(tmp_path / "x.npy"),
                         "--output", str(target)]) == 2
    assert "not writable" in _one_error_line(capsys.readouterr().err)
    assert generate_cmd.main(["--output", str(target), "--num-samples", "1", "--num-frames", "3",
                          "--resolution", "8"]) == 2
    assert "not writable" in _one_error_line(capsys.readouterr().err)
    cfg = demo.get_config("smoke")
    cfg.model.pretrained_path = str(tiny_converted)
    with pytest.raises(outputs.OutputError, match="not writable"):
        train.train_and_evaluate(cfg, target)


def test_verify_frames_zero(tiny_best_pt, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cc.main([str(tiny_best_pt), "--out", str(tmp_path / "o"), "--verify", "--verify-frames", "0"])
    assert e.value.code == 2
    assert "--verify-frames" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_truncated_hdf5_is_a_named_error(tmp_path):
    path = writer.write_dataset(tmp_path / "full.h5", num_samples=2, num_frames=20, resolution=8,
                             progress=False)["path"]
    cut = tmp_path / "cut.h5"
    cut.write_bytes(Path(path).read_bytes()[: Path(path).stat().st_size * 2 // 3])
    with pytest.raises(data.DataError, match="cut.h5") as e:
        src = data.HDF5Source(cut, min_frames=2)
        for i in range(src.num_samples):
            src.read_window(i, 0, 20)
    assert "truncated" in str(e.value) or "not an HDF5" in str(e.value)


def test_unknown_config_field_names_the_closest(capsys):
    rc = train_cmd.main(["burgers-train", "--config", "configs/demo.py:smoke", "--config.training.learning_rat=1"])
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "config.training.learning_rat" in line and "did you mean config.training.learning_rate" in line


@pytest.mark.parametrize("flag,value", [("--num-frames", "1"), ("--num-samples", "0"), ("--chunk-frames", "0")])
def test_generator_arguments(tmp_path, capsys, flag, value):
    argv = ["--output", str(tmp_path / "g.h5"), "--num-samples", "1", "--num-frames", "3", "--resolution", "8"]
    assert generate_cmd.main(argv + [flag, value]) == 2
    assert flag in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "g.h5").exists()


def test_corrupt_adapter_chunk_is_one_message(tiny_converted, tmp_path):
    adapters = {"transformer": {f"layers_{i}": {"self_attn": {"q_proj": {
        "lora_A": np.ones((64, 2), np.float32), "lora_B": np.ones((2, 64), np.float32)}}} for i in (0, 1)}}
    ad = ck.save_adapters(tmp_path / "ad", adapters, LoraConfig(r=2, alpha=4.0, target_modules=("q_proj",)))
    chunk = next(p for p in (ad / "adapters").rglob("*") if p.is_file() and p.name == "0.0")
    chunk.write_bytes(b"garbage")
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 128, 128, 6), np.float32))
    rc, out, err = run_cli(["-m", "burgers_jax.predict", "--checkpoint", str(tiny_converted), "--lora", str(ad),
                            "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy")])
    assert rc == 2
    line = _one_error_line(err)
    assert str(ad) in line and "cannot restore" in line, line


def test_text_file_named_npy_and_exact_output_path(tiny_converted, tmp_path, capsys):

    (tmp_path / "notes.npy").write_text("these are my notes, not an array\n")
    args = ["--checkpoint", str(tiny_converted), "--input", str(tmp_path / "notes.npy"), "--output",
            str(tmp_path / "pred")]
    assert predict_cmd.main(args) == 2
    assert "not a .npy array" in _one_error_line(capsys.readouterr().err)
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 128, 128, 6), np.float32))
    args[3] = str(tmp_path / "x.npy")
    assert predict_cmd.main(args) == 0
    assert (tmp_path / "pred").is_file() and not (tmp_path / "pred.npy").exists()  # exactly the path given
    assert np.load(tmp_path / "pred").shape == (1, 1, 128, 128, 6)
    assert predict_cmd.main(args) == 2  # occupied
    assert "--overwrite" in capsys.readouterr().err


def test_hdf5_loader_uses_the_configured_window(tmp_path):
    path = _h5(tmp_path / "ten.h5", frames=10, attrs={"dt": 0.01})
    assert data.HDF5Source(path, min_frames=5).num_frames == 10
    with pytest.raises(data.DataError, match="10 frames, fewer than the 17"):
        data.HDF5Source(path)


# ----------------------------------------------------------------------------- training faults and resume


def _smoke_cli(pretrained, save_dir, *extra):
    return ["-m", "burgers_jax.train", "--config", "configs/demo.py:smoke",
            f"--config.model.pretrained_path={pretrained}", f"--config.logging.save_dir={save_dir}", *extra]


@pytest.fixture(scope="module")
def finished_run(tiny_converted, tmp_path_factory):
    """A 4-step smoke run (checkpoints at steps 2 and 4)."""
    save_dir = tmp_path_factory.mktemp("run") / "run"
    rc, out, err = run_cli(_smoke_cli(tiny_converted, save_dir))
    assert rc == 0, err[-2000:]
    return save_dir


def test_resume_with_another_rank_is_refused_before_writing(finished_run, tiny_converted, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    config_before = (run / "config.json").read_text()
    rc, out, err = run_cli(_smoke_cli(tiny_converted, run, "--config.training.resume=True",
                                      "--config.model.lora.r=8"))
    assert rc == 2
    line = _one_error_line(err)
    assert "model.lora.r: 16 -> 8" in line and "allow_config_change" in line, line
    assert (run / "config.json").read_text() == config_before


def test_resume_alone_torn_metrics_and_corrupt_checkpoint(finished_run, tmp_path):
    """Resume with only resume + save_dir (the run's saved config is used: here with a
    config file whose defaults differ completely), after a torn metrics line and with the
    latest checkpoint corrupt: falls back to step 2, says so, and trains to step 6."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "train/lo')  # a write cut short
    chunks = [p for p in (run / "checkpoints" / "4").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert chunks, "test premise: the orbax data files of step 4"
    for p in chunks:  # the array data of step 4 (orbax OCDBT "d" files)
        p.write_bytes(b"corrupt")
    rc, out, err = run_cli(["-m", "burgers_jax.train", "--config", "configs/burgers.py",
                            f"--config.logging.save_dir={run}", "--config.training.resume=True",
                            "--config.training.max_steps=6"])
    assert rc == 0, err[-3000:]
    assert "Traceback" not in err
    assert "torn line" in err and "step 4" in err and "falling back" in err, err
    assert "resumed from" in out and "at step 2" in out, out
    steps = [r["step"] for r in metrics_rows(run) if "train/pde_loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6], steps


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_and_sigterm_save_and_exit_with_the_signal_status(tiny_converted, tmp_path, signum, status):
    """Ctrl-C, and SIGTERM (what a cluster's time limit or a preemption sends)."""
    save_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, *_smoke_cli(tiny_converted, save_dir, "--config.training.max_steps=400",
                                                         "--config.training.eval_every_steps=200")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (save_dir / "metrics.jsonl").exists() and any("train/loss" in r for r in metrics_rows(save_dir)):
            break
        time.sleep(0.1)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == status, err[-3000:]
    assert "Traceback" not in err and "Resume with:" in err and "--config.training.resume=True" in err, err
    saved = sorted(int(p.name) for p in (save_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert saved and 0 < saved[-1] < 400
    assert not (save_dir / ".lock").exists()
