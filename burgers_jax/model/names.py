"""The model's option names as plain tuples, importable without jax: the commands' flags
(`--precision`, `--dtype`) and the training configs list them before anything heavy
loads. `burgers_jax.model.config` builds its `Policy`s and LoRA defaults from these."""

from __future__ import annotations

# The precision policies (`burgers_jax.model.config.Policy.named`), in the order help texts list them.
POLICY_NAMES = ("float32", "reference", "fp32_output")

# An inference dtype names the policy that runs in it: exact float32 for parity, or the
# PyTorch recipe's all-bf16 model.
INFERENCE_DTYPES = {"float32": "float32", "bfloat16": "reference"}

DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
