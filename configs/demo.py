"""The reference recipe at CPU size (`make demo`), and `configs/demo.py:smoke` for tests:
`burgers_jax/configs/demo.py`."""

from burgers_jax.configs.demo import get_config  # noqa: F401
