"""The recommended label-free recipe at a size that finishes on a 2-core CPU in minutes.

With the first stand-in (assets/standin/best.pt) converted to `demo_run/pretrained`:

  .venv/bin/burgers-train --config configs/demo.py

The schedule and LoRA targets of configs/burgers.py with the options of
`configs/burgers.py:recommended` (docs/results.md: the per-step anchored residual in the
preconditioned norm, LoRA + decoder, float32) and lr 1e-3. The architecture comes from
the converted checkpoint, the data from the analytic source (no file); fewer steps and
shorter windows.

`--config configs/demo.py:lora_only` is the PyTorch recipe's own setting, the one `make
demo` runs: LoRA alone (encoder and decoder frozen) on the second stand-in
(assets/standin2/best.pt, whose autoencoder is good and whose dynamics are what is off),
at frame stride 10 (dt = 10/999), where that stand-in and the fine-tuned model beat
persistence (docs/results.md, "LoRA alone").

`--config configs/demo.py:smoke` shrinks it further to a few seconds of float32 steps
(2-frame windows, batch 2, 4 steps, no plots or TensorBoard): the run the tests use.
"""

from burgers_jax.configs import burgers


def get_config(variant: str = ""):
    c = burgers.get_config()  # the recommended recipe
    c.model.pretrained_path = "demo_run/pretrained"
    c.dataset.source = "analytic"
    c.dataset.temporal_length = 4
    c.dataset.num_samples = 20
    c.training.max_steps = 200
    c.training.warmup_steps = 20
    c.training.learning_rate = 1e-3
    c.training.eval_every_steps = 25
    c.logging.save_dir = "demo_run/train"
    c.logging.log_interval = 5
    if variant == "lora_only":
        c.model.trainable = "adapters"
        c.dataset.frame_stride = 10
        c.training.residual_scheme = "euler"  # as measured with LoRA alone (BDF2 there is not)
    elif variant == "smoke":
        c.model.trainable = "adapters"
        c.training.residual = "window"
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
        raise ValueError(f"configs/demo.py: unknown variant {variant!r}; known: 'lora_only', 'smoke'")
    return c
