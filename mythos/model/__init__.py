"""The Mythos model: a Recurrent-Depth (looped) MoE Transformer, plus a dense mode from the same blocks.
Plain PyTorch; no torch.distributed inside (see docs/interfaces.md for the contract)."""
from mythos.model.attention import KVCache, LayerCache
from mythos.model.config import (
    ACTConfig,
    AttentionConfig,
    InjectionConfig,
    LoopConfig,
    ModelConfig,
    MoEConfig,
)
from mythos.model.model import ModelOutput, Mythos
from mythos.model.moe import MoE
from mythos.model.sampler import LoopSampler
from mythos.model.stats import model_stats

__all__ = [
    "ACTConfig", "AttentionConfig", "InjectionConfig", "KVCache", "LayerCache", "LoopConfig", "LoopSampler", "MoE",
    "ModelConfig", "ModelOutput", "MoEConfig", "Mythos", "model_stats",
]
