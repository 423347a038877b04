"""GPU lane (marked `gpu`, skipped without CUDA): NCCL, bf16, `_grouped_mm`, compile, the loop-aware FSDP policy and
one expert-parallel all-to-all, on one CUDA device (a 1-rank NCCL group: one GPU cannot host two NCCL ranks)."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (GPU lane)")]


def _sm90() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (9, 0)


def test_grouped_mm_bf16_matches_slice_loop():
    from mythos.model.grouped import expert_mm, force_slice_loop, grouped_mm_supported
    torch.manual_seed(0)
    x = torch.randn(96, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(4, 64, 32, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    offs = torch.tensor([16, 40, 40, 96], device="cuda", dtype=torch.int32)
    assert grouped_mm_supported(x, w) == _sm90()
    y = expert_mm(x, w, offs)
    y.float().sum().backward()
    grads = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    with force_slice_loop():
        ref = expert_mm(x, w, offs)
        ref.float().sum().backward()
    torch.testing.assert_close(y, ref, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(grads[0], x.grad, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(grads[1], w.grad, rtol=2e-2, atol=5e-2)


@pytest.fixture
def nccl_world():
    import torch.distributed as dist
    from tests.parallel.dist_run import free_port
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", rank=0, world_size=1, device_id=torch.device("cuda", 0))
    yield
    dist.barrier()
    dist.destroy_process_group()


def _tiny():
    from tests.parallel.dist_run import tiny_model_config
    return tiny_model_config(loops=3, backprop_k=0)


@pytest.mark.parametrize("compile_", [False, True])
def test_fsdp_bf16_policy_on_nccl_gathers_once_per_step(nccl_world, compile_):
    """Meta init -> FSDP2 (bf16 params, fp32 reduce) on a 1-rank NCCL mesh, loop checkpointing, compile; collectives
    counted with CommDebugMode: the same number at 3 and 6 loops."""
    from torch.distributed.device_mesh import init_device_mesh

    from mythos.config import ParallelConfig
    from mythos.model import Mythos
    from mythos.parallel import meta_device, parallelize
    from mythos.parallel.accounting import CollectiveCounter
    from mythos.parallel.fsdp import apply_fsdp  # noqa: F401  (the policy under test)
    from mythos.parallel.mesh import DP_SHARD, EP, _FLAT, DP

    mesh = init_device_mesh("cuda", (1, 1), mesh_dim_names=(DP_SHARD, EP))
    _FLAT[id(mesh)] = mesh._flatten(DP)
    cfg = ParallelConfig(ac="loop", compile=compile_)
    torch.manual_seed(0)
    with meta_device():
        model = Mythos(_tiny())
    model = parallelize(model, mesh, cfg, device=torch.device("cuda"), dtype="bf16")
    tokens = torch.randint(0, 256, (2, 33), device="cuda")
    calls = []
    for loops in (3, 6):
        counter = CollectiveCounter()
        with counter:
            out = model(tokens[:, :-1], n_loops=loops)
            F.cross_entropy(out.logits_BTV.flatten(0, 1), tokens[:, 1:].flatten()).backward()
        assert torch.isfinite(out.logits_BTV).all()
        calls.append(counter.get_total_counts())
        model.zero_grad(set_to_none=True)
    assert calls[0] == calls[1] > 0, calls


def test_expert_parallel_all_to_all_on_nccl(nccl_world):
    """One EP all-to-all round trip through the NCCL backend (ep = 1 rank: rows go to self and back)."""
    import torch.distributed as dist

    from mythos.parallel.expert_parallel import _AllToAll
    x = torch.randn(10, 8, device="cuda", requires_grad=True)
    y = _AllToAll.apply(x, [10], [10], dist.group.WORLD)
    y.sum().backward()
    assert torch.equal(y, x) and torch.equal(x.grad, torch.ones_like(x))
