"""Prints the physics floors report: what a PDE residual loss value means at dt = 1/999.

    burgers-floors [--nu 0.125] [--frames 17] [--start 0]     (or python -m burgers_jax.floors)

The report itself: `burgers_jax.physics.floors`.
"""

from __future__ import annotations

import argparse
import math
import sys

from burgers_jax import cli
from burgers_jax.errors import UserError

PROG = "burgers-floors"
REFERENCE_FRAMES = 1000  # the reference time axis, linspace(0, 1, 1000) (physics.analytic.reference_times)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="\n\n".join(__doc__.split("\n\n")[:2]),
                                     formatter_class=cli.HelpFormatter)
    parser.add_argument("--nu", type=float, default=0.125, help="viscosity of the reference fields")
    parser.add_argument("--resolution", type=int, default=128, help="grid cells per side")
    parser.add_argument("--frames", type=int, default=17, help="frames of the window (17: the reference T = 16 + 1)")
    parser.add_argument("--start", type=int, default=0, help="first frame in the reference time axis (0..983)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise rows")
    return parser


def check_flags(args: argparse.Namespace) -> None:
    """The flags' valid ranges, before any work: a UserError naming the flag."""
    if not (math.isfinite(args.nu) and args.nu > 0):
        raise UserError(f"--nu {args.nu}: the viscosity must be a finite number > 0")
    if not 2 <= args.resolution:
        raise UserError(f"--resolution {args.resolution}: must be >= 2 (grid cells per side)")
    if not 2 <= args.frames <= REFERENCE_FRAMES:
        raise UserError(f"--frames {args.frames}: must be in 2..{REFERENCE_FRAMES} (the residual's time derivative "
                        f"needs 2 frames; the reference time axis has {REFERENCE_FRAMES})")
    if not 0 <= args.start <= REFERENCE_FRAMES - args.frames:
        raise UserError(f"--start {args.start}: must be in 0..{REFERENCE_FRAMES - args.frames} (with --frames "
                        f"{args.frames}, in the {REFERENCE_FRAMES} reference frames)")
    if args.seed < 0:
        raise UserError(f"--seed {args.seed}: must be >= 0")


def main(argv=None) -> int:
    return cli.start(PROG, lambda: _main(argv))


def _main(argv) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        check_flags(args)
        from burgers_jax.physics.floors import floors_report, format_floors_report  # jax: seconds

        report = floors_report(args.nu, args.resolution, args.frames, args.start, seed=args.seed)
        print(format_floors_report(report))
        return 0

    return cli.run(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
