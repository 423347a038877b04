"""Micro configs for the model tests (imported as tests.model.helpers)."""
from __future__ import annotations

from mythos.model import ModelConfig


def micro_cfg(kind: str = "mla", act: bool = False, mode: str = "rdt", **top) -> ModelConfig:
    """A few-hundred-k-parameter RDT (or dense) config with every feature on, for fast exact checks."""
    fields = dict(vocab_size=97, dim=64, n_heads=4, n_prelude=1, n_coda=1, n_layers=3, lora_rank=4, mode=mode)
    c = ModelConfig.named("tiny").replace(**{**fields, **top})
    c.attention.kind = kind
    c.attention.n_kv_heads = 2 if kind == "gqa" else 0
    c.attention.kv_lora_rank, c.attention.nope_dim, c.attention.rope_dim, c.attention.v_head_dim = 16, 8, 8, 12
    c.attention.q_lora_rank = 24
    c.moe.n_routed, c.moe.top_k, c.moe.expert_dim, c.moe.n_shared = 6, 2, 32, 1
    c.loops.max, c.loops.mean, c.loops.backprop_k, c.loops.inference = 6, 3.0, 2, 3
    c.act.enabled = act
    return c.validate()


def decode_model(kind: str, act: bool, seed: int = 0):
    """A micro model in eval mode with weights large enough for varied greedy tokens (and, with ACT, a halting head
    that halts at different loops), for the decode tests."""
    import torch
    from mythos.model import Mythos
    torch.manual_seed(seed)
    model = Mythos(micro_cfg(kind, act=act, init_std=0.3)).eval()
    if act:
        torch.nn.init.normal_(model.halt.weight, std=0.5)
    return model
