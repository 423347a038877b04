"""RMSNorm that keeps torch's fused CPU/GPU kernel under bf16 autocast (weight cast to the input dtype; the stock
module falls back to the decomposed path when input and weight dtypes differ)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.RMSNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.normalized_shape, self.weight.to(x.dtype), self.eps)
