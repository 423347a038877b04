"""The looped block is gathered once per forward/backward, not once per loop: FSDP2 collectives per step counted
(patched torch.distributed entry points) at T=2 and T=6 (backprop through all loops), with FSDP over all ranks and
with HSDP (2 shard groups of 2). Each configuration runs in the shared launch of its rank count
(tests/parallel/conftest.py::register_runs: each builds its own engine and mesh)."""
from __future__ import annotations

import pytest
import torch
from tests.parallel.conftest import register_runs

HSDP = ("--dp-replicate", "2", "--dp-shard", "2")
register_runs("fsdp_comm", {  # ranks: {configuration: arguments}; T = 2 and 6 of each
    2: {f"{name}{t}": ["--loops", str(t), *extra] for t in (2, 6)
        for name, extra in (("loop", ["--ac", "loop"]), ("nodefer", ["--no-defer"]))},
    4: {f"hsdp{t}": ["--loops", str(t), "--ac", "loop", *HSDP] for t in (2, 6)},
}, common=["--steps", "2", "--backprop-k", "0", "--count-comm"])


@pytest.fixture(scope="module")
def comm(dist_runs):
    """comm(nproc, name): per-step collective counts of configuration `name`."""
    return lambda nproc, name: torch.load(dist_runs(nproc, f"fsdp_comm.{name}"), weights_only=True)["comm"]


@pytest.mark.slow
def test_all_gathers_per_step_do_not_grow_with_loops(comm):
    c2, c6 = comm(2, "loop2"), comm(2, "loop6")
    # groups: prelude block, coda block, looped block, its routed experts, root. Prelude and coda are resharded after
    # forward and re-gathered for backward (2 each); the looped block, its experts and the root stay gathered (1 each).
    for c in c2 + c6:
        assert c["all_gather"] == 7, c
        assert c["reduce_scatter"] == 5, c  # one per group per backward


@pytest.mark.slow
def test_fsdp_default_policy_would_regather_per_loop(comm):
    """Control: with FSDP2's per-call post-backward the looped block and its experts are re-gathered for every
    loop's backward (4 more loops x 2 units)."""
    c2, c6 = comm(2, "nodefer2"), comm(2, "nodefer6")
    assert c6[-1]["all_gather"] - c2[-1]["all_gather"] == 8


@pytest.mark.slow
def test_hsdp_all_gathers_per_step_do_not_grow_with_loops(comm):
    """HSDP 2 x 2: the same 7 all-gathers and 5 reduce-scatters inside a group, plus one all-reduce per group across
    the groups, at any loop count."""
    c2, c6 = comm(4, "hsdp2"), comm(4, "hsdp6")
    for c in c2 + c6:
        assert (c["all_gather"], c["reduce_scatter"], c["all_reduce"]) == (7, 5, 5), c
