"""The reference fine-tuning run of SPEC.md section 5, in JAX.

Runbook (paste into a terminal; `make demo` once to create .venv):

  # 1. Convert the pretrained PyTorch checkpoint (architecture is read from it)
  .venv/bin/python porting/convert_ckpt.py /path/to/best.pt --out checkpoints/pretrained --verify

  # 2. Point at the reference data, or generate it (~13 GB, 100 samples x 1000 frames x 128^2)
  .venv/bin/python scripts/generate_burgers_data.py --output data/burgers2d_nu0.1_0.15_res128_t1000_n100.h5

  # 3. Fine-tune with LoRA on the PDE residual alone
  .venv/bin/python -m burgers_jax.train --config configs/burgers.py \
      --config.model.pretrained_path=checkpoints/pretrained \
      --config.dataset.path=data/burgers2d_nu0.1_0.15_res128_t1000_n100.h5 \
      --config.logging.save_dir=runs/burgers_lora

  # 4. Resume after an interruption (same batches, same loss curve)
  .venv/bin/python -m burgers_jax.train --config configs/burgers.py \
      --config.logging.save_dir=runs/burgers_lora --config.training.resume=True

  # 5. Predict with the best adapters / export them back to PyTorch
  .venv/bin/python -m burgers_jax.predict --checkpoint checkpoints/pretrained \
      --lora runs/burgers_lora/best_adapters --input in.npy --output out.npy
  .venv/bin/python porting/export_torch.py --checkpoint checkpoints/pretrained \
      --lora runs/burgers_lora/best_adapters --out best_lora.pt

Single values are overridden as `--config.training.max_steps=10`.
"""

import ml_collections

from burgers_jax.model_config import DEFAULT_LORA_TARGETS


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()

    c.model = ml_collections.ConfigDict()
    c.model.pretrained_path = "checkpoints/pretrained"  # output of porting/convert_ckpt.py
    # reference | fp32_output | float32 (see burgers_jax.model_config.Policy);
    # fp32_output keeps the bf16 trunk but computes the last decoder stage, the
    # denormalization and the residual in float32 (chosen from the demo's policy table).
    c.model.precision = "fp32_output"
    c.model.remat = False  # gradient checkpointing of the transformer layers
    c.model.lora = ml_collections.ConfigDict()
    c.model.lora.r = 16
    c.model.lora.alpha = 32.0
    c.model.lora.dropout = 0.05
    c.model.lora.target_modules = DEFAULT_LORA_TARGETS

    c.dataset = ml_collections.ConfigDict()
    c.dataset.source = "hdf5"  # hdf5 | analytic
    c.dataset.path = "data/burgers2d_nu0.1_0.15_res128_t1000_n100.h5"
    c.dataset.temporal_length = 16  # model input frames; windows hold one more
    c.dataset.train_ratio = 0.9
    c.dataset.seed = 42
    # Only for source=analytic: the reference sample set computed from the formula.
    c.dataset.num_samples = 100
    c.dataset.num_frames = 1000
    c.dataset.resolution = 128
    c.dataset.nu_min = 0.1
    c.dataset.nu_max = 0.15

    c.physics = ml_collections.ConfigDict()
    c.physics.dt = 1.0 / 999.0

    c.dataloader = ml_collections.ConfigDict()
    c.dataloader.batch_size = 4
    c.dataloader.prefetch = 2
    c.dataloader.val_batch_size = 4

    c.training = ml_collections.ConfigDict()
    c.training.max_steps = 5000
    c.training.warmup_steps = 100
    c.training.learning_rate = 1e-4
    c.training.min_lr = 1e-6
    c.training.weight_decay = 1e-4
    c.training.betas = (0.9, 0.999)
    c.training.grad_clip = 1.0
    c.training.lambda_pde = 1.0
    c.training.lambda_data = 0.0
    c.training.eval_every_steps = 50
    c.training.seed = 0
    c.training.resume = False
    c.training.max_consecutive_nonfinite = 10
    c.training.num_devices = 0  # data-parallel over this many local devices; 0 = all
    c.training.distributed = False  # multi-host: jax.distributed.initialize() first

    c.logging = ml_collections.ConfigDict()
    c.logging.save_dir = "runs/burgers_lora"
    c.logging.log_interval = 10
    c.logging.plots = True
    c.logging.tensorboard = True
    return c
