"""Writes the analytic 2D Burgers data set in the reference HDF5 layout (the library
behind `burgers-generate`).

Layout, one group per sample "0", "1", ...: `nu` float32 scalar, `scalar` an empty
dataset, `vector/data` [T, H, W, 2] float32 (H is y, W is x, last axis (u, v)),
`vector/boundary/left|right` [T, H, 1, 2], `bottom|top` [T, 1, W, 2] at the cell
centres along each edge. Values are computed in float64 and stored as float32; one
sample is in memory at a time. The root carries attributes the reference loader does
not see (attributes are not groups or datasets): the time axis (`t0`, `dt`; training
takes its time step from them), `num_samples` (a loader refuses a file holding fewer),
the seed and the nu range.

The file is written under a temporary name and renamed at the end: an interrupted run
(Ctrl-C, a killed job) leaves no file that looks complete. An uncompressed file's size is
known before the work, so one that cannot fit is refused up front; a disk that fills up
during the write (compressed data, another writer) is one named error
(`burgers_jax.io.disk.DiskFullError`), with the temporary file removed.
"""

from __future__ import annotations

import time
from pathlib import Path

import h5py
import numpy as np

from burgers_jax.data.compression import COMPRESSIONS
from burgers_jax.data.sources import BOUNDARIES, REFERENCE_NU_RANGE, REFERENCE_SEED, reference_nus
from burgers_jax.errors import UserError
from burgers_jax.io import disk, outputs
from burgers_jax.io import progress as progress_lib
from burgers_jax.physics.analytic import burgers_fields32, reference_times


class GenerateError(UserError):
    """Arguments that cannot give a valid data set."""


def check_args(num_samples: int, num_frames: int, resolution: int, nu_min: float, nu_max: float,
               chunk_frames: int | None, compression: str, dt: float | None) -> None:
    problems = []
    if num_samples < 1:
        problems.append(f"--num-samples {num_samples}: need at least 1")
    if num_frames < 2:
        problems.append(f"--num-frames {num_frames}: need at least 2 (the residual differences frames in time)")
    if resolution < 2:
        problems.append(f"--resolution {resolution}: need at least 2")
    if not (np.isfinite(nu_min) and nu_min > 0):
        problems.append(f"--nu-min {nu_min}: the viscosity must be positive (nu = 0 divides by zero, "
                        "nu < 0 is not viscous Burgers)")
    if not (np.isfinite(nu_max) and nu_max >= nu_min):
        problems.append(f"--nu-max {nu_max}: must be finite and >= --nu-min {nu_min}")
    if chunk_frames is not None and chunk_frames < 1:
        problems.append(f"--chunk-frames {chunk_frames}: need at least 1")
    if compression not in COMPRESSIONS:
        problems.append(f"--compression {compression!r}: one of {COMPRESSIONS}")
    if dt is not None and not (np.isfinite(dt) and dt > 0):
        problems.append(f"--dt {dt}: must be positive")
    if problems:
        raise GenerateError("; ".join(problems))


def dataset_bytes(num_samples: int, num_frames: int, resolution: int) -> int:
    """The uncompressed size of the float32 datasets: the field and its four edges per
    sample (HDF5's own bookkeeping adds a few KB)."""
    per_frame = resolution * resolution * 2 + 4 * resolution * 2
    return num_samples * (num_frames * per_frame + 1) * 4


def write_dataset(path, num_samples: int = 100, num_frames: int = 1000, resolution: int = 128,
             nu_min: float = REFERENCE_NU_RANGE[0], nu_max: float = REFERENCE_NU_RANGE[1],
             seed: int = REFERENCE_SEED,
             chunk_frames: int | None = None, compression: str = "none",
             overwrite: bool = False, progress: bool = True, dt: float | None = None) -> dict:
    """Writes the file and returns a summary dict (samples, shapes, nu range, bytes,
    seconds per sample). Refuses to replace an existing file unless `overwrite`.

    Frames are at t = linspace(0, 1, num_frames) (the reference), or at t = k * dt for
    k < num_frames when `dt` is given (a prefix of a longer trajectory)."""
    check_args(num_samples, num_frames, resolution, nu_min, nu_max, chunk_frames, compression, dt)
    nus = reference_nus(num_samples, seed, (nu_min, nu_max))
    times = reference_times(num_frames, 0.0, 1.0) if dt is None else np.arange(num_frames, dtype=np.float64) * dt
    frame_dt = float(times[1] - times[0]) if dt is None else float(dt)
    # Chunking is needed by compression; uncompressed data stays contiguous (a window is
    # then one contiguous read) unless chunks are asked for.
    if compression != "none" and chunk_frames is None:
        chunk_frames = 17
    opts = {} if compression == "none" else {"compression": compression}

    def chunks(shape):
        return None if chunk_frames is None else (min(chunk_frames, shape[0]),) + shape[1:]

    needed = dataset_bytes(num_samples, num_frames, resolution)
    if compression == "none":
        disk.check_space(path, needed)
    buffer = np.empty((num_frames, resolution, resolution, 2), dtype=np.float32)  # reused
    t0, cpu0 = time.perf_counter(), time.process_time()

    def write(tmp: Path) -> None:
        # Through a GuardedFile: HDF5 writing a path segfaults after a full disk.
        with disk.GuardedFile(tmp) as sink, h5py.File(sink, "w") as f:
            f.attrs.update(t0=float(times[0]), dt=frame_dt, num_samples=num_samples, seed=seed,
                           nu_min=nu_min, nu_max=nu_max, generator="burgers_jax.generate")
            for i in progress_lib.progress(range(num_samples), desc="samples", unit="sample", enabled=progress):
                fields = burgers_fields32(nus[i], times, resolution, out=buffer)
                g = f.create_group(str(i))
                g.create_dataset("nu", data=np.float32(nus[i]))
                g.create_dataset("scalar", shape=None, dtype=np.float32)  # empty: no scalar fields
                for key in ("data",) + BOUNDARIES:
                    name = "vector/data" if key == "data" else f"vector/boundary/{key}"
                    arr = fields[key]
                    g.create_dataset(name, data=arr, chunks=chunks(arr.shape), **opts)
                del fields
                if sink.error is not None:
                    break  # the disk is full: the file is lost, stop computing
        sink.raise_if_full()

    with disk.named_when_full(path, needed):
        path = outputs.write_file(path, write, overwrite, "HDF5 data file")
    seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - cpu0  # this process only: robust to a busy machine
    return {
        "path": str(path), "samples": num_samples,
        "data_shape": (num_frames, resolution, resolution, 2),
        "nu_min": float(nus.min()), "nu_max": float(nus.max()), "dt": frame_dt,
        "bytes": path.stat().st_size, "seconds": seconds,
        "seconds_per_sample": seconds / num_samples,
        "cpu_seconds_per_sample": cpu_seconds / num_samples,
    }


def format_summary(s: dict) -> str:
    return (f"wrote {s['path']}\n"
            f"  samples            {s['samples']}\n"
            f"  vector/data shape  {list(s['data_shape'])} float32 per sample\n"
            f"  nu range           [{s['nu_min']:.6f}, {s['nu_max']:.6f}]\n"
            f"  frame spacing dt   {s['dt']:.9g}\n"
            f"  size on disk       {s['bytes'] / 2**20:.1f} MiB\n"
            f"  time               {s['seconds']:.2f} s wall ({s['seconds_per_sample']:.3f} s/sample, "
            f"{s['cpu_seconds_per_sample']:.3f} CPU s/sample)")
