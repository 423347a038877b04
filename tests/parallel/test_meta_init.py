"""Meta-device construction: `meta_device()` + `parallelize` (which materialises shard by shard) gives bitwise the
weights of the eager `torch.manual_seed(s); Mythos(cfg)`, on one rank (several model variants) and on 4 gloo ranks
(dp2 x ep2, FSDP + sharded experts); the per-rank state is a quarter of the whole; expert collectives per step do
not grow with the loop count or the micro-batch count."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from mythos.config import ParallelConfig
from mythos.model import Mythos
from mythos.model.config import ACTConfig, InjectionConfig
from mythos.parallel import meta_device, parallelize
from tests.parallel.dist_run import tiny_model_config


def _variants():
    base = tiny_model_config()
    return {"looped_moe": base,
            "act_openmythos_untied": dataclasses.replace(base, act=ACTConfig(enabled=True), tie_embeddings=False,
                                                         injection=InjectionConfig(kind="openmythos")),
            "dense": dataclasses.replace(base, mode="dense", n_layers=2)}


def _eager(cfg, seed=0):
    torch.manual_seed(seed)
    return Mythos(cfg)


@pytest.mark.parametrize("name", list(_variants()))
@pytest.mark.parametrize("ac", ["none", "loop"])
def test_meta_init_one_rank_equals_eager(name, ac):
    cfg = _variants()[name]
    ref = _eager(cfg, seed=3)
    after_ref = torch.rand(4)  # the generator must also end where the eager build leaves it
    torch.manual_seed(3)
    with meta_device():
        model = Mythos(cfg)
    assert all(p.is_meta for p in model.parameters())
    model = parallelize(model, None, ParallelConfig(ac=ac))
    assert torch.equal(torch.rand(4), after_ref)
    got = {k.replace("_checkpoint_wrapped_module.", ""): v for k, v in model.state_dict().items()}
    want = ref.state_dict()
    assert list(got) == list(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k
    assert (model.head.weight is model.embed.weight) == cfg.tie_embeddings


def test_meta_construction_holds_no_storage():
    with meta_device():
        model = Mythos(tiny_model_config())
    assert sum(p.untyped_storage().nbytes() for p in model.parameters() if not p.is_meta) == 0


@pytest.mark.slow
def test_meta_init_four_ranks_equals_eager(scaling_runs):
    got = scaling_runs[(4, 3, 1)][0]["weights"]
    want = dict(_eager(tiny_model_config()).named_parameters())
    assert set(got) == set(want)
    for k, v in want.items():
        assert torch.equal(got[k], v.detach()), k


@pytest.mark.slow
def test_per_rank_state_is_a_quarter_at_dp2_ep2(scaling_runs):
    model = _eager(tiny_model_config())
    expert_ids = {id(p) for m in model.moe_modules() for p in m.experts.parameters()}
    total = {"experts": sum(p.numel() * 4 for p in model.parameters() if id(p) in expert_ids),
             "dense": sum(p.numel() * 4 for p in model.parameters() if id(p) not in expert_ids)}
    for rank, res in enumerate(scaling_runs[(4, 3, 1)]):
        st = res["state"]
        for part, whole in total.items():
            for kind, factor in (("params", 1), ("grads", 1), ("optim", 2)):  # AdamW: exp_avg + exp_avg_sq
                quarter = factor * whole / 4
                assert abs(st[f"{kind}_{part}"] - quarter) <= 0.05 * quarter, (rank, kind, part, st, quarter)


@pytest.mark.slow
def test_expert_collectives_do_not_grow_with_loops_or_micro_batches(scaling_runs):
    base, more = scaling_runs[(4, 3, 1)][0]["comm"], scaling_runs[(4, 6, 2)][0]["comm"]
    # experts are FSDP-sharded over dp_shard: one all-gather and one reduce-scatter there per step, nothing else
    for c in (base, more):
        assert c["all_gather@dp_shard"]["calls"] == 1 and c["reduce_scatter@dp_shard"]["calls"] == 1, c
        assert not any(k.startswith("all_reduce") for k in c), c
    assert more["reduce_scatter@dp_shard"] == base["reduce_scatter@dp_shard"]
    # control: the token all-to-alls do scale with loops x micro-batches (2 x 2 = 4 times as many)
    assert more["all_to_all@ep"]["calls"] == 4 * base["all_to_all@ep"]["calls"]


@pytest.mark.slow
def test_accumulated_gradients_at_dp2_ep2_equal_one_rank(scaling_runs):
    """6 loops x 2 micro-batches per rank, experts reduced once at the end of the step: the same gradients as one
    process on the whole batch."""
    ref, got = scaling_runs[(1, 6, 1)][0], scaling_runs[(4, 6, 2)][0]
    assert set(ref["grads"]) == set(got["grads"]) and len(ref["grads"]) > 20
    for k, g in ref["grads"].items():
        assert (g - got["grads"][k]).abs().max() <= 1e-6, k
    assert abs(ref["loss"] - sum(r["loss"] for r in scaling_runs[(4, 6, 2)]) / 4) <= 1e-5
