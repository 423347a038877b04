"""Vectorised MoE dispatch against a naive per-expert reference; aux-loss-free bias balancing."""
import pytest
import torch
import torch.nn.functional as F

from mythos.model.grouped import expert_mm, expert_mm_wgrad, force_slice_loop, grouped_mm_supported
from mythos.model.moe import MoE
from tests.model.helpers import micro_cfg


def _moe(n_routed=6, top_k=2, dim=32, hidden=24, score="sigmoid", n_shared=1, rate=1e-3, seed=0):
    cfg = micro_cfg("mla", dim=dim)
    cfg.moe.n_routed, cfg.moe.top_k, cfg.moe.expert_dim, cfg.moe.score = n_routed, top_k, hidden, score
    cfg.moe.n_shared, cfg.moe.bias_update_rate = n_shared, rate
    torch.manual_seed(seed)
    moe = MoE(cfg)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return moe


def naive_moe(moe: MoE, x_ND: torch.Tensor) -> torch.Tensor:
    """Per-expert boolean masks over tokens, written independently of MoE.forward's dispatch."""
    logits = x_ND @ moe.router.weight.T
    scores = logits.sigmoid() if moe.score == "sigmoid" else logits.softmax(-1)
    idx = torch.topk(scores + moe.bias, moe.top_k, dim=-1).indices
    gates = scores.gather(1, idx)
    if moe.norm_topk:
        gates = gates / gates.sum(-1, keepdim=True)
    gates = gates * moe.route_scale
    out = torch.zeros_like(x_ND)
    hidden = moe.hidden
    for e in range(moe.n_experts):
        for slot in range(moe.top_k):
            mask = idx[:, slot] == e
            if mask.any():
                w13 = moe.experts.w13_EDF[e]
                h = x_ND[mask] @ w13
                y = (F.silu(h[:, :hidden]) * h[:, hidden:]) @ moe.experts.w2_EFD[e]
                out[mask] += gates[mask, slot, None] * y
    if moe.shared is not None:
        out = out + moe.shared(x_ND)
    return out


@pytest.mark.parametrize("score", ["sigmoid", "softmax"])
@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_vectorised_equals_naive_float64_with_empty_experts(score, top_k):
    moe = _moe(score=score, top_k=top_k).double()
    moe.bias[0] = -1e3  # selection-only bias: expert 0 gets no tokens
    x = torch.randn(2, 37, 32, dtype=torch.float64)
    y, load = moe(x)
    ref = naive_moe(moe, x.reshape(-1, 32)).view_as(x)
    assert load[0] == 0 and load.sum() == 2 * 37 * top_k
    assert (y - ref).abs().max().item() <= 1e-12


def test_grouped_mm_path_equals_slice_loop_fp32_and_grads():
    """The fp32 grouped-matmul path (used on CPU and GPU) gives the slice-loop results, values and gradients."""
    moe = _moe()
    moe.bias[2] = -1e3
    x = torch.randn(3, 20, 32)
    assert grouped_mm_supported(x[0], moe.experts.w13_EDF) and grouped_mm_supported(x[0, :, :24], moe.experts.w2_EFD)
    outs = {}
    for grouped in (True, False):
        moe.zero_grad()
        xi = x.clone().requires_grad_()
        with force_slice_loop(not grouped):
            y, _ = moe(xi)
            y.sum().backward()  # an expanded (stride-0) gradient: must not break _grouped_mm's backward
        outs[grouped] = (y.detach(), xi.grad, moe.experts.w13_EDF.grad.clone(), moe.experts.w2_EFD.grad.clone())
    for a, b in zip(outs[True], outs[False]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_bf16_autocast_runs():
    moe = _moe()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = moe(torch.randn(2, 16, 32))
    assert torch.isfinite(y.float()).all()


def test_bias_balances_skewed_router_and_gates_stay_unbiased():
    torch.manual_seed(0)
    n_experts, dim = 8, 32
    moe = _moe(n_routed=n_experts, top_k=2, dim=dim, rate=0.005)
    with torch.no_grad():  # skew: a shared input direction strongly favours experts 0 and 1
        moe.router.weight.normal_(std=0.1)
        direction = torch.randn(dim)
        direction /= direction.norm()
        moe.router.weight[:2] += 1.5 * direction
    g = torch.Generator().manual_seed(1)

    def batch():
        return torch.randn(2048, dim, generator=g) * 0.5 + 2.0 * direction

    def max_over_mean(load):
        return (load.max() / load.mean()).item()

    with torch.no_grad():
        _, load0 = moe(batch())
        assert max_over_mean(load0) > 3.0, "the router is not skewed enough for the test to mean anything"
        for _ in range(200):
            _, load = moe(batch())
            moe.tokens_per_expert += load  # what Mythos.forward does in training mode
            moe.update_bias(moe.tokens_per_expert.clone())
            assert moe.tokens_per_expert.sum() == 0, "update_bias resets the counter"
            assert abs(moe.bias.mean().item()) < 1e-6, "bias re-centred to zero mean"
        load = sum(moe(batch())[1] for _ in range(4))  # balance after the updates, over 4 fresh batches
    assert max_over_mean(load) <= 1.3, load
    # gates come from the unbiased scores, for the experts the biased scores selected
    x = batch()
    idx, gates, scores = moe.route(x)
    unbiased = torch.sigmoid(x @ moe.router.weight.T)
    torch.testing.assert_close(scores, unbiased)
    sel = unbiased.gather(1, idx)
    torch.testing.assert_close(gates, sel / sel.sum(-1, keepdim=True))
    assert not torch.equal(idx.sort(-1).values, unbiased.topk(2, -1).indices.sort(-1).values), \
        "with the learned bias, selection differs from the unbiased top-k"


def test_update_bias_rule():
    moe = _moe(n_routed=4, rate=0.1)
    moe.update_bias(torch.tensor([10.0, 0.0, 5.0, 5.0]))
    # sign(mean - load) = [-1, +1, 0, 0] * 0.1, already zero-mean
    torch.testing.assert_close(moe.bias, torch.tensor([-0.1, 0.1, 0.0, 0.0]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k, n", [(8, 12), (6, 7)])  # 16-byte aligned (grouped kernel in fp32) and not (loop)
def test_expert_mm_op_matches_per_group_matmul(dtype, k, n):
    """The custom op (both kernels) and its gradients against per-group matmuls, incl. empty groups."""
    g = torch.Generator().manual_seed(0)
    counts = torch.tensor([3, 0, 5, 0, 4])
    offs = torch.cumsum(counts, 0).to(torch.int32)
    x = torch.randn(12, k, dtype=dtype, generator=g, requires_grad=True)
    w = torch.randn(5, k, n, dtype=dtype, generator=g, requires_grad=True)
    starts = [0, 3, 3, 8, 8]
    ref = torch.cat([x[s:s + n] @ w[e] for e, (s, n) in enumerate(zip(starts, counts.tolist()))])
    gy = torch.randn(12, n, dtype=dtype, generator=g)
    rx, rw = torch.autograd.grad(ref, (x, w), gy)
    for loop in (False, True):
        with force_slice_loop(loop):
            y = expert_mm(x, w, offs)
            dx, dw = torch.autograd.grad(y, (x, w), gy)
        tol = dict(rtol=0, atol=0) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(y, ref, **tol)
        torch.testing.assert_close(dx, rx, **tol)
        torch.testing.assert_close(dw, rw, **tol)
        assert dw[1].abs().sum() == 0 and dw[3].abs().sum() == 0
    torch.library.opcheck(expert_mm, (x.detach(), w.detach(), offs))
    torch.library.opcheck(expert_mm_wgrad, (x.detach(), gy, offs))
