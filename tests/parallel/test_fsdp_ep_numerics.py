"""FSDP2 and expert parallelism against a single process on the same global batch (gloo, CPU, several processes).

Every configuration trains the same tiny looped MoE model from the same init on the same synthetic global batches
(3 loops, truncated backprop through the last 2) for 5 steps with AdamW + clipping + the MoE bias update. Each
configuration runs in the shared launch of its rank count (tests/parallel/conftest.py::register_runs; each builds its
own engine and mesh)."""
from __future__ import annotations

import pytest
import torch
from tests.parallel.conftest import register_runs

STEPS = 5
EXPERT_KEYS = ("recurrence.block.ffn.experts.w13_EDF", "recurrence.block.ffn.experts.w2_EFD")


register_runs("fsdp_ep", {
    1: {"ref": []},
    2: {"fsdp2": [], "ep2": ["--ep", "2", "--count-comm"]},
    4: {"dp2_ep2": ["--ep", "2", "--dp-shard", "2", "--count-comm"],
        "hsdp2x2": ["--dp-replicate", "2", "--dp-shard", "2", "--count-comm"],
        "hsdp2_ep2": ["--dp-replicate", "2", "--ep", "2", "--count-comm"]},
}, common=["--steps", str(STEPS)])


@pytest.fixture(scope="module")
def reference(dist_runs):
    return torch.load(dist_runs(1, "fsdp_ep.ref"), weights_only=True)


@pytest.fixture(scope="module")
def shared(dist_runs):
    """run(nproc, name): (rank 0's result, every rank's MoE biases) of configuration `name`."""
    def run(nproc, name):
        out = dist_runs(nproc, f"fsdp_ep.{name}")
        return (torch.load(out, weights_only=True),
                [torch.load(f"{out}.bias{r}", weights_only=True) for r in range(nproc)])
    return run


def _check(ref, res, biases, grad_tol):
    assert len(res["losses"]) == STEPS
    for a, b in zip(ref["losses"], res["losses"]):
        assert abs(a - b) <= 1e-5, (ref["losses"], res["losses"])
    assert set(ref["grads"]) == set(res["grads"])
    for k, g in ref["grads"].items():
        assert torch.allclose(g, res["grads"][k], rtol=0, atol=grad_tol), (k, (g - res["grads"][k]).abs().max())
    for k in EXPERT_KEYS:  # expert gradients, the tight bound the issue asks for
        assert (ref["grads"][k] - res["grads"][k]).abs().max() <= 1e-6, k
    for b in biases[1:]:  # the aux-loss-free bias saw the all-reduced loads on every rank
        assert all(torch.equal(x, y) for x, y in zip(biases[0], b))
    assert all(torch.allclose(x, y, atol=1e-7) for x, y in zip(ref["biases"], biases[0]))


@pytest.mark.slow
def test_fsdp_two_ranks_matches_one(reference, shared):
    res, biases = shared(2, "fsdp2")
    _check(reference, res, biases, grad_tol=1e-6)


@pytest.mark.slow
def test_expert_parallel_two_ranks_matches_one(reference, shared):
    res, biases = shared(2, "ep2")
    _check(reference, res, biases, grad_tol=1e-6)
    assert res["comm"][0]["all_to_all"] > 0  # tokens really travelled


@pytest.mark.slow
def test_dp2_x_ep2_four_ranks_matches_one(reference, shared):
    res, biases = shared(4, "dp2_ep2")
    _check(reference, res, biases, grad_tol=1e-6)
    assert res["comm"][0]["all_to_all"] > 0
    assert "all_reduce" not in res["comm"][0]  # expert grads: FSDP's reduce-scatter over dp_shard, not all-reduces


@pytest.mark.slow
def test_hsdp_2x2_four_ranks_matches_one(reference, shared):
    """HSDP: 2 shard groups of 2 ranks (dense and experts sharded in a group, replicated across groups)."""
    res, biases = shared(4, "hsdp2x2")
    _check(reference, res, biases, grad_tol=1e-6)
    assert res["comm"][0]["all_reduce"] > 0  # gradients all-reduced across the groups


@pytest.mark.slow
def test_hsdp_2_x_ep2_four_ranks_matches_one(reference, shared):
    """HSDP with expert parallelism: experts split over ep inside a group, replicated across the 2 groups."""
    res, biases = shared(4, "hsdp2_ep2")
    _check(reference, res, biases, grad_tol=1e-6)
    assert res["comm"][0]["all_to_all"] > 0 and res["comm"][0]["all_reduce"] > 0
