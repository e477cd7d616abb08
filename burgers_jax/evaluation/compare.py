"""Several evaluations side by side (the library behind `burgers-compare`).

Reads evaluation folders (`burgers-evaluate --out`: metrics.json, and
example_window.npz where the evaluation wrote one) and writes into one folder:

- comparison.md: one table, a row per evaluation (its adapters, or zero-shot) and a
  persistence row per data set (evaluations of the same data share one), with the
  one-step metrics and, with rollouts, VRMSE at the first, middle and last horizon and
  h*; then what each rollout says about persistence, and where each evaluation came from;
- comparison.png: VRMSE against horizon for every evaluation with persistence, and,
  when every evaluation's first window is the same one, its one-step error maps on one
  colour scale, symmetric about zero.

Evaluations are compared at one time step: different frame strides (or time steps), different
temporal lengths T, or different rollout horizons, are refused with a one-line error, as
are a folder that is not an evaluation, a folder given twice, an empty label, and a
metrics.json or example_window.npz that is not what burgers-evaluate writes (hand-edited,
truncated).
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from burgers_jax.errors import UserError
from burgers_jax.evaluation import figures, report
from burgers_jax.io import arrays, outputs

OUT_KIND = "comparison"
EVALUATION_KIND = "evaluation"  # evaluate's output kind (evaluation/evaluate.py: OUT_KIND)
METRICS_FILE = "metrics.json"
EXAMPLE_FILE = "example_window.npz"  # evaluation/evaluate.py: EXAMPLE_FILE
TABLE_FILE, FIGURE_FILE = "comparison.md", "comparison.png"


class CompareError(UserError):
    pass


@dataclasses.dataclass
class Evaluation:
    label: str
    path: Path
    metrics: dict
    example: dict | None  # example_window.npz's arrays and metadata, if the evaluation wrote it

    @property
    def config(self) -> dict:
        return self.metrics.get("config") or {}

    @property
    def rollout(self) -> dict | None:
        return self.metrics.get("rollout")

    @property
    def data_key(self) -> str:
        """Equal for evaluations of the same windows of the same data (then persistence,
        which does not depend on the model, is the same too)."""
        c = self.config
        return json.dumps([c.get("data"), c.get("nu_range"), c.get("analytic_seed"), c.get("frame_stride"),
                           self.metrics.get("windows")])


def load(path: str | Path, label: str) -> Evaluation:
    """One evaluation folder; a CompareError naming it when it is not one."""
    path = Path(path)
    if not path.exists():
        raise CompareError(f"{path}: no such folder")
    if not path.is_dir():
        raise CompareError(f"{path}: is a file, not an evaluation folder (give a burgers-evaluate --out folder)")
    try:
        metrics = json.loads((path / METRICS_FILE).read_text())
    except FileNotFoundError:
        raise CompareError(f"{path}: not an evaluation folder (no {METRICS_FILE}; give a burgers-evaluate --out "
                           "folder)") from None
    except (OSError, ValueError) as e:
        raise CompareError(f"{path}/{METRICS_FILE}: cannot be read ({e})") from None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("one_step"), dict) \
            or "model" not in metrics["one_step"]:
        raise CompareError(f"{path}/{METRICS_FILE}: not the metrics of an evaluation (no one_step.model)")
    check_metrics(path / METRICS_FILE, metrics)
    example = load_example(path / EXAMPLE_FILE) if (path / EXAMPLE_FILE).is_file() else None
    return Evaluation(label, path, metrics, example)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numbers(v) -> bool:
    return isinstance(v, list) and all(x is None or _number(x) for x in v)


def check_metrics(file: Path, metrics: dict) -> None:
    """The fields of metrics.json that the comparison reads, with the types evaluate writes:
    a hand-edited file is a CompareError naming the file and the field, not a traceback."""
    def wrong(field: str, value, want: str) -> None:
        shown = json.dumps(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise CompareError(f"{file}: {field} is {shown}, not {want} (edited by hand? evaluate again)")

    one_step = metrics["one_step"]
    for method in ("model", "persistence"):
        if not isinstance(one_step.get(method), dict):
            wrong(f"one_step.{method}", one_step.get(method), "an object of metrics")
        for key, _ in report.TABLE_KEYS:
            value = one_step[method].get(key)
            if value is not None and not _number(value):
                wrong(f"one_step.{method}.{key}", value, "a number")
    if not isinstance(metrics.get("windows", []), list):
        wrong("windows", metrics["windows"], "a list")
    config = metrics.get("config")
    if config is not None and not isinstance(config, dict):
        wrong("config", config, "an object")
    for key, ok, want in (("frame_stride", lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
                          ("temporal_length", lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
                          ("window_dt", _number, "a number"),
                          ("lora", lambda v: isinstance(v, str), "a path"),
                          ("nu_range", lambda v: _numbers(v) and len(v) == 2, "two numbers")):
        value = (config or {}).get(key)
        if value is not None and not ok(value):
            wrong(f"config.{key}", value, want)
    rollout = metrics.get("rollout")
    if rollout is None:
        return
    if not isinstance(rollout, dict):
        wrong("rollout", rollout, "an object")
    horizons = rollout.get("horizons")
    if not _numbers(horizons) or None in horizons:
        wrong("rollout.horizons", horizons, "a list of horizons")
    for method in ("model", "persistence"):
        vrmse = rollout[method].get("vrmse") if isinstance(rollout.get(method), dict) else None
        if not _numbers(vrmse) or len(vrmse) != len(horizons):
            wrong(f"rollout.{method}.vrmse", vrmse, f"a list of {len(horizons)} numbers (one per horizon)")
    h_star = rollout.get("crossover_horizon")
    if h_star is not None and not (isinstance(h_star, int) and not isinstance(h_star, bool)):
        wrong("rollout.crossover_horizon", h_star, "an integer")


EXAMPLE_ARRAYS = ("true", "model", "persistence")  # [H, W, 2] each (evaluation/evaluate.py: example_arrays)
EXAMPLE_SCALARS = ("sample", "frame")


def load_example(file: Path) -> dict:
    """example_window.npz's arrays and metadata; a CompareError naming the file when it is
    not one (truncated, empty, holding pickled objects, or missing what is drawn)."""
    hint = "evaluate again, or delete it to compare without the error maps"
    try:
        npz = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise CompareError(f"{file}: cannot be read ({_reason(e)}); {hint}") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise CompareError(f"{file}: not an .npz archive; {hint}")
    try:
        with npz:
            example = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise CompareError(f"{file}: cannot be read ({_reason(e)}); {hint}") from None
    missing = [k for k in (*EXAMPLE_ARRAYS, *EXAMPLE_SCALARS) if k not in example]
    if missing:
        raise CompareError(f"{file}: not an evaluation's example window (no {', '.join(missing)}); {hint}")
    shape = example["true"].shape
    for k in EXAMPLE_ARRAYS:
        a = example[k]
        if not np.issubdtype(a.dtype, np.floating) or a.ndim != 3 or a.shape != shape:
            raise CompareError(f"{file}: {k} is a {a.dtype} array of shape {a.shape}, not float [H, W, 2] like "
                               f"true {shape}; {hint}")
    for k in EXAMPLE_SCALARS:
        if example[k].shape != () or not np.issubdtype(example[k].dtype, np.integer):
            raise CompareError(f"{file}: {k} is not one integer; {hint}")
    return example


def _reason(e: BaseException) -> str:
    text = str(e).strip()
    if any(w in text.lower() for w in ("pickle", "object arrays")):
        return arrays.NOT_PLAIN
    return f"{type(e).__name__}: {text.splitlines()[0][:160]}" if text else type(e).__name__


def default_labels(paths: Sequence[Path]) -> list[str]:
    """Folder names, or the paths as given where two folders share a name."""
    names = [Path(p).name for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def check_comparable(evals: Sequence[Evaluation]) -> None:
    """One time step and one set of horizons, or a one-line error naming the folders."""
    def differ(what: str, values: list, hint: str) -> None:
        if len(set(map(json.dumps, values))) > 1:
            listed = ", ".join(f"{e.path}: {v}" for e, v in zip(evals, values))
            raise CompareError(f"the evaluations' {what} differ ({listed}); {hint}")

    differ("frame strides", [e.config.get("frame_stride") for e in evals],
           "compare evaluations made with the same --frame-stride")
    lengths = [e.config.get("temporal_length") for e in evals]
    if None not in lengths:  # recorded by every evaluation of this version
        differ("temporal lengths T", lengths, "the model saw different numbers of input frames, so their metrics "
               "are not comparable; compare evaluations made with the same --temporal-length")
    dts = [e.config.get("window_dt") for e in evals]
    if None not in dts and not np.allclose(dts, dts[0], rtol=1e-9, atol=0):
        differ("time steps", dts, "their horizons are steps of different lengths")
    differ("rollout horizons", [_horizons(e) for e in evals],
           "evaluate them with the same --rollout (or compare one-step metrics of evaluations without one)")


def _horizons(e: Evaluation) -> str:
    h = e.rollout["horizons"] if e.rollout else []
    return f"1..{len(h)}" if h else "none"


def same_window(evals: Sequence[Evaluation]) -> bool:
    """Whether every evaluation's example window is the same one (same sample, frame and truth)."""
    if any(e.example is None for e in evals):
        return False
    first = evals[0].example
    return all(int(e.example["sample"]) == int(first["sample"]) and int(e.example["frame"]) == int(first["frame"])
               and np.array_equal(e.example["true"], first["true"]) for e in evals)


def persistence_groups(evals: Sequence[Evaluation]) -> list[tuple[str, Evaluation]]:
    """One (label, representative) per data set: "persistence", or "persistence (a, b)"
    when the evaluations are of different data."""
    groups: dict[str, list[Evaluation]] = {}
    for e in evals:
        groups.setdefault(e.data_key, []).append(e)
    if len(groups) == 1:
        return [("persistence", evals[0])]
    return [(f"persistence ({', '.join(m.label for m in members)})", members[0]) for members in groups.values()]


def shown_horizons(n: int) -> list[int]:
    return sorted({1, (n + 1) // 2, n}) if n else []


def _adapters(e: Evaluation) -> str:
    """The table's short name of the adapters (the full path is listed below the table)."""
    lora = e.config.get("lora")
    return figures.short_path(lora) if lora else "none (zero-shot)"


def markdown(evals: Sequence[Evaluation]) -> str:
    n = len(evals[0].rollout["horizons"]) if evals[0].rollout else 0
    hs = shown_horizons(n)
    header = ["evaluation", "adapters", *(name for _, name in report.TABLE_KEYS),
              *(f"rollout VRMSE h={h}" for h in hs), *(["h*"] if n else [])]

    def row(label, adapters, e: Evaluation, method: str):
        cells = [label, adapters, *(report.fmt(e.metrics["one_step"][method].get(k)) for k, _ in report.TABLE_KEYS)]
        if n:
            cells += [report.fmt(e.rollout[method]["vrmse"][h - 1]) for h in hs]
            h_star = e.rollout.get("crossover_horizon")
            cells.append("" if method == "persistence" else "none" if h_star is None else h_star)
        return cells

    rows = [row(e.label, _adapters(e), e, "model") for e in evals]
    rows += [row(label, "(copies the last frame)", e, "persistence") for label, e in persistence_groups(evals)]
    lines = [f"# Comparison of {len(evals)} evaluations", "",
             "One step (teacher forced)" + (f", and rollouts of {n} steps (the model fed its own predictions)"
                                            if n else "") + "; lower is better everywhere.", "",
             *report.table(header, rows), ""]
    lines += ["What the numbers say:", "", *(f"- {line}." for line in conclusions(evals)), "", "Evaluations:", ""]
    for e in evals:
        c = e.config
        data = c.get("data")
        if data == "analytic" and c.get("nu_range"):
            data = f"analytic, ν in [{c['nu_range'][0]}, {c['nu_range'][1]}]"
        adapters = f"adapters `{c['lora']}`" if c.get("lora") else "no adapters (zero-shot)"
        lines.append(f"- {e.label}: `{e.path}` — checkpoint `{c.get('checkpoint')}`, {adapters}, data {data}, "
                     f"{report.windows_count(e.metrics.get('windows', []))}, "
                     f"frame stride {c.get('frame_stride')}, precision {c.get('precision')}")
    return "\n".join(lines) + "\n"


def conclusions(evals: Sequence[Evaluation]) -> list[str]:
    """The comparison in sentences, each written from the numbers of the table: every
    evaluation of the first one's data against the first (e.g. fine-tuned against
    zero-shot), then every evaluation against persistence (copying the last frame)."""
    def vrmse(e: Evaluation, method: str):
        return e.metrics["one_step"][method].get("vrmse", float("nan")), (
            e.rollout[method]["vrmse"] if e.rollout else None)

    first = evals[0]
    lines = []
    for e in evals[1:]:
        if e.data_key == first.data_key:
            (one, rollout), (other_one, other_rollout) = vrmse(e, "model"), vrmse(first, "model")
            lines.append(f"{e.label} against {first.label}: {report.versus(one, other_one, rollout, other_rollout)}")
    for e in evals:
        one, _ = vrmse(e, "model")
        held, _ = vrmse(e, "persistence")
        line = f"{e.label} against persistence (copying the last frame): {report.versus(one, held)}"
        if e.rollout:
            line += f"; in the rollout the model {report.persistence_summary(e.rollout)}"
        lines.append(line)
    return lines


def figure(evals: Sequence[Evaluation]):
    """comparison.png's figure, or None when the evaluations hold nothing to draw (no
    rollout and no common example window)."""
    curves, persistence = [], []
    if evals[0].rollout:
        curves = [{"label": e.label, "horizons": e.rollout["horizons"], "vrmse": e.rollout["model"]["vrmse"],
                   "role": figures.role_of_model(e.config.get("lora"))} for e in evals]
        persistence = [{"label": label, "horizons": e.rollout["horizons"], "vrmse": e.rollout["persistence"]["vrmse"]}
                       for label, e in persistence_groups(evals)]
    maps = None
    if same_window(evals):
        true = evals[0].example["true"]
        errors = {e.label: e.example["model"] - true for e in evals}
        baseline = "persistence" if "persistence" not in errors else "persistence (baseline)"  # a label may be taken
        errors[baseline] = evals[0].example["persistence"] - true
        maps = {"errors": errors, "meta": evals[0].example}
    if not curves and maps is None:
        return None
    return figures.comparison_figure(curves, persistence, maps, evals[0].config.get("window_dt"))


def compare(paths: Sequence[str | Path], out: str | Path, labels: Sequence[str] | None = None,
            overwrite: bool = False) -> tuple[Path, list[str], list[str]]:
    """Reads the evaluations and writes the comparison (module docstring).
    -> (the folder written, the files in it, notes for the user)."""
    if len(paths) < 1:
        raise CompareError("give at least one evaluation folder")
    seen: dict[Path, str | Path] = {}
    for p in paths:
        if Path(p).resolve() in seen:
            same = seen[Path(p).resolve()]
            twice = f"{p}" if str(p) == str(same) else f"{same} (also as {p})"
            raise CompareError(f"the evaluation folder {twice} is given twice; give each folder once")
        seen[Path(p).resolve()] = p
    labels = list(labels) if labels else default_labels([Path(p) for p in paths])
    if len(labels) != len(paths):
        raise CompareError(f"--labels: {len(labels)} labels for {len(paths)} evaluation folders")
    empty = [i + 1 for i, label in enumerate(labels) if not str(label).strip()]
    if empty:
        raise CompareError(f"--labels: label {', '.join(map(str, empty))} of {len(labels)} is empty; give each "
                           f"evaluation a name (got {','.join(labels)!r})")
    if len(set(labels)) != len(labels):
        raise CompareError(f"--labels: each evaluation needs its own label (got {', '.join(labels)})")
    evals = [load(p, label) for p, label in zip(paths, labels)]
    check_comparable(evals)
    outputs.check_dir(out, OUT_KIND, overwrite)
    notes = []
    if not same_window(evals):
        missing = [str(e.path) for e in evals if e.example is None]
        notes.append("error maps left out: " + (f"no {EXAMPLE_FILE} in {', '.join(missing)} (evaluated by an older "
                                                "version; evaluate again to get it)" if missing else
                                                "the evaluations' first windows differ (different data)"))
    fig = figure(evals)
    if fig is None:
        notes.append(f"{FIGURE_FILE} not written: no rollouts and no common example window to draw")
    table = markdown(evals)

    def fill(tmp: Path) -> None:
        (tmp / TABLE_FILE).write_text(table)
        if fig is not None:
            figures.save(fig, tmp / FIGURE_FILE)
        (tmp / outputs.METADATA_FILE).write_text(json.dumps(
            {**outputs.format_marker(OUT_KIND), "evaluations": {e.label: str(e.path) for e in evals}}) + "\n")

    final = outputs.write_dir(out, fill, OUT_KIND, overwrite)
    return final, [TABLE_FILE] + ([FIGURE_FILE] if fig is not None else []), notes
