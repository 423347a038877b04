"""The looped part: ONE iteration per forward call (injection + shared block + loop signal + depth-wise LoRA), so
a checkpoint wrapper around `model.recurrence` checkpoints per loop. The loop itself lives in Mythos.forward."""
from __future__ import annotations

import torch
import torch.nn as nn

from mythos.model.attention import LayerCache
from mythos.model.blocks import Block, DepthLoRA, loop_signal
from mythos.model.config import ModelConfig
from mythos.model.injection import Injection


class Recurrence(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.kind = cfg.injection.kind
        self.injection = Injection(cfg)
        self.block = Block(cfg, moe=True)
        self.lora = DepthLoRA(cfg) if cfg.lora_rank else None
        # Per-channel gain on the sinusoidal loop signal; starts at the embedding scale so it does not swamp e.
        self.loop_gain = nn.Parameter(torch.full((cfg.dim,), cfg.init_std)) if cfg.loop_embedding else None

    @property
    def moe(self):
        return self.block.ffn

    def forward(self, h_BTD, e_BTD, t: int, cos_TF, sin_TF, cache: LayerCache | None = None):
        """One iteration h_t -> h_{t+1}. Returns (h_{t+1}, routed-token counts [E] of this iteration).

        parcae:      h' = Block(a⊙h + Δ⊙(B e) + s_t)                    (+ LoRA_t on the block output)
        unconstrained: as parcae with u = A h + B e (no bound on A; the stability experiment's control)
        additive:    as parcae with u = h + e (no parameters; the ablation baseline)
        openmythos:  h' = a⊙h + b⊙e + [Block(h + e + s_t) - (h + e + s_t)]  (the block's residual branches only)
        """
        u = self.injection(h_BTD, e_BTD) if self.kind != "openmythos" else h_BTD + e_BTD
        if self.loop_gain is not None:
            u = u + (loop_signal(t, u.shape[-1], u.device) * self.loop_gain).to(u.dtype)
        y, load_E = self.block(u, cos_TF, sin_TF, cache)
        if self.lora is not None:
            y = y + self.lora(y, t)
        if self.kind == "openmythos":
            y = self.injection(h_BTD, e_BTD) + (y - u)
        return y, load_E
