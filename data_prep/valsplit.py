"""The validation split's size: `--val-fraction` of the documents (by hash), raised on a small corpus until the
split holds `--val-min-tokens` tokens, so a corpus of a few MB does not validate on one 69-token document.

The split stays a rule on each document's hash (`hash < threshold`), so it is the same in every process of a
sharded prep and on a resumed one. The floor is found by a scan of the corpus in hash order: documents are taken
until the floor is met, never more than VAL_MAX_SHARE of the corpus's bytes. A corpus over SCAN_BYTES keeps the
plain fraction (1% of 64 MB is already ~150k tokens); prep reports a split below the floor in any case.
"""
from __future__ import annotations

from data_prep.sources import hash_frac

VAL_MIN_TOKENS = 20_000
VAL_MAX_SHARE = 0.2
SCAN_BYTES = 64 * 2**20


def val_threshold(docs, count_tokens, val_fraction: float, min_tokens: int) -> tuple[float, bool]:
    """(hash threshold for val, whether the floor raised it). `docs`: the (text, bytes) stream; `count_tokens`:
    text -> tokens of the encoded document (EOS included)."""
    if val_fraction <= 0 or min_tokens <= 0:
        return val_fraction, False
    held, total = [], 0
    for text, data in docs:
        total += len(data)
        if total > SCAN_BYTES:
            return val_fraction, False
        held.append((hash_frac(data), len(data), text))
    held.sort(key=lambda d: d[0])
    tokens = nbytes = 0
    taken = 0
    for h, n, text in held:
        if h >= val_fraction and (tokens >= min_tokens or nbytes + n > VAL_MAX_SHARE * total):
            break
        tokens, nbytes, taken = tokens + count_tokens(text), nbytes + n, taken + 1
    if taken == 0 or held[taken - 1][0] < val_fraction:
        return val_fraction, False
    nxt = held[taken][0] if taken < len(held) else 1.0
    return (held[taken - 1][0] + nxt) / 2, True
