"""Only the last k loops build an autograd graph; the forward output is the same as with full backprop."""
import pytest
import torch

from mythos.model import Mythos
from tests.model.helpers import micro_cfg


def _run(k, n_loops, act=False, count=True):
    torch.manual_seed(0)
    cfg = micro_cfg("mla", act=act)
    cfg.loops.backprop_k = k
    model = Mythos(cfg)
    x = torch.randint(0, cfg.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    n_saved = [0]

    def pack(t):
        n_saved[0] += 1
        return t

    grad_flags = []
    hook = model.recurrence.register_forward_hook(lambda m, i, o: grad_flags.append(o[0].requires_grad))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x, n_loops=n_loops)
    hook.remove()
    (out.logits_BTV.square().mean() + out.aux_loss).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, n_saved[0], grad_flags, grads


@pytest.mark.parametrize("act", [False, True])
def test_truncated_forward_equals_full_and_no_graph_before_last_k(act):
    full, saved_full, flags_full, _ = _run(k=0, n_loops=6, act=act)
    trunc, saved_trunc, flags_trunc, grads = _run(k=2, n_loops=6, act=act)
    torch.testing.assert_close(trunc.logits_BTV, full.logits_BTV, rtol=0, atol=0)
    assert flags_full == [True] * 6
    assert flags_trunc == [False] * 4 + [True] * 2, "loops before the last k must run without a graph"
    # The graph of 6 loops with k=2 saves exactly what a 2-loop run saves: loops 0..3 contribute nothing.
    _, saved_two, _, _ = _run(k=2, n_loops=2, act=act)
    assert saved_trunc == saved_two < saved_full
    # Parameters of the looped block still get gradients (from the last k loops), and the prelude through e.
    assert "recurrence.block.ffn.experts.w13_EDF" in grads and "prelude.0.attn.wo.weight" in grads


def test_param_gradients_come_only_from_last_k_loops():
    """Gradient of the truncated run equals a full-backprop run whose first n-k loops are detached by hand."""
    torch.manual_seed(0)
    cfg = micro_cfg("gqa")
    cfg.loops.backprop_k = 2
    model = Mythos(cfg)
    x = torch.randint(0, cfg.vocab_size, (2, 12), generator=torch.Generator().manual_seed(3))
    model(x, n_loops=5).logits_BTV.square().mean().backward()
    g_trunc = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    model.cfg.loops.backprop_k = 0
    calls = [0]

    def detach_early(m, args, out):  # full backprop, but cut the state after loop 3 (index 2)
        calls[0] += 1
        return (out[0].detach(), out[1]) if calls[0] <= 3 else out

    h = model.recurrence.register_forward_hook(detach_early)
    model(x, n_loops=5).logits_BTV.square().mean().backward()
    h.remove()
    # Loops 0..2 of the hand-detached run build a graph, but nothing flows back through their detached output:
    # if the truncated run let any gradient through loops 0..2, the two would differ.
    for n, p in model.named_parameters():
        if p.grad is not None or n in g_trunc:
            torch.testing.assert_close(p.grad, g_trunc[n], rtol=1e-5, atol=1e-7, msg=n)
