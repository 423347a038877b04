"""The looped block is gathered once per forward/backward, not once per loop: FSDP2 collectives per step counted
(patched torch.distributed entry points) at T=2 and T=6 (backprop through all loops), with FSDP over all ranks and
with HSDP (2 shard groups of 2)."""
from __future__ import annotations

import pytest
import torch
from tests.parallel.dist_run import launch


def _comm(tmp_path, loops, *extra, nproc=2):
    out = tmp_path / f"c{loops}{'_'.join(extra)}.pt"
    launch(nproc, ["--out", str(out), "--steps", "2", "--loops", str(loops), "--backprop-k", "0", "--count-comm",
               *extra])
    return torch.load(out, weights_only=True)["comm"]


@pytest.mark.slow
def test_all_gathers_per_step_do_not_grow_with_loops(tmp_path):
    c2, c6 = _comm(tmp_path, 2, "--ac", "loop"), _comm(tmp_path, 6, "--ac", "loop")
    # groups: prelude block, coda block, looped block, its routed experts, root. Prelude and coda are resharded after
    # forward and re-gathered for backward (2 each); the looped block, its experts and the root stay gathered (1 each).
    for c in c2 + c6:
        assert c["all_gather"] == 7, c
        assert c["reduce_scatter"] == 5, c  # one per group per backward


@pytest.mark.slow
def test_fsdp_default_policy_would_regather_per_loop(tmp_path):
    """Control: with FSDP2's per-call post-backward the looped block and its experts are re-gathered for every
    loop's backward (4 more loops x 2 units)."""
    c2, c6 = _comm(tmp_path, 2, "--no-defer"), _comm(tmp_path, 6, "--no-defer")
    assert c6[-1]["all_gather"] - c2[-1]["all_gather"] == 8


@pytest.mark.slow
def test_hsdp_all_gathers_per_step_do_not_grow_with_loops(tmp_path):
    """HSDP 2 x 2: the same 7 all-gathers and 5 reduce-scatters inside a group, plus one all-reduce per group across
    the groups, at any loop count."""
    hsdp = ("--ac", "loop", "--dp-replicate", "2", "--dp-shard", "2")
    c2, c6 = _comm(tmp_path, 2, *hsdp, nproc=4), _comm(tmp_path, 6, *hsdp, nproc=4)
    for c in c2 + c6:
        assert (c["all_gather"], c["reduce_scatter"], c["all_reduce"]) == (7, 5, 5), c
