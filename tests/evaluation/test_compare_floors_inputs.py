"""Weak answers made named ones: `burgers-compare` (evaluations of different T, a folder
given twice, an empty label, a hand-edited metrics.json, a broken example_window.npz),
`burgers-floors` (flags out of range, a non-positive or non-finite viscosity) and a
big-endian `.npy` given to `burgers-predict` (it just works). Each refusal is one line
on stderr naming the folder, file or flag, and exit status 2. The evaluation folders are
written here as burgers-evaluate writes them (metrics.json, example_window.npz,
metadata.json), with tiny numbers: no model runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from burgers_jax import compare as compare_cmd
from burgers_jax import floors as floors_cmd
from burgers_jax import predict as predict_cmd
from burgers_jax.io import arrays, outputs


def _one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def make_evaluation(folder: Path, temporal_length: int = 2, rollout: int = 2) -> Path:
    """An evaluation folder with the layout and the types burgers-evaluate writes."""
    folder.mkdir(parents=True)
    stats = {"vrmse": 0.1, "nrmse": 0.01, "rmse": 0.01, "pde_loss": 3.0, "constraint_error": 1e-3}
    metrics = {"windows": [[0, 0]], "one_step": {"model": stats, "persistence": stats, "truth": stats},
               "config": {"checkpoint": "ck/pretrained", "lora": None, "data": "d.h5", "frame_stride": 1,
                          "dt": 1 / 999, "window_dt": 1 / 999, "temporal_length": temporal_length,
                          "rollout": rollout, "precision": "float32"},
               "rollout": {"horizons": list(range(1, rollout + 1)), "model": {"vrmse": [0.1] * rollout},
                           "persistence": {"vrmse": [0.05] * rollout}, "crossover_horizon": None}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    field = np.full((8, 8, 2), 0.75, np.float32)
    np.savez_compressed(folder / "example_window.npz", true=field, model=field + 0.01, persistence=field,
                        floor=field, sample=0, start=0, frame=2, t=0.002, nu=0.12)
    (folder / outputs.METADATA_FILE).write_text(json.dumps(outputs.format_marker("evaluation")))
    return folder


def _compare(argv, capsys) -> tuple[int, str]:
    rc = compare_cmd.main([str(a) for a in argv])
    return rc, capsys.readouterr().err


# ----------------------------------------------------------------------------- burgers-compare


def test_compare_of_two_good_evaluations_still_works(tmp_path, capsys):
    a, b = make_evaluation(tmp_path / "a"), make_evaluation(tmp_path / "b")
    rc, err = _compare([a, b, "--labels", "zero, tuned", "--out", tmp_path / "cmp"], capsys)
    assert rc == 0, err
    assert (tmp_path / "cmp" / "comparison.md").is_file()


def test_compare_refuses_evaluations_of_different_temporal_length(tmp_path, capsys):
    a, b = make_evaluation(tmp_path / "t2", temporal_length=2), make_evaluation(tmp_path / "t4", temporal_length=4)
    rc, err = _compare([a, b, "--out", tmp_path / "cmp"], capsys)
    line = _one_line(err)
    assert rc == 2 and line.startswith("burgers-compare: error: the evaluations' temporal lengths T differ"), line
    assert f"{a}: 2" in line and f"{b}: 4" in line and "--temporal-length" in line, line
    assert not (tmp_path / "cmp").exists()


@pytest.mark.parametrize("second", ["same", "dot", "labelled"])
def test_compare_says_plainly_that_a_folder_is_given_twice(tmp_path, capsys, monkeypatch, second):
    monkeypatch.chdir(tmp_path)
    make_evaluation(tmp_path / "ev")
    argv = {"same": ["ev", "ev"], "dot": ["ev", "./ev/"], "labelled": ["ev", "ev", "--labels", "x,y"]}[second]
    rc, err = _compare([*argv, "--out", "cmp"], capsys)
    line = _one_line(err)
    assert rc == 2 and line.startswith("burgers-compare: error: the evaluation folder ev "), line
    assert "is given twice" in line and "--labels" not in line, line


@pytest.mark.parametrize("labels", ["x,", ",x", "x, ", ""])
def test_compare_refuses_an_empty_label(tmp_path, capsys, labels):
    folders = [make_evaluation(tmp_path / "a"), make_evaluation(tmp_path / "b")][:max(1, labels.count(",") + 1)]
    rc, err = _compare([*folders, "--labels", labels, "--out", tmp_path / "cmp"], capsys)
    line = _one_line(err)
    assert rc == 2 and line.startswith("burgers-compare: error: --labels: label ") and "is empty" in line, line
    assert not (tmp_path / "cmp").exists()


BAD_METRICS = {
    "invalid JSON": ("{\"one_step\": {\"model\": ", "cannot be read"),
    "a string metric": ({"one_step": {"model": {"vrmse": "0.1"}, "persistence": {}}}, "one_step.model.vrmse"),
    "no persistence": ({"one_step": {"model": {"vrmse": 0.1}}}, "one_step.persistence"),
    "a list config": ({"one_step": {"model": {}, "persistence": {}}, "config": [1]}, "config is [1]"),
    "a number rollout": ({"one_step": {"model": {}, "persistence": {}}, "rollout": 5}, "rollout is 5"),
    "short rollout": ({"one_step": {"model": {}, "persistence": {}},
                       "rollout": {"horizons": [1, 2], "model": {"vrmse": [0.1]}, "persistence": {"vrmse": [1, 2]}}},
                      "rollout.model.vrmse"),
    "a string stride": ({"one_step": {"model": {}, "persistence": {}}, "config": {"frame_stride": "1"}},
                        "config.frame_stride"),
    "windows not a list": ({"one_step": {"model": {}, "persistence": {}}, "windows": 3}, "windows is 3"),
}


@pytest.mark.parametrize("case", list(BAD_METRICS))
def test_compare_names_a_hand_edited_metrics_file(tmp_path, capsys, case):
    content, expected = BAD_METRICS[case]
    good, bad = make_evaluation(tmp_path / "good"), make_evaluation(tmp_path / "edited")
    (bad / "metrics.json").write_text(content if isinstance(content, str) else json.dumps(content))
    rc, err = _compare([good, bad, "--out", tmp_path / "cmp"], capsys)
    line = _one_line(err)
    assert rc == 2 and line.startswith(f"burgers-compare: error: {bad}/metrics.json: "), line
    assert expected in line, line


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:120])


def _object_array(path: Path) -> None:
    np.savez(path, true=np.array([{"a": 1}], dtype=object), model=np.zeros(2), persistence=np.zeros(2),
             sample=0, frame=0)


def _wrong_shape(path: Path) -> None:
    z = np.zeros((8, 8, 2), np.float32)
    np.savez(path, true=z, model=np.zeros((4, 4, 2), np.float32), persistence=z, sample=0, frame=2)


BAD_EXAMPLES = {
    "truncated": (_truncated, "cannot be read"),
    "empty": (lambda p: p.write_bytes(b""), "cannot be read"),
    "object array": (_object_array, arrays.NOT_PLAIN),
    "a .npy": (lambda p: p.write_bytes(b"\x93NUMPY" + b"\0" * 10), "cannot be read"),
    "missing arrays": (lambda p: np.savez(p, true=np.zeros((8, 8, 2))), "no model, persistence, sample, frame"),
    "wrong shape": (_wrong_shape, "model is a float32 array of shape (4, 4, 2)"),
}


@pytest.mark.parametrize("case", list(BAD_EXAMPLES))
def test_compare_names_a_broken_example_window(tmp_path, capsys, case):
    spoil, expected = BAD_EXAMPLES[case]
    good, bad = make_evaluation(tmp_path / "good"), make_evaluation(tmp_path / "broken")
    spoil(bad / "example_window.npz")
    rc, err = _compare([good, bad, "--out", tmp_path / "cmp"], capsys)
    line = _one_line(err)
    assert rc == 2 and line.startswith(f"burgers-compare: error: {bad}/example_window.npz: "), line
    assert expected in line and "delete it" in line, line
    assert "allow_pickle" not in line, line
    assert not (tmp_path / "cmp").exists()


# ----------------------------------------------------------------------------- burgers-floors


@pytest.mark.parametrize("flags, expected", [
    (["--frames", "0"], "--frames 0: must be in 2..1000"),
    (["--frames", "1"], "--frames 1: must be in 2..1000"),
    (["--frames", "1001"], "--frames 1001: must be in 2..1000"),
    (["--resolution", "1"], "--resolution 1: must be >= 2"),
    (["--start", "5000"], "--start 5000: must be in 0..983"),
    (["--start", "-1"], "--start -1: must be in 0..983"),
    (["--start", "991", "--frames", "10"], "--start 991: must be in 0..990"),
    (["--nu", "-1"], "--nu -1.0: the viscosity must be a finite number > 0"),
    (["--nu", "0"], "--nu 0.0: the viscosity must be a finite number > 0"),
    (["--nu", "nan"], "--nu nan: the viscosity must be a finite number > 0"),
    (["--nu", "inf"], "--nu inf: the viscosity must be a finite number > 0"),
    (["--seed", "-1"], "--seed -1: must be >= 0"),
])
def test_floors_refuses_flags_out_of_range_in_one_line(capsys, flags, expected):
    rc = floors_cmd.main(flags)
    captured = capsys.readouterr()
    line = _one_line(captured.err)
    assert rc == 2 and line.startswith(f"burgers-floors: error: {expected}"), line
    assert captured.out == "", "no report"


def test_floors_goes_through_cli_run_and_still_prints_the_report(capsys):
    assert floors_cmd.main(["--resolution", "8", "--frames", "3"]) == 0
    assert capsys.readouterr().out.startswith("Physics floors: nu=0.125, 8^2 grid, 3 frames")


# ----------------------------------------------------------------------------- a big-endian .npy input


def test_predict_takes_a_big_endian_input(tiny_converted, tmp_path, capsys):
    x = np.random.default_rng(0).uniform(0.5, 1.0, (1, 2, 128, 128, 2)).astype(np.float32)
    np.save(tmp_path / "little.npy", x)
    np.save(tmp_path / "big.npy", x.astype(">f4"))
    outs = {}
    for name in ("little", "big"):
        outs[name] = tmp_path / f"pred_{name}.npy"
        rc = predict_cmd.main(["--checkpoint", str(tiny_converted), "--input", str(tmp_path / f"{name}.npy"),
                               "--out", str(outs[name])])
        assert rc == 0, capsys.readouterr().err
    little, big = np.load(outs["little"]), np.load(outs["big"])
    assert big.dtype == np.float32 and big.dtype.isnative
    np.testing.assert_array_equal(big, little)
