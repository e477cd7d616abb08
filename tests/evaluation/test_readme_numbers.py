"""The README's demo paragraph says what the demo's numbers say: its VRMSE values and its
sentences about zero-shot and persistence are written again here from the evaluations
of the run it quotes (docs/demo/, kept from that run), by the code that wrote them."""

from __future__ import annotations

import json
import re

import numpy as np
from conftest import REPO

from burgers_jax.evaluation.compare import conclusions, load

DEMO = REPO / "docs" / "demo"


def _paragraph() -> str:
    readme = (REPO / "README.md").read_text()
    start = readme.index("`make demo` prints")
    return readme[start:readme.index("The comparison is written to `demo_run/comparison/`", start)]


def _metrics(who: str, data: str) -> dict:
    return json.loads((DEMO / f"eval_{who}_{data}" / "metrics.json").read_text())


def test_the_readme_quotes_the_comparison_sentences_the_numbers_write():
    quoted = [line[2:].rstrip(".") for line in _paragraph().splitlines() if line.startswith("- ")]
    written = conclusions([load(DEMO / "eval_zero_shot_test", "zero-shot"), load(DEMO / "eval_finetuned_test",
                                                                                    "fine-tuned")])
    assert len(quoted) == 2 and all(q in written for q in quoted), (quoted, written)


def test_the_readme_numbers_and_conclusion_are_the_demos():
    text = " ".join(_paragraph().split())
    one = {(w, d): _metrics(w, d) for w in ("zero_shot", "finetuned") for d in ("test", "heldout")}

    def v(w, d, last=False):
        m = one[(w, d)]
        return f"{(m['rollout']['model']['vrmse'][-1] if last else m['one_step']['model']['vrmse']):.4f}"

    assert (f"one-step VRMSE {v('zero_shot', 'test')} → {v('finetuned', 'test')} on fresh trajectories and "
            f"{v('zero_shot', 'heldout')} → {v('finetuned', 'heldout')} at held-out ν, 30-step rollout "
            f"{v('zero_shot', 'test', True)} → {v('finetuned', 'test', True)} and "
            f"{v('zero_shot', 'heldout', True)} → {v('finetuned', 'heldout', True)}") in text
    # "Better than the pretrained model and than copying the last frame, one step ahead and at
    # every horizon, on both sets": true of both sets, one step and every rollout horizon.
    assert "Better than the pretrained model and than copying the last frame, one step ahead and at every " \
           "horizon, on both sets" in text
    for data in ("test", "heldout"):
        z, f = one[("zero_shot", data)], one[("finetuned", data)]
        assert f["one_step"]["model"]["vrmse"] < z["one_step"]["model"]["vrmse"]
        assert np.all(np.less(f["rollout"]["model"]["vrmse"], z["rollout"]["model"]["vrmse"]))
        assert f["one_step"]["model"]["vrmse"] < f["one_step"]["persistence"]["vrmse"]
        assert np.all(np.less(f["rollout"]["model"]["vrmse"], f["rollout"]["persistence"]["vrmse"]))
    assert not re.search(r"still better one step ahead", text), "the old sentence the numbers did not write"
