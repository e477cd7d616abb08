"""The Flax port of the PyTorch PDECausalModel: its configuration (architecture, LoRA,
precision `Policy`), layers, block-causal attention, LoRA and the param trees
(trainable/frozen rules). Imports nothing from the layers above it."""
