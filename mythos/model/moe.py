"""DeepSeekMoE FFN: many small routed experts (top-k) + always-on shared experts, aux-loss-free balancing.

Dispatch is vectorised: the N*k (token, expert) pairs are sorted by expert, the expert matmuls run on the sorted
rows (`mythos::expert_mm`: `torch._grouped_mm` with cumulative offsets where the device/dtype allows, else a loop over
experts on contiguous slices; see grouped.py), and results are scattered back with `index_add_`. Never a per-token
mask or loop.

Balancing: a `bias` buffer is added to the router scores for top-k SELECTION only; gate values come from the
unbiased scores. The trainer calls `update_bias(load_E)` after each optimizer step with the (all-reduced)
`tokens_per_expert` counts. The counter is accumulated by Mythos.forward from the loads each call returns (not inside
this module), so activation-checkpoint recomputation never double-counts.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mythos.model.config import ModelConfig
from mythos.model.grouped import expert_mm


def swiglu_experts(x_sorted_MD: torch.Tensor, counts_E: torch.Tensor, w13_EDF: torch.Tensor,
                   w2_EFD: torch.Tensor) -> torch.Tensor:
    """SwiGLU routed experts on rows sorted by expert (counts_E rows each): one grouped matmul in, one out.
    Shared by RoutedExperts and expert parallelism (on the local experts' weights)."""
    offs_E = torch.cumsum(counts_E, 0).to(torch.int32)
    g, u = expert_mm(x_sorted_MD, w13_EDF, offs_E).chunk(2, dim=-1)
    return expert_mm((F.silu(g) * u).contiguous(), w2_EFD, offs_E)


class SwiGLU(nn.Module):
    """Dense SwiGLU MLP (dense blocks and the fused shared experts)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w13 = nn.Linear(dim, 2 * hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        g, u = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(g) * u)


class RoutedExperts(nn.Module):
    """The stacked routed-expert weights in their own module, so parallel code can shard them on their own mesh
    (torchtitan's GroupedExperts). forward(x_sorted_MD, counts_E) runs every expert on its contiguous rows; expert
    parallelism replaces this forward (all-to-all to the owners, `compute` on the local experts, all-to-all back)."""

    def __init__(self, n_experts: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.n_experts = n_experts
        # gate|up fused [E, D, 2F] and down [E, F, D] (grouped-mm layout x @ w[e]).
        self.w13_EDF = nn.Parameter(torch.empty(n_experts, dim, 2 * hidden))
        self.w2_EFD = nn.Parameter(torch.empty(n_experts, hidden, dim))

    def forward(self, x_sorted_MD: torch.Tensor, counts_E: torch.Tensor) -> torch.Tensor:
        return self.compute(x_sorted_MD, counts_E, self.w13_EDF, self.w2_EFD)

    @staticmethod
    def compute(x_sorted_MD: torch.Tensor, counts_E: torch.Tensor, w13_EDF: torch.Tensor,
                w2_EFD: torch.Tensor) -> torch.Tensor:
        """The experts on explicit weights (given in registration order), in the autocast dtype if one is active."""
        dev = x_sorted_MD.device.type
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x_sorted_MD.dtype
        return swiglu_experts(x_sorted_MD.to(dtype), counts_E, w13_EDF.to(dtype), w2_EFD.to(dtype))


class MoE(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        m = cfg.moe
        self.n_experts, self.top_k, self.hidden = m.n_routed, m.top_k, m.expert_dim
        self.score, self.norm_topk, self.route_scale, self.rate = m.score, m.norm_topk, m.route_scale, m.bias_update_rate
        # experts first: their parameters keep the init order they had as MoE's own (same weights per seed)
        self.experts = RoutedExperts(m.n_routed, cfg.dim, m.expert_dim)
        self.router = nn.Linear(cfg.dim, m.n_routed, bias=False)
        self.shared = SwiGLU(cfg.dim, m.n_shared * (m.shared_dim or m.expert_dim)) if m.n_shared else None
        self.register_buffer("bias", torch.zeros(m.n_routed))
        self.register_buffer("tokens_per_expert", torch.zeros(m.n_routed))
        # Set by the compiled decoder (mythos/model/decode.py) on a model it owns: compiled steps of a few tokens
        # then take `_gathered` (all experts local: never under expert parallelism, which replaces the experts).
        self.gather_decode = False

    # ---- routing ----------------------------------------------------------------------------------------------------
    def route(self, x_ND: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(expert ids [N,k], gates [N,k], unbiased scores [N,E]); the bias only changes which experts are picked."""
        dt = torch.promote_types(x_ND.dtype, torch.float32)  # router in >= fp32 even under bf16 autocast
        with torch.autocast(x_ND.device.type, enabled=False):
            logits_NE = F.linear(x_ND.to(dt), self.router.weight.to(dt))
        scores_NE = logits_NE.sigmoid() if self.score == "sigmoid" else logits_NE.softmax(-1)
        idx_NK = torch.topk(scores_NE.detach() + self.bias, self.top_k, dim=-1, sorted=False).indices
        gates_NK = scores_NE.gather(1, idx_NK)
        if self.norm_topk:
            gates_NK = gates_NK / (gates_NK.sum(-1, keepdim=True) + 1e-20)
        return idx_NK, gates_NK * self.route_scale, scores_NE

    # ---- experts ----------------------------------------------------------------------------------------------------
    def expert_compute(self, x_sorted_MD: torch.Tensor, counts_E: torch.Tensor) -> torch.Tensor:
        """Routed experts on rows sorted by expert (counts_E rows each, in expert order)."""
        return self.experts(x_sorted_MD, counts_E)

    def forward(self, x_BTD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(output [B,T,D], routed-token counts per expert [E] for this call)."""
        shape = x_BTD.shape
        x_ND = x_BTD.reshape(-1, shape[-1])
        idx_NK, gates_NK, _ = self.route(x_ND)
        if self.gather_decode and torch.compiler.is_compiling() and idx_NK.numel() <= self.n_experts:
            return self._gathered(x_ND, idx_NK, gates_NK).view(shape), self._counts(idx_NK.reshape(-1))
        flat_M = idx_NK.reshape(-1)
        order_M = torch.argsort(flat_M, stable=True)
        token_M = order_M // self.top_k
        counts_E = self._counts(flat_M)
        y_sorted_MD = self.expert_compute(x_ND[token_M], counts_E)
        y_sorted_MD = y_sorted_MD * gates_NK.reshape(-1)[order_M, None].to(y_sorted_MD.dtype)
        out_ND = torch.zeros(x_ND.shape, dtype=y_sorted_MD.dtype, device=x_ND.device).index_add_(0, token_M, y_sorted_MD)
        if self.shared is not None:
            out_ND = out_ND + self.shared(x_ND).to(out_ND.dtype)
        return out_ND.view(shape), counts_E.detach().float()

    def _counts(self, flat_M: torch.Tensor) -> torch.Tensor:
        # scatter_add, not bincount: a static [E] shape (torch.compile-friendly), same counts
        return torch.zeros(self.n_experts, dtype=torch.long, device=flat_M.device).scatter_add_(
            0, flat_M, torch.ones_like(flat_M))

    def _gathered(self, x_ND: torch.Tensor, idx_NK: torch.Tensor, gates_NK: torch.Tensor) -> torch.Tensor:
        """Compiled decode (a few tokens): each token against its k experts' weights, indexed in place
        (gpt-fast's MoE decode), so inductor fuses the gather into the matvec and reads only the chosen experts; the
        sorted dispatch's opaque grouped-mm would visit all E groups for a handful of rows."""
        w13_NKDF = self.experts.w13_EDF[idx_NK].to(x_ND.dtype)
        g, u = torch.einsum("nd,nkdf->nkf", x_ND, w13_NKDF).chunk(2, dim=-1)
        y_NKD = torch.einsum("nkf,nkfd->nkd", F.silu(g) * u, self.experts.w2_EFD[idx_NK].to(x_ND.dtype))
        out_ND = (y_NKD * gates_NK[..., None].to(y_NKD.dtype)).sum(1)
        if self.shared is not None:
            out_ND = out_ND + self.shared(x_ND).to(out_ND.dtype)
        return out_ND

    # ---- aux-loss-free balancing ------------------------------------------------------------------------------------
    @torch.no_grad()
    def update_bias(self, load_E: torch.Tensor | None = None) -> None:
        """bias += rate * sign(mean_load - load), re-centred to zero mean; resets the token counter.
        load_E defaults to this module's own counter (single process); pass the all-reduced counts otherwise."""
        load = (self.tokens_per_expert if load_E is None else load_E).to(self.bias.device, torch.float32)
        if load.sum() > 0:
            self.bias += self.rate * torch.sign(load.mean() - load)
            self.bias -= self.bias.mean()
        self.tokens_per_expert.zero_()
