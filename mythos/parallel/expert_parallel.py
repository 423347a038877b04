"""Expert parallelism from outside the model: routed experts split over the "ep" mesh dim.

Each RoutedExperts module (named by the model's parallel plan) keeps its stacked weights under the same names, as
DTensors Shard(0) on the "ep" mesh: ep rank p holds experts [p·E/P, (p+1)·E/P). FSDP then shards them further over
"dp_shard" (fsdp.py), so a rank holds 1/(dp_shard·ep) of every expert tensor. The module's forward is replaced by
`EPExperts`:

    1. all_to_all_single of the per-expert counts (a small int tensor, equal splits),
    2. all_to_all_single of the rows with per-rank split sizes (autograd: the backward is the reverse exchange),
    3. regroup the received rows expert-major and run `experts.compute` on the local experts,
    4. undo the regrouping and send the rows back.

Gradients. The owner of expert e receives d(Σ_{r in its ep group} L_r)/dw_e through the all-to-all backward, where
L_r is rank r's local mean loss. The global loss is (1/W) Σ_r L_r, W = dp_shard·ep: the weights' gradient is scaled
by 1/ep in the backward of each use (`_ScaleGrad`, local, no communication) and FSDP averages it over "dp_shard" once
per step (fsdp.py).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
from torch._subclasses.fake_tensor import FakeTensor
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Shard

from mythos.errors import UserError
from mythos.parallel.mesh import EP


# ---- autograd-correct all-to-all -------------------------------------------------------------------------------------
class _AllToAll(torch.autograd.Function):
    """Rows exchanged with per-rank split sizes; the backward sends the gradient rows back the same way."""

    @staticmethod
    def forward(ctx, x, out_splits: list[int], in_splits: list[int], group):
        ctx.out_splits, ctx.in_splits, ctx.group = out_splits, in_splits, group
        return _all_to_all(x, out_splits, in_splits, group)

    @staticmethod
    def backward(ctx, g):
        return _all_to_all(g, ctx.in_splits, ctx.out_splits, ctx.group), None, None, None


def _all_to_all(x: torch.Tensor, out_splits: list[int], in_splits: list[int], group) -> torch.Tensor:
    gloo = dist.get_backend(group) == "gloo"  # gloo's all-to-all has no bf16: send fp32 there, as-is elsewhere
    comm_dtype = torch.float32 if gloo and x.dtype not in (torch.float32, torch.float64) else x.dtype
    send = x.to(comm_dtype).contiguous()
    out = send.new_empty((sum(out_splits), *x.shape[1:]))
    dist.all_to_all_single(out, send, out_splits, in_splits, group=group)
    return out.to(x.dtype)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the backward multiplies by `scale` (no communication)."""

    @staticmethod
    def forward(ctx, w, scale: float):
        ctx.scale = scale
        return w.view_as(w)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.scale, None


# ---- the replacement for RoutedExperts.forward -----------------------------------------------------------------------
def expert_major_permutation(recv_PE: torch.Tensor) -> torch.Tensor:
    """Received rows come source-rank-major ((q, j) blocks, q = source rank, j = local expert). Returns the index that
    reorders them expert-major ((j, q) blocks), i.e. `x_recv[perm]` is sorted by local expert."""
    lengths = recv_PE.reshape(-1)
    starts = torch.cumsum(lengths, 0) - lengths  # start of block (q, j) in the received order
    lengths_JQ, starts_JQ = recv_PE.t().reshape(-1), starts.view_as(recv_PE).t().reshape(-1)
    total = int(lengths.sum())
    block_start = torch.repeat_interleave(starts_JQ, lengths_JQ, output_size=total)
    new_start = torch.repeat_interleave(torch.cumsum(lengths_JQ, 0) - lengths_JQ, lengths_JQ, output_size=total)
    return block_start + torch.arange(total, device=recv_PE.device) - new_start


class EPExperts:
    """Bound to one RoutedExperts module; called as its forward `(x_sorted_MD, counts_E)`. Runs inside the module's
    __call__, so FSDP's hooks on it (gather before, reduce after backward) still fire."""

    def __init__(self, experts: nn.Module, mesh: DeviceMesh) -> None:
        self.experts = experts
        self.ep_group = mesh[EP].get_group()
        self.ep = mesh[EP].size()

    def __call__(self, x_sorted_MD: torch.Tensor, counts_E: torch.Tensor) -> torch.Tensor:
        ex, p = self.experts, self.ep
        dev = x_sorted_MD.device.type
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x_sorted_MD.dtype
        counts_PE = counts_E.to(torch.int64).view(p, -1).contiguous()
        recv_PE = torch.empty_like(counts_PE)
        dist.all_to_all_single(recv_PE, counts_PE, group=self.ep_group)
        if isinstance(x_sorted_MD, FakeTensor):  # mythos-plan's dry run: no values, assume balanced routing
            m = x_sorted_MD.shape[0]
            send_splits = recv_splits = [m // p + (q < m % p) for q in range(p)]
        else:
            send_splits, recv_splits = counts_PE.sum(1).tolist(), recv_PE.sum(1).tolist()

        x_recv = _AllToAll.apply(x_sorted_MD.to(dtype), recv_splits, send_splits, self.ep_group)
        perm = (torch.arange(x_recv.shape[0]) if isinstance(x_recv, FakeTensor)
                else expert_major_permutation(recv_PE))
        weights = [_ScaleGrad.apply(_local(w), 1.0 / p) for w in ex.parameters(recurse=False)]
        y_e = ex.compute(x_recv[perm], recv_PE.sum(0), *weights)
        if y_e.shape[0] == 0:  # keep the weights in the graph: every rank must run the same gradient collectives
            y_e = y_e + 0.0 * sum(w.sum() for w in weights).to(y_e.dtype)
        y_recv = y_e[torch.argsort(perm)]
        return _AllToAll.apply(y_recv, send_splits, recv_splits, self.ep_group)


def _local(w: torch.Tensor) -> torch.Tensor:
    return w.to_local() if isinstance(w, DTensor) else w


# ---- applying it -----------------------------------------------------------------------------------------------------
def apply_expert_parallel(experts_modules: list[nn.Module], mesh: DeviceMesh) -> None:
    """Shard every RoutedExperts module's weights over "ep" (dim 0, the expert index) and swap in the all-to-all
    forward. Works on meta modules (the shards are materialised later). No-op when ep == 1."""
    p = mesh[EP].size()
    if p == 1:
        return
    rank = mesh[EP].get_local_rank()
    for ex in experts_modules:
        if ex.n_experts % p:
            raise UserError(f"config key 'parallel.ep': {p} must divide model.moe.n_routed ({ex.n_experts})")
        for name, full in list(ex.named_parameters(recurse=False)):
            local = full.detach().chunk(p, dim=0)[rank].clone()
            dt = DTensor.from_local(local, mesh[EP], (Shard(0),), run_check=False)
            ex.register_parameter(name, nn.Parameter(dt, requires_grad=full.requires_grad))
        ex.forward = EPExperts(ex, mesh)  # instance attribute shadows the method
