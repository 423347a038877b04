"""Attention: MLA (DeepSeek-V2 latent attention) and GQA, both through F.scaled_dot_product_attention, plus the KV
cache used by generation.

MLA caches only the normalised latent c_kv [kv_lora_rank] and ONE RoPE key [rope_dim] shared by all heads, per token
per (layer, loop); keys/values for the heads are re-expanded from the latent at every step (no weight absorption:
simpler, and exactly the full-forward arithmetic, so cached decode matches the full forward).

`attention.position = "none"` skips the rotation (MLA's rope dims become plain dims): order then comes only from the
causal mask, so nothing in the block depends on absolute positions never seen in training.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mythos.model.config import ModelConfig
from mythos.model.norm import RMSNorm
from mythos.model.rope import apply_rope


class LayerCache:
    """Cache of one attention call site (a prelude/coda layer, or the looped block at one loop index).

    Named tensors [B, S, ...] grow along S in a buffer that doubles, so decode is not quadratic in copies."""

    def __init__(self) -> None:
        self.buffers: dict[str, torch.Tensor] = {}
        self.length = 0

    def update(self, **new_BT: torch.Tensor) -> dict[str, torch.Tensor]:
        """Append this chunk's tensors; return every name's tensor for all cached positions (views)."""
        t_new = next(iter(new_BT.values())).shape[1]
        end = self.length + t_new
        for name, x in new_BT.items():
            buf = self.buffers.get(name)
            if buf is None or buf.shape[1] < end:
                cap = max(end, 2 * (buf.shape[1] if buf is not None else 0), 16)
                grown = x.new_empty((x.shape[0], cap, *x.shape[2:]))
                if buf is not None:
                    grown[:, : self.length] = buf[:, : self.length]
                self.buffers[name] = buf = grown
            buf[:, self.length:end] = x
        self.length = end
        return {name: buf[:, :end] for name, buf in self.buffers.items()}

    def bytes_per_token(self) -> int:
        """Bytes stored per token (per batch row) at this call site."""
        return sum(b[0, 0].numel() * b.element_size() for b in self.buffers.values())


class KVCache:
    """All call sites of one generation: `cache.layer(key)` with key like ("prelude", 0) or ("loop", t)."""

    def __init__(self, skip_halted: bool = False) -> None:
        self.layers: dict[tuple, LayerCache] = {}
        self.pos = 0  # tokens already consumed; the next forward's first position
        self.skip_halted = skip_halted  # ACT at inference: halted positions stop looping (mythos/model/halting.py)

    def layer(self, key: tuple) -> LayerCache:
        if key not in self.layers:
            self.layers[key] = LayerCache()
        return self.layers[key]

    def bytes_per_token_per_loop(self) -> int:
        """Cache bytes one token costs in the looped block at one loop index."""
        loop_layers = [c for k, c in self.layers.items() if k[0] == "loop"]
        return loop_layers[0].bytes_per_token() if loop_layers else 0


def _attend(q_BHTd: torch.Tensor, k_BHSd: torch.Tensor, v_BHSd: torch.Tensor, enable_gqa: bool = False):
    """Causal SDPA where the T queries are the last T of the S keys (S > T when a cache holds a prefix)."""
    t, s = q_BHTd.shape[2], k_BHSd.shape[2]
    if s == t:
        return F.scaled_dot_product_attention(q_BHTd, k_BHSd, v_BHSd, is_causal=True, enable_gqa=enable_gqa)
    if t == 1:
        return F.scaled_dot_product_attention(q_BHTd, k_BHSd, v_BHSd, enable_gqa=enable_gqa)
    pos_q = torch.arange(s - t, s, device=q_BHTd.device)
    mask_TS = torch.arange(s, device=q_BHTd.device)[None, :] <= pos_q[:, None]
    return F.scaled_dot_product_attention(q_BHTd, k_BHSd, v_BHSd, attn_mask=mask_TS, enable_gqa=enable_gqa)


class GQA(nn.Module):
    """Grouped-query attention; RoPE on the whole head; the cache holds k (after RoPE) and v per kv-head."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv, self.hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.dim, self.n_heads * self.hd, bias=False)
        self.wkv = nn.Linear(cfg.dim, 2 * self.n_kv * self.hd, bias=False)
        self.wo = nn.Linear(self.n_heads * self.hd, cfg.dim, bias=False)
        self.rope = cfg.attention.position == "rope"

    def forward(self, x_BTD, cos_TF, sin_TF, cache: LayerCache | None = None):
        b, t, _ = x_BTD.shape
        q_BHTd = self.wq(x_BTD).view(b, t, self.n_heads, self.hd).transpose(1, 2)
        k_BTKd, v_BTKd = self.wkv(x_BTD).view(b, t, 2, self.n_kv, self.hd).unbind(2)
        if self.rope:
            q_BHTd = apply_rope(q_BHTd, cos_TF, sin_TF)
            k_BTKd = apply_rope(k_BTKd.transpose(1, 2), cos_TF, sin_TF).transpose(1, 2)
        if cache is not None:
            full = cache.update(k=k_BTKd, v=v_BTKd)
            k_BTKd, v_BTKd = full["k"], full["v"]
        o_BHTd = _attend(q_BHTd, k_BTKd.transpose(1, 2), v_BTKd.transpose(1, 2), self.n_kv != self.n_heads)
        return self.wo(o_BHTd.transpose(1, 2).reshape(b, t, -1))


class MLA(nn.Module):
    """Multi-head latent attention. Cache per token: c_kv (kv_lora_rank) + k_pe (rope_dim), nothing per head."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        a = cfg.attention
        self.n_heads, self.dn, self.dr, self.dv, self.r = cfg.n_heads, a.nope_dim, a.rope_dim, a.v_head_dim, a.kv_lora_rank
        qk = self.dn + self.dr
        if a.q_lora_rank:
            self.wq_a = nn.Linear(cfg.dim, a.q_lora_rank, bias=False)
            self.q_norm = RMSNorm(a.q_lora_rank, eps=cfg.norm_eps)
            self.wq_b = nn.Linear(a.q_lora_rank, self.n_heads * qk, bias=False)
        else:
            self.wq = nn.Linear(cfg.dim, self.n_heads * qk, bias=False)
        self.wkv_a = nn.Linear(cfg.dim, self.r + self.dr, bias=False)
        self.kv_norm = RMSNorm(self.r, eps=cfg.norm_eps)
        self.wkv_b = nn.Linear(self.r, self.n_heads * (self.dn + self.dv), bias=False)
        self.wo = nn.Linear(self.n_heads * self.dv, cfg.dim, bias=False)
        self.rope = cfg.attention.position == "rope"

    def forward(self, x_BTD, cos_TF, sin_TF, cache: LayerCache | None = None):
        b, t, _ = x_BTD.shape
        h = self.n_heads
        q = self.wq_b(self.q_norm(self.wq_a(x_BTD))) if hasattr(self, "wq_a") else self.wq(x_BTD)
        q_nope_BHTn, q_pe_BHTr = q.view(b, t, h, self.dn + self.dr).transpose(1, 2).split([self.dn, self.dr], -1)
        c_BTR, k_pe_BTr = self.wkv_a(x_BTD).split([self.r, self.dr], -1)
        c_BTR = self.kv_norm(c_BTR)
        if self.rope:
            q_pe_BHTr = apply_rope(q_pe_BHTr, cos_TF, sin_TF)
            k_pe_BTr = apply_rope(k_pe_BTr[:, None], cos_TF, sin_TF)[:, 0]
        if cache is not None:
            full = cache.update(c_kv=c_BTR, k_pe=k_pe_BTr)
            c_BTR, k_pe_BTr = full["c_kv"], full["k_pe"]
        s = c_BTR.shape[1]
        k_nope_BHSn, v_BHSv = self.wkv_b(c_BTR).view(b, s, h, self.dn + self.dv).transpose(1, 2).split(
            [self.dn, self.dv], -1)
        k_BHSq = torch.cat((k_nope_BHSn, k_pe_BTr[:, None].expand(b, h, s, self.dr).to(k_nope_BHSn.dtype)), -1)
        q_BHTq = torch.cat((q_nope_BHTn, q_pe_BHTr.to(q_nope_BHTn.dtype)), -1)
        o_BHTv = _attend(q_BHTq, k_BHSq, v_BHSv)
        return self.wo(o_BHTv.transpose(1, 2).reshape(b, t, h * self.dv))


def build_attention(cfg: ModelConfig) -> nn.Module:
    return MLA(cfg) if cfg.attention.kind == "mla" else GQA(cfg)
