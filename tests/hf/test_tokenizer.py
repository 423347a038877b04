"""AutoTokenizer on an exported directory gives SentencePiece's ids: corpus files, indentation, tabs, blank lines,
non-ASCII (byte fallback for characters outside the vocabulary) and literal special-token text."""
from __future__ import annotations

import sentencepiece as spm

SAMPLES = [
    "def f(x):\n    return x  # café λ→ 日本語\n\n\n\tTab\n",
    "        deeply:\n            indented\n  \n",
    "<s> literal </s> <unk> <pad>",
    "emoji \U0001F600 and ￿ and \u200b zero-width",
    " leading space", "trailing space ", "", " ", "\n",
]


def test_autotokenizer_ids_equal_sentencepiece(run_export, prepared_data):
    from transformers import AutoTokenizer
    sp = spm.SentencePieceProcessor(model_file=str(prepared_data / "tokenizer.model"))
    tok = AutoTokenizer.from_pretrained(str(run_export), trust_remote_code=True)  # config.json names code
    corpus = sorted((prepared_data.parent / "corpus").glob("*.py"))
    texts = SAMPLES + [p.read_text() for p in corpus[:10]]
    assert len(texts) >= 19
    mismatched = [t[:40] for t in texts if tok(t)["input_ids"] != sp.encode(t)]
    assert mismatched == []
    assert any(sp.id_to_piece(i).startswith("<0x") for i in sp.encode(SAMPLES[3]))  # byte fallback exercised
    assert tok.pad_token_id is not None and tok.eos_token_id == sp.eos_id()
    for t in texts:
        assert tok.decode(sp.encode(t)) == t
