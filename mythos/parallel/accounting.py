"""What a rank holds and sends, measured the same way in a real run and in `mythos-plan`'s dry run.

* `state_bytes(model, optimizer)`: this rank's parameter, gradient and optimizer-state bytes, routed experts apart
  from the dense parts (local shards only: a DTensor counts its local tensor).
* `CollectiveCounter`: torch's comm-debug mode (`CommDebugMode`, which sees every c10d collective at the dispatcher)
  extended to record, per (collective kind, mesh dim), the calls and the bytes this rank puts in: the shard for an
  all-gather, the full buffer for a reduce-scatter, the tensor for an all-reduce, the send buffer for an all-to-all.
  The process group of each call comes from torch's `_tools.fake_collectives.CollectiveOp`.
"""
from __future__ import annotations

from collections import defaultdict

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed._tools.fake_collectives import CollectiveOp
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.debug import CommDebugMode

_c10d = torch.ops.c10d
_KINDS = {_c10d._allgather_base_.default: "all_gather", _c10d.allgather_into_tensor_coalesced_.default: "all_gather",
          _c10d._reduce_scatter_base_.default: "reduce_scatter",
          _c10d.reduce_scatter_tensor_coalesced_.default: "reduce_scatter",
          _c10d.allreduce_.default: "all_reduce", _c10d.allreduce_coalesced_.default: "all_reduce",
          _c10d.alltoall_base_.default: "all_to_all", _c10d.alltoall_.default: "all_to_all",
          _c10d.broadcast_.default: "broadcast"}
_INPUT_ARG = {"all_gather": 1, "reduce_scatter": 1, "all_to_all": 1, "all_reduce": 0, "broadcast": 0}


def _nbytes(x) -> int:
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    return sum(_nbytes(t) for t in x) if isinstance(x, (list, tuple)) else 0


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """{"params"|"grads"|"optim" + "_experts"|"_dense": bytes on this rank}. Experts = the parameters of the modules
    the model's parallel plan names as experts."""
    plan = model.parallel_plan()
    expert_ids = {id(p) for path in plan.experts for p in model.get_submodule(path).parameters()}
    out: dict[str, int] = defaultdict(int)
    for p in model.parameters():
        part = "experts" if id(p) in expert_ids else "dense"
        out[f"params_{part}"] += _nbytes(_local(p))
        if p.grad is not None:
            out[f"grads_{part}"] += _nbytes(_local(p.grad))
        if optimizer is not None and p in optimizer.state:
            out[f"optim_{part}"] += sum(_nbytes(_local(v)) for v in optimizer.state[p].values()
                                        if isinstance(v, torch.Tensor))
    return dict(out)


def mesh_dim_groups(mesh) -> dict[str, object]:
    """mesh dim name -> process group ("dp_replicate" with HSDP, "dp_shard", "ep", and "dp": the shard group)."""
    from mythos.parallel.mesh import DP, shard_group
    groups = {DP: shard_group(mesh).get_group()}
    groups.update({name: mesh[name].get_group() for name in mesh.mesh_dim_names})
    return groups


def dim_spans(mesh, group_size: int) -> dict[str, str]:
    """mesh dim -> "intra" if this rank's group of that dim lies inside one block of `group_size` consecutive ranks
    (a node, or an HSDP shard group), else "inter"."""
    if mesh is None:
        return {}
    return {name: "intra" if len({r // group_size for r in dist.get_process_group_ranks(g)}) == 1 else "inter"
            for name, g in mesh_dim_groups(mesh).items()}


def split_by_span(table: dict[str, dict[str, int]], spans: dict[str, str]) -> dict[str, int]:
    """{"intra_group": bytes, "inter_group": bytes} of a `CollectiveCounter.table()` (keys "kind@dim")."""
    out = {"intra_group": 0, "inter_group": 0}
    for key, rec in table.items():
        out[f"{spans.get(key.split('@')[1], 'inter')}_group"] += rec["bytes"]
    return out


class _NoModuleTracker:
    """CommDebugMode's per-module attribution hooks every module's forward and trips over checkpoint recomputation
    (IndexError in its parent list); the counts here are per step, so the attribution is switched off."""
    name, is_bw, activation_checkpointing = "Global", False, False
    module_parents_dict = {"Global": []}

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


class CollectiveCounter(CommDebugMode):
    """CommDebugMode that also keeps {(kind, mesh dim): {"calls": n, "bytes": b}} for this rank."""

    def __init__(self, groups: dict[str, object] | None = None) -> None:
        super().__init__()
        self.advanced_module_tracker = _NoModuleTracker()
        self._names = [(g, name) for name, g in (groups or {}).items()]
        self.by_kind: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: {"calls": 0, "bytes": 0})

    def _dim(self, func, args, kind: str) -> str:
        """The mesh dim of this call's group. Dims spanning the same ranks share one group (a dim over all ranks is
        the world group), so a shared group is named by use: all-to-all -> "ep", FSDP's collectives -> "dp"."""
        try:
            pg = CollectiveOp.get_process_group(func, args)
        except (TypeError, KeyError):
            return "?"
        ranks = dist.get_process_group_ranks(pg)
        names = [name for g, name in self._names if dist.get_process_group_ranks(g) == ranks]
        preferred = "ep" if kind == "all_to_all" else "dp"
        return preferred if preferred in names else names[0] if names else "world"

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = super().__torch_dispatch__(func, types, args, kwargs)
        kind = _KINDS.get(func)
        if kind is not None and out is not NotImplemented:
            rec = self.by_kind[(kind, self._dim(func, args, kind))]
            rec["calls"] += 1
            rec["bytes"] += _nbytes(args[_INPUT_ARG[kind]])
        return out

    def snapshot(self) -> dict:
        return {k: dict(v) for k, v in self.by_kind.items()}

    def repeat_since(self, before: dict, times: int) -> None:
        """Count what happened since `before` `times` times in all (a repeated micro-batch)."""
        for key, rec in self.by_kind.items():
            old = before.get(key, {"calls": 0, "bytes": 0})
            for field in ("calls", "bytes"):
                rec[field] = old[field] + times * (rec[field] - old[field])

    def table(self) -> dict[str, dict[str, int]]:
        return {f"{k}@{d}": dict(v) for (k, d), v in sorted(self.by_kind.items())}
