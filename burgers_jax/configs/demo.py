"""The reference recipe at a size that finishes on a 2-core CPU in minutes.

`make demo` converts the pretrained stand-in (assets/standin/best.pt) to
`demo_run/pretrained` and then runs:

  .venv/bin/python -m burgers_jax.train --config configs/demo.py

Same optimizer, schedule and LoRA targets as configs/burgers.py, plus the options the
experiment found to matter (docs/results.md): float32 output and residual, the boundary
term and a trainable decoder. The architecture comes from the converted checkpoint, the
data from the analytic source (no file); fewer steps and shorter windows.

`--config configs/demo.py:smoke` shrinks it further to a few seconds of float32 steps
(2-frame windows, batch 2, 4 steps, no plots or TensorBoard): the run the tests use.
"""

from burgers_jax.configs import burgers


def get_config(variant: str = ""):
    c = burgers.get_config()
    c.model.pretrained_path = "demo_run/pretrained"
    c.model.precision = "fp32_output"
    c.dataset.source = "analytic"
    c.dataset.temporal_length = 4
    c.dataset.num_samples = 20
    # The best option set of the experiment (docs/results.md): the boundary term and a trainable
    # decoder, float32 output and residual.
    c.model.trainable = "adapters+decoder"
    c.training.lambda_bc = 1e7
    c.training.max_steps = 100
    c.training.warmup_steps = 10
    c.training.learning_rate = 1e-3
    c.training.eval_every_steps = 25
    c.logging.save_dir = "demo_run/train"
    c.logging.log_interval = 5
    if variant == "smoke":
        c.model.precision = "float32"
        c.model.trainable = "adapters"
        c.training.lambda_bc = 0.0
        c.model.lora.dropout = 0.0
        c.dataset.temporal_length = 2
        c.dataset.num_samples = 10
        c.dataloader.batch_size = 2
        c.dataloader.val_batch_size = 2
        c.training.max_steps = 4
        c.training.warmup_steps = 1
        c.training.eval_every_steps = 2
        c.logging.log_interval = 1
        c.logging.plots = False
        c.logging.tensorboard = False
    elif variant:
        raise ValueError(f"configs/demo.py: unknown variant {variant!r}; known: 'smoke'")
    return c
