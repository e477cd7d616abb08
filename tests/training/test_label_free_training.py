"""Label-free fine-tuning end to end, on the tiny model: what a run trained travels with
its result (load, evaluate, export), evaluation uses the run's own split, the checkpoint
is chosen by the validation value of the loss being trained, the loss options and
pushforward run through the real step, and their configs are checked before any work."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from burgers_jax.configs import demo
from burgers_jax.data import writer
from burgers_jax.data.sources import DataError
from burgers_jax.evaluation import evaluate
from burgers_jax.io import checkpoint as ckpt_io
from burgers_jax.model import network as model_lib
from burgers_jax.model import param_tree
from burgers_jax.model.config import FLOAT32
from burgers_jax.physics.residual import REFERENCE_DT
from burgers_jax.training import steps
from burgers_jax.training import trainer as train
from burgers_jax.training.setup import TrainConfigError
from porting import export_torch
from porting.mapping import flax_to_torch


def smoke(pretrained, save_dir, **fields):
    c = demo.get_config("smoke")
    c.model.pretrained_path = str(pretrained)
    c.logging.save_dir = str(save_dir)
    for key, value in fields.items():
        section, field = key.split("__")
        c[section][field] = value
    return c


@pytest.fixture(scope="module")
def decoder_result(tiny_converted, tmp_path_factory):
    """A run's best result written by the trainer's own `save_best`, with the decoder
    (and adapters) moved away from the pretrained values, as training would."""
    root = tmp_path_factory.mktemp("decoder_run")
    cfg = smoke(tiny_converted, root, model__trainable="adapters+decoder", dataset__seed=3,
                dataset__train_ratio=0.8)
    tr = train.Trainer(cfg)
    trainable = jax.tree.map(lambda a: np.asarray(a, np.float32) + 0.01, jax.device_get(tr.init_trainable))
    train.save_best(tr, trainable, root, metadata={"global_step": 7, "metrics": {"val_loss": 1.0}})
    return tr, trainable, root / "best_adapters"


def test_a_decoder_trained_result_loads_whole(decoder_result, tiny_converted):
    tr, trainable, best = decoder_result
    meta = ckpt_io.load_metadata(best)
    assert meta["trainable"] == "adapters+decoder" and meta["trained_parts"] == ["decoder_2d"]
    params, config = ckpt_io.load_model(tiny_converted, best, policy=FLOAT32)
    want = param_tree.merge(trainable, jax.device_get(tr.frozen))
    flat, flat_want = param_tree.flatten(params), param_tree.flatten(want)
    assert flat.keys() == flat_want.keys()
    for path, value in flat_want.items():  # every leaf, trained or frozen, exactly the run's
        assert np.array_equal(np.asarray(flat[path], np.float32), np.asarray(value, np.float32)), path
    base, _ = ckpt_io.load_model(tiny_converted, None, policy=FLOAT32)
    dec, dec_base = params["decoder_2d"], base["decoder_2d"]
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(dec), jax.tree.leaves(dec_base))), \
        "test premise: the run's decoder is not the pretrained one"
    model = model_lib.PDECausalModel(config, policy=FLOAT32)
    x = jnp.full((1, 2, 128, 128, 2), 0.75) + 0.01 * jnp.sin(jnp.arange(128.0))[None, None, :, None, None]
    got = model_lib.forward_frames(model, params, x)
    ref = model_lib.forward_frames(model, param_tree.merge(jax.tree.map(jnp.asarray, trainable),
                                                            jax.device_get(tr.frozen)), x)
    assert np.array_equal(np.asarray(got), np.asarray(ref))


def test_exports_carry_the_trained_decoder_or_refuse(decoder_result, tiny_converted, tmp_path):
    _, trainable, best = decoder_result
    for kind in ("lora", "peft"):
        with pytest.raises(export_torch.ExportError, match="decoder_2d.*--merged"):
            export_torch.export(tiny_converted, tmp_path / f"out_{kind}", lora=best, kind=kind)
        assert not (tmp_path / f"out_{kind}").exists()
    out = tmp_path / "merged.pt"
    export_torch.export(tiny_converted, out, lora=best, kind="merged")
    sd = torch.load(out, map_location="cpu", weights_only=True)["model_state_dict"]
    params, config = ckpt_io.load_model(tiny_converted, best)
    decoder_keys = flax_to_torch({"decoder_2d": params["decoder_2d"]} | {
        k: v for k, v in param_tree.strip_adapters(params).items() if k != "decoder_2d"}, config.with_lora(r=0))
    checked = 0
    for key, value in decoder_keys.items():
        if key.startswith("decoder_2d."):
            assert sd[key].dtype == torch.float32, key  # trained weights keep their float32 values
            assert np.array_equal(sd[key].numpy(), np.asarray(value, np.float32)), key
            checked += 1
    assert checked > 10


def test_evaluation_uses_the_runs_split(decoder_result, tmp_path):
    tr, _, best = decoder_result
    req = evaluate.EvalRequest(checkpoint=tmp_path, out=tmp_path / "e", lora=best, analytic=True)
    assert evaluate.run_split(req) == (0.8, 3, f"the run ({best})")
    meta = ckpt_io.load_metadata(best)
    assert meta["split"]["val_samples"] == sorted(int(i) for i in tr.val_idx)
    with pytest.raises(evaluate.EvaluateError, match="--split-seed 42 contradicts"):
        evaluate.run_split(evaluate.EvalRequest(checkpoint=tmp_path, out=tmp_path / "e", lora=best, split_seed=42))
    assert evaluate.run_split(evaluate.EvalRequest(checkpoint=tmp_path, out=tmp_path / "e")) == \
        (0.9, 42, "the reference split")


def test_an_explicit_dt_that_contradicts_the_file_is_an_error(tmp_path):
    path = writer.write_dataset(tmp_path / "d.h5", num_samples=2, num_frames=6, resolution=128, dt=REFERENCE_DT,
                                progress=False)["path"]
    req = evaluate.EvalRequest(checkpoint=tmp_path, out=tmp_path / "e", data=path, temporal_length=2, dt=0.5)
    with pytest.raises(DataError, match=r"--dt=0\.5 disagrees with the time axis"):
        evaluate.build_source(req)
    _, dt = evaluate.build_source(evaluate.EvalRequest(checkpoint=tmp_path, out=tmp_path / "e", data=path,
                                                       temporal_length=2, dt=0.001001001))
    assert dt == pytest.approx(REFERENCE_DT, rel=1e-12)  # agrees to the file's rounding: the file's value


def test_the_checkpoint_is_chosen_by_the_loss_being_trained(tiny_converted, tmp_path):
    cfg = smoke(tiny_converted, tmp_path / "sup", training__lambda_pde=0.0, training__lambda_data=1.0,
                training__max_steps=6, training__eval_every_steps=1, training__warmup_steps=1)
    train.train_and_evaluate(cfg, tmp_path / "sup")
    rows = [json.loads(x) for x in (tmp_path / "sup" / "metrics.jsonl").read_text().splitlines()]
    val = {r["step"]: r for r in rows if "val/loss" in r and r["step"] >= 1}
    best_step = min(val, key=lambda s: val[s]["val/loss"])
    meta = ckpt_io.load_metadata(tmp_path / "sup" / "best_adapters")
    assert meta["selected_by"] == "val/loss" and meta["global_step"] == best_step
    assert meta["metrics"]["val_loss"] == pytest.approx(val[best_step]["val/loss"])
    for r in val.values():  # the supervised objective is the data loss, not the residual
        assert r["val/loss"] == pytest.approx(r["val/nrmse"], rel=1e-5)


@pytest.mark.cli  # a whole training, or a big compilation: out of the fast loop
def test_loss_options_and_pushforward_run_through_the_step(tiny_converted, tmp_path):
    losses = {}
    for name, fields in {"window": {}, "per_step": {"training__residual": "per_step"},
                         "precond": {"training__residual": "precond"},
                         "precond_bdf2": {"training__residual": "precond", "training__residual_scheme": "bdf2"},
                         "pushforward": {"training__residual": "precond", "training__pushforward_steps": 1,
                                         "training__pushforward_prob": 1.0}}.items():
        tr = train.Trainer(smoke(tiny_converted, tmp_path / name, **fields))
        batch = tr.train_batch(0)
        assert batch["frames"].shape[1] == 2 + 1 + (1 if name == "pushforward" else 0)
        state, m = tr.train_step(tr.initial_state(), tr.frozen, tr.shard_batch(batch))
        assert np.isfinite(float(m["loss"])) and not bool(m["skipped"])
        losses[name] = float(m["loss"])
        val, _ = tr.evaluate(state.trainable)
        if name.startswith("precond") and name != "precond_bdf2":  # the objective is the precond loss
            assert val["val/loss"] == pytest.approx(val["val/residual_loss"])
            assert val["val/residual_loss"] == pytest.approx(val["val/precond_loss"], rel=1e-5)
    assert len({round(v, 6) for v in losses.values()}) == len(losses), losses


def test_the_auto_time_difference_is_euler_at_stride_1_and_bdf2_coarser(tiny_converted, tmp_path):
    for stride, named in ((1, "euler"), (2, "bdf2"), (10, "bdf2")):
        cfg = smoke(tiny_converted, tmp_path, training__residual="precond", training__residual_scheme="auto",
                    dataset__frame_stride=stride)
        assert steps.time_scheme(cfg) == named
    # ... and the compiled step trains what it names: at stride 2, BDF2's loss, not Euler's.
    losses = {}
    for scheme in ("auto", "bdf2", "euler"):
        tr = train.Trainer(smoke(tiny_converted, tmp_path / scheme, training__residual="precond",
                                 training__residual_scheme=scheme, dataset__frame_stride=2))
        _, m = tr.train_step(tr.initial_state(), tr.frozen, tr.shard_batch(tr.train_batch(0)))
        losses[scheme] = float(m["loss"])
    assert losses["auto"] == losses["bdf2"] and abs(losses["bdf2"] - losses["euler"]) > 1e-6 * losses["euler"], losses


def test_loss_configs_are_checked_before_any_work(tiny_converted, tmp_path):
    for fields, named in (({"training__residual": "precond", "dataset__temporal_length": 1},
                           "dataset.temporal_length >= 2"),
                          ({"training__residual": "typo"}, "training.residual='typo'"),
                          ({"training__residual_scheme": "rk4"}, "training.residual_scheme='rk4'"),
                          ({"training__pushforward_prob": 2.0}, "training.pushforward_prob=2.0")):
        with pytest.raises(TrainConfigError, match=named.replace(".", r"\.").replace("(", r"\(")):
            train.train_and_evaluate(smoke(tiny_converted, tmp_path / "bad", **fields), tmp_path / "bad")
        assert not (tmp_path / "bad").exists()


def test_an_unknown_selection_metric_stops_before_the_first_step(tiny_converted, tmp_path):
    cfg = smoke(tiny_converted, tmp_path / "sel", training__select_metric="vrmse_typo")
    with pytest.raises(TrainConfigError, match="select_metric='vrmse_typo'.*precond_loss"):
        train.train_and_evaluate(cfg, tmp_path / "sel")
    assert not (tmp_path / "sel" / "checkpoints").exists() or not any((tmp_path / "sel" / "checkpoints").iterdir())
    metrics = (tmp_path / "sel" / "metrics.jsonl")
    assert not metrics.exists() or "train/" not in metrics.read_text()
