"""`burgers-compare`: several evaluations side by side, one table and one figure.

    burgers-compare eval/zero_shot eval/fine_tuned [eval/...] [--labels a,b,...] --out DIR [--overwrite]

(also `python -m burgers_jax.compare`). What is compared and written:
`burgers_jax.evaluation.compare`, which this module calls.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from burgers_jax import cli

PROG = "burgers-compare"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0], formatter_class=cli.HelpFormatter)
    p.add_argument("evaluations", nargs="+", type=Path, metavar="EVAL_DIR", help="burgers-evaluate --out folders")
    p.add_argument("--labels", default=None,
                   help="comma-separated names for the evaluations, in order (default: the folder names)")
    p.add_argument("--out", "--output", dest="out", required=True, type=Path,
                   help="output folder (comparison.md, comparison.png)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier comparison at --out")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from burgers_jax.evaluation.compare import compare

        labels = [s.strip() for s in args.labels.split(",")] if args.labels is not None else None
        final, files, notes = compare(args.evaluations, args.out, labels, args.overwrite)
        for note in notes:
            print(f"note: {note}")
        print((final / files[0]).read_text())
        print(f"wrote {final}/" + ", ".join(files))
        return 0

    return cli.run(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
