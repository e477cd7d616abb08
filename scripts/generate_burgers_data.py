"""Writes the analytic 2D Burgers data set in the reference HDF5 layout (SPEC.md §3).

Defaults reproduce the reference file (100 samples, nu ~ U(0.1, 0.15) with seed 42 then
sorted, 128^2, 1000 frames on t in [0, 1], about 13 GB):

  .venv/bin/python scripts/generate_burgers_data.py \
      --output data/burgers2d_nu0.1_0.15_res128_t1000_n100.h5

A small file for a laptop:

  .venv/bin/python scripts/generate_burgers_data.py --num-samples 4 --num-frames 40 \
      --output /tmp/burgers_small.h5

Layout, one group per sample "0", "1", ...: `nu` float32 scalar, `scalar` an empty
dataset, `vector/data` [T, H, W, 2] float32 (H is y, W is x, last axis (u, v)),
`vector/boundary/left|right` [T, H, 1, 2], `bottom|top` [T, 1, W, 2] at the cell
centres along each edge. Values are computed in float64 and stored as float32; one
sample is in memory at a time. The root also carries attributes (t_start, t_end, seed,
...): attributes are not groups or datasets, so the reference loader does not see them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from burgers_jax.analytic import reference_times  # noqa: E402
from burgers_jax.data import BOUNDARIES, burgers_fields32, reference_nus  # noqa: E402

COMPRESSIONS = ("none", "gzip", "lzf")


def generate(path, num_samples: int = 100, num_frames: int = 1000, resolution: int = 128,
             nu_min: float = 0.1, nu_max: float = 0.15, seed: int = 42,
             chunk_frames: int | None = None, compression: str = "none",
             overwrite: bool = False, progress: bool = True) -> dict:
    """Writes the file and returns a summary dict (samples, shapes, nu range, bytes,
    seconds per sample). Refuses to replace an existing file unless `overwrite`."""
    path = Path(path)
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite (overwrite=True) to replace it")
    if num_samples < 1 or num_frames < 2 or resolution < 1:
        raise ValueError(f"need num_samples >= 1, num_frames >= 2, resolution >= 1; got "
                         f"{num_samples}, {num_frames}, {resolution}")
    path.parent.mkdir(parents=True, exist_ok=True)

    nus = reference_nus(num_samples, seed, (nu_min, nu_max))
    times = reference_times(num_frames, 0.0, 1.0)
    # Chunking is needed by compression; uncompressed data stays contiguous (a window is
    # then one contiguous read) unless chunks are asked for.
    if compression != "none" and chunk_frames is None:
        chunk_frames = 17
    opts = {} if compression == "none" else {"compression": compression}

    def chunks(shape):
        return None if chunk_frames is None else (min(chunk_frames, shape[0]),) + shape[1:]

    buffer = np.empty((num_frames, resolution, resolution, 2), dtype=np.float32)  # reused
    t0, cpu0 = time.perf_counter(), time.process_time()
    with h5py.File(path, "w") as f:
        f.attrs.update(t_start=0.0, t_end=1.0, seed=seed, nu_min=nu_min, nu_max=nu_max,
                       generator="burgers_jax scripts/generate_burgers_data.py")
        for i in tqdm(range(num_samples), desc="samples", unit="sample", disable=not progress):
            fields = burgers_fields32(nus[i], times, resolution, out=buffer)
            g = f.create_group(str(i))
            g.create_dataset("nu", data=np.float32(nus[i]))
            g.create_dataset("scalar", shape=None, dtype=np.float32)  # empty: no scalar fields
            for key in ("data",) + BOUNDARIES:
                name = "vector/data" if key == "data" else f"vector/boundary/{key}"
                arr = fields[key]
                g.create_dataset(name, data=arr, chunks=chunks(arr.shape), **opts)
            del fields
    seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - cpu0  # this process only: robust to a busy machine
    return {
        "path": str(path), "samples": num_samples,
        "data_shape": (num_frames, resolution, resolution, 2),
        "nu_min": float(nus.min()), "nu_max": float(nus.max()),
        "bytes": path.stat().st_size, "seconds": seconds,
        "seconds_per_sample": seconds / num_samples,
        "cpu_seconds_per_sample": cpu_seconds / num_samples,
    }


def format_summary(s: dict) -> str:
    return (f"wrote {s['path']}\n"
            f"  samples            {s['samples']}\n"
            f"  vector/data shape  {list(s['data_shape'])} float32 per sample\n"
            f"  nu range           [{s['nu_min']:.6f}, {s['nu_max']:.6f}]\n"
            f"  size on disk       {s['bytes'] / 2**20:.1f} MiB\n"
            f"  time               {s['seconds']:.2f} s wall ({s['seconds_per_sample']:.3f} s/sample, "
            f"{s['cpu_seconds_per_sample']:.3f} CPU s/sample)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num-samples", type=int, default=100)
    p.add_argument("--num-frames", type=int, default=1000)
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--nu-min", type=float, default=0.1)
    p.add_argument("--nu-max", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--output", default="data/burgers2d_nu0.1_0.15_res128_t1000_n100.h5")
    p.add_argument("--chunk-frames", type=int, default=None,
                   help="chunk datasets by this many frames (default: contiguous, or 17 "
                        "when compressed)")
    p.add_argument("--compression", choices=COMPRESSIONS, default="none")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    a = p.parse_args(argv)
    try:
        summary = generate(a.output, a.num_samples, a.num_frames, a.resolution, a.nu_min,
                           a.nu_max, a.seed, a.chunk_frames, a.compression, a.overwrite)
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
