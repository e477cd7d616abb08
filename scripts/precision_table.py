"""Runs the demo recipe under each precision policy and prints a table of the
validation PDE loss (start, end) and the wall time: the numbers behind the default
`model.precision` of configs/burgers.py (float32; the PyTorch recipe's bf16 is `reference`).

    python scripts/precision_table.py [--pretrained demo_run/pretrained] [--steps 60]

Needs a converted checkpoint (run `make demo` first, which writes demo_run/pretrained).
Note that bf16 arithmetic is very slow on CPUs; compare wall times on one machine only.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pretrained", default="demo_run/pretrained")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--out", default="demo_run/precision")
    ap.add_argument("--policies", default="reference,fp32_output,float32")
    args = ap.parse_args(argv)

    from burgers_jax.configs import demo
    from burgers_jax.training import trainer as train

    rows = []
    for policy in args.policies.split(","):
        cfg = demo.get_config()
        cfg.model.pretrained_path = args.pretrained
        cfg.model.precision = policy
        if args.steps:
            cfg.training.max_steps = args.steps
            cfg.training.eval_every_steps = args.steps
        cfg.logging.save_dir = str(Path(args.out) / policy)
        cfg.logging.plots = False
        shutil.rmtree(cfg.logging.save_dir, ignore_errors=True)
        t0 = time.time()
        s = train.train_and_evaluate(cfg, cfg.logging.save_dir)
        rows.append((policy, s["first_val"]["val/pde_loss"], s["last_val"]["val/pde_loss"],
                     s["best_val"], s["last_val"]["val/nrmse"], time.time() - t0, s["steps"]))

    print("\n| precision | val PDE loss step 0 | val PDE loss end | best | val nRMSE end | wall s | steps |")
    print("|---|---|---|---|---|---|---|")
    for p, a, b, best, nr, w, n in rows:
        print(f"| {p} | {a:.4e} | {b:.4e} | {best:.4e} | {nr:.4e} | {w:.0f} | {n} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
