"""Moved to `burgers_jax.porting.mapping`; this old name stays for one release."""

import porting

porting.alias(__name__, "burgers_jax.porting.mapping")
