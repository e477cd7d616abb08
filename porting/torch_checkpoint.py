"""Moved to `burgers_jax.porting.torch_checkpoint`; this old name stays for one release."""

import porting

porting.alias(__name__, "burgers_jax.porting.torch_checkpoint")
