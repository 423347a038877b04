"""Thin wrapper over a tokenizer: a SentencePiece model (`tokenizer.model`) or a Hugging Face `tokenizers` file
(`tokenizer.json`, e.g. a byte-level BPE such as GPT-2's or Llama-3's): encode/decode and the special ids."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from mythos.errors import UserError

TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json")  # what a prepared directory holds, in order of preference


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tokenizer_in(directory: str | os.PathLike) -> Path:
    """The tokenizer file of a prepared directory: tokenizer.model, else tokenizer.json, else the (missing)
    tokenizer.model path, so an error names what was expected."""
    d = Path(directory)
    return next((d / n for n in TOKENIZER_FILES if (d / n).is_file()), d / TOKENIZER_FILES[0])


def is_hf_file(path: str | os.PathLike) -> bool:
    return str(path).endswith(".json")


class Tokenizer:
    """`Tokenizer(path).encode(text) -> list[int]`, `.decode(ids) -> str`, `.vocab_size`, `.bos_id/.eos_id/.pad_id`.

    `path` is a SentencePiece model or a `tokenizer.json` (kind "huggingface"; its special tokens come from the
    tokenizer_config.json beside it, see mythos/data/tokenizer_hf.py). Ids < 0 (no such special token) are -1.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise UserError(f"{self.path}: no such tokenizer model file")
        self.sp = self.hf = None
        if is_hf_file(self.path):
            from mythos.data.tokenizer_hf import load_hf
            self.kind = "huggingface"
            self.hf, ids = load_hf(self.path)
            self.vocab_size = int(self.hf.get_vocab_size(with_added_tokens=True))
            self.bos_id, self.eos_id, self.pad_id, self.unk_id = ids
            return
        import sentencepiece as spm

        self.kind = "sentencepiece"
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.load(self.path)
        except (OSError, RuntimeError) as e:
            raise UserError(f"{self.path}: not a SentencePiece model ({str(e).splitlines()[0][:120]})") from None
        self.vocab_size = int(self.sp.get_piece_size())
        self.bos_id = int(self.sp.bos_id())
        self.eos_id = int(self.sp.eos_id())
        self.pad_id = int(self.sp.pad_id())
        self.unk_id = int(self.sp.unk_id())

    def encode(self, text: str) -> list[int]:
        if self.hf is not None:
            return self.hf.encode(text, add_special_tokens=False).ids
        return self.sp.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self.hf is not None:  # encode_batch_fast (tokenizers >= 0.21): no offsets, ~1.5x faster, same ids
            batch = getattr(self.hf, "encode_batch_fast", self.hf.encode_batch)
            return [e.ids for e in batch(texts, add_special_tokens=False)]
        return self.sp.encode(texts, num_threads=1)

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        if self.hf is not None:
            return self.hf.decode(ids, skip_special_tokens=False)
        return self.sp.decode(ids)

    def id_to_piece(self, i: int) -> str:
        if self.hf is not None:
            return self.hf.id_to_token(int(i))
        return self.sp.id_to_piece(int(i))

    def __repr__(self) -> str:
        return f"Tokenizer({self.path!r}, vocab_size={self.vocab_size})"
