"""Figures of fields, errors and error against horizon that a researcher can read:
error maps on a diverging colour map centred on zero (white = no error) with a
symmetric scale (+-the 99th percentile of |error|; arrows on the colour bar when cells
lie beyond it), shared by every map of a figure so their colours compare; a panel
that would be blank (an error that is exactly zero) left out and said so; axes,
colour bars and titles that name what is shown (checkpoint, sample, nu, time, horizon).

One colour per role in every figure of the project (`ROLE_COLOURS`: zero-shot is
always blue, persistence always grey and dashed, ...); several runs of one role get
shades of its colour and their own markers or line styles (`role_style`), never a new
hue. Every axis is labelled, every figure titled, legends sit beside the axes
(`legend_beside`), not over the data, and each error map's title gives its max |error|
(a map far below the shared scale looks white, not empty).

Every function returns a `matplotlib.figure.Figure` (made without pyplot: no global
state, no backend to select); `save` writes it. Fields are [H, W] on the unit square,
row 0 at y = 0.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

ERROR_CMAP = "RdBu_r"  # diverging: blue below zero, white at zero, red above
FIELD_CMAP = "viridis"
EXTENT = (0.0, 1.0, 0.0, 1.0)  # the unit square (x and y dimensionless, as the PDE's domain)
ERROR_LABEL = "prediction - truth"
CLIP_PERCENTILE = 99.0

# ----------------------------------------------------------------------------- one colour per role

# Okabe-Ito colours (told apart with colour-blindness too); a role keeps its colour in every figure.
ROLE_COLOURS = {
    "truth": "#000000",  # the exact solution
    "zero-shot": "#0072B2",  # the pretrained model as it is (blue; its pretraining curves too)
    "fine-tuned": "#D55E00",  # fine-tuned label-free: the PDE residual, no ground truth (vermillion)
    "supervised": "#009E73",  # fine-tuned on the data loss against the true frames: the ceiling (green)
    "reference residual": "#CC79A7",  # label-free with the reference residual [x0, outputs] (purple)
    "persistence": "#7F7F7F",  # the last frame held: the baseline (grey, dashed)
}
SHADE_MIX = (0.0, 0.45, 0.25, 0.6, 0.12, 0.35, 0.52, 0.18)  # toward white: the role's colour, then lighter
VARIANT_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
SEED_LINESTYLES = ("-", "--", ":", "-.")  # several seeds of one run: one line style each
PERSISTENCE_LINESTYLES = ("--", ":", "-.")
RUN_CONFIG_FILE = "config.json"  # a training run's config, beside its best_adapters/


def role_colour(role: str, shade: int = 0) -> str:
    """`role`'s colour (shade 0), or its `shade`th lighter shade (several runs of one role)."""
    from matplotlib.colors import to_hex, to_rgb

    base = np.asarray(to_rgb(ROLE_COLOURS[role]))
    return to_hex(base + SHADE_MIX[shade % len(SHADE_MIX)] * (1.0 - base))


def role_style(role: str, variant: int = 0, points: int | None = None) -> dict:
    """Keywords of `plot` for the `variant`th series of `role` (0: the role's own colour;
    then lighter shades with other markers). Persistence: grey, no markers, dashed (then
    dotted, dash-dotted). `points`: the curve's length (markers on about 12 of them)."""
    if role == "persistence":
        return {"color": role_colour(role), "linestyle": PERSISTENCE_LINESTYLES[variant % 3], "marker": None}
    return {"color": role_colour(role, variant), "linestyle": "-", "marker": VARIANT_MARKERS[variant % 8], "ms": 3,
            "markevery": max(1, (points or 1) // 12)}


def role_of_training(training: Mapping | None) -> str:
    """The role of a fine-tuning run from its config's training section (a mapping, as
    config.json holds it): the data loss alone is `supervised`, the residual `window`
    the `reference residual`, any other label-free objective `fine-tuned`."""
    training = training or {}
    if not training.get("lambda_pde") and training.get("lambda_data"):
        return "supervised"
    return "reference residual" if training.get("residual") == "window" else "fine-tuned"


def run_training(*folders) -> Mapping | None:
    """The training section of the first of `folders` holding a run's config.json; None
    when none does (or it is not a run's config)."""
    for folder in folders:
        try:
            return json.loads((Path(folder) / RUN_CONFIG_FILE).read_text()).get("training")
        except (OSError, ValueError, AttributeError):
            continue
    return None


def role_of_model(lora: str | None) -> str:
    """The role of an evaluated model: no adapters is `zero-shot`; adapters are the role
    of the run that trained them (its config.json, beside best_adapters/), else `fine-tuned`."""
    if not lora:
        return "zero-shot"
    return role_of_training(run_training(lora, Path(lora).parent))


def row_style(rows: Mapping[str, Mapping], name: str, points: int | None = None) -> dict:
    """The style of row `name` of an experiment whose rows each change some fields of one
    label-free recipe (`rows`: {row: {"training.<field>": value, ...}}): its role's colour
    (`role_of_training`), the rows of one role in shades of it, in `rows`' order."""
    def role(row: str) -> str:
        return role_of_training({"lambda_pde": 1.0, **{k.split(".", 1)[1]: v for k, v in rows[row].items()
                                                       if k.startswith("training.")}})

    mine = role(name)
    return role_style(mine, [r for r in rows if role(r) == mine].index(name), points)


def variants(roles: Sequence[str]) -> list[int]:
    """The variant of each series among those of its role (0, 1, ... per role, in order)."""
    seen: dict[str, int] = {}
    out = []
    for role in roles:
        out.append(seen.get(role, 0))
        seen[role] = out[-1] + 1
    return out


def legend_beside(ax, **kwargs):
    """The legend to the right of `ax`, outside its frame (constrained layout makes room):
    never over the curves."""
    kwargs.setdefault("fontsize", 8)
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kwargs)


def new_figure(**kwargs):
    from matplotlib.figure import Figure

    return Figure(layout="constrained", **kwargs)


def save(fig, path: Path, dpi: int = 90) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def symmetric_norm(*errors: np.ndarray, percentile: float = CLIP_PERCENTILE):
    """One scale for all `errors`, symmetric about zero (zero is the colour map's centre):
    +-the `percentile` of |error| over all of them, so that a few boundary cells do not
    wash out the rest (the colour bar's arrows mark the clipped cells)."""
    from matplotlib.colors import Normalize

    values = np.concatenate([np.abs(np.asarray(e, np.float64)).ravel() for e in errors]) if errors else np.zeros(0)
    values = values[np.isfinite(values)]
    m = float(np.percentile(values, percentile)) if values.size else 0.0
    m = m if m > 0 else float(values.max(initial=0.0))  # mostly zero: the largest error instead
    return Normalize(vmin=-m if m > 0 else -1.0, vmax=m if m > 0 else 1.0)  # all zero: any scale shows white


def error_colorbar(fig, im, axes, errors, label: str) -> None:
    """The one colour bar of a figure's error maps, saying whether it clips."""
    clipped = any(np.nanmax(np.abs(e)) > im.norm.vmax for e in errors)
    fig.colorbar(im, ax=axes, shrink=0.8, extend="both" if clipped else "neither",
                 label=label + (f"\n(clipped at the {CLIP_PERCENTILE:g}th percentile of |error|)" if clipped else ""))


def is_blank(error: np.ndarray) -> bool:
    """An error map with nothing to show (exactly zero everywhere, e.g. float32 data
    rounded to a float32 output)."""
    return not np.any(error)


def field_axes(ax, title: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("x")
    ax.set_ylabel("y")


def show_field(fig, ax, img, title: str, label: str, norm=None):
    im = ax.imshow(img, origin="lower", extent=EXTENT, cmap=FIELD_CMAP, norm=norm)
    field_axes(ax, title)
    fig.colorbar(im, ax=ax, shrink=0.8, label=label)
    return im


def max_error_title(title: str, err: np.ndarray) -> str:
    """`title` and the map's max |error|: a map far below the shared scale reads white,
    and the number says how small it is."""
    finite = np.abs(np.asarray(err, np.float64))
    finite = finite[np.isfinite(finite)]
    return f"{title}\nmax |err| = {float(finite.max(initial=0.0)):.2g}"


def show_error(ax, err, title: str, norm):
    im = ax.imshow(err, origin="lower", extent=EXTENT, cmap=ERROR_CMAP, norm=norm)
    field_axes(ax, max_error_title(title, err))
    return im


def integer_ticks(ax) -> None:
    """Ticks at whole numbers on the x axis (horizons and steps: no "2.5 steps")."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def horizon_label(window_dt: float | None) -> str:
    return "rollout horizon (model steps" + (f" of dt = {window_dt:.4g})" if window_dt else ")")


def describe(meta: Mapping) -> str:
    """`sample 3, nu = 0.125, t = 0.016 (frame 16)` from an example window's metadata."""
    parts = [f"sample {int(meta['sample'])}"] if "sample" in meta else []
    if meta.get("nu") is not None:
        parts.append(f"ν = {float(meta['nu']):.4g}")
    if meta.get("t") is not None:
        parts.append(f"t = {float(meta['t']):.4g} (frame {int(meta['frame'])})")
    return ", ".join(parts)


def short_path(path: str | None) -> str:
    """A folder and its parent (`demo_run/pretrained`): enough to tell runs apart in a title."""
    return "/".join(Path(path).parts[-2:]) if path else "?"


def model_name(checkpoint: str | None, lora: str | None) -> str:
    return short_path(checkpoint) + (f" + {short_path(lora)}" if lora else " (zero-shot)")


# ----------------------------------------------------------------------------- one evaluation


def window_figure(example: Mapping[str, np.ndarray], meta: Mapping, floor_dtype: str = "the output dtype"):
    """Fields and errors of one window's one-step prediction: per component (rows u, v)
    the truth, the model's error, persistence's and the floor's (the truth rounded to the
    model's output dtype); the floor column is left out when it is exactly zero."""
    true = example["true"]
    errors = {"model": example["model"] - true, "persistence": example["persistence"] - true}
    floor = example["floor"] - true
    note = ""
    if is_blank(floor):
        note = f"\nfloor (the truth rounded to {floor_dtype}) left out: its error is exactly 0"
    else:
        errors["floor"] = floor
    norm = symmetric_norm(*errors.values())
    fig = new_figure(figsize=(3.6 * (1 + len(errors)), 6.8))
    axes = fig.subplots(2, 1 + len(errors), squeeze=False)
    titles = {"model": "model", "persistence": "persistence (last frame held)",
              "floor": f"floor (truth in {floor_dtype})"}
    for row, name in enumerate("uv"):
        show_field(fig, axes[row, 0], true[..., row], f"true {name}", name)
        for col, (method, err) in enumerate(errors.items(), start=1):
            im = show_error(axes[row, col], err[..., row], f"{titles[method]}: error in {name}", norm)
    error_colorbar(fig, im, axes[:, 1:].ravel().tolist(), errors.values(), f"{ERROR_LABEL}, one scale")
    fig.suptitle(f"{model_name(meta.get('checkpoint'), meta.get('lora'))}\n{describe(meta)}, one step ahead "
                 f"(horizon 1, teacher forced){note}", fontsize=10)
    return fig


def rollout_figure(rollout: Mapping, meta: Mapping):
    """VRMSE and nRMSE against the rollout horizon, the model (in its role's colour:
    zero-shot or fine-tuned) and persistence; one legend, beside the right panel."""
    fig = new_figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    roles = {"model": role_of_model(meta.get("lora")), "persistence": "persistence"}
    points = len(rollout["horizons"])
    for ax, key, name in zip(axes, ("vrmse", "nrmse"), ("VRMSE", "nRMSE")):
        for method, role in roles.items():
            ax.semilogy(rollout["horizons"], rollout[method][key], label=method, **role_style(role, points=points))
        ax.set_xlabel(horizon_label(meta.get("window_dt")))
        ax.set_ylabel(f"{name} (lower is better)")
        ax.set_title(f"{name} against horizon", fontsize=9)
        integer_ticks(ax)
    legend_beside(axes[-1])
    fig.suptitle(f"{model_name(meta.get('checkpoint'), meta.get('lora'))}: rollout error", fontsize=10)
    return fig


# ----------------------------------------------------------------------------- several evaluations


def comparison_figure(curves: Sequence[Mapping], persistence: Sequence[Mapping], maps: Mapping | None,
                      window_dt: float | None):
    """Several evaluations: VRMSE against horizon with persistence (when they have a
    rollout: `curves` and `persistence` are [{"label", "horizons", "vrmse"}], a curve's
    "role" (ROLE_COLOURS; default fine-tuned) picks its colour), and the
    same window's one-step error maps on one scale (`maps`: {"errors": {label: [H, W, 2]},
    "meta": ...}, or None)."""
    columns = len(maps["errors"]) if maps else 1
    heights = ([1.0] if curves else []) + ([2.0] if maps else [])
    fig = new_figure(figsize=(max(8.0, 3.4 * columns), 3.6 * sum(heights) + 0.4))
    parts = list(fig.subfigures(len(heights), 1, height_ratios=heights, squeeze=False).ravel())
    if curves:
        sub = parts.pop(0)
        ax = sub.subplots()
        roles = [c.get("role") or "fine-tuned" for c in curves]
        for c, role, variant in zip(curves, roles, variants(roles)):
            ax.semilogy(c["horizons"], c["vrmse"], label=c["label"], **role_style(role, variant, len(c["horizons"])))
        for variant, p in enumerate(persistence):
            ax.semilogy(p["horizons"], p["vrmse"], label=p["label"], **role_style("persistence", variant))
        ax.set_xlabel(horizon_label(window_dt))
        ax.set_ylabel("VRMSE (lower is better)")
        ax.set_title("error against horizon (the model fed its own predictions)", fontsize=10)
        integer_ticks(ax)
        legend_beside(ax)
    if maps:
        sub = parts.pop(0)
        norm = symmetric_norm(*maps["errors"].values())
        axes = sub.subplots(2, columns, squeeze=False)
        for col, (label, err) in enumerate(maps["errors"].items()):
            for row, name in enumerate("uv"):
                im = show_error(axes[row, col], err[..., row], f"{label}: error in {name}", norm)
        error_colorbar(sub, im, axes.ravel().tolist(), maps["errors"].values(), f"{ERROR_LABEL}, one scale for all")
        sub.suptitle(f"the same window: {describe(maps['meta'])}, one step ahead (horizon 1)", fontsize=10)
    return fig
