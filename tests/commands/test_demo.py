"""End-to-end smoke test of the quickstart path (`make demo`), shortened: the committed
stand-in best.pt is converted with --verify, the training CLI runs two steps of
configs/demo.py, and the evaluation compares zero-shot and fine-tuned with the baselines."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_path_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "scripts/demo.py", "--out", str(out), "--steps", "2", "--temporal-length", "2",
         "--skip-floors"],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "pretrained" / "model_config.json").is_file()
    assert "verify ok" in proc.stdout
    config = json.loads((out / "train" / "config.json").read_text())
    # The PyTorch recipe's setting (LoRA alone) on the second stand-in, at stride 10.
    assert config["model"]["trainable"] == "adapters" and config["training"]["residual"] == "precond"
    assert config["model"]["precision"] == "float32" and config["dataset"]["frame_stride"] == 10
    assert "assets/standin2/best.pt" in proc.stdout and "--config configs/demo.py:lora_only" in proc.stdout
    summary = json.loads((out / "train" / "summary.json").read_text())
    assert summary["steps"] == 2
    assert summary["nonfinite_total"] == 0
    rows = [json.loads(l) for l in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val/pde_loss" in r] == [0, 1, 2]
    assert all(r["train/pde_loss"] > 0 for r in rows if "train/pde_loss" in r)
    assert sorted(p.name for p in (out / "train" / "plots").iterdir()) == [
        "val_step000000.png", "val_step000001.png", "val_step000002.png"]
    for who in ("zero_shot", "finetuned"):
        for data in ("test", "heldout"):
            m = json.loads((out / f"eval_{who}_{data}" / "metrics.json").read_text())
            assert set(m["one_step"]) == {"model", "persistence", "truth"} and len(m["rollout"]["horizons"]) == 30
            assert m["config"]["lora"] == (str(out / "train" / "best_adapters") if who == "finetuned" else None)
            assert m["config"]["frame_stride"] == 10, "evaluated at the stride it was tuned at"
    assert "| zero-shot |" in proc.stdout and "| fine-tuned (label-free) |" in proc.stdout
    assert (out / "train" / "loss_curve.png").is_file(), "a loss curve in every run directory"
    comparison = out / "comparison"
    assert proc.stdout.strip().splitlines()[-1] == str(comparison), "the comparison is the last line printed"
    table = (comparison / "comparison.md").read_text()
    assert "| zero-shot | none (zero-shot) |" in table and "| fine-tuned | train/best_adapters |" in table
    assert (comparison / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert "error maps left out" not in proc.stdout, "one data set: the same window's maps are drawn"
    assert "The fine-tuned model is BETTER" in proc.stdout or "is NOT better" in proc.stdout
    # The sentences about persistence are the comparison's own, written from its numbers.
    m = {who: json.loads((out / f"eval_{who}_test" / "metrics.json").read_text()) for who in ("zero_shot", "finetuned")}
    tuned, held = (m["finetuned"]["one_step"][k]["vrmse"] for k in ("model", "persistence"))
    sentence = (f"- fine-tuned against persistence (copying the last frame): one step ahead "
                f"{'better' if tuned < held else 'worse'} (VRMSE {tuned:.4f} vs {held:.4f})")
    assert sentence in proc.stdout and sentence in table
    assert "still better one step ahead" not in proc.stdout, "no sentence the numbers did not write"
    # The note on the plain PDE loss appears exactly when that loss rose while the VRMSE fell.
    both = {(w, d): json.loads((out / f"eval_{w}_{d}" / "metrics.json").read_text())["one_step"]["model"]
            for w in ("zero_shot", "finetuned") for d in ("test", "heldout")}
    disagrees = any(both[("finetuned", d)]["pde_loss"] > both[("zero_shot", d)]["pde_loss"] and
                    both[("finetuned", d)]["vrmse"] < both[("zero_shot", d)]["vrmse"] for d in ("test", "heldout"))
    assert proc.stdout.count("The plain PDE loss (the mean square of the residual)") == int(disagrees)
