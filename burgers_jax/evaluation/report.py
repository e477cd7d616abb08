"""The words and tables of an evaluation report: Markdown tables that render, the
one-step metrics' column names, and what a rollout says about persistence. No jax here,
so `burgers-compare` reads evaluations without starting it."""

from __future__ import annotations

from typing import Sequence

import numpy as np

# (metrics.json key, column name) of the one-step table. No "|" in a name: a pipe inside
# a cell ends the cell, and a header with more cells than the delimiter row is no table.
TABLE_KEYS = (("vrmse", "VRMSE"), ("nrmse", "nRMSE"), ("rmse", "RMSE"), ("brmse", "bRMSE"), ("pde_loss", "PDE loss"),
              ("precond_loss", "precond. loss"), ("constraint_error", "abs(u+v-1.5) mean"),
              ("dct_frmse_low", "fRMSE low (DCT)"), ("dct_frmse_mid", "fRMSE mid (DCT)"),
              ("dct_frmse_high", "fRMSE high (DCT)"))


def cell(value) -> str:
    """One table cell: a pipe escaped (GitHub and markdown-it render `\\|` as `|`), a
    newline (which would end the row) as a space."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence, rows: Sequence[Sequence]) -> list[str]:
    """A Markdown (GFM) table as lines; every row must have the header's cell count."""
    for row in rows:
        if len(row) != len(header):  # a short row renders with empty cells: a silent hole in a report
            raise ValueError(f"table row {list(row)!r}: {len(row)} cells, the header has {len(header)}")
    line = lambda cells: "| " + " | ".join(cell(c) for c in cells) + " |"  # noqa: E731
    return [line(header), "|" + "---|" * len(header), *(line(r) for r in rows)]


def fmt(value, spec: str = ".3e") -> str:
    return "" if value is None else format(value, spec)


def persistence_summary(rollout: dict) -> str:
    """What the rollout says about the model against persistence, in words that mean what
    they say ("never beats persistence", not "up to horizon 0")."""
    model = np.asarray(rollout["model"]["vrmse"], np.float64)
    held = np.asarray(rollout["persistence"]["vrmse"], np.float64)
    wins = model < held  # NaN: not a win
    n = len(wins)
    h_star = rollout.get("crossover_horizon")
    if wins.all():
        return f"beats persistence at every horizon (1 to {n})"
    if not wins.any():
        return f"never beats persistence (horizons 1 to {n})"
    until = int(np.argmin(wins))  # the last horizon of the first run of wins (0: lost at horizon 1)
    head = f"beats persistence up to horizon {until}" if until else "does not beat persistence at horizon 1"
    if h_star is not None:
        return f"{head}, and at every horizon from h* = {h_star} on (to {n})"
    return f"{head}; not at the last horizon ({n}), so no h*"


def _horizons(hs) -> str:
    """[1, 2, 3, 7] -> "1-3, 7"."""
    runs, start = [], None
    for i, h in enumerate(hs):
        if start is None:
            start = h
        if i + 1 == len(hs) or hs[i + 1] != h + 1:
            runs.append(f"{start}" if start == h else f"{start}-{h}")
            start = None
    return ", ".join(runs)


def versus(one: float, other_one: float, rollout=None, other_rollout=None) -> str:
    """How a model's VRMSE compares with another's (lower is better), in words taken from
    the numbers: one step ahead, and at each rollout horizon (a NaN never wins)."""
    a, b = float(one), float(other_one)
    if not (np.isfinite(a) and np.isfinite(b)):
        word = "not comparable, a value is not finite"
    else:
        word = "better" if a < b else "worse" if a > b else "equal"
    text = f"one step ahead {word} (VRMSE {a:.4f} vs {b:.4f})"
    if rollout is None or other_rollout is None:
        return text
    wins = np.asarray(rollout, np.float64) < np.asarray(other_rollout, np.float64)
    n = len(wins)
    if wins.all():
        return f"{text}; better at every rollout horizon (1 to {n})"
    if not wins.any():
        return f"{text}; better at no rollout horizon (1 to {n})"
    lost = [h + 1 for h in np.flatnonzero(~wins)]
    return f"{text}; better at {int(wins.sum())} of {n} rollout horizons (not at {_horizons(lost)})"


# Fewer windows than this behind a number: a difference between two models may be one
# window's luck (each window is one start of one trajectory).
FEW_WINDOWS = 8


def windows_count(windows) -> str:
    """'N windows from M samples' of an evaluation's (sample, start) pairs, in plain English."""
    n, m = len(windows), len({int(w[0]) for w in windows})
    return f"{n} window{'s' if n != 1 else ''} from {m} sample{'s' if m != 1 else ''}"


def few_windows_warning(windows) -> str | None:
    """A one-line caveat when too few windows stand behind an evaluation's numbers."""
    if len(windows) >= FEW_WINDOWS:
        return None
    return (f"only {windows_count(windows)} stand behind these numbers: too few to compare models by "
            f"(fewer than {FEW_WINDOWS}); evaluate more samples or --windows-per-sample")


def metrics_markdown(result: dict, title: str) -> str:
    """An evaluation's metrics.md: the one-step table and, with a rollout, VRMSE per horizon."""
    rows = [[m] + [fmt(result["one_step"][m].get(k)) for k, _ in TABLE_KEYS] for m in ("model", "persistence", "truth")]
    caveat = few_windows_warning(result["windows"])
    lines = [f"# {title}", "", f"{windows_count(result['windows'])}, one step (teacher forced):", "",
             *table(["method", *(name for _, name in TABLE_KEYS)], rows)]
    if caveat:
        lines += ["", f"Note: {caveat}."]
    if "rollout" in result:
        r = result["rollout"]
        lines += ["", f"Rollout VRMSE (the model fed its own predictions): the model {persistence_summary(r)}.", "",
                  *table(["horizon", "model", "persistence"],
                         [[h, fmt(a), fmt(b)] for h, a, b in zip(r["horizons"], r["model"]["vrmse"],
                                                                 r["persistence"]["vrmse"])])]
    return "\n".join(lines) + "\n"
