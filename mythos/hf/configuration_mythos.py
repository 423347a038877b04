"""Hugging Face config of a Mythos model: the full Mythos ModelConfig as a nested dict under `mythos`, plus the
standard keys that transformers and lm-eval read (vocab_size, hidden_size, max_position_embeddings, token ids).

`n_loops` is the default loop count of a forward (the model's `loops.inference` at export); every forward and
generate() call may override it with `n_loops=`. This file imports nothing from the `mythos` package, so it is
copied verbatim into exported directories (see mythos/hf/bundle.py). transformers 5.x declares config fields as
dataclass annotations.
"""
from transformers import PretrainedConfig


class MythosConfig(PretrainedConfig):
    model_type = "mythos"

    mythos: dict | None = None
    n_loops: int | None = None
    vocab_size: int = 4096
    hidden_size: int = 256
    num_attention_heads: int = 4
    num_hidden_layers: int = 3
    max_position_embeddings: int = 2048
    use_cache: bool = True
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        m = self.mythos = dict(self.mythos or {})
        if self.n_loops is None:
            self.n_loops = int(m.get("loops", {}).get("inference", 4))
        self.vocab_size = int(m.get("vocab_size", self.vocab_size))
        self.hidden_size = int(m.get("dim", self.hidden_size))
        self.num_attention_heads = int(m.get("n_heads", self.num_attention_heads))
        if m:
            self.num_hidden_layers = (int(m["n_layers"]) if m.get("mode") == "dense"
                                      else int(m["n_prelude"]) + int(m["n_coda"]) + 1)
            self.tie_word_embeddings = bool(m.get("tie_embeddings", True))
        super().__post_init__(**kwargs)
