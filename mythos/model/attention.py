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

    def __init__(self, owner: "KVCache | None" = None) -> None:
        self.buffers: dict[str, torch.Tensor] = {}
        self.length = 0
        self.owner = owner  # the KVCache holding this forward's padding mask (shared by all call sites)

    absorb = False  # MLA attends in the latent space (MLA._absorbed) when the cache asks for it

    @property
    def attn_mask(self) -> torch.Tensor | None:
        """[B, 1, T, S] bool (True = attend) for this forward's chunk; None: plain causal (no padding)."""
        return None if self.owner is None else self.owner.attn_mask

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
        # Padding (batched prompts of different lengths): which cached positions are real tokens, and how many real
        # tokens each row has seen (its next RoPE position). None until a chunk with padding arrives, so the
        # unpadded path stays exactly the arithmetic it always was.
        self.valid_BS: torch.Tensor | None = None
        self.seen_B: torch.Tensor | None = None
        self.attn_mask: torch.Tensor | None = None  # this forward's [B, 1, T, S] mask (None: causal, no padding)

    def layer(self, key: tuple) -> LayerCache:
        if key not in self.layers:
            self.layers[key] = LayerCache(self)
        return self.layers[key]

    def begin(self, tokens_BT: torch.Tensor, mask_BT: torch.Tensor | None = None) -> torch.Tensor | None:
        """Record the chunk about to run (mask_BT: 1 = token, 0 = padding) and set this forward's attention mask.
        Returns per-row RoPE positions [B, T] (a padded row counts only its real tokens), or None when no chunk so
        far had padding: positions are then pos .. pos+T-1 in every row, as without padding."""
        b, t = tokens_BT.shape
        if self.valid_BS is None and (mask_BT is None or bool(mask_BT.all())):
            self.attn_mask = None
            return None
        dev = tokens_BT.device
        m_BT = torch.ones(b, t, dtype=torch.bool, device=dev) if mask_BT is None else mask_BT.to(dev).bool()
        if self.valid_BS is None:  # the first padded chunk: every earlier position was a real token
            self.valid_BS = torch.ones(b, self.pos, dtype=torch.bool, device=dev)
            self.seen_B = torch.full((b,), self.pos, dtype=torch.long, device=dev)
        self.valid_BS = torch.cat((self.valid_BS, m_BT), 1)
        pos_BT, self.seen_B = padded_positions(self.seen_B, m_BT)
        idx_T = torch.arange(self.pos, self.pos + t, device=dev)
        self.attn_mask = padded_mask(idx_T, torch.arange(self.pos + t, device=dev), self.valid_BS)
        return pos_BT

    def end(self, t: int) -> None:
        """The forward of a t-token chunk is done: later chunks start after it."""
        self.pos += t

    def bytes_per_token_per_loop(self) -> int:
        """Cache bytes one token costs in the looped block at one loop index."""
        loop_layers = [c for k, c in self.layers.items() if k[0] == "loop"]
        return loop_layers[0].bytes_per_token() if loop_layers else 0


def padded_positions(seen_B: torch.Tensor, m_BT: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(RoPE positions [B, T], updated real-token counts [B]): a token's position counts only real tokens before it
    in its row, so a left-padded row gets the positions it has alone (padding gets its neighbour's, unused)."""
    pos_BT = (seen_B[:, None] + m_BT.long().cumsum(1) - 1).clamp(min=0)
    return pos_BT, seen_B + m_BT.long().sum(1)


def padded_mask(idx_T: torch.Tensor, key_S: torch.Tensor, valid_BS: torch.Tensor) -> torch.Tensor:
    """[B, 1, T, S] bool: a query at cache slot idx attends real keys at slots <= idx, and always itself (a padding
    query then has one key, not none: no NaN from an empty softmax)."""
    causal_TS = key_S[None, :] <= idx_T[:, None]
    own_TS = key_S[None, :] == idx_T[:, None]
    return ((causal_TS[None] & valid_BS[:, None, :]) | own_TS[None])[:, None]


def _attend(q_BHTd: torch.Tensor, k_BHSd: torch.Tensor, v_BHSd: torch.Tensor, enable_gqa: bool = False,
            mask_B1TS: torch.Tensor | None = None):
    """Causal SDPA where the T queries are the last T of the S keys (S > T when a cache holds a prefix); with
    mask_B1TS (padding, or a static cache's whole buffer) that mask instead."""
    if mask_B1TS is not None:
        return F.scaled_dot_product_attention(q_BHTd, k_BHSd, v_BHSd, attn_mask=mask_B1TS, enable_gqa=enable_gqa)
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
        mask = None
        if cache is not None:
            full = cache.update(k=k_BTKd, v=v_BTKd)
            k_BTKd, v_BTKd, mask = full["k"], full["v"], cache.attn_mask
        o_BHTd = _attend(q_BHTd, k_BTKd.transpose(1, 2), v_BTKd.transpose(1, 2), self.n_kv != self.n_heads, mask)
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
        mask = None
        if cache is not None:
            full = cache.update(c_kv=c_BTR, k_pe=k_pe_BTr)
            c_BTR, k_pe_BTr, mask = full["c_kv"], full["k_pe"], cache.attn_mask
        if getattr(cache, "absorb", False):
            return self._absorbed(q_nope_BHTn, q_pe_BHTr, c_BTR, k_pe_BTr, mask)
        s = c_BTR.shape[1]
        k_nope_BHSn, v_BHSv = self.wkv_b(c_BTR).view(b, s, h, self.dn + self.dv).transpose(1, 2).split(
            [self.dn, self.dv], -1)
        k_BHSq = torch.cat((k_nope_BHSn, k_pe_BTr[:, None].expand(b, h, s, self.dr).to(k_nope_BHSn.dtype)), -1)
        q_BHTq = torch.cat((q_nope_BHTn, q_pe_BHTr.to(q_nope_BHTn.dtype)), -1)
        o_BHTv = _attend(q_BHTq, k_BHSq, v_BHSv, mask_B1TS=mask)
        return self.wo(o_BHTv.transpose(1, 2).reshape(b, t, h * self.dv))


    def _absorbed(self, q_nope_BHTn, q_pe_BHTr, c_BSR, k_pe_BSr, mask):
        """Attention in the latent space (DeepSeek-V2's weight absorption): q_nope·W_uk scores the latent directly and
        the output leaves it through W_uv, so decode never re-expands the whole cache into per-head keys and values
        (S·R·H·(dn+dv) multiply-adds per loop, the bulk of a decode step). The same function in another summation
        order; used by the compiled step (a StaticKVCache with full_length)."""
        b, h, t, _ = q_nope_BHTn.shape
        w_HXR = self.wkv_b.weight.view(h, self.dn + self.dv, self.r)
        q_lat_BHTR = torch.matmul(q_nope_BHTn, w_HXR[:, :self.dn].to(q_nope_BHTn.dtype))
        q_BHTq = torch.cat((q_lat_BHTR, q_pe_BHTr.to(q_lat_BHTR.dtype)), -1)
        k_B1Sq = torch.cat((c_BSR, k_pe_BSr.to(c_BSR.dtype)), -1)[:, None]
        o_BHTR = F.scaled_dot_product_attention(q_BHTq, k_B1Sq, c_BSR[:, None], attn_mask=mask, enable_gqa=True,
                                                scale=(self.dn + self.dr) ** -0.5)
        o_BHTv = torch.matmul(o_BHTR, w_HXR[:, self.dn:].transpose(1, 2).to(o_BHTR.dtype))
        return self.wo(o_BHTv.transpose(1, 2).reshape(b, t, h * self.dv))


def build_attention(cfg: ModelConfig) -> nn.Module:
    return MLA(cfg) if cfg.attention.kind == "mla" else GQA(cfg)
