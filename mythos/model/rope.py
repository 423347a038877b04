"""Rotary position embedding in real arithmetic (cos/sin tables, no complex tensors), so bf16 autocast and
torch.compile treat it like any other elementwise op. Tables are computed in fp32 for the positions asked for."""
from __future__ import annotations

import torch


def rope_tables(pos0: int, length: int, dim: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape [length, dim/2] for positions pos0 .. pos0+length-1 (fp32)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim))
    pos = torch.arange(pos0, pos0 + length, device=device, dtype=torch.float32)
    ang_TF = torch.outer(pos, inv_freq)
    return ang_TF.cos(), ang_TF.sin()


def apply_rope(x_BHTR: torch.Tensor, cos_TF: torch.Tensor, sin_TF: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., :R/2], x[..., R/2:]) by the position angle (the "rotate-half" layout)."""
    x1, x2 = x_BHTR.float().chunk(2, dim=-1)  # chunk, not slicing: its backward is one cat, not two zero-fills
    out = torch.cat((x1 * cos_TF - x2 * sin_TF, x2 * cos_TF + x1 * sin_TF), dim=-1)
    return out.to(x_BHTR.dtype)


def rope_at(pos_BT: torch.Tensor, dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [B, 1, T, dim/2] for per-row positions given as a tensor (padded rows; a static cache's position),
    so a compiled step reads the position as data and one graph serves every position. The same arithmetic as
    rope_tables: integer positions are exact in fp32."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, device=pos_BT.device, dtype=torch.float32) / dim))
    ang_BTF = pos_BT.to(torch.float32)[..., None] * inv_freq
    return ang_BTF.cos()[:, None], ang_BTF.sin()[:, None]
