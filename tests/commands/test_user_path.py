"""The user path as users of the PyTorch original expect it: adapters from a PyTorch
`best_lora.pt` continue training, a resume needs no repeated overrides, the time step
comes from the data, bookkeeping survives an export, PEFT directories, the original
YAML, W&B and TensorBoard, logs without a terminal, console commands, predict from
HDF5, configs outside the repository, documentation. Tiny model, float32."""

from __future__ import annotations

import json
import math
import re
import struct
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, run_cli

from burgers_jax import predict as predict_cmd
from burgers_jax.configs import demo, from_yaml
from burgers_jax.data import writer
from burgers_jax.data.sources import DataError, HDF5Source
from burgers_jax.io import checkpoint as ck
from burgers_jax.physics.residual import REFERENCE_DT
from burgers_jax.training import reporting
from burgers_jax.training import trainer as train
from burgers_jax.training.setup import TrainConfigError, build_data
from porting import convert_ckpt as cc
from porting import export_torch
from porting import torch_reference as R
from porting.verify import rel_l2


@pytest.fixture(scope="module")
def torch_lora(tiny_best_pt, tmp_path_factory):
    """A PyTorch `best_lora.pt` (PEFT, random non-zero B) for the tiny model, converted."""
    root = tmp_path_factory.mktemp("lora")
    ckpt = torch.load(tiny_best_pt, weights_only=True)
    model = R.build_model(ckpt["config"])
    model.load_state_dict({k: v.float() for k, v in ckpt["model_state_dict"].items()})
    model = R.wrap_lora(model, r=4, alpha=8.0)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    R.write_best_lora_pt(root / "best_lora.pt", model, ckpt["config"], global_step=3, metrics={"val_pde_loss": 1.5})
    assert cc.main([str(root / "best_lora.pt"), "--out", str(root / "adapters")]) == 0
    return root / "best_lora.pt", root / "adapters", model


def _read_events(directory: Path):
    """Every tensorboardX event under `directory` (TFRecord framing: length, crc, data, crc)."""
    from tensorboardX.proto import event_pb2

    events = []
    for path in directory.rglob("events.out.tfevents.*"):
        raw = path.read_bytes()
        pos = 0
        while pos < len(raw):
            (length,) = struct.unpack("<Q", raw[pos:pos + 8])
            events.append(event_pb2.Event.FromString(raw[pos + 12:pos + 12 + length]))
            pos += 12 + length + 4
    return events


@pytest.fixture(scope="module")
def user_run(tiny_converted, torch_lora, tmp_path_factory):
    """One CLI training run as a user makes it: a config file of their own in their own
    folder (not the repository), started from there, adapters from a PyTorch best_lora.pt,
    W&B offline and TensorBoard on, output to a log file (no terminal)."""
    home = tmp_path_factory.mktemp("user")
    (home / "my_config.py").write_text(
        "from burgers_jax.configs import demo\n\n\n"
        "def get_config():\n"
        "    c = demo.get_config('smoke')\n"
        "    c.model.lora.r, c.model.lora.alpha = 4, 8.0\n"
        "    c.logging.plots = True\n"
        "    c.logging.tensorboard = True\n"
        "    c.logging.wandb = True\n"
        "    c.logging.wandb_mode = 'offline'\n"
        "    return c\n")
    save_dir = home / "runs" / "a"
    rc, out, err = run_cli(["-m", "burgers_jax.train", "--config", "my_config.py",
                            f"--config.model.pretrained_path={tiny_converted}",
                            f"--config.model.lora.init_path={torch_lora[1]}",
                            f"--config.logging.save_dir={save_dir}"], cwd=home)
    assert rc == 0, err[-3000:]
    return save_dir, out, err


def test_user_config_outside_the_repository_runs(user_run):
    save_dir, out, _ = user_run
    assert json.loads((save_dir / "summary.json").read_text())["steps"] == 4


def test_progress_lines_without_a_terminal(user_run):
    _, out, _ = user_run
    assert "train: 2/4 steps (50%)" in out and "train: 4/4 steps (100%)" in out, out


def test_init_path_continues_from_a_pytorch_best_lora(user_run, torch_lora, tiny_converted):
    _, adapters_dir, _ = torch_lora
    cfg = demo.get_config("smoke")
    cfg.model.pretrained_path = str(tiny_converted)
    cfg.model.lora.r, cfg.model.lora.alpha, cfg.model.lora.init_path = 4, 8.0, str(adapters_dir)
    state = train.Trainer(cfg).initial_state()
    loaded, _ = ck.load_adapters(adapters_dir)
    for (path, a), b in zip(ck.flatten(loaded).items(), ck.flatten(state.trainable).values()):
        np.testing.assert_array_equal(a, np.asarray(b), err_msg="/".join(path))
    cfg.model.lora.r = 8  # adapters of another rank: a named error
    with pytest.raises(TrainConfigError, match="init_path.*r=4"):
        train.Trainer(cfg)


def test_wandb_offline_and_tensorboard_images_and_config(user_run):
    save_dir, _, _ = user_run
    runs = list((save_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert runs, "an offline W&B run, written without network"
    assert (save_dir / reporting.WANDB_RUN_ID_FILE).is_file()
    events = _read_events(save_dir / "tensorboard")
    tags = {v.tag for e in events for v in e.summary.value}
    images = [v for e in events for v in e.summary.value if v.tag == "val/window" and v.image.encoded_image_string]
    assert len(images) == 3, "one validation plot per eval (steps 0, 2, 4)"
    assert any(t.startswith("config") for t in tags), tags
    assert "hparams/best_val" in tags and "_hparams_/experiment" in tags, tags


def test_export_keeps_bookkeeping_and_the_source_config(user_run, tiny_converted, tiny_best_pt, tmp_path):
    save_dir, _, _ = user_run
    best = save_dir / "best_adapters"
    meta = ck.load_metadata(best)
    assert meta["global_step"] in (2, 4) and meta["metrics"]["val_pde_loss"] > 0
    out = tmp_path / "best_lora.pt"
    assert export_torch.main(["--checkpoint", str(tiny_converted), "--lora", str(best), "--out", str(out)]) == 0
    exported = torch.load(out, weights_only=True)
    assert exported["global_step"] == meta["global_step"]
    assert exported["metrics"] == meta["metrics"]
    source = torch.load(tiny_best_pt, weights_only=True)["config"]
    assert exported["config"]["training"] == source["training"]  # the source config, verbatim...
    assert exported["config"]["model"]["lora"]["r"] == 4  # ...with the adapters' lora section
    back = tmp_path / "back"
    assert cc.main([str(out), "--out", str(back)]) == 0  # and back to JAX: nothing lost
    again = ck.load_metadata(back)
    assert again["global_step"] == meta["global_step"] and again["metrics"] == meta["metrics"]
    merged = tmp_path / "best.pt"
    assert export_torch.main(["--checkpoint", str(tiny_converted), "--lora", str(best), "--merged",
                              "--out", str(merged)]) == 0
    m = torch.load(merged, weights_only=True)
    assert m["config"] == source, "the merged best.pt carries the source config verbatim"
    assert m["config"]["model"]["use_flash_attention"] is False
    assert m["global_step"] == meta["global_step"] and m["metrics"] == meta["metrics"]
    R.build_model(m["config"]).load_state_dict({k: v.float() for k, v in m["model_state_dict"].items()},
                                               strict=True)


def test_peft_directory_loads_with_peft(torch_lora, tiny_converted, tiny_best_pt, tmp_path):
    """Our PEFT export of the converted adapters, loaded by `PeftModel.from_pretrained` on
    the reference model, reproduces the PEFT model the adapters came from."""
    from peft import PeftModel

    _, adapters_dir, lora_model = torch_lora
    out = tmp_path / "peft"
    assert export_torch.main(["--checkpoint", str(tiny_converted), "--lora", str(adapters_dir), "--peft",
                              "--out", str(out)]) == 0
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    ckpt = torch.load(tiny_best_pt, weights_only=True)
    fresh = R.build_model(ckpt["config"])
    fresh.load_state_dict({k: v.float() for k, v in ckpt["model_state_dict"].items()}, strict=True)
    fresh.transformer = PeftModel.from_pretrained(fresh.transformer, str(out))
    fresh.eval()
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((1, 2, 128, 128, 6)).astype(np.float32))
    want = R.run_with_intermediates(lora_model.eval(), x)["output"]
    got = R.run_with_intermediates(fresh, x)["output"]
    base = R.run_with_intermediates(R.build_model(ckpt["config"]).eval(), x)["output"]
    assert rel_l2(got, want) <= 1e-6
    assert rel_l2(base, want) > 1e-3, "test premise: the adapters change the output"


def test_time_step_comes_from_the_data(tiny_converted, tmp_path):
    cfg = demo.get_config("smoke")
    cfg.model.pretrained_path = str(tiny_converted)
    cfg.dataset.source = "hdf5"
    cfg.dataset.path = str(writer.write_dataset(tmp_path / "prefix.h5", num_samples=4, num_frames=6,
                                             resolution=128, dt=REFERENCE_DT, progress=False)["path"])
    assert HDF5Source(cfg.dataset.path, min_frames=3).dt == pytest.approx(REFERENCE_DT, rel=1e-12)
    *_, dt, note = build_data(cfg)  # the first 6 frames of a 1000-frame trajectory: 1/999, not 1/5
    assert dt == pytest.approx(REFERENCE_DT, rel=1e-12) and note is None
    cfg.physics.dt = 0.001001001  # the PyTorch YAML's rounding of 1/999: agrees
    assert build_data(cfg)[3] == pytest.approx(REFERENCE_DT, rel=1e-12)
    cfg.physics.dt = 0.2
    with pytest.raises(DataError, match=r"physics\.dt=0\.2 disagrees with the time axis"):
        build_data(cfg)
    with h5py.File(cfg.dataset.path, "a") as f:  # the PyTorch generator writes no time axis
        for key in list(f.attrs):
            del f.attrs[key]
    assert HDF5Source(cfg.dataset.path, min_frames=3).dt is None
    assert build_data(cfg)[3] == 0.2  # physics.dt, as the PyTorch script: no guess from 6 frames
    cfg.physics.dt = None
    dt, note = build_data(cfg)[3:]
    assert dt == REFERENCE_DT and "no time axis" in note


def test_predict_reads_hdf5_windows_and_two_channel_arrays(tiny_converted, tmp_path):
    path = writer.write_dataset(tmp_path / "d.h5", num_samples=3, num_frames=5, resolution=128,
                             progress=False)["path"]
    window = HDF5Source(path, min_frames=2).read_window(2, 1, 2)["data"][None]  # [1, 2, 128, 128, 2]
    assert predict_cmd.main(["--checkpoint", str(tiny_converted), "--data", str(path), "--sample", "2",
                         "--start", "1", "--frames", "2", "--output", str(tmp_path / "h5.npy")]) == 0
    np.save(tmp_path / "uv.npy", window)
    assert predict_cmd.main(["--checkpoint", str(tiny_converted), "--input", str(tmp_path / "uv.npy"),
                         "--output", str(tmp_path / "uv_out.npy")]) == 0
    six = np.concatenate([window, np.zeros(window.shape[:-1] + (4,), np.float32)], axis=-1)
    np.save(tmp_path / "six.npy", six)
    assert predict_cmd.main(["--checkpoint", str(tiny_converted), "--input", str(tmp_path / "six.npy"),
                         "--output", str(tmp_path / "six_out.npy")]) == 0
    from_h5, from_uv, from_six = (np.load(tmp_path / n) for n in ("h5.npy", "uv_out.npy", "six_out.npy"))
    assert from_h5.shape == from_uv.shape == (1, 2, 128, 128, 2) and from_six.shape == (1, 2, 128, 128, 6)
    np.testing.assert_allclose(from_uv, from_six[..., :2], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(from_h5, from_uv)


def _finetune_yaml(tmp_path, **changes) -> Path:
    """A finetune_burgers.yaml in the layout users bring (every section and key of the recipe)."""
    y = {
        "model": {"pretrained_path": str(tmp_path / "best.pt"), "in_channels": 6, "noise_level": 0.0,
                  "use_flash_attention": True, "gradient_checkpointing": False,
                  "encoder": {"version": "v2", "channels": [8, 16, 32], "use_resblock": True},
                  "transformer": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                                  "num_key_value_heads": 2, "intermediate_size": 128, "hidden_act": "silu",
                                  "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
                                  "attention_dropout": 0.0},
                  "lora": {"r": 16, "alpha": 32, "dropout": 0.05,
                           "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                              "down_proj"]}},
        "dataset": {"path": "data/x.h5", "temporal_length": 16, "train_ratio": 0.9, "seed": 42},
        "physics": {"dt": 0.001001001, "dx": 0.0078125},
        "dataloader": {"batch_size": 4, "num_workers": 4, "pin_memory": True},
        "training": {"max_steps": 5000, "warmup_steps": 100, "learning_rate": 1e-4, "min_lr": 1e-6,
                     "weight_decay": 1e-4, "betas": [0.9, 0.999], "grad_clip": 1.0, "lambda_data": 0.0,
                     "lambda_pde": 1.0, "mixed_precision": "bf16", "gradient_accumulation_steps": 1,
                     "eval_every_steps": 50},
        "logging": {"project": "pde-ft", "entity": "lab", "save_dir": "runs/x", "log_interval": 10},
    }
    for dotted, value in changes.items():
        *sections, key = dotted.split("__")
        node = y
        for s in sections:
            node = node[s]
        if value is None:
            del node[key]
        else:
            node[key] = value
    path = tmp_path / "finetune_burgers.yaml"
    path.write_text(yaml.safe_dump(y))
    return path


def test_the_original_yaml_is_a_config(tmp_path, tiny_converted):
    c = from_yaml.get_config(str(_finetune_yaml(tmp_path)))
    assert c.model.pretrained_path == str(tmp_path / "best_flax")  # the converter's default output
    assert (c.model.lora.r, c.model.lora.alpha, c.model.lora.dropout) == (16, 32, 0.05)
    assert c.dataset.temporal_length == 16 and c.physics.dt == 0.001001001 and c.training.betas == (0.9, 0.999)
    assert c.model.precision == "reference" and c.logging.project == "pde-ft" and c.dataloader.val_batch_size == 4
    with pytest.raises(from_yaml.YamlConfigError, match=r"unknown key\(s\) training\.learning_rat"):
        from_yaml.get_config(str(_finetune_yaml(tmp_path, training__learning_rat=1.0)))
    with pytest.raises(from_yaml.YamlConfigError, match="'training.max_epochs' belongs to a later version"):
        from_yaml.get_config(str(_finetune_yaml(tmp_path, training__max_epochs=10)))
    # Through the command line, and against the checkpoint: 12/4 heads declared, 4/2 stored.
    bad = _finetune_yaml(tmp_path, model__transformer__num_attention_heads=12)
    c = from_yaml.get_config(str(bad))
    c.model.pretrained_path = str(tiny_converted)
    c.dataset.source, c.dataset.temporal_length, c.dataset.num_samples = "analytic", 2, 10
    with pytest.raises(TrainConfigError, match=r"model\.transformer\.num_attention_heads=12 but the checkpoint has 4"):
        train.Trainer(c)
    rc, _, err = run_cli(["-m", "burgers_jax.train", "--config",
                          f"configs/from_yaml.py:{_finetune_yaml(tmp_path, dataset__seed_typo=1)}"])
    assert rc == 2 and "dataset.seed_typo" in err and "Traceback" not in err, err


def test_only_process_zero_writes_logs_plots_and_best_adapters(tmp_path):
    class FakeTrainer:
        cfg = demo.get_config("smoke")
        model_cfg = type("M", (), {"lora": None})()
        source = type("Unchanged", (), {"changed_on_disk": lambda self: None})()

        def evaluate(self, adapters):
            pred = np.zeros((3, 128, 128, 2), np.float32)
            return {"val/pde_loss": 1.0, "val/loss": 1.0}, (pred, pred, 0)

    class FakeManager:
        saved = []

        def save(self, step, args, force):
            self.saved.append(step)

        def wait_until_finished(self):
            pass

    FakeTrainer.cfg.logging.plots = True
    state = type("S", (), {"trainable": {}})()
    writer = reporting.MetricsWriter(tmp_path, tensorboard=True, enabled=False)
    manager = FakeManager()
    train.evaluate_and_checkpoint(FakeTrainer(), state, 2, math.inf, tmp_path, manager, writer, primary=False)
    writer.write(3, {"train/loss": 1.0})
    writer.close()
    assert list(tmp_path.iterdir()) == [], "a non-primary process writes no file of its own"
    assert manager.saved == [2], "every process takes part in the checkpoint"


def test_console_commands_help_and_errors(tmp_path):
    scripts = ["burgers-convert", "burgers-export", "burgers-train", "burgers-predict", "burgers-generate",
               "burgers-evaluate", "burgers-compare"]
    bindir = Path(sys.executable).parent
    for name in scripts:
        rc, out, err = run_cli_script(bindir / name, ["--help"])
        assert rc == 0 and "usage" in (out + err).lower() or rc == 0 and "--config" in out, (name, rc, err)
        assert "../shared" not in out + err, name
    bad = {"burgers-convert": [str(tmp_path / "missing.pt")],
           "burgers-export": ["--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "x.pt")],
           "burgers-train": ["--config", str(tmp_path / "nope.py")],
           "burgers-predict": ["--checkpoint", str(tmp_path / "nope"), "--input", str(tmp_path / "x.npy"),
                               "--output", str(tmp_path / "y.npy")],
           "burgers-generate": ["--num-samples", "0", "--output", str(tmp_path / "g.h5")],
           "burgers-evaluate": ["--checkpoint", str(tmp_path / "nope"), "--analytic", "--out", str(tmp_path / "e")],
           "burgers-compare": [str(tmp_path / "nope"), "--out", str(tmp_path / "c")]}
    for name, args in bad.items():
        rc, out, err = run_cli_script(bindir / name, args)
        assert rc == 2 and "Traceback" not in err, (name, rc, err)
    # Without a terminal, progress is printed as lines (here: the generator).
    rc, out, err = run_cli_script(bindir / "burgers-generate", ["--num-samples", "2", "--num-frames", "3",
                                                               "--resolution", "8", "--output", str(tmp_path / "g.h5")])
    assert rc == 0 and "samples: 2/2 samples (100%)" in out, out


def run_cli_script(path: Path, args):
    import subprocess

    proc = subprocess.run([str(path), *args], capture_output=True, text=True, timeout=300, cwd=REPO)
    return proc.returncode, proc.stdout, proc.stderr


def test_documentation_is_the_projects_own():
    readme = (REPO / "README.md").read_text()
    docs = sorted((REPO / "docs").glob("*.md"))
    assert docs, "a docs/ folder"
    for page in docs:
        assert f"docs/{page.name}" in readme, f"README links docs/{page.name}"
    for page in [REPO / "README.md", *docs]:  # every relative link points at a file we ship
        for link in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / link).exists(), f"{page.name} links {link}, which does not exist"
    for path in [REPO / "README.md", *docs, *(REPO / "burgers_jax").rglob("*.py"), *(REPO / "porting").glob("*.py"),
                 *(REPO / "configs").glob("*.py"), *(REPO / "scripts").glob("*.py")]:
        text = path.read_text()
        assert "../shared" not in text, f"{path} points users to ../shared"
        # The contract documents live outside the repository: cite docs/ instead.
        for dangling in re.findall(r"\b(?:SPEC|DESIGN)\.md|\bSPEC (?:section|§)", text):
            raise AssertionError(f"{path} cites {dangling!r}, which the repository does not ship")
        for cited in re.findall(r"\bdocs/([\w.]+\.md)", text):
            assert (REPO / "docs" / cited).is_file(), f"{path} cites docs/{cited}, which does not exist"
    model_page = (REPO / "docs" / "model_and_formats.md").read_text()
    for topic in ("best.pt", "best_lora.pt", "vector/boundary", "ghost", "upwind", "block-causal"):
        assert topic in model_page, topic


def readme_user_path_commands() -> dict[int, str]:
    """The README's user path: {step number: its command, continuation lines joined}."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("## The user path", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    steps, current = {}, None
    for line in block.replace("\\\n", " ").splitlines():
        if m := re.match(r"# (\d+)\. ", line):
            current = int(m.group(1))
        elif line.strip() and current is not None:
            steps.setdefault(current, line.strip())
    return steps


@pytest.mark.slow  # two and a half minutes on 2 cores: the stand-in, 20 steps
def test_the_readme_user_path_trains_the_recommended_recipe_and_ends_better(tmp_path):
    """Steps 1-3 of the README as written (from a folder with the repository's configs and
    assets): the documented entry trains without a recipe warning, and its validation
    VRMSE ends below where it started."""
    steps = readme_user_path_commands()
    assert "--config configs/burgers.py " in steps[3] and ":reference" not in steps[3]
    for name in ("configs", "assets"):
        (tmp_path / name).symlink_to(REPO / name)
    for step in (1, 2, 3):
        cmd = steps[step].split()
        assert cmd[0].startswith(".venv/bin/burgers-"), cmd
        module = "burgers_jax." + cmd[0].removeprefix(".venv/bin/burgers-")
        rc, out, err = run_cli(["-m", module, *cmd[1:]], cwd=tmp_path)
        assert rc == 0, f"step {step}: {err[-3000:]}"
    assert "warning:" not in err, err
    vrmse = [r["val/vrmse"] for r in (json.loads(x) for x in (tmp_path / "runs/tiny/metrics.jsonl").open())
             if "val/vrmse" in r]
    assert len(vrmse) >= 2 and vrmse[-1] < vrmse[0], vrmse
