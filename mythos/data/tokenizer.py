"""Thin wrapper over a SentencePiece model: encode/decode and the special ids."""
from __future__ import annotations

import hashlib
import os

from mythos.errors import UserError


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Tokenizer:
    """`Tokenizer(path).encode(text) -> list[int]`, `.decode(ids) -> str`, `.vocab_size`, `.bos_id/.eos_id/.pad_id`.

    Ids < 0 (a disabled special token in SentencePiece) are reported as -1.
    """

    def __init__(self, path: str | os.PathLike):
        import sentencepiece as spm

        self.path = str(path)
        if not os.path.isfile(self.path):
            raise UserError(f"{self.path}: no such tokenizer model file")
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
        return self.sp.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts, num_threads=1)

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        return self.sp.decode(ids)

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(int(i))

    def __repr__(self) -> str:
        return f"Tokenizer({self.path!r}, vocab_size={self.vocab_size})"
