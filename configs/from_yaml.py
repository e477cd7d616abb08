"""The PyTorch recipe's own YAML as a training config:
`--config configs/from_yaml.py:path/to/finetune_burgers.yaml` (see
`burgers_jax/configs/from_yaml.py` for how its keys map; `configs/finetune_burgers.yaml`
is an example)."""

from burgers_jax.configs.from_yaml import get_config  # noqa: F401
