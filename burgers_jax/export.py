"""`burgers-export`: a converted model plus a run's adapters back to PyTorch (best_lora.pt,
a merged best.pt or a PEFT directory); the work is `porting.export_torch` (it needs
torch: the `torch` extra).

This entry imports nothing heavy before `cli.start`, so a Ctrl-C while torch and jax load
is one line and exit 130.
"""

from __future__ import annotations

import sys

from burgers_jax import cli

PROG = "burgers-export"


def build_parser():
    from porting import export_torch

    return export_torch.build_parser()


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        from porting import export_torch  # torch, jax: seconds

        return export_torch.main(argv)

    return cli.start(PROG, run)


if __name__ == "__main__":
    sys.exit(main())
