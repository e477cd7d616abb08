"""The torch side: PyTorch checkpoints <-> Flax.

- `convert_ckpt`: the conversion library (`convert`, `convert_model`, `convert_lora`),
  the work of `burgers-convert` (burgers_jax/convert.py);
- `export_torch`: the export library (`export`, `export_merged`, ...), the work of
  `burgers-export` (burgers_jax/export.py);
- `mapping`: the torch <-> Flax key table; `architecture`: what tensor shapes say about
  the architecture, and the cross-check of a config against them;
- `torch_checkpoint`: reading `.pt` files without unpickling code;
- `torch_reference`: the PyTorch model every parity test compares against;
- `verify`: the converted model against that reference, seam by seam, and `rel_l2`.

torch is an optional extra. This package, `mapping` and `architecture` import without
it; the other modules import it themselves and, without it, raise `TorchMissing` (an
ImportError) whose message is the install command (the pinned CPU build first).
"""

INSTALL_TORCH = "pip install torch==2.13.0 && pip install 'burgers-jax[torch]'"
TORCH_MISSING = f"burgers-convert and burgers-export need PyTorch: {INSTALL_TORCH}"

# `burgers-convert --verify` fails above this relative L2 (`verify.verify`'s worst seam).
# 1e-4: both sides run float32 ("highest" matmuls in JAX); reordered sums give ~1e-6 per
# op and ~1e-5 through the full-size 10-layer model, while any mis-mapped tensor
# (transposed kernel, swapped norm) gives errors of order 1. Here rather than in
# `verify`, so that the command's --help needs no torch.
VERIFY_TOLERANCE = 1e-4


class TorchMissing(ImportError):
    """torch cannot be imported; the message names the module that needs it and the
    install command."""


def torch_missing(module: str) -> TorchMissing:
    """What a module that needs torch raises from its import when torch is missing."""
    return TorchMissing(f"{module} needs PyTorch: {INSTALL_TORCH}", name="torch")


def load_for_command(module: str):
    """`burgers_jax.porting.<module>` for a command: torch and jax load here (seconds, so
    the commands call this inside `cli.run`); without torch, one user error naming the
    install command."""
    import importlib

    from burgers_jax.errors import UserError

    try:
        return importlib.import_module(f"burgers_jax.porting.{module}")
    except TorchMissing:
        raise UserError(f"PyTorch is not installed: {INSTALL_TORCH}") from None
