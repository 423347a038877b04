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
    if sp.kind == "huggingface":
        return _write_hf_json(sp, out)
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


def _write_hf_json(tok: Tokenizer, out: Path) -> Tokenizer:
    """A `tokenizer.json` run: copy it, with a tokenizer_config.json naming the special tokens we use (the prep's
    own copy of the config, if any, extended), so AutoTokenizer loads a fast tokenizer with the same ids."""
    src = Path(tok.path)
    shutil.copyfile(src, out / "tokenizer.json")
    cfg_src = src.with_name("tokenizer_config.json")
    cfg = json.loads(cfg_src.read_text()) if cfg_src.is_file() else {}
    cfg.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
    for key, i in (("eos_token", tok.eos_id), ("bos_token", tok.bos_id), ("pad_token", tok.pad_id),
                   ("unk_token", tok.unk_id)):
        if i >= 0 and key not in cfg:
            cfg[key] = tok.id_to_piece(i)
    cfg.setdefault("add_bos_token", False)
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return tok
