"""The boundary values of a window as one value: `Boundaries(left, right, bottom, top)`.

The residual needs the four faces of the unit square together, and four same-shaped
positional arrays let a left/right (or bottom/top) swap pass every shape check. So the
physics functions take one `Boundaries`, whose field names say which face an array
holds. A `typing.NamedTuple` is a JAX pytree: it passes through jit, pmap, vmap and grad
and `jax.tree.map` as its four arrays, and `*bounds` unpacks it in the order of the
PyTorch recipe's `burgers_pde_loss_upwind(pred, left, right, bottom, top, ...)`.

This module is the one definition of the faces' names and order; the data's file groups
(`vector/boundary/<face>`) and a batch's keys are these names.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax

__all__ = ["Boundaries", "require_boundaries"]


class Boundaries(NamedTuple):
    """Boundary values of the four faces of the unit square, one array per face.

    Axis H is y, axis W is x (cell centred, dx = dy = 1/H), the last axis is (u, v); each
    face holds the values at the cell centres along its edge:

      left    [B, T, H, 1, 2]   x = 0
      right   [B, T, H, 1, 2]   x = 1
      bottom  [B, T, 1, W, 2]   y = 0
      top     [B, T, 1, W, 2]   y = 1

    (one sample of the file layout drops B: [T, H, 1, 2] / [T, 1, W, 2]).
    """

    left: Any
    right: Any
    bottom: Any
    top: Any

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> Boundaries:
        """The faces of a mapping with (at least) the keys left, right, bottom, top, e.g. a
        data batch or an `analytic.analytic_batch`; other keys are ignored."""
        return cls(*(mapping[name] for name in cls._fields))

    @classmethod
    def shapes(cls, batch: int, frames: int, height: int, width: int) -> Boundaries:
        """The shape tuple of each face for B = batch, T = frames on an H x W grid."""
        return cls((batch, frames, height, 1, 2), (batch, frames, height, 1, 2),
                   (batch, frames, 1, width, 2), (batch, frames, 1, width, 2))

    def map(self, fn: Callable[[Any], Any]) -> Boundaries:
        """`fn` applied to each face's array (`jax.tree.map`)."""
        return jax.tree.map(fn, self)

    def slice_time(self, *args) -> Boundaries:
        """The frames `slice(*args)` of the time axis (axis 1) of every face:
        `slice_time(T + 1)` the first T + 1 frames, `slice_time(k, k + 2)` frames k, k + 1."""
        window = slice(*args)
        return self.map(lambda a: a[:, window])

    def component(self, c: int) -> Boundaries:
        """Channel c (0 = u, 1 = v) of each face as a line along its edge:
        left/right [B, T, H], bottom/top [B, T, W]."""
        return Boundaries(self.left[..., 0, c], self.right[..., 0, c],
                          self.bottom[..., 0, :, c], self.top[..., 0, :, c])


def require_boundaries(fn: str, bounds) -> None:
    """A TypeError naming `fn` unless `bounds` is a `Boundaries` (not a dict, list or bare
    tuple, whose faces would be taken by position)."""
    if not isinstance(bounds, Boundaries):
        raise TypeError(f"{fn}: bounds must be a Boundaries(left, right, bottom, top), got {type(bounds).__name__}")
