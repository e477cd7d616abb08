"""`burgers-generate`: writes the analytic 2D Burgers data set in the reference HDF5 layout.

Defaults reproduce the reference file (100 samples, nu ~ U(0.1, 0.15) with seed 42 then
sorted, 128^2, 1000 frames on t in [0, 1], about 13 GB):

  burgers-generate --out data/burgers2d_nu0.1_0.15_res128_t1000_n100.h5

A small file for a laptop (the first 40 frames of the reference trajectories, dt = 1/999):

  burgers-generate --num-samples 4 --num-frames 40 --dt 0.001001001001 --out /tmp/burgers_small.h5

(also `python -m burgers_jax.generate`; `--output` is an alias of `--out`). The layout
and the writing: `burgers_jax.data.writer`, which this module calls.
"""

from __future__ import annotations

import argparse
import sys

from burgers_jax import cli

PROG = "burgers-generate"


def build_parser() -> argparse.ArgumentParser:
    from burgers_jax.data.compression import COMPRESSIONS  # light: the writer (jax, h5py) comes after the flags

    p = argparse.ArgumentParser(prog=PROG, description=__doc__.rsplit("\n\n", 1)[0],
                                formatter_class=cli.HelpFormatter)
    p.add_argument("--num-samples", type=int, default=100, help="trajectories (HDF5 groups)")
    p.add_argument("--num-frames", type=int, default=1000, help="frames per trajectory")
    p.add_argument("--resolution", type=int, default=128, help="grid cells per side (the model needs 128)")
    p.add_argument("--nu-min", type=float, default=0.1, help="smallest viscosity")
    p.add_argument("--nu-max", type=float, default=0.15, help="largest viscosity")
    p.add_argument("--seed", type=int, default=42, help="seed of the viscosity draw (then sorted)")
    p.add_argument("--dt", type=float, default=None,
                   help="frame spacing; default: the frames span t in [0, 1] (1/999 for 1000 frames)")
    p.add_argument("--out", "--output", dest="out", default="data/burgers2d_nu0.1_0.15_res128_t1000_n100.h5",
                   help="the HDF5 file to write")
    p.add_argument("--chunk-frames", type=int, default=None,
                   help="chunk datasets by this many frames (default: contiguous, or 17 when compressed)")
    p.add_argument("--compression", choices=COMPRESSIONS, default="none", help="HDF5 compression of the fields")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    return p


def main(argv=None) -> int:
    return cli.start(PROG, lambda: _main(argv))


def _main(argv) -> int:
    a = build_parser().parse_args(argv)  # --help and a wrong flag answer before the heavy imports
    from burgers_jax.data.writer import format_summary, write_dataset  # jax and h5py: seconds

    def body() -> int:
        summary = write_dataset(a.out, a.num_samples, a.num_frames, a.resolution, a.nu_min, a.nu_max, a.seed,
                           a.chunk_frames, a.compression, a.overwrite, dt=a.dt)
        print(format_summary(summary))
        return 0

    return cli.run(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
