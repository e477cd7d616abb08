"""End-to-end smoke test of the quickstart path (`make demo`), shortened: the PyTorch
reference writes best.pt, convert_ckpt.py --verify converts and checks it, and the
training CLI runs two steps of configs/demo.py."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_demo_path_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "scripts/demo.py", "--out", str(out), "--steps", "2", "--temporal-length", "1",
         "--skip-floors"],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "best.pt").is_file()
    assert (out / "pretrained" / "model_config.json").is_file()
    summary = json.loads((out / "train" / "summary.json").read_text())
    assert summary["steps"] == 2
    assert summary["nonfinite_total"] == 0
    rows = [json.loads(l) for l in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val/pde_loss" in r] == [0, 1, 2]
    assert all(r["train/pde_loss"] > 0 for r in rows if "train/pde_loss" in r)
    assert sorted(p.name for p in (out / "train" / "plots").iterdir()) == [
        "val_step000000.png", "val_step000001.png", "val_step000002.png"]
    assert "validation PDE loss" in proc.stdout and "best adapters" in proc.stdout
