"""Transformer block (pre-norm: attention, then a dense SwiGLU or an MoE FFN) and the looped-block extras:
the loop-index signal and depth-wise LoRA, which let iteration t behave differently from iteration t+1 while the
weights stay shared."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from mythos.model.attention import LayerCache, build_attention
from mythos.model.config import ModelConfig
from mythos.model.moe import MoE, SwiGLU
from mythos.model.norm import RMSNorm


class Block(nn.Module):
    """x + Attn(norm x), then + FFN(norm x). Returns (x, routed-token counts [E] or None for a dense FFN)."""

    def __init__(self, cfg: ModelConfig, moe: bool) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.attn = build_attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.ffn = MoE(cfg) if moe else SwiGLU(cfg.dim, cfg.dense_ffn_dim)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x_BTD, cos_TF, sin_TF, cache: LayerCache | None = None):
        x_BTD = x_BTD + self.drop(self.attn(self.attn_norm(x_BTD), cos_TF, sin_TF, cache))
        y = self.ffn(self.ffn_norm(x_BTD))
        load_E = None
        if isinstance(y, tuple):
            y, load_E = y
        return x_BTD + self.drop(y), load_E


def loop_signal(t: int, dim: int, device=None) -> torch.Tensor:
    """Sinusoidal encoding of the loop index [dim] (fp32): defined for any t, so loops past the training count get
    a signal too (no learned table to run off the end of)."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=device, dtype=torch.float32) / max(half, 1))
    ang = t * freq
    sig = torch.cat((ang.sin(), ang.cos()))
    return torch.nn.functional.pad(sig, (0, dim - 2 * half))


class DepthLoRA(nn.Module):
    """delta = up(down(y) ⊙ scale[t]): a rank-r correction whose per-loop scale vector differs by loop index
    (loops past loops.max reuse the last scale). `up` starts at zero, so at init every loop is the same block."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        r = cfg.lora_rank
        self.down = nn.Linear(cfg.dim, r, bias=False)
        self.up = nn.Parameter(torch.zeros(r, cfg.dim))
        self.scale = nn.Parameter(torch.ones(cfg.loops.max, r))

    def forward(self, y_BTD: torch.Tensor, t: int) -> torch.Tensor:
        s = self.scale[min(t, self.scale.shape[0] - 1)]
        z = self.down(y_BTD)
        return (z * s.to(z.dtype)) @ self.up.to(z.dtype)
