"""The physics of 2D viscous Burgers, in jnp/numpy only: the PDE residual
(`residual`), the analytic solution, the metrics, the floors report and the analytic
families used for pretraining. Imports nothing from the layers above it.

The residual's public functions and the `Boundaries` value they take are re-exported
here: `burgers_jax.physics.burgers_pde_loss` (the PyTorch recipe's signature) is the
contract other tools call; `pde_loss(pred, Boundaries(...), nu, dt)` the same loss with
the boundaries as one value.
"""

from burgers_jax.physics.boundaries import Boundaries  # noqa: F401
from burgers_jax.physics.residual import (  # noqa: F401  (the package's public API)
    REFERENCE_DT,
    TERM_NAMES,
    boundary_loss,
    burgers_pde_loss,
    constraint_error,
    pde_loss,
    pde_terms,
    residual_terms,
)
