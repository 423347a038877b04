"""`mythos-prep --tokenizer PATH`: an existing SentencePiece model file, or a Hugging Face tokenizer directory
(Llama, Mistral, T5, Gemma and our own HF exports ship their SentencePiece model in it).

The encoder workers run SentencePiece, so a directory must hold the SentencePiece model (`tokenizer.model`,
`spiece.model`, `sentencepiece.bpe.model` or one other `*.model`); its ids are the ones transformers' tokenizer gives
for that directory, since both come from the same model. A directory with only a `tokenizer.json` (a byte-level BPE
such as GPT-2's) is refused with a one-line error.
"""
from __future__ import annotations

from pathlib import Path

from mythos.errors import UserError

SPM_NAMES = ("tokenizer.model", "spiece.model", "sentencepiece.bpe.model")


def resolve_tokenizer(path: str) -> str:
    """The SentencePiece model file that `path` (a file or an HF tokenizer directory) stands for."""
    p = Path(path)
    if p.is_file():
        return str(p)
    if not p.is_dir():
        raise UserError(f"--tokenizer {path}: no such file or directory")
    found = [p / n for n in SPM_NAMES if (p / n).is_file()] or sorted(p.glob("*.model"))
    if found:
        return str(found[0])
    if (p / "tokenizer.json").is_file():
        raise UserError(f"--tokenizer {path}: Hugging Face tokenizer without a SentencePiece model (only "
                        "tokenizer.json); mythos-prep encodes with SentencePiece and needs tokenizer.model")
    raise UserError(f"--tokenizer {path}: no SentencePiece model in this directory (expected one of "
                    f"{', '.join(SPM_NAMES)})")
