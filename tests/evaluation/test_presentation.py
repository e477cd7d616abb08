"""Seeing the answer at a glance: Markdown tables that render
(evaluate's metrics.md, the demo's table, the experiment scripts' tables, docs/results.md,
the comparison), `burgers-compare`, and plots that can be read (a diverging error scale
centred on zero and shared, no blank panels, integer horizons, titles that name what is
shown). Two tiny evaluations of one tiny model (float32 and the fp32_output policy) on
a tiny file, made once for the module."""

from __future__ import annotations

import importlib.util
import json
import shutil
import types

import numpy as np
import pytest
from conftest import REPO, run_cli
from md_tables import assert_tables_render

from burgers_jax.data import writer
from burgers_jax.evaluation import compare as compare_lib
from burgers_jax.evaluation import figures
from burgers_jax.evaluation.evaluate import EvalRequest, run_evaluation
from burgers_jax.io import outputs
from burgers_jax.training import reporting

PRECISIONS = ("float32", "fp32_output")
ROLLOUT = 3


@pytest.fixture(scope="module")
def evaluations(tiny_converted, tmp_path_factory):
    """{precision: evaluation folder}: one validation window each, a 3-step rollout."""
    root = tmp_path_factory.mktemp("evaluations")
    data = writer.write_dataset(root / "d.h5", num_samples=10, num_frames=12, resolution=128, progress=False)["path"]
    folders = {}
    for precision in PRECISIONS:
        req = EvalRequest(checkpoint=tiny_converted, out=root / f"eval_{precision}", data=data, temporal_length=2,
                          rollout=ROLLOUT, precision=precision)
        _, folders[precision], _ = run_evaluation(req, show_progress=False)
    return folders


def _metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


def _load_script(name: str):
    """A script of scripts/ as a module, read only (its main() is not run)."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- tables that render


def test_the_table_check_catches_a_pipe_in_a_cell():
    broken = "| method | |u+v-1.5| mean |\n|---|---|\n| model | 1.0e-03 |\n"
    with pytest.raises(AssertionError, match="0 tables render"):
        assert_tables_render(broken)
    with pytest.raises(AssertionError, match="3 table line.s. do not render"):
        assert_tables_render("| ok |\n|---|\n| 1 |\n\n" + broken)
    cut = "| a | b |\n|---|---|\n| 1 | x | y |\n"  # renders, but markdown-it drops "y"
    with pytest.raises(AssertionError, match="3 cells"):
        assert_tables_render(cut)
    escaped = "| method | \\|u+v-1.5\\| mean |\n|---|---|\n| model | 1.0e-03 |\n"
    (t,) = assert_tables_render(escaped)
    assert t.header == ["method", "|u+v-1.5| mean"]


def test_evaluation_report_tables_render(evaluations):
    text = (evaluations["float32"] / "metrics.md").read_text()
    one_step, rollout = assert_tables_render(text, at_least=2)
    assert "abs(u+v-1.5) mean" in one_step.header and one_step.header[:2] == ["method", "VRMSE"]
    assert [r[0] for r in one_step.rows] == ["model", "persistence", "truth"]
    assert all(cell for r in one_step.rows for cell in r[:6]), one_step.rows
    assert rollout.header == ["horizon", "model", "persistence"] and [r[0] for r in rollout.rows] == ["1", "2", "3"]


def test_demo_table_renders(evaluations):
    demo = _load_script("demo")
    zero, tuned = (_metrics(evaluations[p]) for p in PRECISIONS)
    (t,) = assert_tables_render(demo.results_table(zero, tuned))
    assert t.header == ["", "one step", f"rollout at {ROLLOUT} steps", "PDE loss, preconditioned (trained)",
                        "PDE loss, plain"]
    assert [r[0] for r in t.rows] == ["zero-shot", "fine-tuned (label-free)", "persistence"]
    assert t.rows[2][1] == f"{zero['one_step']['persistence']['vrmse']:.4f}"
    assert t.rows[1][3] == f"{tuned['one_step']['model']['precond_loss']:.3g}"
    assert t.rows[1][4] == f"{tuned['one_step']['model']['pde_loss']:.3g}"


def _stats(vrmse: float, n: int, seeds: int = 1) -> dict:
    return {"vrmse": [vrmse] * seeds, "ci": (vrmse * 0.9, vrmse * 1.1), "rollout": list(np.linspace(vrmse, 1.0, n)),
            "h_star": [None] * seeds, "seeds": seeds}


def test_experiment_tables_render():
    experiment = _load_script("experiment")
    n = max(experiment.ROLLOUT.values())
    table = {"zero-shot": _stats(0.0245, n), "precond": _stats(0.0096, n, seeds=3),
             "supervised": _stats(0.0090, n, seeds=3), "persistence": {"vrmse": 0.0006, "rollout": [0.01] * n}}
    results = {"strides": {"1": {"test": table, "heldout": table}, "10": {"test": table}},
               "labels": {k: v[0] for k, v in experiment.ROWS.items()}}
    tables = assert_tables_render(experiment.summarize(results), at_least=3)
    assert all(len(t.rows) == 4 for t in tables)

    # A LoRA-only row closes its gap against the supervised row of the same parts (LoRA
    # only): (0.0245 - 0.0110) / (0.0245 - 0.0100) = 93 %, not against supervised LoRA +
    # decoder (87 %); the long ceiling's own "vs S long" cell stays empty.
    table = {**table, "precond_lora_only": _stats(0.0110, n), "supervised_lora_only": _stats(0.0100, n),
             "supervised_long": _stats(0.0050, n)}
    results["strides"] = {"1": {"test": table}}
    (t,) = assert_tables_render(experiment.summarize(results))
    col = t.header.index("closure vs S (same parts)")
    by_label = {r[0]: r for r in t.rows}
    assert by_label[experiment.ROWS["precond_lora_only"][0]][col] == "93 %"
    assert by_label[experiment.ROWS["precond"][0]][col] == f"{100 * (0.0245 - 0.0096) / (0.0245 - 0.0090):.0f} %"
    assert by_label[experiment.ROWS["supervised_long"][0]][col + 1] == ""
    # ... and against the long ceiling of the same parts: (0.0245 - 0.0110) / (0.0245 - 0.0080).
    assert by_label[experiment.ROWS["precond_lora_only"][0]][col + 1] == ""
    table["supervised_lora_only_long"] = _stats(0.0080, n)
    (t,) = assert_tables_render(experiment.summarize(results))
    by_label = {r[0]: r for r in t.rows}
    assert t.header[col + 1] == "vs S long (same parts)"
    assert by_label[experiment.ROWS["precond_lora_only"][0]][col + 1] == "82 %"
    assert by_label[experiment.ROWS["precond"][0]][col + 1] == f"{100 * (0.0245 - 0.0096) / (0.0245 - 0.0050):.0f} %"
    assert by_label[experiment.ROWS["supervised_lora_only_long"][0]][col + 1] == ""
    # Against persistence, a ratio (below 1 beats copying the frame), meaningful also when
    # zero-shot already beats persistence (where a closure towards it would be negative).
    ratio = t.header.index("÷ persistence")
    assert by_label["zero-shot"][ratio] == f"{0.0245 / 0.0006:.2f}"
    assert by_label[experiment.ROWS["precond_lora_only"][0]][ratio] == f"{0.0110 / 0.0006:.2f}"

    first = _load_script("experiment_first_study")
    run = {"in": {"vrmse": 0.02, "nrmse": 7e-4, "pde_loss": 60.0, "constraint_error": 4e-4},
           "out": {"vrmse": 0.03}, "rollout": [0.02, 0.03, 0.04, 0.05, 0.06]}
    results = {"strides": {1: {"zero_shot": [run], "persistence": [run, run]}}}
    (t,) = assert_tables_render(first.summarize(results, types.SimpleNamespace(rollout=5)))
    assert "abs(u+v-1.5) (val)" in t.header and len(t.rows) == 2


def test_results_page_tables_render():
    tables = assert_tables_render((REPO / "docs" / "results.md").read_text(), at_least=5)
    assert any("abs(u+v-1.5) (val)" in t.header for t in tables)


# ----------------------------------------------------------------------------- burgers-compare


def test_compare_writes_one_table_and_one_figure(evaluations, tmp_path):
    out = tmp_path / "cmp"
    folders = [str(evaluations[p]) for p in PRECISIONS]
    rc, stdout, err = run_cli(["-m", "burgers_jax.compare", *folders, "--labels", "float32,fp32 | output",
                               "--out", str(out)])
    assert rc == 0, err[-3000:]
    text = (out / "comparison.md").read_text()
    (t,) = assert_tables_render(text)
    assert [r[0] for r in t.rows] == ["float32", "fp32 | output", "persistence"], "one persistence row: same data"
    assert t.header[2] == "VRMSE" and "rollout VRMSE h=3" in t.header and t.header[-1] == "h*"
    for row, precision in zip(t.rows, PRECISIONS):
        m = _metrics(evaluations[precision])
        assert row[1] == "none (zero-shot)"
        assert row[2] == f"{m['one_step']['model']['vrmse']:.3e}"
        assert row[t.header.index("rollout VRMSE h=3")] == f"{m['rollout']['model']['vrmse'][2]:.3e}"
    assert t.rows[2][2] == f"{_metrics(evaluations['float32'])['one_step']['persistence']['vrmse']:.3e}"
    for label, precision in (("float32", "float32"), ("fp32 | output", "fp32_output")):
        r = _metrics(evaluations[precision])["rollout"]
        assert not np.any(np.less(r["model"]["vrmse"], r["persistence"]["vrmse"])), "the tiny random model loses"
        one, held = (_metrics(evaluations[precision])["one_step"][k]["vrmse"] for k in ("model", "persistence"))
        assert (f"- {label} against persistence (copying the last frame): one step ahead "
                f"{'better' if one < held else 'worse'} (VRMSE {one:.4f} vs {held:.4f}); in the rollout the model "
                "never beats persistence (horizons 1 to 3).") in text
    a, b = (_metrics(evaluations[p]) for p in PRECISIONS)
    wins = np.less(b["rollout"]["model"]["vrmse"], a["rollout"]["model"]["vrmse"])
    assert "- fp32 | output against float32: one step ahead " in text  # same data: compared with the first
    assert ("better at every rollout horizon" in text) == bool(wins.all())
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert outputs.is_ours(out, "comparison")
    assert str(out) in stdout.splitlines()[-1]
    rc, _, err = run_cli(["-m", "burgers_jax.compare", *folders, "--out", str(out)])
    assert rc == 2 and "--overwrite" in err


def test_compare_figure_shares_one_symmetric_scale(evaluations):
    evals = [compare_lib.load(evaluations[p], p) for p in PRECISIONS]
    fig = compare_lib.figure(evals)
    maps = [ax for ax in fig.get_axes() if ax.images and ax.images[0].get_cmap().name == figures.ERROR_CMAP]
    assert len(maps) == 2 * (len(PRECISIONS) + 1), "u and v for each evaluation and persistence"
    norms = {(ax.images[0].norm.vmin, ax.images[0].norm.vmax) for ax in maps}
    assert len(norms) == 1, "one colour scale for every map"
    ((lo, hi),) = norms
    assert lo == -hi and hi > 0
    examples = [np.load(evaluations[p] / "example_window.npz") for p in PRECISIONS]
    errors = [e["model"] - e["true"] for e in examples] + [examples[0]["persistence"] - examples[0]["true"]]
    assert hi == pytest.approx(np.percentile(np.abs(errors), figures.CLIP_PERCENTILE)), "one scale from all maps"
    curves = [ax for ax in fig.get_axes() if ax.get_lines()]
    assert len(curves) == 1 and {line.get_label() for line in curves[0].get_lines()} == {*PRECISIONS, "persistence"}
    assert all(float(x).is_integer() for x in curves[0].get_xticks()), curves[0].get_xticks()


def test_compare_errors_name_the_folder(evaluations, tmp_path):
    good = evaluations["float32"]
    empty = tmp_path / "empty"
    empty.mkdir()
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    for bad, message in ((tmp_path / "missing", "no such folder"), (empty, "not an evaluation folder"),
                         (a_file, "is a file")):
        with pytest.raises(compare_lib.CompareError, match=message) as e:
            compare_lib.compare([good, bad], tmp_path / "out")
        assert str(bad) in str(e.value)
    strided = tmp_path / "strided"
    shutil.copytree(good, strided)
    m = _metrics(strided)
    m["config"]["frame_stride"] = 10
    (strided / "metrics.json").write_text(json.dumps(m))
    with pytest.raises(compare_lib.CompareError, match="frame strides differ") as e:
        compare_lib.compare([good, strided], tmp_path / "out")
    assert f"{strided}: 10" in str(e.value) and f"{good}: 1" in str(e.value)
    no_rollout = tmp_path / "one_step_only"
    shutil.copytree(good, no_rollout)
    m = _metrics(no_rollout)
    del m["rollout"]
    (no_rollout / "metrics.json").write_text(json.dumps(m))
    with pytest.raises(compare_lib.CompareError, match="rollout horizons differ") as e:
        compare_lib.compare([good, no_rollout], tmp_path / "out")
    assert f"{no_rollout}: none" in str(e.value)
    with pytest.raises(compare_lib.CompareError, match="2 labels for 1"):
        compare_lib.compare([good], tmp_path / "out", labels=["a", "b"])
    assert not (tmp_path / "out").exists(), "nothing written before the checks pass"
    rc, stdout, err = run_cli(["-m", "burgers_jax.compare", str(good), str(tmp_path / "missing"),
                               "--out", str(tmp_path / "out")])
    assert rc == 2 and err.strip() == f"burgers-compare: error: {tmp_path / 'missing'}: no such folder", err


# ----------------------------------------------------------------------------- plots that can be read


def _error_axes(fig):
    return [ax for ax in fig.get_axes() if ax.images and ax.images[0].get_cmap().name == figures.ERROR_CMAP]


def test_window_plot_centres_errors_on_zero_and_drops_a_blank_floor(evaluations):
    example = dict(np.load(evaluations["float32"] / "example_window.npz"))
    meta = {"checkpoint": "ckpt/tiny", "lora": None, **example}
    assert not np.any(example["floor"] - example["true"]), "float32 data in a float32 output: the floor is 0"
    fig = figures.window_figure(example, meta, floor_dtype="float32")
    errors = _error_axes(fig)
    assert len(errors) == 4 and not any("floor" in ax.get_title() for ax in errors), "model, persistence; u, v"
    ((lo, hi),) = {(ax.images[0].norm.vmin, ax.images[0].norm.vmax) for ax in errors}
    errors = [example[m] - example["true"] for m in ("model", "persistence")]
    assert lo == -hi and hi == pytest.approx(np.percentile(np.abs(errors), figures.CLIP_PERCENTILE))
    title = fig.get_suptitle()
    for part in ("ckpt/tiny (zero-shot)", f"sample {int(example['sample'])}", "ν = ", "t = ", "horizon 1",
                 "floor", "left out"):
        assert part in title, (part, title)
    assert all(ax.get_xlabel() == "x" and ax.get_ylabel() == "y" for ax in fig.get_axes() if ax.images)
    example["floor"] = example["true"] + 1e-7  # a floor that is not zero is drawn
    assert len(_error_axes(figures.window_figure(example, meta))) == 6


def test_evaluation_rollout_plot_has_integer_horizons(evaluations):
    m = _metrics(evaluations["float32"])
    fig = figures.rollout_figure(m["rollout"], {"checkpoint": "ckpt/tiny", "window_dt": m["config"]["window_dt"]})
    for ax in fig.get_axes():
        assert all(float(x).is_integer() for x in ax.get_xticks()), ax.get_xticks()
        assert ax.get_xlabel().startswith("rollout horizon") and "lower is better" in ax.get_ylabel()
        assert {line.get_label() for line in ax.get_lines()} == {"model", "persistence"}
    assert (evaluations["float32"] / "rollout.png").is_file() and (evaluations["float32"] / "window.png").is_file()


def test_validation_plot_error_scale_is_symmetric(tmp_path):
    true = np.full((2, 16, 16, 2), 0.75, np.float32)
    pred = true.copy()
    pred[-1, ..., 0] += np.linspace(0.0, 0.02, 16)  # an error of one sign only: the scale still centres on zero
    fig = reporting.plot_validation_window(pred, true, tmp_path / "v.png", title="step 4")
    (ax_u, ax_v) = _error_axes(fig)
    want = np.percentile(np.abs(pred[-1] - true[-1]), figures.CLIP_PERCENTILE)
    for ax in (ax_u, ax_v):
        assert (ax.images[0].norm.vmin, ax.images[0].norm.vmax) == pytest.approx((-want, want))
    assert (tmp_path / "v.png").is_file()
