"""Tokenizer files for an exported directory: `AutoTokenizer.from_pretrained(DIR)` gives SentencePiece's ids.

transformers converts our SentencePiece model into a `tokenizers` backend (tokenizer.json). Two settings make its ids
identical to SentencePiece's (measured, design.md §7; tested on a corpus sample in tests/hf/test_tokenizer.py):
`split_special_tokens=True` (else the literal text "<s>" in code becomes the BOS id) and no BOS added (lm-eval
prepends its own prefix token). tokenizer.model is copied too, for SentencePiece users.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from mythos.data.tokenizer import Tokenizer


def write_tokenizer(model_file: Path, out: Path) -> Tokenizer:
    """Write tokenizer.json, tokenizer_config.json and tokenizer.model into `out`; returns our tokenizer."""
    from transformers import AutoTokenizer
    sp = Tokenizer(model_file)
    pad_id = sp.pad_id if sp.pad_id >= 0 else sp.eos_id
    with tempfile.TemporaryDirectory(prefix="mythos-tok-") as tmp:
        shutil.copyfile(model_file, Path(tmp) / "tokenizer.model")
        tok = AutoTokenizer.from_pretrained(tmp, split_special_tokens=True, pad_token=sp.id_to_piece(pad_id))
        tok.save_pretrained(str(out))
    cfg_path = out / "tokenizer_config.json"  # drop where this copy was loaded from: not a property of the tokenizer
    cfg = {k: v for k, v in json.loads(cfg_path.read_text()).items() if k not in ("is_local", "local_files_only")}
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    shutil.copyfile(model_file, out / "tokenizer.model")
    return sp
