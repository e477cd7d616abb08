"""`burgers-export`: Flax results back to the PyTorch side: the trainer's checkpoint
formats (`best_lora.pt`, `best.pt`) and a PEFT adapter directory.

    burgers-export --checkpoint DIR --lora ADAPTERS --out best_lora.pt
    burgers-export --checkpoint DIR [--lora ADAPTERS] --merged --out best.pt
    burgers-export --checkpoint DIR --lora ADAPTERS --peft --out adapters_peft/

(also `python porting/export_torch.py ...`).

The command: its flags and its one-line messages. The work is the library function
`burgers_jax.porting.export_torch.export` (what each format holds: see there); it needs
torch (the `torch` extra), and without it the command says in one line what to install
(exit status 2).

This module imports nothing heavy before `cli.start`, so a Ctrl-C while torch and jax load
is one line and exit 130.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from burgers_jax import cli
from burgers_jax.porting import load_for_command

PROG = "burgers-export"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="\n\n".join(__doc__.split("\n\n")[:2]),
                                formatter_class=cli.HelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path, help="converted base directory (burgers-convert)")
    p.add_argument("--lora", type=Path, default=None, help="adapters directory (a run's best_adapters/ or burgers-convert of a "
                   "best_lora.pt); default: none (only --merged exports the base model alone)")
    p.add_argument("--out", "--output", dest="out", required=True, type=Path,
                   help="output: a best_lora.pt-format file (adapters, PEFT key names); with --merged a "
                   "best.pt-format file; with --peft a directory")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--merged", action="store_true", help="write a best.pt with the adapters merged in")
    kind.add_argument("--peft", action="store_true", help="write a PEFT adapter directory (adapter_config.json, "
                      "adapter_model.safetensors)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output (--out)")
    p.add_argument("--allow-other-base", action="store_true",
                   help="apply --lora adapters to a base model with other weights than the one they were trained on "
                        "(refused by default: a merged export already contains them)")
    return p


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        args = build_parser().parse_args(argv)
        kind = "merged" if args.merged else "peft" if args.peft else "lora"

        def body() -> None:
            export_torch = load_for_command("export_torch")  # torch, jax: seconds
            from absl import logging as absl_logging

            absl_logging.set_verbosity(absl_logging.ERROR)  # orbax warns on every single-process restore
            print(export_torch.export(args.checkpoint, args.out, lora=args.lora, kind=kind, overwrite=args.overwrite,
                                      allow_other_base=args.allow_other_base))

        return cli.run(PROG, body)

    return cli.start(PROG, run)


if __name__ == "__main__":
    sys.exit(main())
