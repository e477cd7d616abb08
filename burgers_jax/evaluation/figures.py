"""Figures of fields, errors and error against horizon that a researcher can read:
error maps on a diverging colour map centred on zero (white = no error) with a
symmetric scale (+-the 99th percentile of |error|; arrows on the colour bar when cells
lie beyond it), shared by every map of a figure so their colours compare; a panel
that would be blank (an error that is exactly zero) left out and said so; axes,
colour bars and titles that name what is shown (checkpoint, sample, nu, time, horizon).

Every function returns a `matplotlib.figure.Figure` (made without pyplot: no global
state, no backend to select); `save` writes it. Fields are [H, W] on the unit square,
row 0 at y = 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

ERROR_CMAP = "RdBu_r"  # diverging: blue below zero, white at zero, red above
FIELD_CMAP = "viridis"
EXTENT = (0.0, 1.0, 0.0, 1.0)  # the unit square (x and y dimensionless, as the PDE's domain)
ERROR_LABEL = "prediction - truth"
CLIP_PERCENTILE = 99.0


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


def show_error(ax, err, title: str, norm):
    im = ax.imshow(err, origin="lower", extent=EXTENT, cmap=ERROR_CMAP, norm=norm)
    field_axes(ax, title)
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
    """VRMSE and nRMSE against the rollout horizon, the model and persistence."""
    fig = new_figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, key, name in zip(axes, ("vrmse", "nrmse"), ("VRMSE", "nRMSE")):
        for method, style in (("model", "o-"), ("persistence", "s--")):
            ax.semilogy(rollout["horizons"], rollout[method][key], style, ms=3, label=method)
        ax.set_xlabel(horizon_label(meta.get("window_dt")))
        ax.set_ylabel(f"{name} (lower is better)")
        ax.set_title(f"{name} against horizon", fontsize=9)
        integer_ticks(ax)
        ax.legend()
    fig.suptitle(f"{model_name(meta.get('checkpoint'), meta.get('lora'))}: rollout error", fontsize=10)
    return fig


# ----------------------------------------------------------------------------- several evaluations


def comparison_figure(curves: Sequence[Mapping], persistence: Sequence[Mapping], maps: Mapping | None,
                      window_dt: float | None):
    """Several evaluations: VRMSE against horizon with persistence (when they have a
    rollout: `curves` and `persistence` are [{"label", "horizons", "vrmse"}]), and the
    same window's one-step error maps on one scale (`maps`: {"errors": {label: [H, W, 2]},
    "meta": ...}, or None)."""
    columns = len(maps["errors"]) if maps else 1
    heights = ([1.0] if curves else []) + ([2.0] if maps else [])
    fig = new_figure(figsize=(max(8.0, 3.4 * columns), 3.6 * sum(heights) + 0.4))
    parts = list(fig.subfigures(len(heights), 1, height_ratios=heights, squeeze=False).ravel())
    if curves:
        sub = parts.pop(0)
        ax = sub.subplots()
        for c in curves:
            ax.semilogy(c["horizons"], c["vrmse"], "o-", ms=3, label=c["label"])
        for style, p in zip(("k--", "k:", "k-."), persistence):
            ax.semilogy(p["horizons"], p["vrmse"], style, label=p["label"])
        ax.set_xlabel(horizon_label(window_dt))
        ax.set_ylabel("VRMSE (lower is better)")
        ax.set_title("error against horizon (the model fed its own predictions)", fontsize=10)
        integer_ticks(ax)
        ax.legend(fontsize=8)
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
