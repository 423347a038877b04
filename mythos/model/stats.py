"""Parameter and FLOP accounting (for MFU), from the real module tree built on the meta device (no memory).

Conventions:
- total_params: every parameter once (tied embedding/head counted once).
- active_params: parameters one token touches in one pass with the loop block counted ONCE: everything except the
  routed experts it is not sent to (routed expert params × (E - top_k)/E are inactive).
- flops_per_token (training, at n_loops): matmul FLOPs only (norms, activations, softmax ignored).
  Forward: 2 × matmul params applied per token, with the loop block's (active) matmul params counted n_loops times,
  the head counted even when tied, the embedding lookup not counted. Backward: 4 × matmul params for the parts that
  build a graph — prelude, coda, head and only the LAST k = loops.backprop_k loops (earlier loops run under
  no_grad). Attention scores: forward 2·S·H·(d_qk + d_v) per token per attention application (PaLM convention: no
  causal halving, S = seq_len), backward twice that, again only for the loops with a graph.
  Activation-checkpoint recomputation is not counted (MFU, not HFU).
"""
from __future__ import annotations

import torch

from mythos.model.config import ModelConfig


def _matmul_params(module: torch.nn.Module, skip: tuple[str, ...] = ()) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if p.dim() >= 2 and not n.startswith(skip))


def model_stats(cfg: ModelConfig, n_loops: int | None = None, seq_len: int = 2048) -> dict:
    from mythos.model.model import Mythos

    with torch.device("meta"):
        m = Mythos(cfg)
    total = sum(p.numel() for p in m.parameters())
    a = cfg.attention
    if a.kind == "mla":
        attn_dims = cfg.n_heads * (a.nope_dim + a.rope_dim + a.v_head_dim)
    else:
        attn_dims = cfg.n_heads * 2 * cfg.head_dim
    attn_fwd = 2 * seq_len * attn_dims  # per token per attention application
    once_mm = sum(_matmul_params(b) for b in list(m.prelude) + list(m.coda)) + cfg.vocab_size * cfg.dim
    n_once_layers = len(m.prelude) + len(m.coda)
    if m.recurrence is None:
        n = k = 0
        active = total
        loop_mm = 0
    else:
        moe = m.recurrence.moe
        routed = moe.experts.w13_EDF.numel() + moe.experts.w2_EFD.numel()
        inactive = routed * (moe.n_experts - moe.top_k) // moe.n_experts
        active = total - inactive
        loop_mm = _matmul_params(m.recurrence) - inactive + (_matmul_params(m.halt) if m.halt is not None else 0)
        n = int(n_loops) if n_loops is not None else cfg.loops.train_count
        k = min(cfg.loops.backprop_k or n, n)
    fwd = 2 * (once_mm + n * loop_mm) + attn_fwd * (n_once_layers + n)
    bwd = 4 * (once_mm + k * loop_mm) + 2 * attn_fwd * (n_once_layers + k)
    return {
        "total_params": int(total),
        "active_params": int(active),
        "flops_per_token": int(fwd + bwd),
        "fwd_flops_per_token": int(fwd),
        "embedding_params": int(cfg.vocab_size * cfg.dim),
        "n_loops": n,
        "backprop_loops": k,
    }
