"""Architecture description of `PDECausalModel`, mirroring `config['model']` of the
PyTorch training YAML (docs/model_and_formats.md, "Files").

The pretrained checkpoint carries this config; the converter cross-checks it against
the tensor shapes, so these dataclasses never guess an architecture.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

from burgers_jax.errors import UserError
from burgers_jax.model.names import DEFAULT_LORA_TARGETS, INFERENCE_DTYPES, POLICY_NAMES

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


class ConfigError(UserError):
    """A model config that is incomplete or disagrees with the weights."""


GRID = 128  # the model's input grid (n x n cells): its token count and positions assume it


@dataclasses.dataclass(frozen=True)
class Policy:
    """Which dtype each part of the model computes in, by a name of POLICY_NAMES (their one
    home, `burgers_jax.model.names`, imports no jax: the commands' flags list them).

    param_dtype       frozen weights (adapters and optimizer state are always float32)
    compute_dtype     the trunk: convs, matmuls, activations
    input_dtype       the model input (and the prepended frame 0 of a training window)
    output_dtype      the last ConvTranspose of each decoder branch and the denormalization
    stats_dtype       the per-frame normalization statistics (mean, std)
    matmul_precision  `jax.default_matmul_precision` for inference ("highest": no TF32)

    GroupNorm, RMSNorm and softmax statistics are float32 under every policy (as torch/HF).
    """

    name: str
    param_dtype: Any
    compute_dtype: Any
    input_dtype: Any
    output_dtype: Any
    stats_dtype: Any
    matmul_precision: str = "default"

    @classmethod
    def named(cls, name: str) -> "Policy":
        """`float32` (parity runs), `reference` (all bf16, as the PyTorch recipe) or
        `fp32_output` (bf16 trunk; input statistics, last decoder stage and output float32)."""
        policies = _policies()
        if name not in policies:
            raise ConfigError(f"unknown precision policy {name!r}; valid: {', '.join(policies)}")
        return policies[name]

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return POLICY_NAMES

    @classmethod
    def for_dtype(cls, dtype: str) -> "Policy":
        """The policy a user means by an inference dtype (`predict --dtype`, INFERENCE_DTYPES)."""
        if dtype not in INFERENCE_DTYPES:
            raise ConfigError(f"unknown dtype {dtype!r}; valid: {', '.join(INFERENCE_DTYPES)}")
        return cls.named(INFERENCE_DTYPES[dtype])


def _policies() -> dict[str, Policy]:
    """The policy of each of POLICY_NAMES, in its order (the names themselves live jax-free in
    burgers_jax.model.names, for the commands' flags; a test holds the two together)."""
    f32, bf16 = jnp.float32, jnp.bfloat16
    return {
        "float32": Policy("float32", f32, f32, f32, f32, f32, matmul_precision="highest"),
        "reference": Policy("reference", bf16, bf16, bf16, bf16, bf16),
        "fp32_output": Policy("fp32_output", bf16, bf16, f32, f32, f32),
    }


FLOAT32 = Policy.named("float32")  # the parity policy, the default of the model and of predict


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    version: str = "v2"
    channels: tuple[int, int, int] = (64, 128, 256)
    use_resblock: bool = True


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    hidden_size: int = 768
    num_hidden_layers: int = 10
    num_attention_heads: int = 12
    num_key_value_heads: int = 4
    intermediate_size: int = 3072
    hidden_act: str = "silu"
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    attention_dropout: float = 0.0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def projection_shapes(self) -> dict[str, tuple[int, int]]:
        """The kernel shape `(in, out)` of each projection a LoRA target names (every layer alike)."""
        h, q, kv, i = (self.hidden_size, self.num_attention_heads * self.head_dim,
                       self.num_key_value_heads * self.head_dim, self.intermediate_size)
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    r: int = 0  # 0 means no adapters
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = DEFAULT_LORA_TARGETS

    @property
    def scale(self) -> float:
        return self.alpha / self.r if self.r else 0.0

    def rank_of(self, projection: str) -> int:
        """The adapter rank of a transformer projection (`q_proj`, ..., `down_proj`): `r`
        when targeted, else 0. The one rule of adapter placement: the model's layers,
        `lora.lora_module_paths` and the PyTorch mapping all ask it."""
        return self.r if projection in self.target_modules else 0

    def to_dict(self) -> dict[str, Any]:
        return {"r": self.r, "alpha": self.alpha, "dropout": self.dropout,
                "target_modules": list(self.target_modules)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, source: str = "lora config",
                  partial: bool = False) -> "LoraConfig":
        """From our `lora_config.json`, the YAML's `model.lora` or PEFT's names
        (`lora_alpha`, `lora_dropout`); unknown keys are ignored. A missing r or alpha is
        an error naming `source`, unless `partial` (then missing fields keep defaults)."""
        d = dict(d or {})
        for peft_name, ours in (("lora_alpha", "alpha"), ("lora_dropout", "dropout")):
            if peft_name in d and ours not in d:
                d[ours] = d[peft_name]
        if partial:
            d = {**cls().to_dict(), **d}
        missing = [k for k in ("r", "alpha") if k not in d]
        if missing:
            raise ConfigError(f"{source}: lacks field {', '.join(map(repr, missing))}")
        targets = d.get("target_modules")
        try:
            return cls(r=int(d["r"]), alpha=float(d["alpha"]), dropout=float(d.get("dropout", 0.0)),
                       target_modules=tuple(targets) if targets is not None else DEFAULT_LORA_TARGETS)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{source}: {e}") from None


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    in_channels: int = 6
    encoder: EncoderConfig = EncoderConfig()
    transformer: TransformerConfig = TransformerConfig()
    noise_level: float = 0.0
    lora: LoraConfig = LoraConfig()

    @property
    def tokens_per_frame(self) -> int:
        return (GRID // 8) ** 2  # three stride-2 convs: 16x16 tokens per 128x128 frame

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], lora: Mapping[str, Any] | None = None) -> "ModelConfig":
        """Builds from `config['model']` of the PyTorch YAML (unknown keys ignored)."""
        try:
            enc = d.get("encoder", {})
            tr = d["transformer"]
        except (KeyError, AttributeError) as e:
            raise ConfigError(f"model config lacks field {e}") from None
        enc_fields = {f.name for f in dataclasses.fields(EncoderConfig)}
        tr_fields = {f.name for f in dataclasses.fields(TransformerConfig)}
        encoder = EncoderConfig(**{k: v for k, v in dict(enc).items() if k in enc_fields})
        encoder = dataclasses.replace(encoder, channels=tuple(int(c) for c in encoder.channels))
        if encoder.version != "v2":
            raise ConfigError(f"model.encoder.version={encoder.version!r}: only 'v2' is supported")
        transformer = TransformerConfig(**{k: v for k, v in dict(tr).items() if k in tr_fields})
        # The base model's section may carry a partial lora block: missing fields keep
        # their defaults here (adapters themselves are read strictly, with their files).
        lora_cfg = LoraConfig.from_dict(lora if lora is not None else d.get("lora"), "model.lora", partial=True)
        return cls(
            in_channels=int(d.get("in_channels", 6)),
            encoder=encoder,
            transformer=transformer,
            noise_level=float(d.get("noise_level", 0.0)),
            lora=lora_cfg,
        )

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["encoder"]["channels"] = list(self.encoder.channels)
        out["lora"] = self.lora.to_dict()
        return out

    def with_lora(self, lora: LoraConfig | None = None, **kwargs) -> "ModelConfig":
        """A copy whose `lora` is `lora` (when given), with `kwargs` fields replaced."""
        return dataclasses.replace(self, lora=dataclasses.replace(lora or self.lora, **kwargs))


# The architectures the project builds itself, all at the real 128x128 resolution (one
# table: tests, the stand-in's pretraining, the benchmarks and the PyTorch reference read it).
ARCHITECTURES = {
    # tests and smoke runs (~0.2 M parameters)
    "tiny": ModelConfig(encoder=EncoderConfig(channels=(8, 16, 32)), transformer=TransformerConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128)),
    # the pretrained stand-in (assets/standin, 1.65 M parameters) and the CPU benchmarks
    "small": ModelConfig(encoder=EncoderConfig(channels=(16, 32, 64)), transformer=TransformerConfig(
        hidden_size=128, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2, intermediate_size=512)),
    # the reference model: hidden 768, 10 layers, 12/4 heads, channels 64/128/256
    "full": ModelConfig(),
}


def architecture(name: str) -> ModelConfig:
    """One of `ARCHITECTURES` by name."""
    if name not in ARCHITECTURES:
        raise ConfigError(f"architecture {name!r}: one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def tiny_config(**transformer_overrides) -> ModelConfig:
    """The tiny architecture (tests, the demo's smoke runs), with transformer fields replaced."""
    base = ARCHITECTURES["tiny"]
    return dataclasses.replace(base, transformer=dataclasses.replace(base.transformer, **transformer_overrides))
