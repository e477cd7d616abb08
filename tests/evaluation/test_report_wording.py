"""What a command says around its numbers: how many windows and samples stand behind an
evaluation (with a caveat when they are too few), and no note about a change the user
never made."""

from __future__ import annotations

import dataclasses

import numpy as np
from conftest import smoke_config

from burgers_jax.evaluation import report


def _result(windows):
    metrics = {k: 0.1 for k, _ in report.TABLE_KEYS}
    return {"windows": windows, "one_step": {m: dict(metrics) for m in ("model", "persistence", "truth")}}


def test_one_window_is_counted_in_the_singular_and_comes_with_a_caveat():
    text = report.metrics_markdown(_result([[3, 10]]), "t")
    assert "1 window from 1 sample, one step" in text and "windows" not in text.split("one step")[0], text
    assert "Note: only 1 window from 1 sample stand behind these numbers: too few to compare" in text, text


def test_enough_windows_carry_no_caveat():
    windows = [[i // 2, 10 * (i % 2)] for i in range(report.FEW_WINDOWS)]
    text = report.metrics_markdown(_result(windows), "t")
    assert f"{report.FEW_WINDOWS} windows from {report.FEW_WINDOWS // 2} samples" in text and "Note:" not in text
    assert report.few_windows_warning(windows) is None
    assert report.few_windows_warning(windows[:-1]) is not None


def test_a_longer_resume_does_not_report_the_schedule_it_kept_as_a_change(tiny_converted, tmp_path, capsys):
    from burgers_jax.training import trainer

    run = tmp_path / "run"
    trainer.train_and_evaluate(smoke_config(tiny_converted, run), run)
    capsys.readouterr()
    trainer.train_and_evaluate(smoke_config(tiny_converted, run, resume=True, max_steps=6), run)
    out = capsys.readouterr().out
    assert "the learning-rate schedule keeps its length (4 steps)" in out, out  # said once, as what it is
    assert "resuming with a changed config: training.schedule_steps" not in out, out
    assert "resuming with a changed config: training.max_steps: 4 -> 6" in out, out


def test_predict_from_python_is_quiet(tiny_converted, capsys):
    from burgers_jax.evaluation.predict import predict
    from burgers_jax.io.checkpoint import load_model

    params, config = load_model(tiny_converted)
    capsys.readouterr()
    y = predict(params, config, np.zeros((1, 2, 128, 128, 2), np.float32))
    assert y.shape == (1, 2, 128, 128, 2)
    out = capsys.readouterr()
    assert out.out == "" and out.err == "", out


def test_evaluate_takes_the_runs_precision_else_float32(tiny_converted, tmp_path):
    """A run's precision travels with its result, like its split; without a run, the
    README's float32; an explicit --precision wins."""
    from burgers_jax.evaluation import evaluate
    from burgers_jax.io import checkpoint as ckpt_io

    base = evaluate.EvalRequest(checkpoint=tiny_converted, out=tmp_path / "e", analytic=True, num_samples=1,
                                num_frames=20, temporal_length=2)
    assert evaluate.run_precision(base) == ("float32", "the default")
    adapters = tmp_path / "adapters"
    (adapters).mkdir()
    (adapters / ckpt_io.METADATA_FILE).write_text('{"precision": "fp32_output"}')
    run = dataclasses.replace(base, lora=adapters)
    assert evaluate.run_precision(run) == ("fp32_output", f"the run ({adapters})")
    assert evaluate.run_precision(dataclasses.replace(run, precision="reference")) == ("reference", "--precision")
    result, _, _ = evaluate.run_evaluation(base, show_progress=False)
    assert result["config"]["precision"] == "float32" and result["config"]["precision_from"] == "the default"
