"""Console summaries that say what they mean and logs that open:
the rollout's words about persistence, the progress line's loss name and its rate
without the compiling first step, the loss curve of a run, TensorBoard hparams in the
run's own folder."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from burgers_jax.configs import demo
from burgers_jax.evaluation import report
from burgers_jax.io.progress import LineProgress
from burgers_jax.physics.label_free import crossover_horizon
from burgers_jax.training import reporting

# ----------------------------------------------------------------------------- persistence, in words


def _rollout(model, persistence):
    return {"horizons": list(range(1, len(model) + 1)), "model": {"vrmse": model},
            "persistence": {"vrmse": persistence}, "crossover_horizon": crossover_horizon(model, persistence)}


@pytest.mark.parametrize("model,want", [
    ([0.5, 0.6, 0.7], "never beats persistence (horizons 1 to 3)"),
    ([0.05, 0.1, 0.1], "beats persistence at every horizon (1 to 3)"),
    ([0.05, 0.3, 0.1], "beats persistence up to horizon 1, and at every horizon from h* = 3 on (to 3)"),
    ([0.05, 0.1, 0.9], "beats persistence up to horizon 2; not at the last horizon (3), so no h*"),
    ([0.5, 0.1, 0.1], "does not beat persistence at horizon 1, and at every horizon from h* = 2 on (to 3)"),
])
def test_persistence_summary_says_what_happened(model, want):
    assert report.persistence_summary(_rollout(model, [0.1, 0.2, 0.3])) == want


def test_a_report_never_says_up_to_horizon_0():
    result = {"windows": [[0, 0]], "one_step": {m: {"vrmse": 1.0} for m in ("model", "persistence", "truth")},
              "rollout": _rollout([0.5, 0.6], [0.1, 0.2])}
    text = report.metrics_markdown(result, "t")
    assert "the model never beats persistence" in text and "horizon 0" not in text


# ----------------------------------------------------------------------------- the progress line


def test_progress_names_the_loss_it_shows():
    training = demo.get_config("smoke").training
    record = {"train/loss": 0.0123, "train/lr": 9.9e-5}
    training.residual, training.lambda_pde, training.lambda_bc, training.lambda_data = "precond", 1.0, 0.0, 0.0
    assert reporting.progress_fields(record, training) == {"loss(precond)": "1.230e-02", "lr": "9.90e-05"}
    training.residual, training.lambda_bc = "window", 0.1  # the total includes the weighted boundary term
    assert list(reporting.progress_fields(record, training)) == ["loss(window+0.1*bc)", "lr"]
    training.lambda_pde, training.lambda_bc, training.lambda_data = 0.0, 0.0, 1.0  # the supervised ceiling
    assert reporting.objective_name(training) == "nrmse"


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_eta_leaves_out_the_compiling_first_step(capsys):
    clock = FakeClock()
    bar = LineProgress(total=11, desc="train", unit="step", every=1, clock=clock)
    clock.now = 100.0  # the first step compiles: 100 s
    bar.update()
    for _ in range(5):  # then 2 s a step
        clock.now += 2.0
        bar.update()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "train: 1/11 steps (9%)", "no rate from the compiling step alone"
    assert lines[-1] == "train: 6/11 steps (55%), 0.50 steps/s, 0:10 left", lines[-1]


def test_eta_of_a_resumed_bar_counts_from_its_first_step(capsys):
    clock = FakeClock()
    bar = LineProgress(total=100, desc="train", unit="step", initial=90, every=5, clock=clock)
    for _ in range(10):
        clock.now += 50.0 if bar.n == 90 else 1.0
        bar.update()
    assert capsys.readouterr().out.splitlines() == ["train: 95/100 steps (95%), 1.00 steps/s, 0:05 left",
                                                    "train: 100/100 steps (100%), 1.00 steps/s, 0:00 left"]


# ----------------------------------------------------------------------------- the run's logs


def _tags(directory):
    """The summary tags of every tensorboardX event file under `directory` (TFRecord framing)."""
    from tensorboardX.proto import event_pb2

    tags = []
    for path in directory.rglob("events.out.tfevents.*"):
        raw, pos = path.read_bytes(), 0
        while pos < len(raw):
            (length,) = struct.unpack("<Q", raw[pos:pos + 8])
            tags += [v.tag for v in event_pb2.Event.FromString(raw[pos + 12:pos + 12 + length]).summary.value]
            pos += 12 + length + 4
    return tags


def test_loss_curve_written_when_the_writer_closes(tmp_path):
    training = {"residual": "window", "lambda_pde": 1.0, "lambda_bc": 0.1, "lambda_data": 0.0}
    writer = reporting.MetricsWriter(tmp_path, tensorboard=False, config={"training": training})
    writer.write(0, {"val/loss": 2.0})
    for step in range(1, 5):
        writer.write(step, {"train/loss": 1.0 / step, "train/lr": 1e-4})
    writer.write(4, {"val/loss": 0.5})
    assert not (tmp_path / reporting.LOSS_CURVE_FILE).exists()
    writer.close()
    assert (tmp_path / reporting.LOSS_CURVE_FILE).read_bytes()[:4] == b"\x89PNG"
    fig = reporting.plot_loss_curve(tmp_path / "metrics.jsonl", tmp_path / "again.png", "window+0.1*bc")
    (ax,) = fig.get_axes()
    lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}
    assert lines == {"train (train/loss)": ([1, 2, 3, 4], [1.0, 0.5, 1 / 3, 0.25]),
                     "val (val/loss)": ([0, 4], [2.0, 0.5])}
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "training step"
    assert ax.get_ylabel().startswith("loss(window+0.1*bc)")


def test_no_loss_curve_without_losses(tmp_path):
    writer = reporting.MetricsWriter(tmp_path, tensorboard=False)
    writer.write(1, {"train/lr": 1e-4})
    writer.close()
    assert not (tmp_path / reporting.LOSS_CURVE_FILE).exists()


def test_hparams_stay_in_the_runs_own_tensorboard_folder(tmp_path):
    for invocation in range(2):  # a run and its resume
        writer = reporting.MetricsWriter(tmp_path, tensorboard=True, config={"a": 1})
        writer.write(invocation + 1, {"train/loss": 1.0})
        writer.hparams({"lr": 1e-4, "residual": "precond", "nested": {"x": 1}}, {"best_val": 0.5 - invocation / 10})
        writer.close()
    tb = tmp_path / "tensorboard"
    assert [p for p in tb.iterdir() if p.is_dir()] == [], "no timestamped subfolder per invocation"
    tags = _tags(tb)
    assert tags.count("_hparams_/experiment") == 2 and tags.count("hparams/best_val") == 2, tags
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and np.isfinite([r["train/loss"] for r in rows]).all()
