"""A preallocated (static) KV cache: each call site's tensors (MLA: latent c_kv + shared RoPE key; GQA: k, v) live in
[B, max_len, ...] buffers allocated once (at prefill) and written in place at the position, so decode neither
allocates nor copies the past (gpt-fast's layout).

Two ways to read it back:
- views (default): attention sees the filled prefix `buf[:, :pos+T]`, as the dynamic KVCache does, so logits equal
  the dynamic cache's bit for bit in fp32 (tests/model/test_static_cache.py);
- `full_length=True`: attention always sees the whole buffer behind a mask and the position is a tensor
  (`pos_t`), written with index_copy_: the same shapes and no Python int at every position, so one compiled graph
  (one CUDA graph) serves the whole generation (mythos/model/decode.py).
"""
from __future__ import annotations

import torch

from mythos.model.attention import KVCache, LayerCache, padded_mask, padded_positions


class StaticLayerCache(LayerCache):
    """One call site's buffers; the position and mask come from the owning StaticKVCache."""

    @property
    def absorb(self) -> bool:
        """MLA in the latent space over the whole buffer: no per-head re-expansion of max_len positions."""
        return self.owner.full_length

    def update(self, **new_BT: torch.Tensor) -> dict[str, torch.Tensor]:
        o = self.owner
        out = {}
        for name, x in new_BT.items():
            buf = self.buffers.get(name)
            if buf is None:  # zeros, not empty: a masked slot holding NaN would still poison SDPA (0 · NaN)
                self.buffers[name] = buf = x.new_zeros((x.shape[0], o.max_len, *x.shape[2:]))
                o.on_alloc(buf)
            if o.full_length:
                buf.index_copy_(1, o.idx_T, x)
                out[name] = buf
            else:
                end = o.pos + x.shape[1]
                buf[:, o.pos:end] = x
                out[name] = buf[:, :end]
        return out


class StaticKVCache(KVCache):
    """All call sites of one generation in preallocated buffers of max_len positions (prompt + new tokens).

    `pos` (int) is the host's count of tokens consumed; `pos_t` is the same count as a tensor. Under torch.compile
    nothing reads `pos` (a read would specialise the graph on its value and recompile at every position): the
    caller advances it (mythos/model/decode.py)."""

    def __init__(self, max_len: int, skip_halted: bool = False, full_length: bool = False) -> None:
        super().__init__(skip_halted)
        self.max_len, self.full_length = int(max_len), full_length
        self.pos_t: torch.Tensor | None = None  # [] long
        self.idx_T: torch.Tensor | None = None  # this chunk's buffer slots
        self.padded = False  # some real position is padding (host flag, set at prefill)
        self.alloc_hook = None  # called with each new buffer (decode.py marks them static for CUDA graphs)

    def layer(self, key: tuple) -> StaticLayerCache:
        if key not in self.layers:
            self.layers[key] = StaticLayerCache(self)
        return self.layers[key]

    def on_alloc(self, buf: torch.Tensor) -> None:
        if self.alloc_hook is not None:
            self.alloc_hook(buf)

    def buffers(self) -> list[torch.Tensor]:
        """Every tensor the cache writes in place (for marking static addresses)."""
        own = [t for t in (self.pos_t, self.seen_B, self.valid_BS) if t is not None]
        return own + [b for lc in self.layers.values() for b in lc.buffers.values()]

    def reset(self) -> None:
        """Empty the cache for a new generation of the same shape (buffers kept, so compiled graphs stay valid)."""
        self.pos = 0
        self.padded = False
        if self.pos_t is not None:
            self.pos_t.zero_()
            self.seen_B.zero_()
            self.valid_BS.fill_(True)

    def begin(self, tokens_BT: torch.Tensor, mask_BT: torch.Tensor | None = None) -> torch.Tensor | None:
        b, t = tokens_BT.shape
        dev = tokens_BT.device
        if self.pos_t is None:
            self.pos_t = torch.zeros((), dtype=torch.long, device=dev)
            self.seen_B = torch.zeros(b, dtype=torch.long, device=dev)
            self.valid_BS = torch.ones(b, self.max_len, dtype=torch.bool, device=dev)
            for buf in (self.pos_t, self.seen_B, self.valid_BS):
                self.on_alloc(buf)
        if not torch.compiler.is_compiling() and self.pos + t > self.max_len:
            raise ValueError(f"StaticKVCache: {self.pos} + {t} tokens exceed max_len {self.max_len}")
        self.idx_T = idx_T = self.pos_t + torch.arange(t, device=dev)
        if mask_BT is None:
            m_BT = torch.ones(b, t, dtype=torch.bool, device=dev)
        else:  # padding is known on the host before any compiled step (prefill)
            m_BT = mask_BT.to(dev).bool()
            self.valid_BS.index_copy_(1, idx_T, m_BT)
            self.padded = self.padded or not bool(m_BT.all())
        pos_BT, seen_B = padded_positions(self.seen_B, m_BT)
        self.seen_B.copy_(seen_B)
        if self.full_length:
            self.attn_mask = padded_mask(idx_T, torch.arange(self.max_len, device=dev), self.valid_BS)
            return pos_BT
        if not self.padded:  # the dynamic cache's arithmetic exactly: causal attention, shared positions
            self.attn_mask = None
            return None
        end = self.pos + t
        self.attn_mask = padded_mask(idx_T, torch.arange(end, device=dev), self.valid_BS[:, :end])
        return pos_BT

    def end(self, t: int) -> None:
        self.pos_t.add_(t)
        if not torch.compiler.is_compiling():
            self.pos += t
