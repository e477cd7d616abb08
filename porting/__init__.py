"""torch <-> JAX porting: the PyTorch reference model, the key mapping, the converter and export."""
