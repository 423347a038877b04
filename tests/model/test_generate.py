import torch

from mythos.model import Mythos
from tests.model.helpers import micro_cfg


def test_greedy_generate_matches_uncached_argmax():
    """temperature 0 = greedy; with the KV cache it must pick the tokens a full re-forward picks."""
    torch.manual_seed(0)
    cfg = micro_cfg("mla")
    model = Mythos(cfg)
    prompt = torch.randint(0, cfg.vocab_size, (2, 5))
    out = model.generate(prompt, max_new_tokens=6, n_loops=8, temperature=0.0)
    assert out.shape == (2, 11) and torch.equal(out[:, :5], prompt)
    assert model.training, "generate restores the training flag"
    model.eval()
    seq = prompt
    with torch.no_grad():
        for _ in range(6):
            seq = torch.cat([seq, model(seq, n_loops=8).logits_BTV[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, seq)


def test_sampling_respects_top_k_and_seed():
    torch.manual_seed(0)
    cfg = micro_cfg("gqa")
    model = Mythos(cfg).eval()
    prompt = torch.randint(0, cfg.vocab_size, (1, 4))
    a = model.generate(prompt, 8, temperature=1.0, top_k=3, generator=torch.Generator().manual_seed(5))
    b = model.generate(prompt, 8, temperature=1.0, top_k=3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    # top_k=1 at any temperature is greedy
    c = model.generate(prompt, 8, temperature=2.0, top_k=1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(c, model.generate(prompt, 8, temperature=0.0))
