"""burgers-jax: JAX/Flax port of a PyTorch PDE foundation model and its LoRA
PDE-residual fine-tuning recipe for 2D viscous Burgers (docs/model_and_formats.md)."""

__version__ = "0.1.0"
