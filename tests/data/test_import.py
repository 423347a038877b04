"""Import: Megatron-LM preprocess_data.py shards (PREFIX_text_document, no metadata.json) read by the loader and
trained on; `mythos-prep --tokenizer` with a Hugging Face tokenizer directory."""
from __future__ import annotations

import importlib.util
import json
import random
import shutil

import numpy as np
import pytest

from mythos.data import build_loader, check_vocab, read_metadata
from mythos.errors import UserError
from tests.data.datahelp import assert_user_error, run_cli
from tests.data.megatron_ref import write_megatron


def _sentence_docs(n_docs: int, eod: int, seed: int = 0) -> list[list[list[int]]]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        seqs = [[rng.randrange(3, 500) for _ in range(rng.randint(10, 30))] for _ in range(rng.randint(1, 3))]
        seqs[-1].append(eod)  # --append-eod ends the document's last sequence
        docs.append(seqs)
    return docs


def _windows(tokens: np.ndarray, seq_len: int, n: int) -> np.ndarray:
    return np.stack([tokens[i * seq_len: i * seq_len + seq_len + 1] for i in range(n)])


def test_megatron_prefix_is_read_by_the_loader(tmp_path):
    docs = _sentence_docs(200, eod=2)
    prefix = write_megatron(tmp_path / "corpus_text_sentence", docs, vocab_size=512)
    meta = read_metadata(prefix)
    flat = [np.concatenate([np.asarray(s) for s in d]) for d in docs]
    train_tokens, val_tokens = np.concatenate(flat[:198]), np.concatenate(flat[198:])  # last 1% of documents
    assert meta["splits"]["train"]["tokens"] == train_tokens.size and meta["splits"]["val"]["documents"] == sum(
        len(d) for d in docs[198:])
    assert meta["vocab_size"] == int(max(train_tokens.max(), val_tokens.max())) + 1  # no tokenizer beside it
    for split, tokens in (("train", train_tokens), ("val", val_tokens)):
        loader = build_loader(str(prefix), split, seq_len=4, global_batch=4, shuffle=False, vocab_size=512)
        x_BT, y_BT = loader.next_batch()
        want = _windows(tokens, 4, 4)
        assert np.array_equal(x_BT.numpy(), want[:, :-1]) and np.array_equal(y_BT.numpy(), want[:, 1:]), split
    check_vocab(meta, 50304, prefix)  # a padded Megatron vocabulary is fine: every id is below it
    with pytest.raises(UserError, match="token id"):
        check_vocab(meta, 100, prefix)


def test_megatron_idx_with_a_bad_document_index_is_refused(tmp_path):
    prefix = write_megatron(tmp_path / "c_text_document", _sentence_docs(5, eod=2), vocab_size=512)
    raw = bytearray((tmp_path / "c_text_document.idx").read_bytes())
    raw[-8:] = np.array([99], dtype=np.int64).tobytes()  # last document index past the sequence count
    (tmp_path / "c_text_document.idx").write_bytes(bytes(raw))
    with pytest.raises(UserError, match="document index"):
        read_metadata(prefix)


@pytest.mark.slow
def test_train_on_megatron_shards(prepared_data, tmp_path):
    """The Megatron-LM layout of the prepared corpus (SentencePiece ids, --append-eod, tokenizer.model beside the
    prefix) trains; the vocab comes from that tokenizer."""
    import sentencepiece as spm

    from tests.conftest import read_metrics
    from tests.conftest import run_cli as run_module
    from tests.conftest import train_args
    sp = spm.SentencePieceProcessor(model_file=str(prepared_data / "tokenizer.model"))
    texts = [p.read_text() for p in sorted((prepared_data.parent / "corpus").glob("*.py"))]
    mega = tmp_path / "mega"
    mega.mkdir()
    shutil.copy(prepared_data / "tokenizer.model", mega / "tokenizer.model")
    prefix = write_megatron(mega / "code_text_document", [[sp.encode(t) + [sp.eos_id()]] for t in texts],
                            sp.get_piece_size())
    assert read_metadata(prefix)["vocab_size"] == sp.get_piece_size()
    run = tmp_path / "run"
    r = run_module(train_args(run, prefix, 4))
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(read_metrics(run)) >= 1
    if importlib.util.find_spec("transformers"):  # the HF export finds the tokenizer beside the prefix
        from mythos.hf.export import export_hf
        out = export_hf(run, tmp_path / "hf")
        assert (out / "tokenizer.model").read_bytes() == (mega / "tokenizer.model").read_bytes()


def test_prep_tokenizer_from_hf_directory(prepared_data, tmp_path):
    """An HF tokenizer directory holding the SentencePiece model gives the same shards as the .model file."""
    hf_dir = tmp_path / "hf_tok"
    hf_dir.mkdir()
    shutil.copy(prepared_data / "tokenizer.model", hf_dir / "tokenizer.model")
    (hf_dir / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    out = tmp_path / "data"
    r = run_cli(prepared_data.parent / "corpus", "--out", out, "--tokenizer", hf_dir, "--val-fraction", "0.1", "--val-min-tokens", "0",
                "--workers", "1", "--no-progress")
    assert r.returncode == 0, r.stderr
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["tokenizer"]["trained"] is False
    for split in ("train", "val"):
        for shard in meta["splits"][split]["shards"]:
            for ext in (".bin", ".idx"):
                name = shard["name"] + ext
                assert (out / name).read_bytes() == (prepared_data / name).read_bytes(), name


def test_prep_damaged_tokenizer_json_is_refused(prepared_data, tmp_path):
    """(A valid tokenizer.json-only directory is prepped: tests/data/test_import_hf_tokenizer.py.)"""
    hf_dir = tmp_path / "gpt2_like"
    hf_dir.mkdir()
    (hf_dir / "tokenizer.json").write_text("{}")
    out = tmp_path / "data"
    r = run_cli(prepared_data.parent / "corpus", "--out", out, "--tokenizer", hf_dir, "--workers", "1")
    assert_user_error(r, str(hf_dir / "tokenizer.json"), "not a Hugging Face tokenizer.json")
    assert not out.exists()
