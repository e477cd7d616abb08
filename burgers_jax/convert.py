"""`burgers-convert`: a PyTorch `best.pt` (or `best_lora.pt`) to a Flax checkpoint
directory; the work is `porting.convert_ckpt` (it needs torch: the `torch` extra).

This entry imports nothing heavy before `cli.start`, so a Ctrl-C while torch and jax load
is one line and exit 130 (`python porting/convert_ckpt.py` stays the same command).
"""

from __future__ import annotations

import sys

from burgers_jax import cli

PROG = "burgers-convert"


def build_parser():
    from porting import convert_ckpt

    return convert_ckpt.build_parser()


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        from porting import convert_ckpt  # torch, jax: seconds

        return convert_ckpt.main(argv)

    return cli.start(PROG, run)


if __name__ == "__main__":
    sys.exit(main())
