"""Moved to `burgers_jax.porting.verify`; this old name stays for one release."""

import porting

porting.alias(__name__, "burgers_jax.porting.verify")
