"""The reference fine-tuning run: `burgers_jax/configs/burgers.py` (its docstring is the
runbook). Kept here so that `--config configs/burgers.py` works from the repository."""

from burgers_jax.configs.burgers import get_config  # noqa: F401
