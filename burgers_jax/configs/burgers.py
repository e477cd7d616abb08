"""The reference fine-tuning run (the PyTorch recipe: LoRA r 16 on every projection,
AdamW 1e-4, 100 warmup steps, cosine to 1e-6 over 5000 steps, PDE residual only), in JAX.

`configs/burgers.py` points here. A config of your own can live in any directory:
`from burgers_jax.configs import burgers`, then change what differs.

Runbook (paste into a terminal; `make demo` once to create .venv):

  # 1. Convert the pretrained PyTorch checkpoint (architecture is read from it)
  .venv/bin/burgers-convert /path/to/best.pt --out checkpoints/pretrained --verify

  # 2. Point at the reference data, or generate it (~13 GB, 100 samples x 1000 frames x 128^2)
  .venv/bin/burgers-generate --out data/burgers2d_nu0.1_0.15_res128_t1000_n100.h5

  # 3. Fine-tune with LoRA on the PDE residual alone
  .venv/bin/burgers-train --config configs/burgers.py \
      --config.model.pretrained_path=checkpoints/pretrained \
      --config.dataset.path=data/burgers2d_nu0.1_0.15_res128_t1000_n100.h5 \
      --config.logging.save_dir=runs/burgers_lora

  # 4. Resume after an interruption (same batches, same loss curve; the run's saved
  #    config is used, so no override needs repeating)
  .venv/bin/burgers-train --config configs/burgers.py \
      --config.logging.save_dir=runs/burgers_lora --config.training.resume=True

  # 5. Predict with the best adapters / export them back to PyTorch
  .venv/bin/burgers-predict --checkpoint checkpoints/pretrained \
      --lora runs/burgers_lora/best_adapters --input in.npy --out out.npy
  .venv/bin/burgers-export --checkpoint checkpoints/pretrained \
      --lora runs/burgers_lora/best_adapters --out best_lora.pt

  # The recommended label-free recipe instead of the reference one (docs/results.md)
  .venv/bin/burgers-train --config configs/burgers.py:recommended ...

Single values are overridden as `--config.training.max_steps=10`.
"""

import ml_collections
from ml_collections import config_dict

from burgers_jax.model.config import DEFAULT_LORA_TARGETS

VARIANTS = ("", "recommended")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """The reference recipe; `configs/burgers.py:recommended` the label-free recipe that
    made the stand-in better on data it never saw (docs/results.md): the per-step anchored
    residual in the preconditioned norm, LoRA + decoder, float32. Measured on the small
    stand-in on a CPU, not yet on the full-size model."""
    if variant not in VARIANTS:
        raise ValueError(f"configs/burgers.py: unknown variant {variant!r}; known: 'recommended'")
    c = ml_collections.ConfigDict()

    c.model = ml_collections.ConfigDict()
    c.model.pretrained_path = "checkpoints/pretrained"  # output of burgers-convert
    # reference | fp32_output | float32 (see burgers_jax.model.config.Policy);
    # fp32_output keeps the bf16 trunk but computes the last decoder stage, the
    # denormalization and the residual in float32 (chosen from the demo's policy table).
    c.model.precision = "fp32_output"
    c.model.remat = False  # gradient checkpointing of the transformer layers
    # What trains: adapters (the reference) | adapters+decoder |
    # adapters+encoder+decoder (burgers_jax.model.param_tree.TRAINABLE_SETS)
    c.model.trainable = "adapters"
    c.model.noise_level = 0.0  # input noise in training (the pretraining used some; fine-tuning none)
    # JSON {"encoder": {...}, "transformer": {...}} the checkpoint must match (configs/from_yaml.py sets it)
    c.model.expected_architecture = ""
    c.model.lora = ml_collections.ConfigDict()
    c.model.lora.r = 16
    c.model.lora.alpha = 32.0
    c.model.lora.dropout = 0.05
    c.model.lora.target_modules = DEFAULT_LORA_TARGETS
    c.model.lora.init_path = ""  # an adapters directory to start from (e.g. a converted best_lora.pt)

    c.dataset = ml_collections.ConfigDict()
    c.dataset.source = "hdf5"  # hdf5 | analytic
    c.dataset.path = "data/burgers2d_nu0.1_0.15_res128_t1000_n100.h5"
    c.dataset.temporal_length = 16  # model input frames; windows hold one more
    c.dataset.frame_stride = 1  # windows of every S-th frame (time step S * dt); 1 = the reference
    c.dataset.train_ratio = 0.9
    c.dataset.seed = 42
    # Only for source=analytic: the reference sample set computed from the formula.
    c.dataset.num_samples = 100
    c.dataset.num_frames = 1000
    c.dataset.resolution = 128
    c.dataset.nu_min = 0.1
    c.dataset.nu_max = 0.15

    c.physics = ml_collections.ConfigDict()
    # Frame spacing. None: from the data's time axis (files of burgers-generate record
    # it); a file without one (the PyTorch generator's) uses the reference 1/999. An
    # explicit value that disagrees with the file's axis is refused.
    c.physics.dt = config_dict.placeholder(float)

    c.dataloader = ml_collections.ConfigDict()
    c.dataloader.batch_size = 4
    c.dataloader.prefetch = 2
    c.dataloader.val_batch_size = 4

    c.training = ml_collections.ConfigDict()
    c.training.max_steps = 5000
    c.training.warmup_steps = 100
    # The cosine schedule's length; None: max_steps. A resumed run with a larger max_steps
    # keeps the length it had (the extra steps run at min_lr); set it to restart the cosine.
    c.training.schedule_steps = config_dict.placeholder(int)
    c.training.learning_rate = 1e-4
    c.training.min_lr = 1e-6
    c.training.weight_decay = 1e-4
    c.training.betas = (0.9, 0.999)
    c.training.grad_clip = 1.0
    c.training.lambda_pde = 1.0
    c.training.lambda_data = 0.0
    c.training.lambda_bc = 0.0  # boundary term: the prediction extrapolated to the faces vs the given values
    # The residual that trains (label-free options, docs/results.md): window (the reference:
    # [input frame 0, outputs]) | per_step (each output against its own input frame) |
    # precond (per_step in a preconditioned norm, normalised by the input increments).
    c.training.residual = "window"
    c.training.residual_scheme = "euler"  # euler | bdf2 (per_step and precond)
    c.training.pushforward_steps = 0  # m > 0: sometimes train on the model's own m-step rollout
    c.training.pushforward_prob = 0.5
    # The best adapters are chosen by this validation metric (lower is better): "loss", the
    # objective being trained (label-free unless lambda_data > 0), or any val/ metric name.
    c.training.select_metric = "loss"
    c.training.eval_every_steps = 50
    c.training.seed = 0
    c.training.resume = False
    c.training.allow_config_change = False  # let a resumed run change rank, lr, data, ... anyway
    c.training.max_consecutive_nonfinite = 10
    c.training.num_devices = 0  # data-parallel over this many local devices; 0 = all
    c.training.distributed = False  # multi-host: jax.distributed.initialize() first

    c.logging = ml_collections.ConfigDict()
    c.logging.save_dir = "runs/burgers_lora"
    c.logging.log_interval = 10
    c.logging.plots = True
    c.logging.tensorboard = True
    c.logging.wandb = False  # Weights & Biases, as the PyTorch recipe logs
    c.logging.wandb_mode = "online"  # or "offline": no network; `wandb sync` later
    c.logging.project = "burgers-lora"
    c.logging.entity = ""
    if variant == "recommended":
        recommend(c)
    return c


def recommend(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The recommended label-free options on top of a recipe (configs/demo.py uses them too)."""
    c.model.precision = "float32"  # a bf16 trunk cannot see one time step at dt = 1/999
    c.model.trainable = "adapters+decoder"
    c.training.residual = "precond"
    c.training.residual_scheme = "euler"
    c.training.lambda_bc = 0.0  # the ghost cells already carry the boundary values
    return c
