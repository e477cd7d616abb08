"""Fine-tuning on Burgers: `burgers_jax/configs/burgers.py` (its docstring is the runbook):
the recommended recipe by default, the PyTorch recipe as `configs/burgers.py:reference`.
Kept here so that `--config configs/burgers.py` works from the repository."""

from burgers_jax.configs.burgers import get_config  # noqa: F401
