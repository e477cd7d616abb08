"""Every figure the project draws, drawn on tiny fake data and read from its
`matplotlib.figure.Figure` (not the PNG): every axis labelled, every figure titled,
every error map's title giving its max |error|, legends beside the data rather than
over it, and one colour per role across all figures (the same role the same colour
everywhere; different roles never one colour; several runs of one role in shades of its
colour, not new hues).

The roles are read from the series' labels by this test (`_role_of_label`), not from the
code that draws them. The tutorial's figures (examples/tutorial.py, a notebook) are
drawn by tests/commands/test_tutorial.py's run."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from conftest import REPO
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb

from burgers_jax.evaluation import compare as compare_lib
from burgers_jax.evaluation import figures
from burgers_jax.training import reporting

N = 6  # rollout horizons
HORIZONS = list(range(1, N + 1))


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"figures_script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _curve(start: float, growth: float = 1.3) -> list[float]:
    return [start * growth ** i for i in range(N)]


def _example(rng, sample: int = 3):
    true = rng.normal(size=(16, 16, 2)).astype(np.float32)
    return {"true": true, "model": true + 0.05 * rng.normal(size=true.shape).astype(np.float32),
            "persistence": true + 1e-3 * rng.normal(size=true.shape).astype(np.float32),
            "floor": true + 1e-7 * rng.normal(size=true.shape).astype(np.float32),
            "sample": np.int64(sample), "frame": np.int64(40), "nu": np.float64(0.125), "t": np.float64(0.04)}


def _run_dir(path, training: dict):
    """A training run's folder: config.json and best_adapters/ (what evaluate's --lora names)."""
    (path / "best_adapters").mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model": {}, "training": training}))
    return path / "best_adapters"


LABEL_FREE = {"lambda_pde": 1.0, "lambda_data": 0.0, "lambda_bc": 0.0, "residual": "precond"}
SUPERVISED = {"lambda_pde": 0.0, "lambda_data": 1.0, "lambda_bc": 0.0, "residual": "precond"}


def _evaluation(label, lora, example, start):
    rollout = {"horizons": HORIZONS, "model": {"vrmse": _curve(start), "nrmse": _curve(start / 30)},
               "persistence": {"vrmse": _curve(1e-3, 2.0), "nrmse": _curve(3e-5, 2.0)}, "crossover_horizon": None}
    metrics = {"config": {"lora": str(lora) if lora else None, "window_dt": 1 / 999, "data": "analytic"},
               "one_step": {"model": {}, "persistence": {}}, "rollout": rollout}
    return compare_lib.Evaluation(label, REPO, metrics, example)


# ----------------------------------------------------------------------------- the figures, and each series' role

def _draw_all(tmp_path) -> dict:
    """{name: (Figure, {label: role} for labels the generic rule cannot read)}."""
    rng = np.random.default_rng(0)
    supervised_lora = _run_dir(tmp_path / "sup_run", SUPERVISED)
    label_free_lora = _run_dir(tmp_path / "lf_run", LABEL_FREE)
    drawn = {}

    example = _example(rng)
    meta = {"checkpoint": "ckpt/tiny", "lora": None, **example}
    drawn["evaluate window.png"] = (figures.window_figure(example, meta, floor_dtype="float32"), {})
    for name, lora, role in (("zero-shot", None, "zero-shot"), ("supervised", supervised_lora, "supervised"),
                             ("label-free", label_free_lora, "fine-tuned")):
        rollout = _evaluation("x", lora, None, 0.02).metrics["rollout"]
        fig = figures.rollout_figure(rollout, {"checkpoint": "ckpt/tiny", "lora": str(lora) if lora else None,
                                               "window_dt": 1 / 999})
        drawn[f"evaluate rollout.png ({name})"] = (fig, {"model": role})

    evals = [_evaluation("zero-shot", None, example, 0.03), _evaluation("fine-tuned", label_free_lora, example, 0.01),
             _evaluation("fine-tuned, seed 1", label_free_lora, example, 0.012),
             _evaluation("supervised", supervised_lora, example, 0.008)]
    drawn["compare comparison.png"] = (compare_lib.figure(evals), {})

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (
        {"step": 0, "val/loss": 3.0}, {"step": 1, "train/loss": 2.0}, {"step": 2, "train/loss": 1.0},
        {"step": 2, "val/loss": 0.9})))
    fig = reporting.plot_loss_curve(run / "metrics.jsonl", tmp_path / "loss.png", "precond", LABEL_FREE)
    drawn["train loss_curve.png (label-free)"] = (fig, {"train (train/loss)": "fine-tuned",
                                                        "val (val/loss)": "fine-tuned"})
    (run / "config.json").write_text(json.dumps({"training": SUPERVISED}))
    fig = reporting.plot_loss_curve(run / "metrics.jsonl", tmp_path / "loss_sup.png", "nrmse")
    drawn["train loss_curve.png (supervised, from config.json)"] = (
        fig, {"train (train/loss)": "supervised", "val (val/loss)": "supervised"})
    true = rng.normal(size=(2, 16, 16, 2)).astype(np.float32)
    drawn["train plots/val_step*.png"] = (reporting.plot_validation_window(true + 0.01, true, tmp_path / "v.png"), {})

    experiment = _load_script("experiment")
    table = {"zero-shot": {"rollout": _curve(0.03)}, "persistence": {"rollout": _curve(1e-3, 2.0)},
             **{row: {"rollout": _curve(0.01 + 0.002 * i)} for i, row in enumerate(experiment.ROWS)}}
    curves = {f"{row} seed {seed}": {"steps": [0, 25, 50], "vrmse": [0.025, 0.015 + 0.001 * i, 0.01 + 0.001 * seed]}
              for seed in (0, 1, 2) for i, row in enumerate(experiment.ROWS)}
    results = {"strides": {"1": {"test": table}}, "curves": {"1": curves},
               "labels": {"zero-shot": "zero-shot", **{k: v[0] for k, v in experiment.ROWS.items()}}}
    for name, fig in experiment.make_figures(results).items():
        drawn[f"experiment {name}"] = (fig, {})

    first = _load_script("experiment_first_study")
    runs = {name: [{"rollout": _curve(0.02 + 0.003 * i)}] * 2
            for i, name in enumerate(["zero_shot", *first.ROWS, "persistence"])}
    results = {"strides": {1: runs, 10: runs},
               "curves": {s: {name: [[(0, 60.0), (30, 40.0 - i)], [(0, 60.0), (30, 38.0 - i)]]
                              for i, name in enumerate(first.ROWS)} for s in (1, 10)}}
    for name, fig in first.make_figures(results).items():
        drawn[f"experiment_first_study {name}"] = (fig, {})

    pretrain = _load_script("pretrain")
    fams = {"burgers": 0.03, "diffusion": 0.01, "advection": 0.02}
    rows = [{"step": s, "train_loss": 1.0 / s} for s in (10, 20, 30)]
    rows += [{"step": s, "train_loss": 0.9 / s, "val": {"loss": 1.0 / s, "families": {
        f: {"vrmse": 0.1 / s, "persistence_vrmse": p} for f, p in fams.items()}}} for s in (20, 30)]
    (tmp_path / "curve.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    drawn["pretrain curve.png"] = (pretrain.curve_figure(tmp_path / "curve.jsonl"),
                                   {"train (normalized MSE)": "zero-shot", "validation": "zero-shot",
                                    **{f"{f}: model": "zero-shot" for f in fams}})
    return drawn


def _role_of_label(label: str) -> str | None:
    """The role a series' label names (this test's reading, not the drawing code's)."""
    text = label.lower()
    for role, words in (("persistence", ("persistence",)), ("zero-shot", ("zero-shot", "zero shot")),
                        ("supervised", ("supervised",)), ("reference residual", ("reference residual",)),
                        ("fine-tuned", ("label-free", "fine-tuned", "pde"))):
        if any(w in text for w in words):
            return role
    return None


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    return _draw_all(tmp_path_factory.mktemp("figures"))


def _is_colourbar(ax) -> bool:
    return ax.get_label() == "<colorbar>"


def _is_error_map(ax) -> bool:
    return bool(ax.images) and ax.images[0].get_cmap().name == figures.ERROR_CMAP


def _series(fig, overrides: dict) -> list[tuple[str, str, tuple]]:
    """(label, role, rgb) of each labelled line (legend entries: a seed's unlabelled line
    takes the role of the labelled line of its colour family)."""
    out = []
    for ax in fig.get_axes():
        for line in ax.get_lines():
            label = line.get_label()
            if label.startswith("_"):
                continue
            role = overrides.get(label) or _role_of_label(label)
            assert role is not None, f"a series whose role this test cannot tell: {label!r}"
            out.append((label, role, to_rgb(line.get_color())))
    return out


# ----------------------------------------------------------------------------- one figure at a time


def test_every_axis_is_labelled_and_every_figure_titled(drawn):
    for name, (fig, _) in drawn.items():
        axes = fig.get_axes()
        assert axes, name
        for ax in axes:
            if _is_colourbar(ax):
                assert ax.get_ylabel() or ax.get_xlabel(), f"{name}: a colour bar without a label"
                continue
            assert ax.get_xlabel().strip(), f"{name}: no x label on {ax.get_title()!r}"
            assert ax.get_ylabel().strip(), f"{name}: no y label on {ax.get_title()!r} ({ax.get_xlabel()!r})"
        suptitles = [fig.get_suptitle()] + [s.get_suptitle() for s in fig.subfigs]
        assert any(t.strip() for t in suptitles) or all(ax.get_title().strip() for ax in axes
                                                         if not _is_colourbar(ax)), f"{name}: no title"


def test_error_maps_give_their_max_error(drawn):
    maps = 0
    for name, (fig, _) in drawn.items():
        for ax in fig.get_axes():
            if _is_error_map(ax):
                maps += 1
                m = float(np.abs(ax.images[0].get_array()).max())
                assert "max |err| = " in ax.get_title(), f"{name}: {ax.get_title()!r}"
                shown = float(ax.get_title().split("max |err| = ")[1].split()[0])
                assert shown == pytest.approx(m, rel=0.06), (name, ax.get_title(), m)
    assert maps >= 4 + 8 + 2


def test_legends_sit_beside_the_data(drawn):
    for name, (fig, _) in drawn.items():
        renderer = FigureCanvasAgg(fig).get_renderer()
        fig.draw(renderer)
        legends = [ax.get_legend() for ax in fig.get_axes() if ax.get_legend()] + list(fig.legends)
        if any(ax.get_lines() for ax in fig.get_axes()):
            assert legends, f"{name}: curves without a legend"
        for legend in legends:
            box = legend.get_window_extent(renderer)
            for ax in fig.get_axes():
                if ax.get_lines() or ax.images:
                    assert not box.overlaps(ax.get_window_extent(renderer)), \
                        f"{name}: a legend over the axes titled {ax.get_title()!r}"


# ----------------------------------------------------------------------------- one colour per role, across figures


def _is_shade(rgb, base, tol: float = 2.5 / 255) -> bool:
    """`rgb` is `base` mixed with white (a fraction f in [0, 1) of white): a shade of it."""
    rgb, base = np.asarray(rgb), np.asarray(base)
    room = 1.0 - base
    f = float((rgb - base)[np.argmax(room)] / room.max()) if room.max() > 0 else 0.0
    return -tol <= f < 0.9 and np.allclose(rgb, base + f * room, atol=tol)


def test_one_colour_per_role_in_every_figure(drawn):
    own: dict[str, dict[tuple, list[str]]] = {}  # role -> {its own colour in a figure: figures}
    series = {}
    for name, (fig, overrides) in drawn.items():
        series[name] = _series(fig, overrides)
        by_role: dict[str, list[tuple]] = {}
        for _, role, rgb in series[name]:
            by_role.setdefault(role, []).append(rgb)
        for role, colours in by_role.items():
            darkest = min(colours, key=sum)  # the role's own colour; lighter ones are its shades
            own.setdefault(role, {}).setdefault(tuple(round(c, 3) for c in darkest), []).append(name)
            for rgb in colours:
                assert _is_shade(rgb, darkest), f"{name}: {role} in a new hue {rgb}, not a shade of {darkest}"
    assert {"zero-shot", "fine-tuned", "supervised", "reference residual", "persistence"} <= set(own)
    for role, colours in own.items():
        assert len(colours) == 1, f"{role} has {len(colours)} colours across figures: {colours}"
    bases = {role: np.asarray(next(iter(colours))) for role, colours in own.items()}
    for a in bases:
        for b in bases:
            if a < b:
                assert np.abs(bases[a] - bases[b]).sum() > 0.3, f"{a} and {b} look alike: {bases[a]}, {bases[b]}"
    for name, items in series.items():  # a series' colour is a shade of its own role's colour, no other's
        for label, role, rgb in items:
            others = [r for r, base in bases.items() if r != role and _is_shade(rgb, base)]
            assert not others, f"{name}: {label!r} ({role}) in a shade of {others}"
    for role, base in bases.items():  # and the table the code keeps says the same
        assert np.allclose(to_rgb(figures.ROLE_COLOURS[role]), base, atol=1e-3), role


def test_the_role_of_a_run():
    assert figures.role_of_training(LABEL_FREE) == "fine-tuned"
    assert figures.role_of_training(SUPERVISED) == "supervised"
    assert figures.role_of_training({**LABEL_FREE, "residual": "window"}) == "reference residual"
    assert figures.role_of_model(None) == "zero-shot"
    assert figures.role_of_model("/nowhere/best_adapters") == "fine-tuned"
    assert len(set(figures.ROLE_COLOURS.values())) == len(figures.ROLE_COLOURS)
