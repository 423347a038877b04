"""Decoding with a static KV cache, optionally through a torch.compile'd one-token step (gpt-fast style).

Eager decode spends its time dispatching ~10k small ATen ops per token (16 loops), not computing; compiling the
single-token step fuses them. One graph serves every position: the step reads the position from the cache as a
tensor (`StaticKVCache(full_length=True)`), shapes never change (attention over the whole buffer, masked), and no
Python int that moves with the position is read inside it. On CUDA the graph is replayed as a CUDA graph
(`mode="reduce-overhead"`): the cache tensors are marked as static addresses so they are written in place.

ACT's skip mode (`skip_halted`) is eager-only: which rows a loop computes is data (a `nonzero` per loop), which a
graph can only follow with a host sync per loop or a graph per halting pattern. Compiled ACT decode runs masked
(every loop computed, halted positions frozen): the same tokens, without the skipped FLOPs.

Prefill runs eagerly (its length differs per call); decoders are kept per (model, batch, max_len, loops, ...) so a
second generation of the same shape reuses the compiled graph. Each other shape (batch, buffer length rounded to 64,
loop count) is one more graph of the same function: past torch's recompile limit (8) dynamo runs it eagerly.
"""
from __future__ import annotations

import torch

from mythos.model.static_cache import StaticKVCache

def round_len(n: int, multiple: int = 64) -> int:
    """Buffer length for n positions, rounded up so nearby lengths share a compiled graph."""
    return -(-n // multiple) * multiple


class Decoder:
    """prefill(tokens_BT, mask_BT) -> last logits [B, V]; step(tok_B1) -> next logits [B, V]."""

    def __init__(self, model, max_len: int, n_loops: int | None = None, compile: bool = False,
                 backend: str = "inductor", mode: str | None = None, skip_halted: bool = False,
                 skip_guards: bool = True) -> None:
        if compile and skip_halted:
            raise ValueError("ACT skip mode (skip_halted) is eager-only: compiled decode runs masked ACT")
        self.model, self.n_loops, self.max_len = model, n_loops, max_len
        self.cache = StaticKVCache(max_len, skip_halted=skip_halted, full_length=compile)
        self.compiled = None
        self.warm = False  # the compiled step has run once (compiled)
        self.skip_guards = skip_guards  # after the first step (tests turn it off to count recompiles)
        self.cuda_graphs = False
        if compile:
            dev = next(model.parameters()).device
            if mode is None and dev.type == "cuda" and backend == "inductor":
                mode = "reduce-overhead"
            self.cuda_graphs = mode == "reduce-overhead"
            if self.cuda_graphs:
                self.cache.alloc_hook = torch._dynamo.mark_static_address
            for moe in model.moe_modules():  # few-token steps: gathered experts, fused by inductor (moe.py)
                moe.gather_decode = True
            self.compiled = torch.compile(self._step, backend=backend, mode=mode, dynamic=False, fullgraph=True)

    @classmethod
    def cached(cls, model, batch: int, max_len: int, n_loops: int | None, **kw) -> "Decoder":
        """A decoder for this shape, reused across calls (its cache is reset, its compiled graph kept)."""
        # on the model itself, not in a global: a decoder refers to its model, so the pair is collected together
        per_model = model.__dict__.setdefault("_mythos_decoders", {})
        key = (batch, max_len, n_loops, tuple(sorted(kw.items())))
        dec = per_model.get(key)
        if dec is None:
            dec = per_model[key] = cls(model, max_len, n_loops, **kw)
        dec.cache.reset()
        return dec

    def _step(self, tok_B1: torch.Tensor) -> torch.Tensor:
        return self.model(tok_B1, n_loops=self.n_loops, cache=self.cache).logits_BTV[:, -1]

    @torch.no_grad()
    def prefill(self, tokens_BT: torch.Tensor, mask_BT: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(tokens_BT, n_loops=self.n_loops, cache=self.cache, mask_BT=mask_BT).logits_BTV[:, -1]

    @torch.no_grad()
    def step(self, tok_B1: torch.Tensor) -> torch.Tensor:
        if self.compiled is None:
            return self._step(tok_B1)
        if self.cache.pos + tok_B1.shape[1] > self.max_len:
            raise ValueError(f"Decoder: position {self.cache.pos} is past max_len {self.max_len}")
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        if self.warm and self.skip_guards:  # one graph, nothing it guards on changes: skip the guard checks
            with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
                logits_BV = self.compiled(tok_B1)
        else:
            logits_BV = self.compiled(tok_B1)
            self.warm = True
        self.cache.pos += tok_B1.shape[1]  # the compiled graph advances pos_t only (see StaticKVCache)
        return logits_BV.clone() if self.cuda_graphs else logits_BV  # a CUDA graph's output is overwritten
