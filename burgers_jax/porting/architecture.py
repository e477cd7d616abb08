"""What tensor shapes say about a `PDECausalModel` architecture, and the cross-check of a
declared config (the checkpoint's `config['model']` or a YAML) against them.

Shapes fix the widths, the layer count, the encoder channels and whether ResBlocks are
present. Of the attention heads they fix only `num_key_value_heads / num_attention_heads`
(k_proj has `kv * hidden / heads` rows; q_proj is `hidden x hidden` whatever the split),
so the head split itself comes from the config and cannot be checked from shapes.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from burgers_jax.model.config import ConfigError, ModelConfig

_ENC_CONV = re.compile(r"^encoder_2d\.vector_conv\.(\d+)\.weight$")
_ENC_RES = re.compile(r"^encoder_2d\.vector_conv\.\d+\.conv\.")
_LAYER = re.compile(r"^transformer\.layers\.(\d+)\.")


def infer_architecture(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    """What the tensor shapes alone say about the architecture (absent keys are skipped)."""
    arch: dict[str, Any] = {}
    if "transformer.norm.weight" in shapes:
        arch["hidden_size"] = shapes["transformer.norm.weight"][0]
    layers = {int(m.group(1)) for k in shapes if (m := _LAYER.match(k))}
    if layers:
        arch["num_hidden_layers"] = max(layers) + 1
    for name, key in (("intermediate_size", "mlp.gate_proj.weight"), ("q_rows", "self_attn.q_proj.weight"),
                      ("k_rows", "self_attn.k_proj.weight")):
        full = f"transformer.layers.0.{key}"
        if full in shapes:
            arch[name] = shapes[full][0]
    convs = sorted((int(m.group(1)), shapes[k]) for k in shapes if (m := _ENC_CONV.match(k)))
    convs = [s for _, s in convs if len(s) == 4]
    if convs:
        arch["channels"] = tuple(s[0] for s in convs)
    if any(k.startswith("encoder_2d.") for k in shapes):
        arch["use_resblock"] = any(_ENC_RES.match(k) for k in shapes)
    return arch


def cross_check(config: ModelConfig, shapes: Mapping[str, tuple[int, ...]], source: str) -> None:
    """Raises ConfigError naming each config field that disagrees with the weights."""
    arch = infer_architecture(shapes)
    tr = config.transformer
    errors: list[str] = []

    def field(name: str, cfg: Any, weights: Any, how: str) -> None:
        if weights is not None and cfg != weights:
            errors.append(f"config model.{name}={cfg} disagrees with the weights: {how} gives {weights}")

    field("transformer.hidden_size", tr.hidden_size, arch.get("hidden_size"), "transformer.norm.weight")
    field("transformer.num_hidden_layers", tr.num_hidden_layers, arch.get("num_hidden_layers"),
          "the transformer.layers.{i} indices")
    field("transformer.intermediate_size", tr.intermediate_size, arch.get("intermediate_size"),
          "layers.0.mlp.gate_proj.weight rows")
    field("encoder.channels", list(config.encoder.channels),
          list(arch["channels"]) if "channels" in arch else None, "the encoder_2d.vector_conv conv weights")
    field("encoder.use_resblock", config.encoder.use_resblock, arch.get("use_resblock"),
          "the presence of ResBlock tensors (encoder_2d.vector_conv.*.conv.*)")
    hidden = arch.get("hidden_size", tr.hidden_size)
    heads, kv = tr.num_attention_heads, tr.num_key_value_heads
    if hidden % heads:
        errors.append(f"config model.transformer.num_attention_heads={heads} does not divide hidden_size={hidden}")
    elif "k_rows" in arch:
        errors.extend(_head_errors(hidden, heads, kv, arch["k_rows"]))
    if errors:
        raise ConfigError(f"{source}: " + "; ".join(errors))


def consistent_head_splits(hidden: int, k_rows: int) -> list[tuple[int, int]]:
    """Every (num_attention_heads, num_key_value_heads) that gives k_proj `k_rows` rows on
    `hidden`: heads divides hidden with an even head_dim (RoPE rotates halves), and
    kv = k_rows / head_dim divides heads (grouped-query attention)."""
    pairs = []
    for heads in range(1, hidden + 1):
        head_dim, rest = divmod(hidden, heads)
        if rest or head_dim % 2:
            continue
        kv, rest = divmod(k_rows, head_dim)
        if not rest and kv >= 1 and heads % kv == 0:
            pairs.append((heads, kv))
    return pairs


def _head_errors(hidden: int, heads: int, kv: int, k_rows: int) -> list[str]:
    """Head counts vs k_proj rows.

    Shapes fix only the ratio: k_proj rows = kv * head_dim = kv * hidden / heads (q_proj
    is hidden x hidden whatever the heads). So 16/4 heads on hidden 768 (head_dim 48,
    192 rows) and 12/4 (head_dim 64, 256 rows) are told apart, but 16/4, 12/3 and 8/2
    are not: a wrong split that keeps the ratio converts silently. When the declared
    split disagrees, every split consistent with the shapes is listed, none guessed.
    """
    head_dim = hidden // heads
    if kv * head_dim == k_rows:
        return []
    pairs = consistent_head_splits(hidden, k_rows)
    listed = ", ".join(f"({h}, {k})" for h, k in pairs) or "none"
    return [f"config model.transformer.num_attention_heads={heads} / num_key_value_heads={kv} disagree with the "
            f"weights: k_proj has {k_rows} rows but num_key_value_heads({kv}) x head_dim({head_dim} = hidden_size "
            f"{hidden} / num_attention_heads {heads}) = {kv * head_dim}. (num_attention_heads, "
            f"num_key_value_heads) consistent with the weights: {listed}. Shapes cannot tell these apart: take "
            "the split from the training config the checkpoint was trained with (--config FILE)"]
