"""Packed windows of `seq_len + 1` tokens over the concatenated token stream of a split's shards.

Documents are packed back to back (each ends with EOS) and windows run across document and shard boundaries:
sample i covers stream positions [i*S, i*S + S] (S = seq_len), so consecutive samples share one token and every
token is predicted once per epoch. n_samples = (N - 1) // S for N tokens. A split smaller than one window
(a tiny validation split) wraps around the stream so it still yields one sample.
"""
from __future__ import annotations

import numpy as np

from mythos.data.indexed import IndexedDataset
from mythos.errors import UserError


class PackedDataset:
    def __init__(self, shards: list[IndexedDataset], seq_len: int, name: str = "data"):
        if seq_len < 1:
            raise UserError(f"seq_len must be >= 1, got {seq_len}")
        self.shards = [s for s in shards if s.n_tokens > 0]
        self.seq_len = seq_len
        self.name = name
        sizes = np.array([s.n_tokens for s in self.shards], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.n_tokens = int(self.starts[-1])
        if self.n_tokens < 2:
            raise UserError(f"{name}: {self.n_tokens} tokens, need at least 2 to form a training pair")
        self.n_samples = max(1, (self.n_tokens - 1) // seq_len)

    def __len__(self) -> int:
        return self.n_samples

    def _span(self, start: int, count: int, out: np.ndarray) -> None:
        """Copy `count` tokens of the stream from `start` (no wrap) into `out`."""
        k = int(np.searchsorted(self.starts, start, side="right")) - 1
        done = 0
        while done < count:
            shard = self.shards[k]
            lo = start + done - int(self.starts[k])
            take = min(count - done, shard.n_tokens - lo)
            out[done: done + take] = shard.tokens[lo: lo + take]
            done += take
            k += 1

    def window(self, i: int, out: np.ndarray | None = None) -> np.ndarray:
        """Tokens of sample i: `seq_len + 1` int64 ids."""
        S, N = self.seq_len, self.n_tokens
        if out is None:
            out = np.empty(S + 1, dtype=np.int64)
        pos = (int(i) % self.n_samples) * S
        filled = 0
        while filled < S + 1:  # wraps only when the stream is shorter than one window
            take = min(S + 1 - filled, N - pos)
            self._span(pos, take, out[filled: filled + take])
            filled += take
            pos = 0
        return out

    def gather(self, indices) -> np.ndarray:
        """[len(indices), seq_len + 1] int64 windows."""
        out = np.empty((len(indices), self.seq_len + 1), dtype=np.int64)
        for row, i in enumerate(indices):
            self.window(int(i), out[row])
        return out
