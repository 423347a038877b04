"""Cached decode equals the full forward (fp32, max abs diff <= 1e-4), also past the training loop count."""
import pytest
import torch

from mythos.model import KVCache, Mythos
from tests.model.helpers import micro_cfg


def _decode_logits(model, x, n_loops, prefill):
    cache = KVCache()
    parts = [model(x[:, :prefill], n_loops=n_loops, cache=cache).logits_BTV]
    for i in range(prefill, x.shape[1]):
        parts.append(model(x[:, i:i + 1], n_loops=n_loops, cache=cache).logits_BTV)
    return torch.cat(parts, 1), cache


@pytest.mark.parametrize("kind", ["mla", "gqa"])
@pytest.mark.parametrize("n_loops", [3, 10])  # 10 > loops.max (6): beyond the training count
@pytest.mark.parametrize("act", [False, True])
def test_cached_decode_matches_full_forward(kind, n_loops, act):
    torch.manual_seed(0)
    cfg = micro_cfg(kind, act=act)
    model = Mythos(cfg).eval()
    if act:  # a halting head that halts some positions early and not others
        torch.nn.init.normal_(model.halt.weight, std=0.5)
    x = torch.randint(0, cfg.vocab_size, (2, 20))
    with torch.no_grad():
        full = model(x, n_loops=n_loops).logits_BTV
        dec, cache = _decode_logits(model, x, n_loops, prefill=7)
        if act:  # the check is only meaningful if positions halt at different loops
            stats = model(x, n_loops=n_loops).halt_stats
            assert 1.0 < stats["mean_steps"] < n_loops, stats
    assert dec.shape == full.shape
    diff = (dec - full).abs().max().item()
    assert diff <= 1e-4, diff
    assert len([k for k in cache.layers if k[0] == "loop"]) == n_loops


def test_cached_decode_dense_mode():
    torch.manual_seed(0)
    cfg = micro_cfg("gqa", mode="dense")
    model = Mythos(cfg).eval()
    x = torch.randint(0, cfg.vocab_size, (1, 12))
    with torch.no_grad():
        full = model(x).logits_BTV
        dec, _ = _decode_logits(model, x, None, prefill=1)
    assert (dec - full).abs().max().item() <= 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mla_cache_bytes_per_token_per_loop(dtype):
    cfg = micro_cfg("mla")
    model = Mythos(cfg).eval().to(dtype)
    cache = KVCache()
    with torch.no_grad():
        model(torch.randint(0, cfg.vocab_size, (3, 5)), n_loops=2, cache=cache)
    a = cfg.attention
    expected = (a.kv_lora_rank + a.rope_dim) * torch.tensor([], dtype=dtype).element_size()
    assert cache.bytes_per_token_per_loop() == expected
    for key, layer in cache.layers.items():
        assert set(layer.buffers) == {"c_kv", "k_pe"}, key
        assert layer.buffers["c_kv"].shape[-1] == a.kv_lora_rank and layer.buffers["k_pe"].shape[-1] == a.rope_dim
