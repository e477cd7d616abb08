"""Prints the physics floors report: what a PDE residual loss value means at dt = 1/999.

    burgers-floors [--nu 0.125] [--frames 17] [--start 0]     (or python -m burgers_jax.floors)

The report itself: `burgers_jax.physics.floors`.
"""

from __future__ import annotations

import argparse

from burgers_jax import cli
from burgers_jax.physics.floors import floors_report, format_floors_report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="burgers-floors", description="\n\n".join(__doc__.split("\n\n")[:2]),
                                     formatter_class=cli.HelpFormatter)
    parser.add_argument("--nu", type=float, default=0.125, help="viscosity of the reference fields")
    parser.add_argument("--resolution", type=int, default=128, help="grid cells per side")
    parser.add_argument("--frames", type=int, default=17, help="frames of the window (17: the reference T = 16 + 1)")
    parser.add_argument("--start", type=int, default=0, help="first frame in the reference time axis (0..983)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise rows")
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    report = floors_report(args.nu, args.resolution, args.frames, args.start, seed=args.seed)
    print(format_floors_report(report))


if __name__ == "__main__":
    main()
