"""The reference recipe at a size that finishes on a 2-core CPU in minutes.

`make demo` writes a tiny PyTorch `best.pt`, converts it to `demo_run/pretrained`
and then runs:

  .venv/bin/python -m burgers_jax.train --config configs/demo.py

Same optimizer, schedule, LoRA targets and loss as configs/burgers.py; a tiny model
(architecture from the converted checkpoint), the analytic data source (no file),
fewer steps and shorter windows.
"""

from configs import burgers


def get_config():
    c = burgers.get_config()
    c.model.pretrained_path = "demo_run/pretrained"
    c.model.precision = "fp32_output"
    c.dataset.source = "analytic"
    c.dataset.temporal_length = 4
    c.dataset.num_samples = 20
    c.training.max_steps = 150
    c.training.warmup_steps = 10
    c.training.learning_rate = 1e-3
    c.training.eval_every_steps = 25
    c.logging.save_dir = "demo_run/train"
    c.logging.log_interval = 5
    return c
