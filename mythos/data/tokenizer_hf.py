"""A Hugging Face `tokenizer.json` (the `tokenizers` library) as a Mythos tokenizer.

Documents are encoded without the tokenizer's own special tokens (`add_special_tokens=False`: no BOS that a
Llama-3 post-processor would add), and prep appends the EOS token. The special tokens are the ones transformers
would use: `eos_token`/`bos_token`/`pad_token`/`unk_token` of the tokenizer_config.json beside tokenizer.json; a
tokenizer without that file gets its EOS from a special token with a well-known end-of-text name.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from mythos.errors import UserError

CONFIG = "tokenizer_config.json"
EOS_NAMES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>")  # GPT-2/NeoX, Llama-3, Llama/T5, Gemma


def _token(value) -> str | None:
    if isinstance(value, dict):  # transformers' AddedToken serialisation
        value = value.get("content")
    return value if isinstance(value, str) else None


def _read_config(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not valid JSON ({str(e)[:120]})") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: expected a JSON object")
    return cfg


def load_hf(path: str | os.PathLike):
    """(tokenizers.Tokenizer, (bos_id, eos_id, pad_id, unk_id)) of a tokenizer.json; -1 where a token is absent."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one thread per prep worker; forks stay quiet
    path = Path(path)
    try:
        from tokenizers import Tokenizer as HFTokenizer
    except ImportError:
        raise UserError(f"{path}: a Hugging Face tokenizer.json needs the `tokenizers` package "
                        "(pip install -e '.[hf]')") from None
    try:
        tok = HFTokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on malformed files
        raise UserError(f"{path}: not a Hugging Face tokenizer.json ({str(e).splitlines()[0][:120]})") from None
    cfg_path = path.with_name(CONFIG)
    cfg = _read_config(cfg_path)

    def ident(key: str) -> int:
        name = _token(cfg.get(key))
        if name is None:
            return -1
        i = tok.token_to_id(name)
        if i is None:
            raise UserError(f"{cfg_path}: {key} {name!r} is not in the vocabulary of {path}")
        return int(i)

    eos = ident("eos_token")
    if eos < 0:
        specials = {t.content for t in tok.get_added_tokens_decoder().values() if t.special}
        eos = next((int(tok.token_to_id(n)) for n in EOS_NAMES if n in specials), -1)
    if eos < 0:
        raise UserError(f"{path}: no EOS token (expected eos_token in {cfg_path.name} or a special token "
                        f"named one of {', '.join(EOS_NAMES)}); prep appends it after every document")
    return tok, (ident("bos_token"), eos, ident("pad_token"), ident("unk_token"))
