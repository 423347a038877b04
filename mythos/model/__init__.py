"""The Mythos model: a Recurrent-Depth (looped) MoE Transformer, plus a dense mode from the same blocks.
Plain PyTorch; no torch.distributed inside (see docs/interfaces.md for the contract)."""
from mythos.model.config import (
    ACTConfig,
    AttentionConfig,
    InjectionConfig,
    LoopConfig,
    ModelConfig,
    MoEConfig,
)

# The modules are imported on first use (PEP 562): the configs are torch-free, so a CLI whose config is wrong says
# so before paying for `import torch` (~1-2 s per process; the test suite starts hundreds).
_LAZY = {"KVCache": "attention", "LayerCache": "attention", "ModelOutput": "model", "Mythos": "model", "MoE": "moe",
         "LoopSampler": "sampler", "model_stats": "stats"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'mythos.model' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(f"mythos.model.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ACTConfig", "AttentionConfig", "InjectionConfig", "KVCache", "LayerCache", "LoopConfig", "LoopSampler", "MoE",
    "ModelConfig", "ModelOutput", "MoEConfig", "Mythos", "model_stats",
]
