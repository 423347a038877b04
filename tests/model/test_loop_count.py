"""Training never runs a data-dependent number of loops: ACT masks, it never breaks out early."""
import pytest
import torch

from mythos.model import Mythos
from tests.model.helpers import micro_cfg


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("halt_bias", [50.0, -50.0, 0.0])
def test_every_call_runs_exactly_n_loops(train, halt_bias):
    torch.manual_seed(0)
    cfg = micro_cfg("mla", act=True)
    model = Mythos(cfg).train(train)
    with torch.no_grad():
        model.halt.bias.fill_(halt_bias)  # +50: every position halts after loop 1; -50: never before the last
    calls = []
    model.recurrence.register_forward_hook(lambda m, i, o: calls.append(i[2]))
    for batch_seed in range(3):  # different data, same count
        calls.clear()
        x = torch.randint(0, cfg.vocab_size, (2, 10), generator=torch.Generator().manual_seed(batch_seed))
        out = model(x, n_loops=5)
        assert calls == [0, 1, 2, 3, 4]
        assert out.router_load_LE.shape == (5, cfg.moe.n_routed) and out.hidden_norm_L.shape == (5,)
    expected_steps = {50.0: 1.0, -50.0: 5.0}.get(halt_bias)
    if expected_steps is not None:
        assert out.halt_stats["mean_steps"] == expected_steps
    if halt_bias == 50.0:  # halted positions keep their state: the norm stops changing after loop 1
        assert torch.allclose(out.hidden_norm_L, out.hidden_norm_L[0].expand(5))


def test_default_loop_counts():
    cfg = micro_cfg("mla")
    model = Mythos(cfg)
    x = torch.randint(0, cfg.vocab_size, (1, 4))
    assert model(x).n_loops == round(cfg.loops.mean)
    model.eval()
    assert model(x).n_loops == cfg.loops.inference


def test_router_load_accumulates_only_in_training():
    cfg = micro_cfg("gqa")
    model = Mythos(cfg)
    (moe,) = model.moe_modules()
    x = torch.randint(0, cfg.vocab_size, (2, 8))
    out = model(x, n_loops=3)
    assert out.router_load_LE.sum() == 3 * 2 * 8 * cfg.moe.top_k
    assert torch.equal(moe.tokens_per_expert, out.router_load_LE.sum(0))
    model.eval()
    model(x, n_loops=3)
    assert torch.equal(moe.tokens_per_expert, out.router_load_LE.sum(0))
    moe.update_bias(moe.tokens_per_expert.clone())
    assert moe.tokens_per_expert.sum() == 0


def test_dense_mode_outputs():
    cfg = micro_cfg("gqa", mode="dense")
    model = Mythos(cfg)
    assert model.moe_modules() == [] and model.recurrence is None and len(model.prelude) == cfg.n_layers
    out = model(torch.randint(0, cfg.vocab_size, (2, 8)))
    assert out.router_load_LE is None and out.halt_stats == {} and out.aux_loss.item() == 0.0
    assert out.logits_BTV.shape == (2, 8, cfg.vocab_size) and out.logits_BTV.dtype == torch.float32
