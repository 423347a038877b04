"""Greedy generate() through transformers gives mythos-generate's tokens (with the cache and without it)."""
from __future__ import annotations

import pytest
import torch

from tests.hf.conftest import load_hf, random_export


@pytest.mark.parametrize("kind", ["rdt-mla", "rdt-gqa"])
def test_greedy_generate_equals_ours(kind, prepared_data, tmp_path):
    ours, out = random_export(kind, prepared_data / "tokenizer.model", tmp_path / f"gen_{kind.replace('-', '_')}")
    hf = load_hf(out)
    prompt = torch.tensor([[17, 42, 99, 5, 230, 61]])
    for n in (1, 4):
        want = ours.generate(prompt, 24, n_loops=n)[0].tolist()
        assert len(set(want[6:])) > 3, "degenerate continuation: the comparison would be weak"
        for use_cache in (True, False):
            seen = []
            hook = hf.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["input_ids"].shape[1]),
                                                with_kwargs=True)
            got = hf.generate(prompt, max_new_tokens=24, do_sample=False, n_loops=n, use_cache=use_cache,
                              eos_token_id=None, pad_token_id=0)[0].tolist()
            hook.remove()
            assert got == want, (n, use_cache)
            # with the cache: one prefill, then one new token per forward; without: the whole sequence each time
            assert seen == ([6] + [1] * 23 if use_cache else list(range(6, 30))), (use_cache, seen)


def test_generate_matches_mythos_generate_cli(tiny_run, run_export, capsys):
    """The CLI's decoded text equals the HF tokenizer's decoding of HF greedy tokens (same prompt, same loops)."""
    from transformers import AutoTokenizer

    from mythos.evals.generate_cli import main
    prompt = "def function_3(x, y=3):\n    if x > "
    assert main([str(tiny_run), "--prompt", prompt, "--loops", "3", "--max-new-tokens", "20"]) == 0
    cli_text = capsys.readouterr().out.rstrip("\n")
    tok = AutoTokenizer.from_pretrained(str(run_export), trust_remote_code=True)
    ids = tok(prompt, return_tensors="pt").input_ids
    got = load_hf(run_export).generate(ids, max_new_tokens=20, do_sample=False, n_loops=3, eos_token_id=None)
    assert tok.decode(got[0], skip_special_tokens=True) == cli_text


def test_sampling_runs_and_bad_arguments_are_refused(run_export):
    hf = load_hf(run_export)
    torch.manual_seed(0)
    out = hf.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=8, do_sample=True, temperature=0.8, top_k=20,
                      n_loops=2, eos_token_id=None)
    assert out.shape == (1, 11)
    with pytest.raises(TypeError, match="n_loop"):
        hf(torch.tensor([[5, 6, 7]]), n_loop=2)


@pytest.mark.parametrize("kind", ["rdt-mla", "rdt-gqa-act"])
def test_left_padded_batch_equals_each_prompt_alone(kind, prepared_data, tmp_path):
    """Left padding + attention_mask through transformers' generate (with the cache and without it): every row
    continues as its prompt alone does in our generate; the padded forward's logits at real positions equal the row
    alone within 1e-5 relative to the largest logit (masked attention sums in another order)."""
    ours, out = random_export(kind, prepared_data / "tokenizer.model", tmp_path / f"pad_{kind.replace('-', '_')}")
    hf = load_hf(out)
    prompts = [[17, 42, 99, 5, 230, 61], [8, 9], [250, 3, 77, 140]]
    t = max(map(len, prompts))
    ids = torch.zeros(len(prompts), t, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, t - len(p):], mask[i, t - len(p):] = torch.tensor(p), 1
    alone = [ours.generate(torch.tensor([p]), 12, n_loops=3)[0].tolist() for p in prompts]
    assert len(set(alone[0][6:])) > 3, "degenerate continuation: the comparison would be weak"
    for use_cache in (True, False):
        got = hf.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False, n_loops=3,
                          use_cache=use_cache, eos_token_id=None, pad_token_id=0)
        for i, p in enumerate(prompts):
            assert got[i, t - len(p):].tolist() == alone[i], (use_cache, i)
    with torch.no_grad():
        logits = hf(ids, attention_mask=mask, n_loops=3, use_cache=False).logits
        for i, p in enumerate(prompts):
            want = ours(torch.tensor([p]), n_loops=3).logits_BTV[0]
            assert (logits[i, t - len(p):] - want).abs().max().item() <= 1e-5 * want.abs().max().item()


def test_right_padding_leaves_logits_unchanged(run_export):
    hf = load_hf(run_export)
    ids = torch.tensor([[0, 5, 6], [7, 8, 9]])
    right = hf(ids, attention_mask=torch.tensor([[1, 1, 0], [1, 1, 1]]), use_cache=False).logits
    assert torch.equal(right, hf(ids, use_cache=False).logits)
    with pytest.raises(ValueError, match="attention_mask has 2 positions"):
        hf(ids, attention_mask=torch.ones(2, 2, dtype=torch.long))
