"""Nothing lost, nothing silent, for the scripts: `scripts/pretrain.py` under the output
rules of every command (checked before any work, a format marker, `--overwrite`, a
user's folder refused) and with every numeric flag validated; `scripts/experiment.py`
never reporting or resuming a run of other settings as the one asked for, and never
reusing an evaluation of a run that changed since. Each case failed on the code before.

Tiny settings: one real (tiny) pretraining, its second run compiled from a cache.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO, run_cli

from burgers_jax.errors import UserError

TINY = ["--arch", "tiny", "--steps", "1", "--eval-every", "1", "--val-per-family", "1", "--batch", "1",
        "--warmup", "0"]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pretrain():
    return _script("pretrain")


@pytest.fixture(scope="module")
def experiment():
    return _script("experiment")


def _one_error_line(err: str, prog: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    return lines[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _earlier_pretrain(folder: Path) -> dict[str, bytes]:
    """An earlier result of pretrain.py (its marker, the files it writes)."""
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text(json.dumps({"format": "burgers_jax.pretrain"}))
    (folder / "best.pt").write_bytes(b"the earlier best.pt")
    (folder / "curve.jsonl").write_text('{"step": 1, "train_loss": 0.5}\n')
    (folder / "summary.json").write_text('{"best_step": 1}\n')
    return _snapshot(folder)


# ----------------------------------------------------------------------------- pretrain.py


def test_pretrain_refuses_an_earlier_result_without_overwrite_before_any_work(tmp_path):
    """Was: curve.jsonl truncated at the start, an hour of training, then a traceback."""
    out = tmp_path / "standin"
    before = _earlier_pretrain(out)
    rc, stdout, err = run_cli(["scripts/pretrain.py", "--out", str(out), *TINY], timeout=300)
    line = _one_error_line(err, "pretrain")
    assert rc == 2 and str(out) in line and "--overwrite" in line, (rc, err)
    assert "step 1" not in stdout, "refused after the work"
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["standin"]  # nothing left beside it


def test_pretrain_refuses_a_users_folder_even_with_overwrite(tmp_path, pretrain, capsys):
    """Was: the user's summary.json overwritten, exit 0."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "summary.json").write_text("my own summary\n")
    (out / "NOTES.txt").write_text("notes\n")
    before = _snapshot(out)
    rc = pretrain.main(["--out", str(out), *TINY, "--overwrite"])
    line = _one_error_line(capsys.readouterr().err, "pretrain")
    assert rc == 2 and str(out) in line and "did not write" in line, line
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


@pytest.mark.parametrize("flag,value", [
    ("--lr", "-0.01"), ("--lr", "0"), ("--lr", "nan"), ("--lr", "inf"), ("--steps", "0"), ("--eval-every", "0"),
    ("--batch", "0"), ("--frames", "0"), ("--warmup", "-1"), ("--val-per-family", "0"), ("--seed", "-1"),
    ("--noise-level", "nan"), ("--noise-level", "-0.1"),
])
def test_pretrain_validates_every_numeric_flag_before_any_work(tmp_path, pretrain, capsys, flag, value):
    """Was: --lr -0.01 trained uphill and wrote best.pt with exit 0; --steps 0 and
    --eval-every 0 tracebacks."""
    out = tmp_path / "p"
    args = ["--out", str(out), *TINY]
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    rc = pretrain.main(args)
    line = _one_error_line(capsys.readouterr().err, "pretrain")
    assert rc == 2 and f"{flag}=" in line, line
    assert not out.exists() and list(tmp_path.iterdir()) == []


CRASH_AT_THE_END = (  # pretrain.py with its last step (the plot) failing, as a full disk would
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('pretrain_script', 'scripts/pretrain.py')\n"
    "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
    "def boom(*a): raise OSError(28, 'No space left on device')\n"
    "m.plot_curve = boom\n"
    "sys.exit(m.main(sys.argv[1:]))\n")


def test_pretrain_overwrite_keeps_the_earlier_result_until_the_new_one_is_complete(tmp_path):
    """Was: curve.jsonl of the earlier result truncated at the start, so a crash (or a
    refusal at the end) lost the earlier curve; now the earlier result stays whole until
    the new one replaces it, and the curve computed by a crashed run is kept beside it."""
    out = tmp_path / "standin"
    before = _earlier_pretrain(out)
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp_path.parent / f"{tmp_path.name}_jax_cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    rc, stdout, err = run_cli(["-c", CRASH_AT_THE_END, "--out", str(out), *TINY, "--overwrite"], env=env)
    assert rc != 0 and "No space left on device" in err, err[-3000:]
    assert _snapshot(out) == before, "the earlier result was touched before the new one was complete"
    kept = [p for p in tmp_path.iterdir() if p.name != "standin"]
    assert len(kept) == 1 and kept[0].name.startswith(".standin.curve-") and str(kept[0]) in err, (kept, err)
    rows = [json.loads(line) for line in kept[0].read_text().splitlines()]
    assert rows and rows[-1]["step"] == 1 and "val" in rows[-1], "the computed curve was lost"

    rc, stdout, err = run_cli(["scripts/pretrain.py", "--out", str(out), *TINY, "--overwrite"], env=env)
    assert rc == 0, err[-3000:]
    assert json.loads((out / "metadata.json").read_text())["format"] == "burgers_jax.pretrain"
    assert {"best.pt", "curve.jsonl", "curve.png", "summary.json"} <= set(os.listdir(out))
    assert (out / "best.pt").read_bytes() != before["best.pt"]
    assert json.loads((out / "curve.jsonl").read_text().splitlines()[-1])["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["standin", kept[0].name])  # its own curve moved in


# ----------------------------------------------------------------------------- experiment.py


def _cfg(experiment, out: Path, steps: int, row: str = "precond", stride: int = 1, seed: int = 0):
    args = SimpleNamespace(steps=steps, temporal_length=4, out=out, rollout=0)
    return experiment.row_config(args, out / "pretrained", row, stride, seed)


def _finished_run(run: Path, cfg) -> None:
    """A run the experiment trained to the end: its settings, summary and checkpoints."""
    (run / "checkpoints" / "2").mkdir(parents=True)
    (run / "best_adapters").mkdir()
    (run / "config.json").write_text(cfg.to_json_best_effort())
    (run / "metrics.jsonl").write_text('{"step": 2, "val/vrmse": 0.5}\n')
    (run / "summary.json").write_text(json.dumps({"steps": cfg.training.max_steps}))
    (run / "experiment_settings.json").write_text(cfg.to_json_best_effort() + "\n")


def _cut_short_run(run: Path, cfg) -> None:
    """A run stopped before its end: the config.json its training wrote (with the time
    step it filled in and resume=True), checkpoints, metrics, no summary."""
    started = json.loads(cfg.to_json_best_effort())
    started["physics"]["dt"] = 1 / 999
    started["training"]["resume"] = True
    (run / "checkpoints" / "1").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(started))
    (run / "metrics.jsonl").write_text('{"step": 1}\n')


@pytest.fixture
def fake_training(experiment, monkeypatch):
    calls = []

    def train_and_evaluate(cfg, run):
        calls.append({"resume": bool(cfg.training.resume), "max_steps": cfg.training.max_steps})
        return {"steps": cfg.training.max_steps}

    monkeypatch.setattr(experiment.trainer, "train_and_evaluate", train_and_evaluate)
    return calls


def test_experiment_refuses_a_finished_run_of_other_steps_before_any_work(tmp_path, experiment, monkeypatch,
                                                                          capsys):
    """Was: a rerun with --steps 40 into the folder of a 2-step experiment reported (or
    resumed) the 2-step run as the 40-step row."""
    out = tmp_path / "exp"
    (out / "pretrained" / "params").mkdir(parents=True)
    (out / "metadata.json").write_text(json.dumps({"format": "burgers_jax.experiment"}))
    run = out / "runs" / "precond_s1_seed0"
    _finished_run(run, _cfg(experiment, out, steps=2))

    def no_work(*a, **k):
        raise AssertionError("work started before the refusal")

    for target, name in ((experiment, "run_eval"), (experiment.trainer, "train_and_evaluate"),
                         (experiment.convert_ckpt, "convert")):
        monkeypatch.setattr(target, name, no_work)
    rc = experiment.main(["--out", str(out), "--rows", "precond", "--strides", "1", "--seeds", "0", "--steps", "40"])
    line = _one_error_line(capsys.readouterr().err, "experiment")
    assert rc == 2 and str(run) in line and "training.max_steps: 2 -> 40" in line and "--out" in line, line
    assert json.loads((run / "summary.json").read_text()) == {"steps": 2}


def test_experiment_does_not_resume_a_cut_short_run_under_other_settings(tmp_path, experiment, fake_training):
    """Was: a run cut short at --steps 2 resumed silently as a 10-step run (resume=True)."""
    run = tmp_path / "runs" / "precond_s1_seed0"
    _cut_short_run(run, _cfg(experiment, tmp_path, steps=2))
    with pytest.raises(UserError) as e:
        experiment.train_row(_cfg(experiment, tmp_path, steps=10), run)
    assert str(run) in str(e.value) and "training.max_steps: 2 -> 10" in str(e.value), e.value
    assert fake_training == [] and not (run / "experiment_settings.json").exists()


def test_experiment_still_resumes_or_keeps_a_run_of_the_same_settings(tmp_path, experiment, fake_training):
    """Not a failure of the code before: the guard that the refusal above takes nothing away."""
    cut = tmp_path / "runs" / "precond_s1_seed0"
    _cut_short_run(cut, _cfg(experiment, tmp_path, steps=10))
    assert experiment.train_row(_cfg(experiment, tmp_path, steps=10), cut) == {"steps": 10}
    assert fake_training == [{"resume": True, "max_steps": 10}]
    assert json.loads((cut / "experiment_settings.json").read_text()) == json.loads(
        _cfg(experiment, tmp_path, steps=10).to_json_best_effort())
    done = tmp_path / "runs" / "precond_s1_seed1"
    _finished_run(done, _cfg(experiment, tmp_path, steps=10, seed=1))
    assert experiment.train_row(_cfg(experiment, tmp_path, steps=10, seed=1), done) == {"steps": 10}
    assert len(fake_training) == 1  # kept, not trained again


def test_experiment_evaluates_again_a_run_that_changed_after_its_evaluation(tmp_path, experiment, monkeypatch):
    """Was: an evaluation was reused while it was newer than the adapters folder's own
    mtime, which misses a file rewritten inside it (and the base checkpoint was not looked at)."""
    calls = []

    def run_evaluation(req, show_progress=False):
        calls.append(req.lora)
        req.out.mkdir(parents=True, exist_ok=True)
        (req.out / "metrics.json").write_text(json.dumps({"evaluation": len(calls)}))
        return {"evaluation": len(calls)}, None, None

    monkeypatch.setattr(experiment.evaluate, "run_evaluation", run_evaluation)
    args = SimpleNamespace(out=tmp_path, temporal_length=4, rollout=0)
    base, lora = tmp_path / "pretrained", tmp_path / "runs" / "r" / "best_adapters"
    (base / "params").mkdir(parents=True)
    (base / "params" / "weights").write_bytes(b"base")
    (lora / "adapters").mkdir(parents=True)
    (lora / "adapters" / "weights").write_bytes(b"first")
    out = tmp_path / "eval" / "r_test"
    assert experiment.run_eval(args, out, lora, 1, "test", "float32") == {"evaluation": 1}
    t = (out / "metrics.json").stat().st_mtime
    for p in (base, base / "params", base / "params" / "weights", lora, lora / "adapters",
              lora / "adapters" / "weights"):
        os.utime(p, (t - 100, t - 100))
    assert experiment.run_eval(args, out, lora, 1, "test", "float32") == {"evaluation": 1}  # unchanged: reused
    (lora / "adapters" / "weights").write_bytes(b"second")  # rewritten in place: the folder's mtime stays
    os.utime(lora / "adapters" / "weights", (t + 100, t + 100))
    assert experiment.run_eval(args, out, lora, 1, "test", "float32") == {"evaluation": 2}
    t = (out / "metrics.json").stat().st_mtime
    os.utime(lora / "adapters" / "weights", (t - 100, t - 100))
    assert experiment.run_eval(args, out, lora, 1, "test", "float32") == {"evaluation": 2}  # reused
    os.utime(base / "params" / "weights", (t + 100, t + 100))  # the base checkpoint changed
    assert experiment.run_eval(args, out, lora, 1, "test", "float32") == {"evaluation": 3}


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


# ----------------------------------------------------------------------------- pretrain.py --state

RESUMABLE = ["--arch", "tiny", "--steps", "4", "--eval-every", "2", "--val-per-family", "1", "--batch", "1",
             "--warmup", "1", "--lr", "3e-3", "--recon-weight", "1", "--val-strides", "1,5"]


def _pretrain_cmd(out: Path, state: Path, *extra: str) -> list[str]:
    return [sys.executable, "scripts/pretrain.py", "--out", str(out), "--state", str(state), *RESUMABLE, *extra]


def test_pretrain_with_state_resumes_where_it_stopped(tmp_path):
    """A run of hours stops (Ctrl-C, a time limit) and the same command continues it from
    the last checkpoint; the result holds the whole curve, each step once."""
    import signal
    import subprocess

    out, state = tmp_path / "standin", tmp_path / "state"
    proc = subprocess.Popen(_pretrain_cmd(out, state), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        for line in proc.stdout:  # stop it once the step-2 checkpoint is complete
            if line.startswith("checkpoint of step 2 saved"):
                proc.send_signal(signal.SIGINT)
                break
        proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and not out.exists()
    rc, stdout, err = run_cli(["scripts/pretrain.py", "--out", str(out), "--state", str(state), *RESUMABLE])
    assert rc == 0, err[-3000:]
    assert f"resumed from {state} at step 2" in stdout, stdout
    rows = [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines()]
    val_steps = [r["step"] for r in rows if "val" in r]
    assert val_steps == [2, 4], rows
    last = rows[-1]["val"]
    assert set(last["families"]["burgers"]["strides"]) == {"1", "5"} and last["recon_vrmse_fine_tuning_regime"] > 0
    # other flags on the same state are refused, naming them, before any work
    rc, stdout, err = run_cli(["scripts/pretrain.py", "--out", str(tmp_path / "other"), "--state", str(state),
                               *RESUMABLE, "--seed", "1"])
    line = _one_error_line(err, "pretrain")
    assert rc == 2 and "holds a run of other flags" in line and "--seed: 0 -> 1" in line, line


def test_the_autoencoder_probe_resumes_its_own_state_and_refuses_another(tmp_path):
    """`scripts/probe_autoencoder.py --save DIR` continues from DIR when run again with the
    same settings (a finished probe: nothing left to train, nothing measured twice) and
    refuses DIR for a probe of other settings."""
    base = ["scripts/probe_autoencoder.py", "--arch", "tiny", "--eval-every", "1", "--batch", "1",
            "--save", str(tmp_path / "state"), "--log", str(tmp_path / "log.jsonl")]
    rc, out, err = run_cli([*base, "--steps", "2"])
    assert rc == 0, err[-3000:]
    assert (tmp_path / "state" / "state.npz").is_file() and len((tmp_path / "log.jsonl").read_text().splitlines()) == 2
    rc, out, err = run_cli([*base, "--steps", "2"])
    assert rc == 0 and f"resumed from {tmp_path / 'state' / 'state.npz'} at step 2" in out, out + err
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 2, "nothing trained or measured twice"
    rc, out, err = run_cli([*base, "--steps", "3"])
    assert rc != 0 and "holds a probe of other settings" in err, err


def test_the_dynamics_stage_starts_from_the_autoencoder_stage_and_keeps_it_frozen(tmp_path):
    """Two-stage pretraining: `pretrain.py --init-autoencoder DIR --freeze-autoencoder` loads
    encoder and decoder from `probe_autoencoder.py --save DIR` and trains the transformer
    only: the checkpointed encoder/decoder are the probe's weights bit for bit. The flags'
    misuse is refused before any work, naming the flag."""
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    ae = tmp_path / "ae"
    rc, _, err = run_cli(["scripts/probe_autoencoder.py", "--arch", "tiny", "--steps", "1", "--eval-every", "1",
                          "--batch", "1", "--save", str(ae), "--log", str(ae / "log.jsonl")])
    assert rc == 0, err[-3000:]
    stage = ["--init-autoencoder", str(ae), "--freeze-autoencoder"]
    rc, _, err = run_cli(["scripts/pretrain.py", "--out", str(tmp_path / "out"), "--state", str(tmp_path / "st"),
                          *TINY, *stage])
    assert rc == 0, err[-3000:]
    saved = ocp.CheckpointManager((tmp_path / "st" / "checkpoints").absolute()).restore(1)["params"]
    with np.load(ae / "state.npz") as z:
        probe = [z[f"arr_{i}"] for i in range(len(z.files) - 1)]
    ours = jax.tree.leaves({k: saved[k] for k in ("encoder_2d", "decoder_2d")})
    assert len(ours) > 10 and all(np.array_equal(np.asarray(a), b) for a, b in zip(ours, probe))
    config = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "--freeze-autoencoder" in config["command"]

    for extra, words in [(["--freeze-autoencoder"], "--freeze-autoencoder needs --init-autoencoder"),
                         ([*stage, "--recon-weight", "1"], "--recon-weight=1.0 with --freeze-autoencoder"),
                         (["--init-autoencoder", str(tmp_path / "nowhere")], "no settings.json there"),
                         (["--arch", "small", "--init-autoencoder", str(ae)], "holds an autoencoder of")]:
        rc, _, err = run_cli(["scripts/pretrain.py", "--out", str(tmp_path / "refused"), *TINY, *extra])
        line = _one_error_line(err, "pretrain")
        assert rc == 2 and words in line, line
        assert not (tmp_path / "refused").exists()


def test_reconstruction_through_the_norm_is_the_model_with_silent_transformer_layers(pretrain):
    """`reconstruct(..., through_norm=True)` (the path the autoencoder stage trains for a
    two-stage pretraining) is what the whole model computes when every transformer layer
    adds nothing (attention and MLP output projections zeroed): the decoder on the final
    RMSNorm of the encoder's tokens. Without the norm it is another function."""
    import jax
    import numpy as np

    from burgers_jax.model.config import ARCHITECTURES, Policy
    from burgers_jax.model.network import PDECausalModel, init_params

    config = ARCHITECTURES["tiny"]
    model = PDECausalModel(config, policy=Policy.named("float32"))
    params = init_params(config, jax.random.PRNGKey(3))
    silent = jax.tree_util.tree_map_with_path(
        lambda path, leaf: np.zeros_like(leaf) if any(getattr(k, "key", None) in ("o_proj", "down_proj") for k in path)
        else leaf, params)
    silent["transformer"]["norm"]["weight"] = np.linspace(0.5, 1.5, config.transformer.hidden_size, dtype=np.float32)
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(4), (1, 2, 128, 128, 6)), np.float32)
    whole = np.asarray(model.apply({"params": silent}, x))
    through = np.asarray(pretrain.reconstruct(model, silent, x, through_norm=True))
    raw = np.asarray(pretrain.reconstruct(model, silent, x))
    np.testing.assert_allclose(through, whole, rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(raw - whole)) > 1e-2
