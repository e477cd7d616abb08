"""What a command says around its numbers: how many windows and samples stand behind an
evaluation (with a caveat when they are too few), and no note about a change the user
never made."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
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


def test_a_longer_resume_does_not_report_the_schedule_it_kept_as_a_change(tiny_converted, tmp_path, capsys, caplog):
    """... and training from Python echoes no orbax notice, without touching the process's
    log levels (a command sets absl's level at its entry; a library call leaves it)."""
    from absl import logging as absl_logging

    from burgers_jax.training import trainer

    absl_logging.set_verbosity(absl_logging.WARNING)  # absl's own default; an earlier command may have raised it
    run = tmp_path / "run"
    with caplog.at_level("WARNING", logger="absl"):
        trainer.train_and_evaluate(smoke_config(tiny_converted, run), run)
        capsys.readouterr()
        trainer.train_and_evaluate(smoke_config(tiny_converted, run, resume=True, max_steps=6), run)
    assert absl_logging.get_verbosity() == absl_logging.WARNING, "the library left the log level alone"
    assert [r.getMessage() for r in caplog.records if r.name == "absl"] == []
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


@pytest.mark.parametrize("one, other, rollout, other_rollout, want", [
    (0.0094, 0.0245, [0.01, 0.02, 0.03], [0.02, 0.03, 0.04],
     "one step ahead better (VRMSE 0.0094 vs 0.0245); better at every rollout horizon (1 to 3)"),
    (0.0094, 0.0006, [0.02, 0.03, 0.04], [0.01, 0.02, 0.03],
     "one step ahead worse (VRMSE 0.0094 vs 0.0006); better at no rollout horizon (1 to 3)"),
    (0.01, 0.02, [0.05, 0.01, 0.05, 0.05, 0.01], [0.02] * 5,
     "one step ahead better (VRMSE 0.0100 vs 0.0200); better at 2 of 5 rollout horizons (not at 1, 3-4)"),
    (float("nan"), 0.02, [float("nan")], [0.02],
     "one step ahead not comparable, a value is not finite (VRMSE nan vs 0.0200); better at no rollout horizon "
     "(1 to 1)"),
    (0.02, 0.02, None, None, "one step ahead equal (VRMSE 0.0200 vs 0.0200)"),
])
def test_versus_says_what_the_numbers_say(one, other, rollout, other_rollout, want):
    assert report.versus(one, other, rollout, other_rollout) == want
