"""Parameter counts of the named configs and the FLOP convention of model_stats."""
import pytest
import torch

from mythos.model import ModelConfig, Mythos, model_stats
from tests.model.helpers import micro_cfg


@pytest.mark.parametrize("name, target, tol", [
    ("rdt-770m", 770e6, 0.03),
    ("dense-1.3b", 1.3e9, 0.03),
    ("rdt-3b", 3.0e9, 0.05),
    ("small", 50e6, 0.05),
])
def test_named_total_params(name, target, tol):
    s = model_stats(ModelConfig.named(name))
    assert abs(s["total_params"] - target) <= tol * target, s["total_params"]
    assert s["active_params"] <= s["total_params"]


def test_tiny_size():
    s = model_stats(ModelConfig.named("tiny"))
    assert 5e6 <= s["total_params"] <= 15e6, s


def test_counts_match_a_real_model():
    cfg = micro_cfg("mla")
    model = Mythos(cfg)
    s = model_stats(cfg, n_loops=3, seq_len=16)
    assert s["total_params"] == sum(p.numel() for p in model.parameters())
    moe = model.recurrence.moe
    routed = moe.experts.w13_EDF.numel() + moe.experts.w2_EFD.numel()
    inactive = routed * (cfg.moe.n_routed - cfg.moe.top_k) // cfg.moe.n_routed
    assert s["active_params"] == s["total_params"] - inactive


def test_flops_convention():
    """fwd 2x matmul params (loop block n times) + bwd 4x (loop block only the last k times) + attention."""
    cfg = micro_cfg("gqa", mode="dense")
    model = Mythos(cfg)
    mm = sum(p.numel() for n, p in model.named_parameters() if p.dim() >= 2 and not n.startswith("embed"))
    mm += cfg.vocab_size * cfg.dim  # the tied head is a matmul even though its weight is the embedding
    seq = 32
    attn = 2 * seq * cfg.n_heads * 2 * cfg.head_dim * cfg.n_layers
    assert model_stats(cfg, seq_len=seq)["flops_per_token"] == 6 * mm + 3 * attn

    rdt = micro_cfg("mla")
    s2, s6 = (model_stats(rdt, n_loops=n, seq_len=seq) for n in (2, 6))
    s6_k6 = model_stats(rdt.replace(loops=type(rdt.loops)(**{**rdt.loops.__dict__, "backprop_k": 0})), 6, seq)
    loop_fwd = (s6["fwd_flops_per_token"] - s2["fwd_flops_per_token"]) / 4  # per extra loop, forward only
    assert s6["flops_per_token"] - s2["flops_per_token"] == 4 * loop_fwd, "no backward for loops before the last k"
    assert s6_k6["flops_per_token"] - s6["flops_per_token"] == 4 * 2 * loop_fwd, "backward = 2x forward per loop"
    assert s6["n_loops"] == 6 and s6["backprop_loops"] == 2


def test_stats_build_on_meta_device_fast():
    import time
    t = time.perf_counter()
    model_stats(ModelConfig.named("rdt-3b"))
    assert time.perf_counter() - t < 20
    assert torch.empty(1).device.type == "cpu", "the meta default device does not leak"


def test_meta_construction_then_init_weights():
    """parallelize may build on the meta device, materialise with to_empty, then call init_weights()."""
    cfg = micro_cfg("mla", act=True)
    with torch.device("meta"):
        model = Mythos(cfg)
    model = model.to_empty(device="cpu")
    model.init_weights()
    ref = Mythos(cfg)
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        assert torch.isfinite(p).all(), n
        if p.numel() > 1 and q.std() > 0:  # random init: same scale
            assert abs(p.std().item() - q.std().item()) < 0.2 * q.std().item(), n
        else:  # constant init: same values
            assert torch.equal(p, q), n
    for (n, b), (_, c) in zip(model.named_buffers(), ref.named_buffers()):
        assert torch.equal(b, c), n
    out = model(torch.randint(0, cfg.vocab_size, (1, 6)))
    assert torch.isfinite(out.logits_BTV).all()
