"""The whole user path on a fresh machine, small enough for a 2-core CPU (`make demo`).

1. the physics floors report (what a PDE loss value means at dt = 1/999);
2. a tiny pretrained model written by the PyTorch reference in the `best.pt` format;
3. `porting/convert_ckpt.py --verify` converts it to Flax and checks it against PyTorch;
4. `python -m burgers_jax.train --config configs/demo.py` fine-tunes LoRA adapters on
   the PDE residual of the analytic Burgers source;
5. where the metrics, plots and adapters are, and the validation loss before/after.

    python scripts/demo.py [--out demo_run] [--steps N] [--temporal-length T] [--precision P]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEMO_MARKER = ".burgers_demo"  # marks a folder this script made (and may replace)


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def run(cmd: list[str]) -> None:
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="demo_run", help="output folder (replaced if an earlier demo made it)")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: configs/demo.py)")
    ap.add_argument("--temporal-length", type=int, default=None, help="model input frames")
    ap.add_argument("--precision", default=None, help="float32 | reference | fp32_output")
    ap.add_argument("--skip-floors", action="store_true", help="skip the physics floors report")
    args = ap.parse_args(argv)
    t0 = time.time()
    out = (REPO / args.out).resolve()
    if out.exists() and any(out.iterdir()):
        if not (out / DEMO_MARKER).is_file():  # never delete a folder the demo did not make
            print(f"demo: error: {out} exists and was not made by the demo; choose another --out", file=sys.stderr)
            return 2
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text("made by scripts/demo.py; `make demo` replaces this folder\n")

    if not args.skip_floors:
        banner("1. Physics floors: the PDE loss of reference fields (nu = 0.125, 17 frames, 128^2)")
        from burgers_jax import floors

        print(floors.format_floors_report(floors.floors_report(nu=0.125)))

    banner("2. A tiny pretrained model in the PyTorch best.pt format (PyTorch reference)")
    import torch

    from porting import torch_reference

    torch.manual_seed(0)
    config = torch_reference.small_model_config_dict()  # {'model': {...}}, YAML-shaped
    model = torch_reference.build_model(config)
    best_pt = out / "best.pt"
    torch_reference.write_best_pt(best_pt, model, config)
    print(f"wrote {best_pt} ({best_pt.stat().st_size / 1e6:.1f} MB)")

    banner("3. Convert to Flax and verify against PyTorch")
    pretrained = out / "pretrained"
    run([sys.executable, "porting/convert_ckpt.py", str(best_pt), "--out", str(pretrained), "--verify"])

    banner("4. LoRA fine-tuning on the PDE residual (configs/demo.py)")
    save_dir = out / "train"
    cmd = [sys.executable, "-m", "burgers_jax.train", "--config", "configs/demo.py",
           f"--config.model.pretrained_path={pretrained}", f"--config.logging.save_dir={save_dir}"]
    if args.steps is not None:
        cmd.append(f"--config.training.max_steps={args.steps}")
        cmd.append(f"--config.training.eval_every_steps={max(1, args.steps // 2)}")
        cmd.append(f"--config.training.warmup_steps={max(0, min(10, args.steps - 1))}")
    if args.temporal_length is not None:
        cmd.append(f"--config.dataset.temporal_length={args.temporal_length}")
    if args.precision is not None:
        cmd.append(f"--config.model.precision={args.precision}")
    run(cmd)

    banner("5. Results")
    summary = json.loads((save_dir / "summary.json").read_text())
    first, last = summary["first_val"], summary["last_val"]
    print(f"validation PDE loss: {first['val/pde_loss']:.4e} (step 0) -> {last['val/pde_loss']:.4e} "
          f"(step {summary['steps']}), best {summary['best_val_pde_loss']:.4e}")
    print(f"constraint error |u+v-1.5|: {first['val/constraint_error']:.4e} -> {last['val/constraint_error']:.4e}")
    print(f"nRMSE vs truth (never trained on): {first['val/nrmse']:.4e} -> {last['val/nrmse']:.4e}")
    print(f"metrics:       {summary['metrics']}")
    print(f"plots:         {summary['plots']}")
    print(f"best adapters: {summary['best_adapters']}")
    print(f"tensorboard:   {save_dir / 'tensorboard'}")
    print(f"demo finished in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
