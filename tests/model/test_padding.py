"""Batched generation with left padding and a mask: every row continues exactly as its prompt alone (greedy tokens
equal; logits at real positions within 1e-5 relative to the largest logit: the masked attention sums in another
order), with the dynamic cache, the static cache, the compiled step and ACT's skip mode."""
import pytest
import torch

from mythos.evals.generate_cli import left_pad
from mythos.model import KVCache
from tests.model.helpers import decode_model

PROMPTS = [[5, 17, 42, 9, 63, 2, 80], [31, 7], [11, 90, 4, 4]]


_model = decode_model


@pytest.mark.parametrize("kind", ["mla", "gqa"])
@pytest.mark.parametrize("act", [False, True])
@pytest.mark.parametrize("how", ["dynamic", "static", "compiled", "skip"])
def test_padded_rows_equal_prompts_alone(kind, act, how):
    if how == "skip" and not act:
        pytest.skip("skip mode is ACT's")
    model = _model(kind, act)
    kw = {"dynamic": {}, "static": {"static": True}, "compiled": {"compile": True, "backend": "aot_eager"},
          "skip": {"skip_halted": True}}[how]
    torch._dynamo.reset()
    tokens_BT, mask_BT = left_pad(PROMPTS)
    out = model.generate(tokens_BT, 8, n_loops=4, mask_BT=mask_BT, **kw)
    t = tokens_BT.shape[1]
    for i, p in enumerate(PROMPTS):
        alone = model.generate(torch.tensor([p]), 8, n_loops=4, skip_halted=how == "skip")  # skip fills differ
        assert torch.equal(out[i, t - len(p):], alone[0]), (i, out[i], alone[0])
    assert len(set(out[0, t:].tolist())) > 2, "degenerate continuation: a weak comparison"


@pytest.mark.parametrize("kind", ["mla", "gqa"])
@pytest.mark.parametrize("act", [False, True])
def test_padded_forward_logits_equal_alone(kind, act):
    """One forward (no cache: a temporary one carries the mask), then cached decode of one more token per row."""
    model = _model(kind, act)
    tokens_BT, mask_BT = left_pad(PROMPTS)
    t = tokens_BT.shape[1]
    with torch.no_grad():
        full = model(tokens_BT, n_loops=4, mask_BT=mask_BT).logits_BTV
        cache = KVCache()
        model(tokens_BT, n_loops=4, cache=cache, mask_BT=mask_BT)
        nxt_B1 = torch.tensor([[3], [8], [21]])
        step = model(nxt_B1, n_loops=4, cache=cache).logits_BTV
        for i, p in enumerate(PROMPTS):
            alone = model(torch.tensor([p + [int(nxt_B1[i])]]), n_loops=4).logits_BTV[0]
            tol = 1e-5 * alone.abs().max().item()
            assert (full[i, t - len(p):] - alone[:-1]).abs().max().item() <= tol
            assert (step[i, 0] - alone[-1]).abs().max().item() <= tol
        # unpadded input with an all-ones mask takes the unmasked path: bit for bit the plain forward
        plain = model(tokens_BT, n_loops=4).logits_BTV
        assert torch.equal(model(tokens_BT, n_loops=4, mask_BT=torch.ones_like(mask_BT)).logits_BTV, plain)
