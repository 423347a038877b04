"""`mythos-prep --tokenizer PATH`: an existing SentencePiece model file, or a Hugging Face tokenizer directory
(Llama, Mistral, T5, Gemma and our own HF exports ship their SentencePiece model in it).

A directory's SentencePiece model (`tokenizer.model`, `spiece.model`, `sentencepiece.bpe.model` or one other
`*.model`) is preferred: its ids are the ones transformers' tokenizer gives for that directory, since both come from
the same model. A directory with only a `tokenizer.json` (a byte-level BPE such as GPT-2's or Llama-3's) is encoded
with the `tokenizers` library (mythos/data/tokenizer_hf.py); tokenizer.json and tokenizer_config.json (its special
tokens) are copied into the prepared directory so runs decode with them.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from mythos.data.tokenizer import file_sha256, is_hf_file
from mythos.data.tokenizer_hf import CONFIG
from mythos.errors import UserError

SPM_NAMES = ("tokenizer.model", "spiece.model", "sentencepiece.bpe.model")
HF_FILES = ("tokenizer.json", CONFIG)


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
        return str(p / "tokenizer.json")
    raise UserError(f"--tokenizer {path}: no tokenizer in this directory (expected one of "
                    f"{', '.join(SPM_NAMES)} or tokenizer.json)")


def copy_tokenizer(src: str, out: Path) -> Path:
    """Copy the resolved tokenizer (and a tokenizer.json's tokenizer_config.json) into the prepared directory `out`;
    returns the copy's path there."""
    names = HF_FILES if is_hf_file(src) else ("tokenizer.model",)
    for name, from_path in zip(names, (Path(src), Path(src).with_name(CONFIG))):
        dst = out / name
        if from_path.is_file() and (not dst.exists() or file_sha256(dst) != file_sha256(from_path)):
            shutil.copyfile(from_path, dst)
    return out / names[0]
