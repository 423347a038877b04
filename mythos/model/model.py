"""Mythos: embed → prelude (dense blocks) → e → T iterations of the shared MoE block → loop_norm → coda → norm → head.

`mode = "dense"` builds a plain Transformer of `n_layers` unique dense blocks from the same code (in `prelude`;
`recurrence` is None and `coda` empty) for side-by-side comparisons.

Training invariants (rank safety): the number of loop iterations is exactly the n_loops passed (or the config
default), never data-dependent; ACT only masks. Truncated backprop: when grad is enabled, loops before the last
`loops.backprop_k` run under torch.no_grad(), so they build no autograd graph at all.
ACT (act.enabled), in training and eval alike: every loop runs for every position; a halted position keeps its state
and its later compute is MASKED (computed and discarded), not skipped — see mythos/model/act.py. Only inference with
`KVCache(skip_halted=True)` skips it (mythos/model/halting.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import torch
import torch.nn as nn

from mythos.model.act import ACTState
from mythos.model.attention import KVCache
from mythos.model.blocks import Block
from mythos.model.config import ModelConfig
from mythos.model.halting import HaltingSkip
from mythos.model.moe import MoE, RoutedExperts
from mythos.model.norm import RMSNorm
from mythos.model.plan import ParallelPlan
from mythos.model.recurrence import Recurrence
from mythos.model.rope import rope_at, rope_tables


@dataclass
class ModelOutput:
    logits_BTV: torch.Tensor  # fp32
    aux_loss: torch.Tensor  # scalar, already weighted (ponder_weight * ponder); 0 when ACT is off
    ponder: torch.Tensor  # scalar, unweighted ponder cost (0 when ACT is off)
    router_load_LE: torch.Tensor | None  # [n_loops, n_experts] routed-token counts per loop; None in dense mode
    hidden_norm_L: torch.Tensor  # [n_loops] mean L2 norm of h after each loop (dense: [1], after the last block)
    # Detached 0-d tensors, not floats, so a forward never waits on the device; logging converts them once a step.
    halt_stats: dict[str, torch.Tensor] = field(default_factory=dict)  # {} when ACT is off
    injection_decay_max: torch.Tensor | float = 0.0  # max over channels of a (< 1); 0.0 in dense mode
    n_loops: int = 0
    halt_steps_BT: torch.Tensor | None = None  # ACT: loops each position ran before it halted (detached); else None


class Mythos(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        dense = cfg.mode == "dense"
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.prelude = nn.ModuleList(Block(cfg, moe=False) for _ in range(cfg.n_layers if dense else cfg.n_prelude))
        self.recurrence = None if dense else Recurrence(cfg)
        self.loop_norm = None if dense else RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.halt = nn.Linear(cfg.dim, 1) if (cfg.act.enabled and not dense) else None
        self.coda = nn.ModuleList(Block(cfg, moe=False) for _ in range(0 if dense else cfg.n_coda))
        self.norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        if not self.embed.weight.is_meta:  # built on meta: whoever materialises it calls init_weights
            self.init_weights()

    # ---- init -------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self, write: Callable[[nn.Parameter, torch.Tensor], None] | None = None) -> None:
        """Normal(0, init_std) for matrices; output projections (attention wo, FFN/expert w2) scaled by
        1/sqrt(2·depth) with depth = block applications per token (prelude + coda + mean loops).

        One parameter at a time, in `named_parameters()` order, so the random draws come in the same sequence
        whether the model is whole or sharded. With `write`, each value is made in a full-size scratch tensor and
        handed to `write(param, value)` (parallel code keeps its rank's shard): no rank holds the whole model."""
        c = self.cfg
        depth = c.n_layers if c.mode == "dense" else c.n_prelude + c.n_coda + max(c.loops.mean, 1.0)
        out_std = c.init_std / math.sqrt(2 * depth)
        special = self._constant_inits()
        for name, p in self.named_parameters():
            t = p if write is None else torch.empty(p.shape, dtype=p.dtype, device=p.device)
            leaf = name.rsplit(".", 1)[-1]
            if name.endswith(("wo.weight", "w2.weight")) or leaf == "w2_EFD":
                nn.init.normal_(t, std=out_std)
            elif p.dim() >= 2 and not (id(p) in special and special[id(p)][1]) and leaf not in ("up", "scale"):
                nn.init.normal_(t, std=c.init_std)
            if id(p) in special:
                special[id(p)][0](t)
            if write is not None:
                write(p, t)
        for moe in self.moe_modules():
            moe.bias.zero_()
            moe.tokens_per_expert.zero_()

    def _constant_inits(self) -> dict[int, tuple[Callable[[torch.Tensor], None], bool]]:
        """id(param) -> (fill, replaces_the_random_draw) for the parameters with a fixed initial value."""
        out: dict = {}
        for m in self.modules():
            if isinstance(m, nn.RMSNorm):
                out[id(m.weight)] = (nn.init.ones_, False)
        rec = self.recurrence
        if rec is not None:
            for name, p in rec.injection.named_parameters(recurse=False):
                out[id(p)] = (partial(rec.injection.init_parameter, name), True)
            if rec.lora is not None:
                out[id(rec.lora.up)] = (nn.init.zeros_, False)
                out[id(rec.lora.scale)] = (nn.init.ones_, False)
            if rec.loop_gain is not None:
                out[id(rec.loop_gain)] = (partial(nn.init.constant_, val=self.cfg.init_std), False)
        if self.halt is not None:  # p = 0.5 at init: halts after ~2 loops until it learns otherwise
            out[id(self.halt.weight)] = (nn.init.zeros_, False)
            out[id(self.halt.bias)] = (nn.init.zeros_, False)
        return out

    def parallel_plan(self) -> ParallelPlan:
        """Which submodules parallel code may treat as blocks, the looped block and routed experts (dotted paths)."""
        blocks = [f"prelude.{i}" for i in range(len(self.prelude))] + [f"coda.{i}" for i in range(len(self.coda))]
        experts = [n for n, m in self.named_modules() if isinstance(m, RoutedExperts)]
        return ParallelPlan(tuple(blocks), None if self.recurrence is None else "recurrence", tuple(experts))

    # ---- helpers ----------------------------------------------------------------------------------------------------
    def moe_modules(self) -> list[MoE]:
        return [m for m in self.modules() if isinstance(m, MoE)]

    def default_loops(self) -> int:
        """n_loops=None: the rounded training mean in training mode, loops.inference in eval mode."""
        lp = self.cfg.loops
        return lp.train_count if self.training else lp.inference

    # ---- forward ----------------------------------------------------------------------------------------------------
    def forward(self, tokens_BT: torch.Tensor, n_loops: int | None = None, cache: KVCache | None = None,
                mask_BT: torch.Tensor | None = None) -> ModelOutput:
        """Logits and auxiliaries. With `cache` (a KVCache or a StaticKVCache), tokens_BT continues the cached
        sequence (positions start at cache.pos) and every attention call site appends to its own cache (one per
        loop index for the loop). mask_BT (1 = token, 0 = padding; inference only) lets rows of different lengths
        share a batch: padding is never attended to and RoPE positions count only real tokens, so a left-padded row
        gets its own logits; without a cache a temporary one carries the mask."""
        c = self.cfg
        b, t = tokens_BT.shape
        if mask_BT is not None and cache is None and not bool(mask_BT.all()):
            cache = KVCache()
        pos_BT = cache.begin(tokens_BT, mask_BT) if cache is not None else None
        if pos_BT is None:
            cos_TF, sin_TF = rope_tables(cache.pos if cache is not None else 0, t, c.rope_dim, c.attention.rope_theta,
                                         tokens_BT.device)
        else:  # [B, 1, T, F]: per-row positions, broadcast like the [T, F] tables
            cos_TF, sin_TF = rope_at(pos_BT, c.rope_dim, c.attention.rope_theta)
        x_BTD = self.drop(self.embed(tokens_BT))
        for i, blk in enumerate(self.prelude):
            x_BTD, _ = blk(x_BTD, cos_TF, sin_TF, cache.layer(("prelude", i)) if cache is not None else None)
        zero = x_BTD.new_zeros((), dtype=torch.float32)
        if self.recurrence is None:
            out = ModelOutput(None, zero, zero, None, x_BTD.detach().float().norm(dim=-1).mean()[None], n_loops=0)
        else:
            x_BTD, out = self._loop(x_BTD, n_loops, cos_TF, sin_TF, cache)
        for i, blk in enumerate(self.coda):
            x_BTD, _ = blk(x_BTD, cos_TF, sin_TF, cache.layer(("coda", i)) if cache is not None else None)
        out.logits_BTV = self.head(self.norm(x_BTD)).float()
        if cache is not None:
            cache.end(t)
        return out

    def _loop(self, e_BTD, n_loops, cos_TF, sin_TF, cache):
        c = self.cfg
        n = self.default_loops() if n_loops is None else int(n_loops)
        if n < 1:
            raise ValueError(f"n_loops must be >= 1, got {n}")
        k = c.loops.backprop_k or n
        grad_on = torch.is_grad_enabled()
        h_BTD = torch.zeros_like(e_BTD) if c.loops.state_init == "zero" else e_BTD
        act = ACTState(e_BTD, c.act.threshold) if self.halt is not None else None
        skip = (HaltingSkip(self.recurrence, self.halt, act)
                if act is not None and cache is not None and cache.skip_halted and not grad_on else None)
        loads, norms = [], []
        for t in range(n):  # always exactly n iterations: no data-dependent exit (ranks must agree)
            with torch.set_grad_enabled(grad_on and t >= n - k):
                layer_cache = cache.layer(("loop", t)) if cache is not None else None
                if skip is not None:  # inference: only rows still running are computed (mythos/model/halting.py)
                    h_new, p_BT, load_E = skip.step(h_BTD, e_BTD, t, cos_TF, sin_TF, layer_cache)
                else:
                    h_new, load_E = self.recurrence(h_BTD, e_BTD, t, cos_TF, sin_TF, layer_cache)
                    p_BT = torch.sigmoid(self.halt(h_new).float()).squeeze(-1) if act is not None else None
                if act is not None:
                    h_new = act.step(h_BTD, h_new, p_BT, last=t == n - 1)
                h_BTD = h_new
            loads.append(load_E)
            norms.append(h_BTD.detach().float().norm(dim=-1).mean())
        load_LE = torch.stack(loads)
        if self.training:
            self.recurrence.moe.tokens_per_expert += load_LE.sum(0).to(self.recurrence.moe.tokens_per_expert)
        x_BTD = act.out_BTD if act is not None else h_BTD
        if act is not None:
            ponder = act.ponder()
            aux, stats = c.act.ponder_weight * ponder, act.stats(n)
        else:
            ponder = aux = e_BTD.new_zeros((), dtype=torch.float32)
            stats = {}
        with torch.no_grad():
            decay_max = self.recurrence.injection.decay().max()
        out = ModelOutput(None, aux, ponder, load_LE, torch.stack(norms), stats, decay_max, n,
                          act.steps_BT.detach() if act is not None else None)
        return self.loop_norm(x_BTD), out

    # ---- generation -------------------------------------------------------------------------------------------------
    def generate(self, tokens_BT: torch.Tensor, max_new_tokens: int, n_loops: int | None = None,
                 temperature: float = 0.0, top_k: int | None = None,
                 generator: torch.Generator | None = None, **kw) -> torch.Tensor:
        """See mythos.model.generate.generate (kw: mask_BT, static, compile, backend, skip_halted)."""
        from mythos.model.generate import generate

        return generate(self, tokens_BT, max_new_tokens, n_loops, temperature, top_k, generator, **kw)
