"""The corpus's unigram entropy: the loss of a model that ignores context, the bar a trained model must clear."""
from __future__ import annotations

import numpy as np

from mythos.data.loader import open_split, parse_spec, read_metadata


def unigram_entropy(data_spec: str, split: str = "train") -> float:
    """Entropy (nats/token) of the token frequencies of a split (first dataset of a blend)."""
    data_dir = parse_spec(data_spec)[0][0]
    meta = read_metadata(data_dir)
    counts = np.zeros(int(meta["vocab_size"]), np.int64)
    for shard in open_split(data_dir, split, meta):
        if shard.n_tokens:
            counts += np.bincount(np.asarray(shard.tokens), minlength=counts.size)[: counts.size]
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())
