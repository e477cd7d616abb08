"""torch <-> JAX: the converter (`burgers-convert`), the export (`burgers-export`), the
PyTorch reference model the parity tests compare against, and safe reading of `.pt`
files. The only part of the project that imports torch: install it with the `torch`
extra (the pinned CPU build first, see the README)."""

import sys

TORCH_MISSING = ("burgers-convert and burgers-export need PyTorch: pip install torch==2.13.0 "
                 "&& pip install 'burgers-jax[torch]'")

try:
    import torch  # noqa: F401  (checked once, here, so a missing torch is one line, not a traceback)
except ImportError:
    sys.exit(f"error: {TORCH_MISSING}")
