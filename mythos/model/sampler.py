"""Training loop-count sampler. Every rank must run the same count, so the draw comes only from a torch.Generator
the caller seeds identically on all ranks (e.g. seed + step): no global RNG, no communication."""
from __future__ import annotations

import torch

from mythos.model.config import LoopConfig


class LoopSampler:
    def __init__(self, loops: LoopConfig) -> None:
        self.cfg = loops

    def sample(self, generator: torch.Generator) -> int:
        """fixed: the configured count. poisson: Poisson(mean) clamped to [min, max] (Parcae: Poisson(8), min 1)."""
        c = self.cfg
        if c.distribution == "fixed":
            return int(c.mean)
        rate = torch.tensor([float(c.mean)], dtype=torch.float64)
        n = int(torch.poisson(rate, generator=generator).item())
        return max(c.min, min(c.max, n))
