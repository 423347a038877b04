"""How the prelude output e re-enters the loop state h at every iteration.

parcae (default, Parcae's stable discretised LTI):  u = a ⊙ h + Δ ⊙ (B e),  then h' = Block(u)
    Δ = softplus(dt) per channel, a = exp(-Δ · exp(A_log)) per channel, B a full [D, D] matrix initialised to I.
    a ∈ (0, 1) for every finite parameter value (computed as exp(-x) with x ≥ 0 finite), so the spectral radius of
    diag(a) is < 1 by construction; extreme values saturate to a → 0 or a → 1⁻, never NaN.
openmythos (the OpenMythos reconstruction):  h' = a ⊙ h + b ⊙ e + Block(h + e)
    a per channel from a SCALAR dt (a = exp(-softplus(dt) · exp(A_log))), b a vector — kept for comparison runs.
unconstrained (the stability experiment's control):  u = A h + B e,  then h' = Block(u)
    A and B full [D, D] matrices with no bound (A starts at a_init · I, B at I): nothing keeps ρ(A) < 1.
additive (the ablation baseline, no parameters):  u = h + e,  then h' = Block(u)   (a = 1: no decay, no gain)
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from mythos.model.config import ModelConfig


def _inv_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class Injection(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d, inj = cfg.dim, cfg.injection
        self.kind = inj.kind
        self.dt_init, self.a_init = inj.dt_init, inj.a_init
        if self.kind == "additive":
            return
        if self.kind == "unconstrained":
            self.A = nn.Parameter(torch.empty(d, d))
            self.B = nn.Parameter(torch.empty(d, d))
            self.reset_parameters()
            return
        n_dt = d if self.kind == "parcae" else 1
        self.dt = nn.Parameter(torch.empty(n_dt))
        self.A_log = nn.Parameter(torch.empty(d))
        if self.kind == "parcae":
            self.B = nn.Parameter(torch.empty(d, d))
        else:
            self.b = nn.Parameter(torch.empty(d))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for name, p in self.named_parameters(recurse=False):
            self.init_parameter(name, p)

    @torch.no_grad()
    def init_parameter(self, name: str, t: torch.Tensor) -> None:
        """Write parameter `name`'s initial value into `t` (the parameter, or a full-size scratch when a sharded
        model is materialised): dt so that softplus(dt) = dt_init; A_log so that a = a_init; B = I / b = 1;
        unconstrained: A = a_init · I, B = I (the same map as parcae's at init with dt_init = 1)."""
        if name == "dt":
            t.fill_(_inv_softplus(self.dt_init))
        elif name == "A_log":
            t.fill_(math.log(-math.log(self.a_init) / self.dt_init))
        elif name == "A":
            t.copy_(self.a_init * torch.eye(t.shape[0], dtype=t.dtype, device=t.device))
        elif name == "B":
            t.copy_(torch.eye(t.shape[0], dtype=t.dtype, device=t.device))
        else:
            t.fill_(1.0)

    def delta(self) -> torch.Tensor:
        return F.softplus(self.dt.float())

    def decay(self) -> torch.Tensor:
        """additive: 1 (u = h + e). unconstrained: the largest singular value of A (an upper bound on how much one
        loop can grow h).
        Otherwise a = exp(-softplus(dt) · exp(A_log)) ∈ (0, 1) per channel (fp32). The product is clamped to
        [1e-30, 80] so that dt → -1e4 (Δ underflows to 0) still gives a < 1 and +1e4 gives a > 0, never inf·0."""
        if self.kind == "additive":
            return torch.ones(1)
        if self.kind == "unconstrained":
            return torch.linalg.matrix_norm(self.A.detach().float(), ord=2)[None]
        x = (self.delta() * torch.exp(self.A_log.float().clamp(max=40.0))).clamp(min=1e-30, max=80.0)
        return torch.exp(-x).clamp(max=1.0 - 1e-7)

    def forward(self, h_BTD: torch.Tensor, e_BTD: torch.Tensor) -> torch.Tensor:
        """parcae: the block input u. openmythos: the part a⊙h + b⊙e that is added to Block(h + e)."""
        if self.kind == "additive":
            return h_BTD + e_BTD
        if self.kind == "unconstrained":
            return F.linear(h_BTD, self.A) + F.linear(e_BTD, self.B)
        a = self.decay().to(h_BTD.dtype)
        if self.kind == "parcae":
            be = F.linear(e_BTD, self.B)
            return a * h_BTD + self.delta().to(be.dtype) * be
        return a * h_BTD + self.b.to(e_BTD.dtype) * e_BTD
