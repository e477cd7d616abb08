"""examples/tutorial.py (the ten-minute laptop tutorial, a percent-format notebook script)
runs end to end at smoke size with plain python, and writes its figures and results."""

from __future__ import annotations

import json
import os
import re

from conftest import REPO, run_cli

TUTORIAL = REPO / "examples" / "tutorial.py"
FIGURES = ("1_prediction.png", "2_loss_curve.png", "3_rollout.png", "4_error_maps.png")


def test_the_tutorial_is_a_percent_format_notebook():
    text = TUTORIAL.read_text()
    cells = re.findall(r"^# %%( \[markdown\])?$", text, flags=re.M)
    assert sum(1 for c in cells if not c) >= 6 and sum(1 for c in cells if c) >= 5, "code and markdown cells"
    assert "import jupytext" not in text, "runs with plain python"
    for step in ("convert(", "predict(", "train_and_evaluate(", "run_evaluation("):
        assert step in text, step


def test_the_tutorial_runs_end_to_end_at_smoke_size(tmp_path):
    out = tmp_path / "tutorial"
    # As a user runs it: without the two forced host devices of conftest.py.
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(BURGERS_TUTORIAL_SIZE="smoke", MPLBACKEND="Agg")
    rc, stdout, stderr = run_cli([str(TUTORIAL), "--out", str(out)], cwd=tmp_path, env=env, timeout=600)
    assert rc == 0, stdout[-3000:] + stderr[-3000:]
    assert "size smoke" in stdout and "tutorial finished in" in stdout.splitlines()[-1]
    for name in FIGURES:
        data = (out / "figures" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
    assert (out / "pretrained" / "model_config.json").is_file()
    assert json.loads((out / "run" / "summary.json").read_text())["steps"] == 1
    # Its conclusions are printed from its numbers, not written beforehand.
    assert "fine-tuned against zero-shot: one step ahead " in stdout
    assert "fine-tuned against persistence: one step ahead " in stdout
    for who in ("zero_shot", "fine_tuned"):
        m = json.loads((out / f"eval_{who}" / "metrics.json").read_text())
        assert len(m["rollout"]["horizons"]) == 2 and set(m["one_step"]) == {"model", "persistence", "truth"}
    assert m["config"]["lora"] == str(out / "run" / "best_adapters")
    # A rerun replaces the tutorial's own folder; a folder it did not make is refused.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    rc, _, stderr = run_cli([str(TUTORIAL), "--out", str(tmp_path / "mine")], cwd=tmp_path, env=env, timeout=120)
    assert rc != 0 and "was not made by the tutorial" in stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
