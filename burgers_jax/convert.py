"""`burgers-convert`: converts a PyTorch `PDECausalModel` checkpoint
(docs/model_and_formats.md) to a Flax/orbax checkpoint directory that predict, evaluate
and the trainer load.

    burgers-convert best.pt [--out DIR] [--config train.yaml] [--verify]
    burgers-convert best_lora.pt [--lora-for CONVERTED_BASE_DIR] [--out DIR]

(also `python porting/convert_ckpt.py ...`).

The command: its flags and its one-line messages. The work is the library function
`burgers_jax.porting.convert_ckpt.convert` (accepted inputs, the architecture
cross-check, memory: see there); it needs torch (the `torch` extra), and without it
the command says in one line what to install (exit status 2).

This module imports nothing heavy before `cli.start`, so a Ctrl-C while torch and jax load
is one line and exit 130.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from burgers_jax import cli
from burgers_jax.errors import UserError
from burgers_jax.porting import VERIFY_TOLERANCE, load_for_command

PROG = "burgers-convert"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="\n\n".join(__doc__.split("\n\n")[:3]),
                                formatter_class=cli.HelpFormatter)
    p.add_argument("checkpoint", type=Path, help="best.pt, a bare state dict, or best_lora.pt")
    p.add_argument("--out", "--output", dest="out", type=Path, default=None,
                   help="output directory; default: <stem>_flax next to the checkpoint")
    p.add_argument("--config", default=None, help="training YAML/JSON giving the model architecture (overrides the "
                   "checkpoint's config); default: the checkpoint's own config")
    p.add_argument("--verify", action="store_true", help=f"compare with the torch reference; fail above "
                   f"rel. L2 {VERIFY_TOLERANCE:g}")
    p.add_argument("--verify-frames", type=int, default=2, help="frames T of the verification input")
    p.add_argument("--verify-batch", type=int, default=1, help="batch B of the verification input")
    p.add_argument("--lora-for", default=None, help="converted base directory giving the model config of a "
                   "LoRA checkpoint; default: the LoRA checkpoint's own config['model']")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier output of this tool at --out "
                   "(anything else there is never replaced)")
    return p


def _clipped(e: Exception, path: Path) -> str:
    """One headline naming the file; long key listings (strict mapping) are clipped."""
    first, *rest = str(e).splitlines() or [type(e).__name__]
    msg = "\n".join([first] + [r if len(r) <= 400 else r[:400] + " ..." for r in rest])
    return msg if str(path) in msg else f"{path}: {msg}"


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.verify_frames < 1 or args.verify_batch < 1:
            parser.error(f"--verify-frames ({args.verify_frames}) and --verify-batch ({args.verify_batch}) "
                         "must be >= 1")

        def body() -> int:
            convert_ckpt = load_for_command("convert_ckpt")  # torch, jax: seconds
            from absl import logging as absl_logging

            from burgers_jax.io import compilation_cache
            from burgers_jax.io.disk import DiskFullError

            absl_logging.set_verbosity(absl_logging.ERROR)  # orbax warns on every single-process save
            compilation_cache.enable()
            try:
                convert_ckpt.convert(args.checkpoint, args.out, config_file=args.config, lora_for=args.lora_for,
                                     verify=args.verify, verify_frames=args.verify_frames,
                                     verify_batch=args.verify_batch, overwrite=args.overwrite)
            except DiskFullError:
                raise  # names the output, not the checkpoint
            except UserError as e:
                raise type(e)(_clipped(e, args.checkpoint)) from None
            return 0

        return cli.run(PROG, body)

    return cli.start(PROG, run)


if __name__ == "__main__":
    sys.exit(main())
