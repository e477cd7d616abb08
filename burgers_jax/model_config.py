"""Architecture description of `PDECausalModel`, mirroring `config['model']` of the
PyTorch training YAML (SPEC.md section 2).

The pretrained checkpoint carries this config; the converter cross-checks it against
the tensor shapes, so these dataclasses never guess an architecture.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
# Precision policies (DESIGN.md "Numerics policy"):
#   float32     everything float32 (parity runs)
#   reference   bf16 weights and activations, as the PyTorch recipe
#   fp32_output bf16 trunk; the decoder's last stage and denormalization in float32
PRECISIONS = ("float32", "reference", "fp32_output")


class ConfigError(ValueError):
    """A model config that is incomplete or disagrees with the weights."""


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


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    r: int = 0  # 0 means no adapters
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = DEFAULT_LORA_TARGETS

    @property
    def scale(self) -> float:
        return self.alpha / self.r if self.r else 0.0


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    in_channels: int = 6
    encoder: EncoderConfig = EncoderConfig()
    transformer: TransformerConfig = TransformerConfig()
    noise_level: float = 0.0
    lora: LoraConfig = LoraConfig()

    @property
    def tokens_per_frame(self) -> int:
        return 256  # 128x128 input, three stride-2 convs -> 16x16 tokens per frame

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
        lora_d = dict(lora if lora is not None else d.get("lora", {}) or {})
        lora_fields = {f.name for f in dataclasses.fields(LoraConfig)}
        lora_cfg = LoraConfig(**{k: v for k, v in lora_d.items() if k in lora_fields})
        lora_cfg = dataclasses.replace(lora_cfg, target_modules=tuple(lora_cfg.target_modules))
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
        out["lora"]["target_modules"] = list(self.lora.target_modules)
        return out

    def with_lora(self, **kwargs) -> "ModelConfig":
        return dataclasses.replace(self, lora=dataclasses.replace(self.lora, **kwargs))


def tiny_config(**transformer_overrides) -> ModelConfig:
    """A small architecture at the real 128x128 resolution, for tests and the demo."""
    tr = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=128)
    tr.update(transformer_overrides)
    return ModelConfig(encoder=EncoderConfig(channels=(8, 16, 32)), transformer=TransformerConfig(**tr))
