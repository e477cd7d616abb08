"""Burgers data: sources (HDF5 file or analytic formula), their identity on disk, the
reference split and the time-step rule. Batches of windows: `data.loader`.

Shapes: B batch, L window frames (17 = temporal_length + 1), T frames of a sample,
H/W grid (H is y, W is x), C = 6 model channels (u, v, then four zeros).

File layout (docs/model_and_formats.md, "Burgers data"), one group per sample "0", "1", ...:
  nu [] float32, scalar (empty), vector/data [T, H, W, 2],
  vector/boundary/left|right [T, H, 1, 2], vector/boundary/bottom|top [T, 1, W, 2].

A source has `num_samples`, `num_frames`, `resolution`, `dt`, `name`, `nu(i)` and
`read_window(i, start, length, stride=1) -> {data [L,H,W,2], left, right [L,H,1,2],
bottom, top [L,1,W,2], nu []}` (all float32).
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np

from burgers_jax.errors import UserError
from burgers_jax.physics.analytic import burgers_fields32, reference_times
from burgers_jax.physics.boundaries import Boundaries
from burgers_jax.physics.residual import REFERENCE_DT

WINDOW = 17  # temporal_length 16 + 1: the model's 16 inputs and one frame beyond
NUM_CHANNELS = 6
BOUNDARIES = Boundaries._fields  # the faces: vector/boundary/<face> in the file, a batch's keys


class DataError(UserError):
    """Bad data; the message names the file (or source) and the sample at fault."""


class DataChangedError(DataError):
    """The data behind a path is not the data a run started with."""


# --------------------------------------------------------------------------- identity


def nu_digest(nus: Sequence[float]) -> str:
    """A short digest of the viscosities, in sample order (float64 bytes)."""
    return hashlib.sha256(np.asarray(nus, dtype=np.float64).tobytes()).hexdigest()[:16]


def _file_stat(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino


# What a data identity (a source's `fingerprint()`) records, and how a change is named.
IDENTITY_FIELDS = {
    "kind": "the kind of source", "num_samples": "samples", "num_frames": "frames per sample",
    "resolution": "grid", "dt": "time step", "nu": "viscosities (digest)", "nu_range": "viscosity range",
    "t_range": "time range", "size": "file size in bytes", "mtime_ns": "modification time",
}


def identity_changes(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """'what: saved -> now' for every recorded field of two data identities that differs
    (the path is the config's business, not the identity's)."""
    out = []
    for key, what in IDENTITY_FIELDS.items():
        a, b = saved.get(key), now.get(key)
        if key == "mtime_ns" and a is not None and b is not None and a != b:
            out.append(f"{what}: {_when(a)} -> {_when(b)}")
        elif a != b and (key in saved or key in now):
            out.append(f"{what}: {a!r} -> {b!r}")
    return out


def _when(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns / 1e9)) + f".{ns % 10**9 // 10**6:03d}"


# --------------------------------------------------------------------------- reference draws

# The reference data set and split (the PyTorch generator's and training script's
# defaults): the one place these numbers are written.
REFERENCE_NU_RANGE = (0.1, 0.15)
REFERENCE_SEED = 42
REFERENCE_TRAIN_RATIO = 0.9


def reference_nus(num_samples: int = 100, seed: int = REFERENCE_SEED,
                  nu_range: tuple[float, float] = REFERENCE_NU_RANGE) -> np.ndarray:
    """The reference generator's viscosities: `np.random.seed(seed)`, then
    `np.random.uniform(lo, hi, n)`, sorted. A local RandomState draws the same numbers
    without touching numpy's global state."""
    lo, hi = nu_range
    return np.sort(np.random.RandomState(seed).uniform(lo, hi, num_samples))


def split_indices(num_samples: int, train_ratio: float = REFERENCE_TRAIN_RATIO,
                  seed: int = REFERENCE_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The reference split: `np.random.seed(seed); perm = np.random.permutation(n)`,
    first `int(train_ratio * n)` are train. A local RandomState gives the same
    permutation without touching numpy's global state."""
    perm = np.random.RandomState(seed).permutation(num_samples)
    n_train = int(train_ratio * num_samples)
    return perm[:n_train], perm[n_train:]


DT_RTOL = 1e-6  # float32 storage of 1/999 and friends


def resolve_dt(explicit: float | None, data_dt: float | None, source_name: str,
               flag: str = "physics.dt") -> tuple[float, str | None]:
    """The one time-step rule of training and evaluation -> (dt, note to print or None).

    The data's own time axis wins; an explicit value (`flag`: `physics.dt` in training,
    `--dt` in evaluation) that disagrees with it is an error. A file without a time axis
    (the PyTorch generator's) takes the explicit value, as the PyTorch script does, or
    the reference dt = 1/999 with a note; never a guess from the frame count."""
    if explicit is not None and not (isinstance(explicit, (int, float)) and math.isfinite(explicit) and explicit > 0):
        raise DataError(f"{flag}={explicit!r} must be a finite time step > 0 (or unset: from the data)")
    if data_dt is not None:
        if explicit is not None and not math.isclose(explicit, data_dt, rel_tol=DT_RTOL):
            raise DataError(f"{flag}={explicit} disagrees with the time axis of {source_name} "
                            f"(dt={data_dt}); drop {flag} or fix the data")
        return data_dt, None
    if explicit is not None:
        return explicit, None
    return REFERENCE_DT, (f"{source_name} records no time axis and {flag} is not set: using the "
                          f"reference dt = 1/999 ({REFERENCE_DT:.9g})")


# --------------------------------------------------------------------------- sources


def span(length: int, stride: int = 1) -> int:
    """Frames of a sample that a window of `length` frames, every `stride`-th, covers."""
    return (length - 1) * stride + 1


def _check_window(source, i: int, start: int, length: int, stride: int = 1) -> None:
    if not 0 <= i < source.num_samples:
        raise DataError(f"{source.name}: sample {i} out of range [0, {source.num_samples})")
    if length < 1 or stride < 1 or start < 0 or start + span(length, stride) > source.num_frames:
        raise DataError(f"{source.name}: sample {i}: window start={start} length={length} stride={stride} "
                        f"does not fit in {source.num_frames} frames")


def _check_finite(source, i: int, start: int, window: dict) -> None:
    for key, arr in window.items():
        if not np.all(np.isfinite(arr)):
            raise DataError(f"{source.name}: sample {i} (group '{i}'): non-finite values in "
                            f"'{key}' of the window starting at frame {start}")


class AnalyticSource:
    """Samples computed from the formula for any nu; no file. Values equal those that
    `burgers-generate` (`data/writer.py`) writes for the same nu (both use
    `burgers_fields32`, float64 math, float32 output)."""

    def __init__(self, nus: Sequence[float], num_frames: int = 1000, resolution: int = 128,
                 t_range: tuple[float, float] = (0.0, 1.0)):
        self.nus = np.asarray(nus, dtype=np.float64).reshape(-1)
        if self.nus.size == 0:
            raise DataError("analytic source: no viscosities given (no samples)")
        bad = np.flatnonzero(~(np.isfinite(self.nus) & (self.nus > 0)))
        if bad.size:
            raise DataError(f"analytic source: sample {bad[0]}: nu={self.nus[bad[0]]} "
                            f"is not a positive finite viscosity")
        if num_frames < 2:
            raise DataError(f"analytic source: num_frames={num_frames}, need at least 2")
        self.num_frames = int(num_frames)
        self.resolution = int(resolution)
        self.t_range = (float(t_range[0]), float(t_range[1]))
        self.times = reference_times(self.num_frames, *self.t_range)
        self.dt = (self.t_range[1] - self.t_range[0]) / (self.num_frames - 1)
        self.name = "analytic source"

    @classmethod
    def reference(cls, num_samples: int = 100, seed: int = REFERENCE_SEED,
                  nu_range: tuple[float, float] = REFERENCE_NU_RANGE, num_frames: int = 1000,
                  resolution: int = 128, t_range: tuple[float, float] = (0.0, 1.0)):
        """The reference sample set (same nus as the generator's defaults)."""
        return cls(reference_nus(num_samples, seed, nu_range), num_frames, resolution, t_range)

    @property
    def num_samples(self) -> int:
        return int(self.nus.size)

    def fingerprint(self) -> dict[str, Any]:
        """What defines these samples (the formula's parameters): the data identity a run records."""
        return {"kind": "analytic", "num_samples": self.num_samples, "num_frames": self.num_frames,
                "resolution": self.resolution, "t_range": list(self.t_range), "nu": nu_digest(self.nus),
                "nu_range": [float(self.nus.min()), float(self.nus.max())]}

    def changed_on_disk(self) -> str | None:
        return None  # a formula does not change under a run

    def nu(self, i: int) -> float:
        return float(self.nus[i])

    def read_window(self, i: int, start: int, length: int, stride: int = 1) -> dict[str, np.ndarray]:
        _check_window(self, i, start, length, stride)
        window = burgers_fields32(self.nus[i], self.times[start:start + span(length, stride):stride], self.resolution)
        _check_finite(self, i, start, window)
        window["nu"] = np.float32(self.nus[i])  # stored like the file's float32 `nu`
        return window


class HDF5Source:
    """Reads the reference HDF5 layout. The layout of every sample (names and shapes) and
    every `nu` are checked at construction without reading any field data; the file is
    then (re)opened lazily, once per process (a handle inherited through fork is not
    reused). One handle is shared by the threads of a process: h5py serialises calls
    with its global lock, so the prefetch thread and the main thread may both read.

    Top-level names that are not decimal integers are ignored; sample groups must be
    "0" .. "n-1". A file written by our generator records how many samples it should
    hold (root attribute `num_samples`: a shorter file is refused) and its time axis
    (root attributes `t0` and `dt`); `dt` is None for a file without one (the PyTorch
    generator's), whose time step the training config must give: the frame count says
    nothing about it (a file may hold the first 40 frames of a 1000-frame trajectory).
    """

    def __init__(self, path, min_frames: int = WINDOW):
        self.path = Path(path)
        self.name = str(self.path)
        self._handle = None
        self._pid = None
        self._lock = threading.Lock()
        self._nus: dict[int, float] = {}
        if not self.path.is_file():
            raise DataError(f"{self.name}: no such file")
        if not h5py.is_hdf5(self.path):
            raise DataError(f"{self.name}: not an HDF5 file")
        self._stat = _file_stat(self.path)  # before reading: a change from here on is seen
        try:
            with h5py.File(self.path, "r") as f:
                self._validate(f, min_frames)
                self.dt = _file_dt(f)
                expected = _count_attr(f, "num_samples")
                self._nus = {i: float(np.asarray(f[f"{i}/nu"][()]).reshape(())) for i in range(self.num_samples)}
        except OSError as e:  # truncated or corrupt: h5py raises OSError from the C library
            raise _read_error(self.name, e, "") from None
        if expected is not None and expected != self.num_samples:
            raise DataError(f"{self.name}: holds {self.num_samples} samples but was written for {expected} "
                            "(an interrupted generation or copy?)")
        for i, nu in self._nus.items():
            if not (np.isfinite(nu) and nu > 0):
                raise DataError(f"{self.name}: sample {i} (group '{i}'): nu={nu:g} is not a positive finite viscosity")

    def _validate(self, f: h5py.File, min_frames: int) -> None:
        ids = sorted(int(k) for k in f.keys() if k.isdecimal())
        if not ids:
            raise DataError(f"{self.name}: empty file, no sample groups '0', '1', ...")
        for expected, found in zip(range(len(ids)), ids):
            if expected != found:
                raise DataError(f"{self.name}: sample {expected}: missing group '{expected}' "
                                f"(groups go up to '{ids[-1]}')")
        shape0 = None
        for i in ids:
            where = f"{self.name}: sample {i} (group '{i}')"
            g = f[str(i)]
            if not isinstance(g, h5py.Group):
                raise DataError(f"{where}: '{i}' is not a group")
            shapes = {}
            for key in ["nu", "vector/data"] + [f"vector/boundary/{b}" for b in BOUNDARIES]:
                obj = g.get(key)
                if obj is None:
                    raise DataError(f"{where}: missing dataset '{i}/{key}'")
                if not isinstance(obj, h5py.Dataset):
                    raise DataError(f"{where}: '{i}/{key}' is not a dataset")
                shapes[key] = obj.shape
            for key in shapes:
                kind = g[key].dtype.kind
                if kind not in "fiu":
                    raise DataError(f"{where}: '{i}/{key}' holds {g[key].dtype} values, not numbers "
                                    "(stored as text or bytes?)")
            if shapes["nu"] not in ((), (1,)):
                raise DataError(f"{where}: 'nu' must be a scalar, has shape {shapes['nu']}")
            data = shapes["vector/data"]
            if len(data) != 4 or data[-1] != 2:
                raise DataError(f"{where}: 'vector/data' must be [T, H, W, 2], has shape {data}")
            t, h, w, _ = data
            if h != w:
                raise DataError(f"{where}: 'vector/data' has H={h} != W={w} (square grids only)")
            if t < min_frames:
                raise DataError(f"{where}: 'vector/data' has {t} frames, fewer than the "
                                f"{min_frames} of one window")
            expected = {"left": (t, h, 1, 2), "right": (t, h, 1, 2),
                        "bottom": (t, 1, w, 2), "top": (t, 1, w, 2)}
            for b, want in expected.items():
                got = shapes[f"vector/boundary/{b}"]
                if got != want:
                    raise DataError(f"{where}: 'vector/boundary/{b}' has shape {got}, expected "
                                    f"{want} to agree with 'vector/data' {data}")
            if shape0 is None:
                shape0 = data
            elif data != shape0:
                raise DataError(f"{where}: 'vector/data' has shape {data}, sample 0 has "
                                f"{shape0}; all samples must share frames and grid")
        self.num_samples = len(ids)
        self.num_frames, self.resolution = shape0[0], shape0[1]

    def _file(self) -> h5py.File:
        with self._lock:
            if self._handle is None or self._pid != os.getpid():
                try:
                    self._handle = h5py.File(self.path, "r")
                except OSError as e:
                    raise _read_error(self.name, e, "") from None
                self._pid = os.getpid()
            return self._handle

    def close(self) -> None:
        with self._lock:
            if self._handle is not None and self._pid == os.getpid():
                self._handle.close()
            self._handle = None

    def __getstate__(self):  # picklable for process pools: the handle stays behind
        state = self.__dict__.copy()
        state.update(_handle=None, _pid=None, _lock=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def fingerprint(self) -> dict[str, Any]:
        """What defines this file's data, as it was when the source was opened: the data
        identity a run records (size and modification time, and the values that define
        the samples: count, frames, grid, dt, the viscosities)."""
        size, mtime_ns, _ = self._stat
        nus = [self._nus[i] for i in range(self.num_samples)]
        return {"kind": "hdf5", "file": str(self.path.resolve()), "size": size, "mtime_ns": mtime_ns,
                "num_samples": self.num_samples, "num_frames": self.num_frames, "resolution": self.resolution,
                "dt": self.dt, "nu": nu_digest(nus), "nu_range": [min(nus), max(nus)]}

    def changed_on_disk(self) -> str | None:
        """None while the file is the one this source opened; else what changed (a file
        rewritten or replaced under a running training: its fields would be read beside
        the viscosities read at the start)."""
        try:
            now = _file_stat(self.path)
        except OSError as e:
            return f"it can no longer be read ({e.strerror or e})"
        if now == self._stat:
            return None
        (size0, mtime0, ino0), (size1, mtime1, ino1) = self._stat, now
        parts = [f"size {size0} -> {size1} bytes"] if size0 != size1 else []
        if mtime0 != mtime1:
            parts.append(f"modified {_when(mtime0)} -> {_when(mtime1)}")
        if ino0 != ino1:
            parts.append("replaced by another file")
        return ", ".join(parts)

    def nu(self, i: int) -> float:
        if not 0 <= i < self.num_samples:
            raise DataError(f"{self.name}: sample {i} out of range [0, {self.num_samples})")
        return self._nus[i]

    def read_window(self, i: int, start: int, length: int, stride: int = 1) -> dict[str, np.ndarray]:
        _check_window(self, i, start, length, stride)
        sl = slice(start, start + span(length, stride), stride)
        try:
            g = self._file()[str(i)]
            window = {"data": np.asarray(g["vector/data"][sl], dtype=np.float32)}
            for b in BOUNDARIES:
                window[b] = np.asarray(g[f"vector/boundary/{b}"][sl], dtype=np.float32)
        except OSError as e:
            raise _read_error(self.name, e, f": sample {i} (group '{i}'): frames {start}..{start + length - 1}"
                              ) from None
        _check_finite(self, i, start, window)
        window["nu"] = np.float32(self._nus[i])
        return window


def _read_error(name: str, e: OSError, where: str) -> DataError:
    """The one line for an HDF5 file h5py cannot open or read: locked by a writer (HDF5's
    file locking), or truncated / corrupt."""
    text = str(e)
    if "lock" in text.lower():
        return DataError(f"{name}{where}: locked by another process (a writer still has it open?); wait "
                         "for it to finish. On a file system without locks, HDF5_USE_FILE_LOCKING=FALSE "
                         f"turns HDF5's locking off ({text.splitlines()[0][:120]})")
    return DataError(f"{name}{where}: cannot be read (truncated or corrupt HDF5 file?): {text}")


def _count_attr(f: h5py.File, key: str) -> int | None:
    """A root attribute that holds a count (None when absent); anything but a whole
    number is a DataError naming the file and the attribute."""
    if key not in f.attrs:
        return None
    raw = f.attrs[key]
    try:
        value = np.asarray(raw).reshape(())
        if value.dtype.kind not in "iuf" or float(value) != int(value) or int(value) < 0:
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise DataError(f"{f.filename}: attribute '{key}'={raw!r} is not a whole number; fix it or delete "
                        "the attribute") from None


def _file_dt(f: h5py.File) -> float | None:
    """The frame spacing a file records (attribute `dt`, as `burgers-generate` writes it);
    None when it records none (the PyTorch generator's files)."""
    if "dt" not in f.attrs:
        return None
    raw = f.attrs["dt"]
    try:
        value = np.asarray(raw).reshape(())
        if value.dtype.kind not in "iuf":  # b"0.001" would parse as a number
            raise ValueError
        dt = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{f.filename}: attribute 'dt'={raw!r} is not a number; fix it or delete the "
                        "attribute and give the time step in the config") from None
    if not (math.isfinite(dt) and dt > 0):
        raise DataError(f"{f.filename}: attribute 'dt'={dt!r} must be a finite time step > 0")
    return dt
