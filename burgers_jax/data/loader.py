"""Batches of windows read from a source (`data.sources`): stateless training batches (a
pure function of seed and step, so a resumed run sees the batches it would have seen),
deterministic validation batches that cover every validation sample, and background
prefetching (grain).

A batch is a dict of numpy arrays (B batch, L window frames, H/W grid):
  frames [B, L, H, W, 6] ((u, v), then four zeros), left/right [B, L, H, 1, 2],
  bottom/top [B, L, 1, W, 2], nu [B] float32, valid [B] bool, sample [B] int64,
  start [B] int64.
The four faces stay flat keys, as in the file (`vector/boundary/<face>`): a batch is a
plain dict of arrays that the trainer shards key by key; the steps make them one
`physics.Boundaries` (`Boundaries.from_mapping(batch)`, training.steps.batch_boundaries).
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import grain
import numpy as np

from burgers_jax.data.sources import BOUNDARIES, NUM_CHANNELS, WINDOW, DataError, span
from burgers_jax.physics.boundaries import Boundaries


def load_batch(source, samples: Sequence[int], starts: Sequence[int], window: int = WINDOW,
               valid: Sequence[bool] | None = None, stride: int = 1) -> dict[str, np.ndarray]:
    """Reads one window per (sample, start) (every `stride`-th frame) and pads (u, v) to
    6 channels."""
    samples = np.asarray(samples, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    b, n = len(samples), source.resolution
    frames = np.zeros((b, window, n, n, NUM_CHANNELS), dtype=np.float32)
    frames_words = frames.view(np.uint64)  # [B, L, H, W, 3]: channel pairs (0,1) (2,3) (4,5)
    bounds = {k: np.empty(s, dtype=np.float32) for k, s in Boundaries.shapes(b, window, n, n)._asdict().items()}
    nu = np.empty((b,), dtype=np.float32)
    for k, (i, s) in enumerate(zip(samples, starts)):
        w = source.read_window(int(i), int(s), window, stride)
        # (u, v) into channels 0, 1: copied as one 8-byte word per cell, because numpy's
        # strided copy with an inner length of 2 is several times slower.
        uv_words = np.ascontiguousarray(w["data"], dtype=np.float32).view(np.uint64)
        frames_words[k, ..., 0] = uv_words[..., 0]
        for name in BOUNDARIES:
            bounds[name][k] = w[name]
        nu[k] = w["nu"]
    return {
        "frames": frames, **bounds, "nu": nu,
        "valid": np.ones((b,), dtype=bool) if valid is None else np.asarray(valid, dtype=bool),
        "sample": samples, "start": starts,
    }


def _require_window(source, window: int, stride: int = 1) -> None:
    if source.num_frames < span(window, stride):
        raise DataError(f"{source.name}: {source.num_frames} frames, fewer than the "
                        f"{span(window, stride)} one window of {window} frames (stride {stride}) spans")


def train_windows(num_frames: int, train_idx: Sequence[int], batch_size: int, seed: int,
                  step: int, window: int = WINDOW, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(samples [B], starts [B]) of training step `step`, a pure function of its inputs.

    Samples: item k = step * B + b of an endless stream made of per-epoch permutations
    of `train_idx` (epoch e = k // n shuffled by `default_rng([seed, 0, e])`), so each
    training sample is seen once per epoch, like the reference's shuffled loader.
    Starts: uniform over the starts where the window (every `stride`-th frame) fits,
    drawn by `default_rng([seed, 1, step])`.
    """
    train_idx = np.asarray(train_idx, dtype=np.int64)
    n = train_idx.size
    if n == 0:
        raise DataError("train_batch: empty train_idx")
    items = step * batch_size + np.arange(batch_size)
    epochs, pos = np.divmod(items, n)
    samples = np.empty(batch_size, dtype=np.int64)
    for e in np.unique(epochs):  # a batch spans at most two epochs
        perm = np.random.default_rng([seed, 0, int(e)]).permutation(train_idx)
        samples[epochs == e] = perm[pos[epochs == e]]
    starts = np.random.default_rng([seed, 1, step]).integers(
        0, num_frames - span(window, stride), size=batch_size, endpoint=True)
    return samples, starts


def train_batch(source, train_idx: Sequence[int], batch_size: int, seed: int, step: int,
                window: int = WINDOW, stride: int = 1) -> dict[str, np.ndarray]:
    """The training batch of step `step`: identical for identical (seed, step), so a
    resumed run sees exactly the batches it would have seen (see `train_windows`)."""
    _require_window(source, window, stride)
    samples, starts = train_windows(source.num_frames, train_idx, batch_size, seed, step, window, stride)
    return load_batch(source, samples, starts, window, stride=stride)


def val_windows(num_frames: int, val_idx: Sequence[int], window: int = WINDOW,
                windows_per_sample: int = 1, stride: int = 1) -> list[tuple[int, int]]:
    """Fixed (sample, start) pairs: every validation sample, `windows_per_sample` starts
    at the midpoints of equal strata of the possible starts (the reference draws its
    starts uniformly there, afresh each time; one window sits in the middle)."""
    starts_possible = num_frames - span(window, stride) + 1
    starts = [int((j + 0.5) * starts_possible / windows_per_sample) for j in range(windows_per_sample)]
    return [(int(i), s) for i in val_idx for s in starts]


def window_batches(source, items: Sequence[tuple[int, int]], batch_size: int, window: int = WINDOW,
                   stride: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """Batches of the given (sample, start) windows, in order. The last batch is padded to
    `batch_size` by repeating its last item with `valid=False` (weight metrics by `valid`;
    the reference drops incomplete batches instead)."""
    _require_window(source, window, stride)
    for lo in range(0, len(items), batch_size):
        chunk = list(items[lo:lo + batch_size])
        valid = [True] * len(chunk) + [False] * (batch_size - len(chunk))
        chunk = chunk + [chunk[-1]] * (batch_size - len(chunk))
        samples, starts = zip(*chunk)
        yield load_batch(source, samples, starts, window, valid, stride)


def val_batches(source, val_idx: Sequence[int], batch_size: int, window: int = WINDOW,
                windows_per_sample: int = 1, stride: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """Deterministic validation batches covering every validation sample (`val_windows`)."""
    _require_window(source, window, stride)
    yield from window_batches(source, val_windows(source.num_frames, val_idx, window, windows_per_sample, stride),
                              batch_size, window, stride)


# --------------------------------------------------------------------------- prefetch


def prefetch(fn: Callable[[int], object], steps: range, depth: int = 2) -> Iterator:
    """`fn(step)` for each step of `steps`, in order, computed up to `depth` items ahead on
    background threads (grain), so reading overlaps a running device step (numpy and h5py
    release or serialise around the GIL). An exception in `fn` reaches the consumer at the
    step where it happened. The iterator has `close()`."""
    if depth < 1:
        raise ValueError(f"prefetch depth must be >= 1, got {depth}")
    if not isinstance(steps, range) or steps.step != 1:
        raise ValueError(f"prefetch needs a range of consecutive steps, got {steps!r}")
    dataset = grain.MapDataset.range(steps.start, steps.stop).map(fn)
    return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=depth, prefetch_buffer_size=depth)))
