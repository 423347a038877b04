"""Expert parallelism from outside the model: routed experts split over the "ep" mesh dim.

Each MoE keeps its stacked expert weights `w13_EDF` [E, D, 2F] and `w2_EFD` [E, F, D] under the same names (so
checkpoints stay interchangeable with single-process runs), but as DTensors on the ("dp_shard", "ep") mesh with
placements (Replicate, Shard(0)): ep rank p holds experts [p·E/P, (p+1)·E/P). The MoE's one replaceable method,
`expert_compute(x_sorted, counts_E)`, is swapped for `EPExpertCompute`:

    1. all_to_all_single of the per-expert counts (a small int tensor, equal splits),
    2. all_to_all_single of the rows with per-rank split sizes (autograd: the backward is the reverse exchange),
    3. regroup the received rows expert-major and run the grouped matmul on the local experts,
    4. undo the regrouping and send the rows back.

Gradients. The owner of expert e receives d(Σ_{r in its ep group} L_r)/dw_e through the all-to-all backward, where
L_r is rank r's local mean loss. The global loss is (1/W) Σ_r L_r, so the owner's gradient is divided by W and
summed over "dp_shard" (the ranks that hold the same experts) — `_ReduceExpertGrad` does both in the backward of
each use. FSDP ignores these parameters (`apply_expert_parallel` returns them for `fully_shard(ignored_params=...)`).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Replicate, Shard

from mythos.errors import UserError
from mythos.model.moe import swiglu_experts
from mythos.parallel.mesh import DP_SHARD, EP

EXPERT_PARAM_NAMES = ("w13_EDF", "w2_EFD")


# ---- autograd-correct collectives -----------------------------------------------------------------------------------
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
    comm_dtype = x.dtype if x.dtype in (torch.float32, torch.float64) or x.device.type != "cpu" else torch.float32
    send = x.to(comm_dtype).contiguous()
    out = send.new_empty((sum(out_splits), *x.shape[1:]))
    dist.all_to_all_single(out, send, out_splits, in_splits, group=group)
    return out.to(x.dtype)


class _ReduceExpertGrad(torch.autograd.Function):
    """Identity forward; backward divides by the world size and sums over the replicas of these experts."""

    @staticmethod
    def forward(ctx, w, world: int, group, group_size: int):
        ctx.world, ctx.group, ctx.group_size = world, group, group_size
        return w.view_as(w)

    @staticmethod
    def backward(ctx, g):
        g = g / ctx.world
        if ctx.group_size > 1:
            g = g.contiguous()
            dist.all_reduce(g, group=ctx.group)
        return g, None, None, None


# ---- the replacement for MoE.expert_compute -------------------------------------------------------------------------
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


class EPExpertCompute:
    """Bound to one MoE module; called as `moe.expert_compute(x_sorted_MD, counts_E)`."""

    def __init__(self, moe: nn.Module, mesh: DeviceMesh) -> None:
        self.moe = moe
        self.ep_group = mesh[EP].get_group()
        self.dp_group = mesh[DP_SHARD].get_group()
        self.ep, self.dp_shard = mesh[EP].size(), mesh[DP_SHARD].size()
        self.world = mesh.size()
        self.n_local = moe.n_experts // self.ep

    def __call__(self, x_sorted_MD: torch.Tensor, counts_E: torch.Tensor) -> torch.Tensor:
        moe, p, e_l = self.moe, self.ep, self.n_local
        dev = x_sorted_MD.device.type
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x_sorted_MD.dtype
        counts_PE = counts_E.to(torch.int64).view(p, e_l).contiguous()
        recv_PE = torch.empty_like(counts_PE)
        dist.all_to_all_single(recv_PE, counts_PE, group=self.ep_group)
        send_splits, recv_splits = counts_PE.sum(1).tolist(), recv_PE.sum(1).tolist()

        x_recv = _AllToAll.apply(x_sorted_MD.to(dtype), recv_splits, send_splits, self.ep_group)
        perm = expert_major_permutation(recv_PE)
        w13 = _ReduceExpertGrad.apply(_local(moe.w13_EDF), self.world, self.dp_group, self.dp_shard)
        w2 = _ReduceExpertGrad.apply(_local(moe.w2_EFD), self.world, self.dp_group, self.dp_shard)
        y_e = swiglu_experts(x_recv[perm], recv_PE.sum(0), w13.to(dtype), w2.to(dtype))
        if y_e.shape[0] == 0:  # keep the weights in the graph: every rank must run the same gradient collectives
            y_e = y_e + 0.0 * (w13.sum() + w2.sum()).to(y_e.dtype)
        y_recv = y_e[torch.argsort(perm)]
        return _AllToAll.apply(y_recv, send_splits, recv_splits, self.ep_group)


def _local(w: torch.Tensor) -> torch.Tensor:
    return w.to_local() if isinstance(w, DTensor) else w


# ---- applying it -----------------------------------------------------------------------------------------------------
def apply_expert_parallel(model: nn.Module, mesh: DeviceMesh) -> list[nn.Parameter]:
    """Shard every MoE's routed experts over "ep" and swap in the all-to-all expert compute. Returns the expert
    parameters (FSDP must ignore them). No-op (returns []) when ep == 1."""
    moes = model.moe_modules() if hasattr(model, "moe_modules") else []
    p = mesh[EP].size()
    if p == 1 or not moes:
        return []
    placements = (Replicate(), Shard(0))
    params: list[nn.Parameter] = []
    for moe in moes:
        if moe.n_experts % p:
            raise UserError(f"config key 'parallel.ep': {p} must divide model.moe.n_routed ({moe.n_experts})")
        rank = mesh[EP].get_local_rank()
        for name in EXPERT_PARAM_NAMES:
            full = getattr(moe, name)
            local = full.detach().chunk(p, dim=0)[rank].clone()
            dt = DTensor.from_local(local, mesh[(DP_SHARD, EP)], placements, run_check=False)
            param = nn.Parameter(dt, requires_grad=full.requires_grad)
            moe.register_parameter(name, param)
            params.append(param)
        moe.expert_compute = EPExpertCompute(moe, mesh)  # instance attribute shadows the method
    return params
