"""Progress for long work: a tqdm bar on a terminal, plain progress lines in logs.

A tqdm bar redraws itself with carriage returns, which a SLURM log or a CI transcript
turns into one unreadable line (or nothing, with `disable=None`). When stderr is not a
terminal, `LineProgress` prints a line instead every `every` items:

    train: 120/5000 steps (2%), 3.41 steps/s, 23:50 left, loss(precond)=1.2e-02 lr=9.9e-05

The rate (and so the time left) leaves out the first item: the first step of a jitted
loop compiles, and can take longer than a hundred later ones.
"""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def _plural(unit: str) -> str:
    return unit + ("es" if unit.endswith(("s", "sh", "ch", "x")) else "s")


def _fmt_seconds(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class LineProgress:
    """The tqdm calls the loops use (`update`, `set_postfix`, `write`, `close`), printed as
    lines on stdout every `every` items and at the end."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", initial: int = 0, every: int | None = None,
                 clock=time.monotonic):
        self.total, self.desc, self.unit = total, desc, unit
        self.n = initial
        self.every = max(1, every or (max(1, (total or 0) // 20) if total else 100))
        self.postfix: dict = {}
        self.clock = clock
        self.mark: tuple[int, float] | None = None  # (n, time) at the end of the first (compiling) update

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.mark is None:
            self.mark = (self.n, self.clock())
        if self.n % self.every == 0 or self.n == self.total:
            self._print()

    def rate(self) -> float | None:
        """Items per second since the first update (None until a later one)."""
        if self.mark is None or self.n <= self.mark[0]:
            return None
        elapsed = self.clock() - self.mark[1]
        return (self.n - self.mark[0]) / elapsed if elapsed > 0 else None

    def set_postfix(self, **kwargs) -> None:
        self.postfix = kwargs

    def write(self, message: str) -> None:
        print(message, flush=True)

    def _print(self) -> None:
        rate = self.rate()
        units = _plural(self.unit)
        parts = [f"{self.desc}: {self.n}" + (f"/{self.total} {units} ({100 * self.n / self.total:.0f}%)"
                                             if self.total else f" {units}")]
        if rate is not None:
            parts.append(f"{rate:.2f} {units}/s")
            if self.total:
                parts.append(f"{_fmt_seconds((self.total - self.n) / rate)} left")
        line = ", ".join(parts)
        if self.postfix:
            line += ", " + " ".join(f"{k}={v}" for k, v in self.postfix.items())
        print(line, flush=True)

    def close(self) -> None:
        pass


class _Silent(LineProgress):
    def _print(self) -> None:
        pass


def make_progress(total: int | None, desc: str, unit: str = "it", initial: int = 0, every: int | None = None,
                  enabled: bool = True):
    """A tqdm bar when stderr is a terminal, else a `LineProgress`; nothing when not enabled."""
    if not enabled:
        return _Silent(total, desc, unit, initial)
    if sys.stderr.isatty():
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)
    return LineProgress(total, desc, unit, initial, every)


def progress(iterable: Iterable[T], desc: str, unit: str = "it", total: int | None = None, enabled: bool = True,
             every: int | None = None) -> Iterator[T]:
    """Iterates `iterable`, reporting progress as `make_progress` does."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    bar = make_progress(total, desc, unit, every=every, enabled=enabled)
    try:
        for item in iterable:
            yield item
            bar.update(1)
    finally:
        bar.close()
