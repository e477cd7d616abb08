"""Fine-tuning on Burgers with LoRA on the PDE residual alone (no ground truth), in JAX.

The default is the recipe that made the model better on data it never saw
(docs/results.md): the per-step anchored residual in the preconditioned norm, LoRA r 16 on
every projection plus the decoder, float32, AdamW 1e-4, 100 warmup steps, cosine to 1e-6
over 5000 steps. `configs/burgers.py:reference` is the PyTorch recipe as it was written
(the residual of [input frame 0, predictions], adapters only, bf16 trunk): it made the
model worse in our measurements, and training says so when it starts.

`configs/burgers.py` points here. A config of your own can live in any directory:
`from burgers_jax.configs import burgers`, then change what differs.

Runbook (paste into a terminal; `make demo` once to create .venv):

  # 1. Convert the pretrained PyTorch checkpoint (architecture is read from it)
  .venv/bin/burgers-convert /path/to/best.pt --out checkpoints/pretrained --verify

  # 2. Point at the reference data, or generate it (~13 GB, 100 samples x 1000 frames x 128^2)
  .venv/bin/burgers-generate --out data/burgers2d_nu0.1_0.15_res128_t1000_n100.h5

  # 3. Fine-tune on the PDE residual alone
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

  # The PyTorch recipe as written, for comparison (it warns: docs/results.md)
  .venv/bin/burgers-train --config configs/burgers.py:reference ...

Single values are overridden as `--config.training.max_steps=10`; `burgers-train --help`
lists every field with its default and meaning (FIELD_HELP below), `--print-config`
prints the resolved config.
"""

import ml_collections
from ml_collections import config_dict

from burgers_jax.model.names import DEFAULT_LORA_TARGETS

VARIANTS = ("", "recommended", "reference")  # "" and "recommended": the same recipe


# What every field means: the one source of these meanings (`burgers-train --help` prints
# them beside the defaults; a test keeps them in step with get_config's fields).
FIELD_HELP = {
    "model.pretrained_path": "converted base model directory (the output of burgers-convert)",
    "model.precision": "reference (all bf16, the PyTorch recipe) | fp32_output (bf16 trunk; input statistics, "
                       "last decoder stage, denormalization and residual float32) | float32 (parity); "
                       "burgers_jax.model.config.Policy",
    "model.remat": "what the transformer layers keep for the backward: projections (default: the matmul outputs; "
                   "recompute the cheap rest) | full (recompute each layer: least memory) | none (keep all)",
    "model.attention": "the block-causal attention kernel: auto (flash) | flash | cudnn | cudnn_lengths (GPU, bf16 "
                       "trunk; docs/performance.md) | einsum (the plain reference, [S, S] scores: tests only)",
    "model.trainable": "what trains: adapters (the reference) | adapters+decoder | adapters+encoder+decoder | all "
                       "(burgers_jax.model.param_tree.TRAINABLE_SETS)",
    "model.noise_level": "Gaussian input noise in training (the pretraining used some; fine-tuning none)",
    "model.expected_architecture": "JSON {\"encoder\": {...}, \"transformer\": {...}} the checkpoint must match "
                                   "('': no check; configs/from_yaml.py sets it from the YAML)",
    "model.lora.r": "LoRA rank (> 0)",
    "model.lora.alpha": "LoRA scale: the update is B A x * alpha / r",
    "model.lora.dropout": "dropout on the adapters' input, in training",
    "model.lora.target_modules": "the projections of every layer that get adapters",
    "model.lora.init_path": "an adapters directory to start from, e.g. a converted best_lora.pt ('': fresh adapters)",
    "model.allow_other_base": "use model.lora.init_path's adapters, or resume a run, on a base model with other "
                              "weights than the one they were trained on (refused by default)",
    "dataset.source": "hdf5 (dataset.path) | analytic (exact solutions computed from the formula, no file)",
    "dataset.path": "the HDF5 file of the Burgers layout (burgers-generate writes it)",
    "dataset.temporal_length": "model input frames T; a training window holds T + 1",
    "dataset.frame_stride": "windows of every S-th frame (time step S * dt); 1 = the reference",
    "dataset.train_ratio": "fraction of the samples that train; the rest validate",
    "dataset.seed": "seed of the train/validation split (and of the analytic viscosity draw)",
    "dataset.num_samples": "source=analytic only: number of trajectories",
    "dataset.num_frames": "source=analytic only: frames per trajectory on t in [0, 1]",
    "dataset.resolution": "source=analytic only: grid cells per side (the model needs 128)",
    "dataset.nu_min": "source=analytic only: smallest viscosity",
    "dataset.nu_max": "source=analytic only: largest viscosity",
    "physics.dt": "frame spacing; None: the data's time axis (files of burgers-generate record it), else the "
                  "reference 1/999; a value that disagrees with the file's axis is refused",
    "dataloader.batch_size": "training windows per step (a multiple of the devices)",
    "dataloader.prefetch": "training batches prepared ahead on the host",
    "dataloader.val_batch_size": "validation windows per evaluation batch",
    "training.max_steps": "optimizer steps of the run (a resume may extend it)",
    "training.warmup_steps": "linear warmup of the learning rate",
    "training.schedule_steps": "the cosine schedule's length; None: max_steps (a resumed run keeps the length it "
                               "had; set it to restart the cosine)",
    "training.learning_rate": "peak AdamW learning rate",
    "training.min_lr": "the cosine schedule's final learning rate",
    "training.weight_decay": "AdamW weight decay",
    "training.betas": "AdamW (beta1, beta2)",
    "training.grad_clip": "global gradient-norm clip",
    "training.lambda_pde": "weight of the PDE residual",
    "training.lambda_data": "weight of a supervised next-frame term (0: label-free)",
    "training.lambda_bc": "weight of the boundary term: the prediction extrapolated to the faces vs the given values",
    "training.residual": "the residual that trains: window (the reference: [input frame 0, outputs]) | per_step "
                         "(each output against its own input frame) | precond (per_step in a preconditioned norm, "
                         "normalised by the input increments); docs/results.md",
    "training.residual_scheme": "time discretisation of per_step and precond: euler | bdf2 | auto (euler at "
                                "frame stride 1, bdf2 at coarser strides; docs/results.md)",
    "training.pushforward_steps": "m > 0: sometimes train on the model's own m-step rollout",
    "training.pushforward_prob": "probability of a pushforward step (with pushforward_steps > 0)",
    "training.select_metric": "the validation metric that picks the best adapters (lower is better): loss (the "
                              "objective being trained) or any val/ metric name",
    "training.eval_every_steps": "validation and checkpoint cadence, in steps",
    "training.seed": "seed of the adapters' initialisation, the batch order and dropout",
    "training.resume": "continue the run in logging.save_dir (its saved config is used)",
    "training.allow_config_change": "let a resumed run change rank, lr, data, ... anyway",
    "training.allow_data_change": "let a resumed run go on with data whose identity changed (another file under "
                                  "the same path, a rewritten file); refused by default",
    "training.max_consecutive_nonfinite": "stop after this many non-finite steps in a row (each is skipped)",
    "training.num_devices": "data-parallel over this many local devices; 0 = all",
    "training.distributed": "multi-host: jax.distributed.initialize() first",
    "logging.save_dir": "the run directory (metrics, checkpoints, best_adapters/, plots)",
    "logging.log_interval": "a metrics line every this many steps",
    "logging.plots": "a validation window's plot at each evaluation",
    "logging.tensorboard": "TensorBoard scalars, plots and config under save_dir/tensorboard",
    "logging.wandb": "log to Weights & Biases, as the PyTorch recipe does",
    "logging.wandb_mode": "online | offline (no network; `wandb sync` later)",
    "logging.project": "Weights & Biases project",
    "logging.entity": "Weights & Biases entity ('': your default)",
}


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """The recommended recipe (also `:recommended`): the label-free recipe that made the
    stand-in better on data it never saw (docs/results.md), the per-step anchored residual
    in the preconditioned norm, LoRA + decoder, float32 — measured on the small stand-in on
    a CPU, not yet on the full-size model. `:reference`: the PyTorch recipe as written.
    Each field's meaning: FIELD_HELP."""
    if variant not in VARIANTS:
        raise ValueError(f"configs/burgers.py: unknown variant {variant!r}; known: 'recommended' (the default), "
                         "'reference' (the PyTorch recipe)")
    c = ml_collections.ConfigDict()

    c.model = ml_collections.ConfigDict()
    c.model.pretrained_path = "checkpoints/pretrained"
    c.model.precision = "fp32_output"  # the reference's; recommend() sets float32
    c.model.remat = "projections"  # the full-size step fits in a few GiB (docs/performance.md, "Memory")
    c.model.attention = "auto"  # burgers_jax.model.attention: auto = flash on every backend (measured)
    c.model.trainable = "adapters"
    c.model.noise_level = 0.0
    c.model.expected_architecture = ""
    c.model.lora = ml_collections.ConfigDict()
    c.model.lora.r = 16
    c.model.lora.alpha = 32.0
    c.model.lora.dropout = 0.05
    c.model.lora.target_modules = DEFAULT_LORA_TARGETS
    c.model.lora.init_path = ""
    c.model.allow_other_base = False

    c.dataset = ml_collections.ConfigDict()
    c.dataset.source = "hdf5"
    c.dataset.path = "data/burgers2d_nu0.1_0.15_res128_t1000_n100.h5"
    c.dataset.temporal_length = 16
    c.dataset.frame_stride = 1
    c.dataset.train_ratio = 0.9
    c.dataset.seed = 42
    # source=analytic only: the reference sample set computed from the formula.
    c.dataset.num_samples = 100
    c.dataset.num_frames = 1000
    c.dataset.resolution = 128
    c.dataset.nu_min = 0.1
    c.dataset.nu_max = 0.15

    c.physics = ml_collections.ConfigDict()
    c.physics.dt = config_dict.placeholder(float)

    c.dataloader = ml_collections.ConfigDict()
    c.dataloader.batch_size = 4
    c.dataloader.prefetch = 2
    c.dataloader.val_batch_size = 4

    c.training = ml_collections.ConfigDict()
    c.training.max_steps = 5000
    c.training.warmup_steps = 100
    c.training.schedule_steps = config_dict.placeholder(int)
    c.training.learning_rate = 1e-4
    c.training.min_lr = 1e-6
    c.training.weight_decay = 1e-4
    c.training.betas = (0.9, 0.999)
    c.training.grad_clip = 1.0
    c.training.lambda_pde = 1.0
    c.training.lambda_data = 0.0
    c.training.lambda_bc = 0.0
    c.training.residual = "window"
    c.training.residual_scheme = "euler"
    c.training.pushforward_steps = 0
    c.training.pushforward_prob = 0.5
    c.training.select_metric = "loss"
    c.training.eval_every_steps = 50
    c.training.seed = 0
    c.training.resume = False
    c.training.allow_config_change = False
    c.training.allow_data_change = False
    c.training.max_consecutive_nonfinite = 10
    c.training.num_devices = 0
    c.training.distributed = False

    c.logging = ml_collections.ConfigDict()
    c.logging.save_dir = "runs/burgers_lora"
    c.logging.log_interval = 10
    c.logging.plots = True
    c.logging.tensorboard = True
    c.logging.wandb = False
    c.logging.wandb_mode = "online"
    c.logging.project = "burgers-lora"
    c.logging.entity = ""
    if variant != "reference":
        recommend(c)
    return c


def recommend(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The recommended label-free options on top of the reference recipe (the default;
    configs/demo.py uses them too)."""
    c.model.precision = "float32"  # a bf16 trunk cannot see one time step at dt = 1/999
    c.model.trainable = "adapters+decoder"
    c.training.residual = "precond"
    # Euler at stride 1, BDF2 at coarser strides: at stride 10 BDF2 was better than Euler
    # in 6 of 6 seed-paired one-step and 5 of 6 rollout comparisons (docs/results.md).
    c.training.residual_scheme = "auto"
    c.training.lambda_bc = 0.0  # the ghost cells already carry the boundary values
    return c
