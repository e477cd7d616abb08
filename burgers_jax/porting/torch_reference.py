"""The PyTorch `PDECausalModel` (docs/model_and_formats.md, "The model") on top of `transformers.LlamaModel`.

The independent side of every parity test and of `burgers-convert --verify`, written
from the documented model: state-dict keys and shapes are those of the original (`encoder_2d.…`,
`transformer.layers.{i}.…`, `transformer.norm.weight`, `decoder_2d.…`; no token
embedding, no rotary buffers). Also writes checkpoints in the `best.pt` and
`best_lora.pt` formats of docs/model_and_formats.md, "Files".

Shapes: B batch, T frames, H/W grid (128), C channels (6), S = T*256 tokens, D hidden.

transformers 5.x mask handling (checked in 5.24, `masking_utils._preprocess_mask_arguments`):
an `attention_mask` that is already 4D is returned as-is by `create_causal_mask`, so the
additive float mask `[1, 1, S, S]` (0 allowed, -inf not) reaches the attention
unchanged. We select `attn_implementation="eager"`, whose softmax runs in float32 and
is cast back (the semantics the Flax port reproduces); the block causality is proven
in tests/model/test_model_parity.py.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Mapping

from burgers_jax.model.config import architecture
from burgers_jax.porting import torch_missing

try:
    import torch
    from torch import nn
except ImportError as e:  # the optional `torch` extra
    raise torch_missing(__name__) from e

from burgers_jax.porting.torch_checkpoint import model_section

TOKENS_PER_FRAME = 256
STD_EPS = 1e-6


def small_model_config_dict() -> dict[str, Any]:
    """The tiny architecture (burgers_jax.model.config.ARCHITECTURES) at 128x128, YAML-shaped:
    `{'model': {...}}` without a lora section. Only the numbers are shared with the Flax
    side; the PyTorch model built from them is this module's own."""
    return architecture_config_dict("tiny")


def architecture_config_dict(name: str) -> dict[str, Any]:
    """One of the project's architectures as a YAML-shaped `{'model': {...}}` dict."""
    model = architecture(name).to_dict()
    model.pop("lora")
    return {"model": model}


# ----------------------------------------------------------------------------- encoder / decoder


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, padding_mode="replicate")


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Sequential(nn.GroupNorm(8, c, eps=1e-5), nn.GELU(), conv3x3(c, c),
                                  nn.GroupNorm(8, c, eps=1e-5), nn.GELU(), conv3x3(c, c))

    def forward(self, x):
        return x + self.conv(x)


def encoder_branch(channels, use_resblock: bool) -> nn.Sequential:
    layers, cin = [], 3
    for c in channels:
        layers += [conv3x3(cin, c, stride=2), nn.GELU()] + ([ResBlock(c)] if use_resblock else [])
        cin = c
    return nn.Sequential(*layers)


def mix_block(mid: int, use_resblock: bool) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(mid, mid, 1), nn.GELU(), *([ResBlock(mid)] if use_resblock else []))


def decoder_branch(channels, use_resblock: bool) -> nn.Sequential:
    c1, c2, c3 = channels
    layers, cin = [], c3
    for j, c in enumerate((c2, c1, 3)):
        if use_resblock:
            layers.append(ResBlock(cin))
        layers.append(nn.ConvTranspose2d(cin, c, 4, stride=2, padding=1))
        if j < 2:
            layers.append(nn.GELU())
        cin = c
    return nn.Sequential(*layers)


class Encoder2d(nn.Module):
    def __init__(self, channels, use_resblock: bool, hidden: int):
        super().__init__()
        mid = 2 * channels[2]
        self.vector_conv = encoder_branch(channels, use_resblock)
        self.scalar_conv = encoder_branch(channels, use_resblock)
        self.fusion = mix_block(mid, use_resblock)
        self.proj = nn.Linear(mid, hidden)

    def forward(self, x):  # x [B, T, H, W, 6] (normalized)
        b, t, h, w, c = x.shape
        x = x.reshape(b * t, h, w, c).permute(0, 3, 1, 2)
        f = self.fusion(torch.cat([self.vector_conv(x[:, :3]), self.scalar_conv(x[:, 3:])], dim=1))
        f = f.permute(0, 2, 3, 1).reshape(b, t * f.shape[2] * f.shape[3], f.shape[1])  # t*256 + row*16 + col
        return self.proj(f)


class Decoder2d(nn.Module):
    def __init__(self, channels, use_resblock: bool, hidden: int):
        super().__init__()
        self.c3 = channels[2]
        mid = 2 * channels[2]
        self.proj = nn.Linear(hidden, mid)
        self.split = mix_block(mid, use_resblock)
        self.vector_conv = decoder_branch(channels, use_resblock)
        self.scalar_conv = decoder_branch(channels, use_resblock)

    def forward(self, tokens):  # [B, S, D] -> [B, T, 128, 128, 6]
        b, s, _ = tokens.shape
        t = s // TOKENS_PER_FRAME
        side = int(math.isqrt(TOKENS_PER_FRAME))
        h = self.proj(tokens).reshape(b * t, side, side, -1).permute(0, 3, 1, 2)
        h = self.split(h)
        out = torch.cat([self.vector_conv(h[:, : self.c3]), self.scalar_conv(h[:, self.c3:])], dim=1)
        return out.reshape(b, t, *out.shape[1:]).permute(0, 1, 3, 4, 2)


# ----------------------------------------------------------------------------- the model


def block_causal_mask(num_frames: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """[1, 1, S, S] additive mask: 0 where frame(key) <= frame(query), -inf elsewhere."""
    frame = torch.arange(num_frames * TOKENS_PER_FRAME, device=device) // TOKENS_PER_FRAME
    allowed = frame[None, :] <= frame[:, None]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, float("-inf"))
    return mask[None, None]


class PDECausalModel(nn.Module):
    def __init__(self, model_cfg: Mapping[str, Any], attn_implementation: str = "eager"):
        super().__init__()
        from transformers import LlamaConfig, LlamaModel

        enc = model_cfg.get("encoder", {})
        if enc.get("version", "v2") != "v2":
            raise ValueError(f"encoder.version={enc.get('version')!r}: only v2")
        channels = [int(c) for c in enc.get("channels", (64, 128, 256))]
        use_resblock = bool(enc.get("use_resblock", True))
        tr = dict(model_cfg["transformer"])
        hidden = int(tr["hidden_size"])
        self.noise_level = float(model_cfg.get("noise_level", 0.0))
        self.encoder_2d = Encoder2d(channels, use_resblock, hidden)
        llama_cfg = LlamaConfig(
            vocab_size=1, bos_token_id=None, eos_token_id=None, pad_token_id=None,
            hidden_size=hidden, intermediate_size=int(tr["intermediate_size"]),
            num_hidden_layers=int(tr["num_hidden_layers"]), num_attention_heads=int(tr["num_attention_heads"]),
            num_key_value_heads=int(tr["num_key_value_heads"]), hidden_act=tr.get("hidden_act", "silu"),
            max_position_embeddings=int(tr.get("max_position_embeddings", 4096)),
            rms_norm_eps=float(tr.get("rms_norm_eps", 1e-5)),
            rope_parameters={"rope_type": "default", "rope_theta": float(tr.get("rope_theta", 500000.0))},
            attention_dropout=float(tr.get("attention_dropout", 0.0)), use_cache=False,
            attn_implementation=attn_implementation,
        )
        self.transformer = LlamaModel(llama_cfg)
        del self.transformer.embed_tokens  # fed inputs_embeds; no token embedding in the state dict
        self.transformer.embed_tokens = None
        self.decoder_2d = Decoder2d(channels, use_resblock, hidden)

    def forward(self, x: torch.Tensor, return_intermediates: bool = False):
        if x.ndim != 5:
            raise ValueError(f"input must be [B, T, H, W, C], got {tuple(x.shape)}")
        b, t = x.shape[:2]
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = x.std(dim=(2, 3), keepdim=True) + STD_EPS  # unbiased (N-1)
        xn = (x - mean) / std
        if self.training and self.noise_level > 0:
            xn = xn + self.noise_level * torch.randn_like(xn)
        tokens = self.encoder_2d(xn)
        mask = block_causal_mask(t, dtype=tokens.dtype, device=tokens.device)
        hidden = self.transformer(inputs_embeds=tokens, attention_mask=mask, use_cache=False).last_hidden_state
        dec = self.decoder_2d(hidden)
        out = dec * std + mean
        if return_intermediates:
            return out, {"encoder_tokens": tokens, "transformer_output": hidden, "decoder_output": dec}
        return out


@contextlib.contextmanager
def seeded(seed: int | None):
    """torch's global generator seeded with `seed` inside, and as it was after (a forked
    generator); `None` leaves it alone."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_model(config_dict: Mapping[str, Any], attn_implementation: str = "eager",
                seed: int | None = None) -> PDECausalModel:
    """From `config['model']` (or the full config holding it); float32, eval mode. The
    original runs HF's "eager" attention with the dense 4D mask; "sdpa" is PyTorch's
    fused attention (benchmarks). With `seed`, the default init draws from that seed and
    leaves torch's global generator as it was: the weights no longer depend on what ran
    before (a parity test's round-off depends on its weights)."""
    with seeded(seed):
        return PDECausalModel(model_section(config_dict), attn_implementation).eval()


def run_with_intermediates(model: PDECausalModel, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """{'encoder_tokens', 'transformer_output', 'decoder_output', 'output'} for input x [B, T, H, W, 6]."""
    with torch.no_grad():
        out, inter = model(x, return_intermediates=True)
    return {**inter, "output": out}


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0, scale: float = 0.5) -> nn.Module:
    """Random norm weights (1 + U(-scale, scale)) and random biases, so a mis-mapped norm or
    bias shows in a parity test (defaults are ones/zeros, which hide permutations)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        is_norm = p.ndim == 1 and ("norm" in name or ".conv.0." in name or ".conv.3." in name)
        if is_norm:
            p.copy_(1.0 + scale * (2 * torch.rand(p.shape, generator=g) - 1))
        elif name.endswith("bias"):
            p.copy_(scale * (2 * torch.rand(p.shape, generator=g) - 1))
    return model


# ----------------------------------------------------------------------------- LoRA (peft)


def wrap_lora(model: PDECausalModel, r: int, alpha: float, dropout: float = 0.0,
              target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
              seed: int | None = None):
    """Wraps `model.transformer` with `peft.get_peft_model` (in place); returns the model.

    PEFT initializes A Kaiming-uniform and B zero; the adapter keys are
    `base_model.model.layers.{i}.{self_attn|mlp}.{name}.lora_{A|B}.default.weight`.
    With `seed`, A draws from that seed (torch's global generator left as it was).
    """
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=int(r), lora_alpha=float(alpha), lora_dropout=float(dropout),
                     target_modules=list(target_modules), bias="none")
    with seeded(seed):
        model.transformer = get_peft_model(model.transformer, cfg)
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors of a `wrap_lora`-ed model (or of its peft transformer), PEFT key names."""
    peft_model = model.transformer if isinstance(model, PDECausalModel) else model
    return {k: v.detach().clone() for k, v in peft_model.state_dict().items() if ".lora_" in k}


def _optimizer_and_scheduler(params):
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-4, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    return opt.state_dict(), sched.state_dict()


def write_best_pt(path, model: PDECausalModel, config_dict: Mapping[str, Any], global_step: int = 0,
                  val_rmse: float = 0.0, val_nrmse: float = 0.0, best_val_nrmse: float = 0.0) -> None:
    """`best.pt` of docs/model_and_formats.md, "Files": bf16 `model_state_dict` plus the training bookkeeping."""
    config = dict(config_dict) if "model" in config_dict else {"model": dict(config_dict)}
    sd = {k: v.detach().to(torch.bfloat16).clone() for k, v in model.state_dict().items()}
    opt_sd, sched_sd = _optimizer_and_scheduler(list(model.parameters()))
    torch.save({
        "global_step": int(global_step),
        "model_state_dict": sd,
        "optimizer_state_dict": opt_sd,
        "scheduler_state_dict": sched_sd,
        "val_rmse": float(val_rmse),
        "val_nrmse": float(val_nrmse),
        "best_val_nrmse": float(best_val_nrmse),
        "config": config,
    }, path)


def write_best_lora_pt(path, peft_model: nn.Module, config_dict: Mapping[str, Any], global_step: int = 0,
                       metrics: Mapping[str, float] | None = None) -> None:
    """`best_lora.pt` in the PyTorch fine-tuning script's format (float32 adapters).

    `config_dict` is the fine-tuning config; its `model.lora` section (r, alpha,
    dropout, target_modules) is filled from the peft config when absent.
    """
    config = dict(config_dict) if "model" in config_dict else {"model": dict(config_dict)}
    pm = peft_model.transformer if isinstance(peft_model, PDECausalModel) else peft_model
    model_sec = dict(config["model"])
    if "lora" not in model_sec:
        pc = pm.peft_config["default"]
        model_sec["lora"] = {"r": int(pc.r), "alpha": float(pc.lora_alpha), "dropout": float(pc.lora_dropout),
                             "target_modules": sorted(pc.target_modules)}
    config["model"] = model_sec
    sd = {k: v.float() for k, v in lora_state_dict(pm).items()}
    opt_sd, sched_sd = _optimizer_and_scheduler([p for p in pm.parameters() if p.requires_grad])
    torch.save({
        "global_step": int(global_step),
        "lora_state_dict": sd,
        "optimizer_state_dict": opt_sd,
        "scheduler_state_dict": sched_sd,
        "metrics": dict(metrics or {"val_pde_loss": 0.0}),
        "config": config,
    }, path)


__all__ = ["PDECausalModel", "build_model", "run_with_intermediates", "randomize_", "wrap_lora",
           "lora_state_dict", "write_best_pt", "write_best_lora_pt", "small_model_config_dict",
           "block_causal_mask", "burgers_pde_loss_upwind", "architecture_config_dict"]


# ----------------------------------------------------------------------------- the residual, as the PyTorch system writes it


def burgers_pde_loss_upwind(pred, left, right, bottom, top, nu: float, dt: float):
    """The PyTorch recipe's residual loss (docs/model_and_formats.md, "The PDE residual"), written the way the PyTorch
    system writes it: vectorised over the batch, ghost cells by `torch.cat`, upwinding by
    `torch.where`, one scalar (the batch-mean) nu. The yardstick of the benchmarks (a
    slower copy would flatter us).

    pred [B, T, H, W, 2]; left/right [B, T, H, 1, 2]; bottom/top [B, T, 1, W, 2].
    -> (total, loss_u, loss_v, res_u, res_v), residuals [B, T-1, H, W].
    """
    dx = 1.0 / pred.shape[2]

    def padded(c):
        f = pred[..., c]
        gl, gr = 2 * left[..., c] - f[..., :, :1], 2 * right[..., c] - f[..., :, -1:]
        gb, gt = 2 * bottom[..., c] - f[..., :1, :], 2 * top[..., c] - f[..., -1:, :]
        corner = lambda a, b: (a + b) / 2  # noqa: E731
        bottom_row = torch.cat([corner(gb[..., :1], gl[..., :1, :]), gb, corner(gb[..., -1:], gr[..., :1, :])], dim=-1)
        top_row = torch.cat([corner(gt[..., :1], gl[..., -1:, :]), gt, corner(gt[..., -1:], gr[..., -1:, :])], dim=-1)
        return torch.cat([bottom_row, torch.cat([gl, f, gr], dim=-1), top_row], dim=-2)[:, 1:]

    u, v = pred[:, 1:, ..., 0], pred[:, 1:, ..., 1]
    res = []
    for c in range(2):
        p = padded(c)
        centre = p[..., 1:-1, 1:-1]
        back_x, fwd_x = (centre - p[..., 1:-1, :-2]) / dx, (p[..., 1:-1, 2:] - centre) / dx
        back_y, fwd_y = (centre - p[..., :-2, 1:-1]) / dx, (p[..., 2:, 1:-1] - centre) / dx
        f_x = torch.where(u >= 0, back_x, fwd_x)
        f_y = torch.where(v >= 0, back_y, fwd_y)
        lap = ((p[..., 1:-1, 2:] - 2 * centre + p[..., 1:-1, :-2])
               + (p[..., 2:, 1:-1] - 2 * centre + p[..., :-2, 1:-1])) / dx ** 2
        f_t = (pred[:, 1:, ..., c] - pred[:, :-1, ..., c]) / dt
        res.append(f_t + u * f_x + v * f_y - nu * lap)
    loss_u, loss_v = (res[0] ** 2).mean(), (res[1] ** 2).mean()
    return loss_u + loss_v, loss_u, loss_v, res[0], res[1]
