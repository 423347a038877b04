"""`MythosForCausalLM`: a transformers PreTrainedModel whose forward IS Mythos's forward (same module tree under
`.model`, same weights, same arithmetic), so logits through transformers equal ours bit for bit.

- `n_loops`: `config.n_loops` by default; any forward or `generate(..., n_loops=N)` call may override it.
- Cache: Mythos caches per call site (prelude/coda layers, the looped block once per loop index; MLA caches the
  latent), which HF's DynamicCache cannot hold, so `MythosCache` (Mythos's own KVCache plus `get_seq_length`) is
  created by the first forward with `use_cache` and handed back in `outputs.cache`; generate() passes it on and feeds
  one new token per step. Greedy decode equals `mythos-generate` (tests/hf/test_generate.py). Beam search and
  assisted decoding (which reorder or crop caches) are not supported.
- attention_mask: left padding (what batched generation and lm-eval's generation tasks use) is honoured: padding is
  never attended to and RoPE positions count only a row's real tokens, so each row gets the logits it has alone
  (`Mythos.forward(mask_BT=...)`). The mask may cover the cached positions too (generate() passes it whole). Right
  padding without a cache is left out: positions before the padding never see it, and logits stay bit-identical.

In an exported directory the `mythos...` imports below are rewritten to the bundled copies (mythos/hf/bundle.py).
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from mythos.model.attention import KVCache
from mythos.model.config import ModelConfig
from mythos.model.model import Mythos

from .configuration_mythos import MythosConfig


def model_config_from_dict(values: dict) -> ModelConfig:
    """A ModelConfig from the nested dict saved in config.json (unknown keys are errors)."""
    def fill(obj, d: dict, prefix: str):
        names = {f.name for f in dataclasses.fields(obj)}
        for k, v in d.items():
            if k not in names:
                raise ValueError(f"config.json: unknown key 'mythos.{prefix}{k}'")
            cur = getattr(obj, k)
            if dataclasses.is_dataclass(cur):
                fill(cur, v, f"{prefix}{k}.")
            else:
                setattr(obj, k, v)
        return obj
    return fill(ModelConfig(), values, "")


class MythosCache(KVCache):
    """Mythos's per-call-site KV cache, with the one method generate() asks of a cache."""

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.pos


# Arguments transformers' generate() or callers pass that change nothing here (positions come from the cache).
_IGNORED_ARGS = {"position_ids", "cache_position", "logits_to_keep", "output_attentions", "output_hidden_states",
                 "token_type_ids", "inputs_embeds", "past_key_values"}


def _chunk_mask(mask_BT: torch.Tensor | None, t: int, cache: KVCache | None) -> torch.Tensor | None:
    """The mask of this forward's t tokens (generate() passes the cached positions' too), or None when it changes
    nothing: all ones, or right padding of a fresh sequence (causal: no position before the padding sees it)."""
    if mask_BT is None:
        return None
    past = cache.pos if cache is not None else 0
    if mask_BT.shape[1] == past + t:
        mask_BT = mask_BT[:, past:]
    elif mask_BT.shape[1] != t:
        raise ValueError(f"attention_mask has {mask_BT.shape[1]} positions; expected {t} or {past + t}")
    fresh = cache is None or (cache.pos == 0 and cache.valid_BS is None)
    m = mask_BT.long()
    if bool(m.all()) or (fresh and not bool((m[:, 1:] > m[:, :-1]).any())):
        return None
    return mask_BT


class MythosForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = MythosConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _tied_weights_keys = {"model.head.weight": "model.embed.weight"}
    _no_split_modules = ["Block"]

    def __init__(self, config: MythosConfig):
        super().__init__(config)
        self.model = Mythos(model_config_from_dict(config.mythos))
        self.post_init()

    def _init_weights(self, module):  # Mythos initialises itself; from_pretrained then loads every tensor
        pass

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:  # the cache is a MythosCache made by forward()
        return False

    def get_input_embeddings(self):
        return self.model.embed

    def get_output_embeddings(self):
        return self.model.head

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                cache: MythosCache | None = None, use_cache: bool | None = None, labels: torch.LongTensor | None = None,
                n_loops: int | None = None, return_dict: bool | None = None, **kwargs) -> CausalLMOutputWithPast:
        """position_ids are implied by the cache (RoPE positions continue from cache.pos) and ignored; any other
        unknown argument (a misspelt `n_loops`) is a TypeError rather than silently dropped."""
        unknown = sorted(set(kwargs) - _IGNORED_ARGS)
        if unknown:
            raise TypeError(f"MythosForCausalLM.forward: unexpected argument(s) {', '.join(unknown)}")
        if kwargs.get("inputs_embeds") is not None:
            raise ValueError("MythosForCausalLM takes input_ids, not inputs_embeds")
        cache = kwargs.get("past_key_values") if cache is None else cache
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if cache is not None and not isinstance(cache, KVCache):
            if cache.get_seq_length() != 0:
                raise ValueError(f"Mythos needs its own cache (MythosCache), got a filled {type(cache).__name__}")
            cache = None
        if cache is None and use_cache and not self.training:
            cache = MythosCache()
        mask_BT = _chunk_mask(attention_mask, input_ids.shape[1], cache)
        loops = self.config.n_loops if n_loops is None else int(n_loops)
        logits_BTV = self.model(input_ids, n_loops=loops, cache=cache, mask_BT=mask_BT).logits_BTV
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits_BTV[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits_BTV, cache=cache)
