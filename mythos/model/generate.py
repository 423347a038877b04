"""Autoregressive sampling with a KV cache: one prefill of the prompt, then one token per forward.

The loop count is fixed for the whole call and may exceed the training count (loop signal and LoRA scales are
defined for any loop index). With ACT in eval mode, halted positions keep their state and their compute is masked
(see mythos.model.act), so cached decode is the same function as the full forward."""
from __future__ import annotations

import torch

from mythos.model.attention import KVCache


def sample_next(logits_BV: torch.Tensor, temperature: float, top_k: int | None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """temperature 0 → greedy argmax; else softmax(logits / T) restricted to the top_k, sampled."""
    if temperature <= 0:
        return logits_BV.argmax(-1, keepdim=True)
    logits_BV = logits_BV.float() / temperature
    if top_k is not None and top_k < logits_BV.shape[-1]:
        kth = torch.topk(logits_BV, top_k, dim=-1).values[:, -1:]
        logits_BV = logits_BV.masked_fill(logits_BV < kth, float("-inf"))
    return torch.multinomial(logits_BV.softmax(-1), 1, generator=generator)


@torch.no_grad()
def generate(model, tokens_BT: torch.Tensor, max_new_tokens: int, n_loops: int | None = None,
             temperature: float = 0.0, top_k: int | None = None,
             generator: torch.Generator | None = None, *, mask_BT: torch.Tensor | None = None,
             static: bool = False, compile: bool = False, backend: str = "inductor",
             skip_halted: bool = False) -> torch.Tensor:
    """tokens_BT followed by max_new_tokens sampled tokens ([B, T + max_new_tokens]). Runs in eval mode.

    mask_BT (1 = token, 0 = padding): prompts of different lengths, left-padded; each row continues as it would
    alone. static: a preallocated cache (mythos/model/static_cache.py); compile: a torch.compile'd one-token step
    over a static cache (mythos/model/decode.py; `backend` for tests). skip_halted: ACT skip mode (eager only)."""
    from mythos.model.decode import Decoder, round_len

    was_training = model.training
    model.eval()
    try:
        out = [tokens_BT]
        if static or compile:
            dec = Decoder.cached(model, tokens_BT.shape[0], round_len(tokens_BT.shape[1] + max_new_tokens), n_loops,
                                 compile=compile, backend=backend, skip_halted=skip_halted)
            logits_BV, step = dec.prefill(tokens_BT, mask_BT), dec.step
        else:
            cache = KVCache(skip_halted=skip_halted)
            logits_BV = model(tokens_BT, n_loops=n_loops, cache=cache, mask_BT=mask_BT).logits_BTV[:, -1]
            step = lambda tok_B1: model(tok_B1, n_loops=n_loops, cache=cache).logits_BTV[:, -1]  # noqa: E731
        for i in range(max_new_tokens):
            nxt_B1 = sample_next(logits_BV, temperature, top_k, generator)
            out.append(nxt_B1)
            if i + 1 < max_new_tokens:
                logits_BV = step(nxt_B1)
        return torch.cat(out, dim=1)
    finally:
        model.train(was_training)
