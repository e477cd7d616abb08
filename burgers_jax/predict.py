"""`burgers-predict`: runs a converted `PDECausalModel` on frames and saves the prediction.

    burgers-predict --checkpoint DIR --input in.npy --out out.npy \\
        [--dtype float32|bfloat16] [--lora ADAPTERS] [--batch-size N] [--overwrite]
    burgers-predict --checkpoint DIR --data FILE.h5 --sample 3 [--start 0] \\
        [--frames 16] --out out.npy

(also `python -m burgers_jax.predict`; `--output` is an alias of `--out`). Shapes,
dtypes and policies: `burgers_jax.evaluation.predict`, which this module calls.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from burgers_jax import cli

PROG = "burgers-predict"


def build_parser() -> argparse.ArgumentParser:
    from burgers_jax.model.names import INFERENCE_DTYPES  # jax-free: jax comes after the flags

    p = argparse.ArgumentParser(prog=PROG, description="\n\n".join(__doc__.split("\n\n")[:2]),
                                formatter_class=cli.HelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path, help="converted base model directory (burgers-convert)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", type=Path,
                     help=".npy array [B, T, 128, 128, 6] or [B, T, 128, 128, 2] (this or --data)")
    src.add_argument("--data", type=Path,
                     help="HDF5 file of the Burgers layout, with --sample, --start, --frames (this or --input)")
    p.add_argument("--sample", type=int, nargs="+", default=[0], help="with --data: sample index(es)")
    p.add_argument("--start", type=int, default=0, help="with --data: first frame of the window")
    p.add_argument("--frames", type=int, default=16, help="with --data: input frames T")
    p.add_argument("--out", "--output", dest="out", required=True, type=Path,
                   help="path of the float32 .npy prediction (written as given)")
    p.add_argument("--dtype", choices=list(INFERENCE_DTYPES), default="float32",
                   help="float32: the parity policy with exact float32 matmuls; bfloat16: the PyTorch recipe's")
    p.add_argument("--lora", type=Path, default=None,
                   help="adapters directory (a run's best_adapters/ or burgers-convert of a best_lora.pt); "
                        "default: none, the base model alone")
    p.add_argument("--allow-other-base", action="store_true",
                   help="apply --lora adapters to a base model with other weights than the one they were trained on "
                        "(refused by default: a merged export already contains them)")
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    return p


def main(argv: list[str] | None = None) -> int:
    return cli.start(PROG, lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)  # --help and a wrong flag answer before the heavy imports
    from burgers_jax.evaluation.predict import predict_to_file  # jax: seconds
    from burgers_jax.io import compilation_cache

    compilation_cache.enable()

    def body() -> int:
        shape = predict_to_file(args.checkpoint, args.out, input=args.input, data=args.data, sample=args.sample,
                                start=args.start, frames=args.frames, dtype=args.dtype, lora=args.lora,
                                batch_size=args.batch_size, overwrite=args.overwrite,
                                allow_other_base=args.allow_other_base)
        print(f"wrote {args.out}: {shape} float32")
        return 0

    return cli.run(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
