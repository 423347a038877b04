"""Shards written by Megatron-LM's own `tools/preprocess_data.py` (`PREFIX_text_document.bin/.idx`, no
metadata.json): a data path may name such a prefix instead of a mythos-prep directory.

The .bin/.idx format is the one we write (mythos/data/indexed.py). What metadata.json would hold is derived here:
- splits: Megatron keeps one file per corpus and splits by document (`--split 969,30,1`); we hold out the last 1%
  of documents (at least one; a one-document file serves as both) as `val`, the rest is `train`. Sequences of a
  document (`--split-sentences`) stay together: the cut follows the .idx document index.
- vocab_size: the tokenizer's if a SentencePiece `tokenizer.model` (or an HF `tokenizer.json`) sits next to the
  prefix, else the largest token id + 1; a model's vocab_size is accepted when every id is below it (Megatron pads vocabularies to a multiple of
  128, so equality would be too strict).
- EOS between documents exists only if preprocess_data ran with `--append-eod`; windows are packed across
  documents either way, as Megatron's GPTDataset does.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mythos.data.indexed import IndexedDataset
from mythos.errors import UserError

VAL_FRACTION = 0.01


def is_megatron_prefix(path: str | os.PathLike) -> bool:
    p = str(path)
    return not os.path.isdir(p) and os.path.isfile(p + ".idx") and os.path.isfile(p + ".bin")


class DocumentRange(IndexedDataset):
    """Sequences [lo, hi) of an IndexedDataset: a view with the shard's reading methods (files already checked)."""

    def __init__(self, ds: IndexedDataset, lo: int, hi: int):  # not super().__init__: that re-opens the files
        self.prefix, self.dtype = ds.prefix, ds.dtype
        self.lengths = ds.lengths[lo:hi]
        start = int(ds.offsets[lo]) // ds.dtype.itemsize if lo < len(ds) else ds.n_tokens
        self.n_tokens = int(self.lengths.sum(dtype=np.int64))
        self.tokens = ds.tokens[start: start + self.n_tokens]
        self.offsets = ds.offsets[lo:hi] - (ds.offsets[lo] if lo < len(ds) else 0)


def _val_start(ds: IndexedDataset) -> int:
    """First sequence of the held-out documents (a document boundary from the .idx document index)."""
    bounds = np.asarray(ds.doc_idx, dtype=np.int64)
    n_docs = len(bounds) - 1
    if n_docs < 1 or bounds[0] != 0 or bounds[-1] != len(ds) or np.any(np.diff(bounds) < 0):
        raise UserError(f"{ds.prefix}.idx: document index is not 0 ... {len(ds)} in order (not a Megatron .idx?)")
    if n_docs == 1:
        return 0
    n_val = max(1, round(VAL_FRACTION * n_docs))
    return int(bounds[n_docs - n_val])


def megatron_metadata(prefix: str | os.PathLike) -> dict:
    """The metadata.json a mythos-prep directory would have, derived from a Megatron prefix (see module doc)."""
    prefix = str(prefix)
    ds = IndexedDataset(prefix)
    if ds.n_tokens == 0:
        raise UserError(f"{prefix}.bin: no tokens")
    cut = _val_start(ds)
    ranges = {"train": (0, cut if cut > 0 else len(ds)), "val": (cut, len(ds))}
    splits = {}
    for split, (lo, hi) in ranges.items():
        part = DocumentRange(ds, lo, hi)
        entry = {"name": os.path.abspath(prefix), "tokens": part.n_tokens, "documents": len(part),
                 "sequence_range": [lo, hi]}
        splits[split] = {"documents": len(part), "tokens": part.n_tokens, "shards": [entry]}
    from mythos.data.tokenizer import Tokenizer, file_sha256, tokenizer_in
    tok = tokenizer_in(Path(prefix).parent)  # tokenizer.model, else an HF tokenizer.json (+ tokenizer_config.json)
    meta = {"format_version": 1, "dtype": ds.dtype.name, "splits": splits, "megatron": True,
            "max_token": ds.max_token(), "eos_id": None}
    if tok.is_file():
        sp = Tokenizer(tok)
        meta.update(vocab_size=sp.vocab_size, eos_id=sp.eos_id, bos_id=sp.bos_id,
                    tokenizer={"file": tok.name, "sha256": file_sha256(tok), "type": sp.kind})
        if meta["max_token"] >= sp.vocab_size:
            raise UserError(f"{prefix}.bin: token id {meta['max_token']} >= vocab_size {sp.vocab_size} of {tok}")
    else:
        meta["vocab_size"] = meta["max_token"] + 1
    return meta


def open_range(ds: IndexedDataset, entry: dict):
    """The shard entry's sequence range of `ds` (the whole shard when the entry has none)."""
    if "sequence_range" not in entry:
        return ds
    lo, hi = entry["sequence_range"]
    return DocumentRange(ds, int(lo), int(hi))
