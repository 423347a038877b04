"""`mythos-prep --tokenizer DIR` with a Hugging Face directory holding only tokenizer.json (a byte-level BPE, as
GPT-2 and Llama-3 ship): prep encodes with `tokenizers`, runs train on the shards and decode with it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_prep import sources as S
from mythos.data import Tokenizer, open_split, read_metadata
from mythos.data.indexed import IndexedDataset
from mythos.data.tokenizer import file_sha256
from tests.conftest import make_corpus, run_cli, train_args
from tests.data.datahelp import assert_user_error

pytest.importorskip("tokenizers")  # the .[hf] extra
EOS = "<|endoftext|>"


def byte_bpe_dir(root: Path, texts: list[str], eos: str | None = EOS) -> Path:
    """A GPT-2-style byte-level BPE trained on `texts`, saved as an HF directory (tokenizer.json, and a
    tokenizer_config.json naming the EOS unless `eos` is None, then with no special token at all)."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=[eos] if eos else [], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    d = root / "hf_tok"
    d.mkdir()
    tok.save(str(d / "tokenizer.json"))
    if eos:
        (d / "tokenizer_config.json").write_text(json.dumps({"eos_token": eos, "tokenizer_class":
                                                             "PreTrainedTokenizerFast"}))
    return d


def _docs(src: Path) -> list[str]:
    return [text for text, _ in S.iter_corpus([S.parse_source(str(src))], S.ReadOptions())]


@pytest.fixture(scope="module")
def hf_prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("hftok")
    src = make_corpus(root, n_files=12)
    texts = _docs(src)
    tok_dir = byte_bpe_dir(root, texts)
    out = root / "data"
    r = run_cli(["data_prep", str(src), "--tokenizer", str(tok_dir), "--out", str(out), "--val-fraction", "0.1",
                 "--val-min-tokens", "0", "--workers", "2", "--no-progress"])
    assert r.returncode == 0, r.stderr[-2000:]
    return out, tok_dir, texts


def test_prep_with_tokenizer_json_gives_its_ids_plus_eos(hf_prepared):
    out, tok_dir, texts = hf_prepared
    meta = read_metadata(out)
    assert meta["tokenizer"]["file"] == "tokenizer.json" and meta["tokenizer"]["type"] == "huggingface"
    assert meta["tokenizer"]["sha256"] == file_sha256(tok_dir / "tokenizer.json") == file_sha256(out / "tokenizer.json")
    assert (out / "tokenizer_config.json").read_bytes() == (tok_dir / "tokenizer_config.json").read_bytes()
    tok = Tokenizer(out / "tokenizer.json")
    assert 257 < tok.vocab_size == meta["vocab_size"] <= 400 and meta["dtype"] == "uint16"
    assert tok.eos_id == meta["eos_id"] == 0 and tok.bos_id == -1  # the one special token, trained first
    want = {tuple(tok.encode(t) + [tok.eos_id]) for t in texts}
    got = [tuple(int(i) for i in ds[j]) for split in ("train", "val")
           for sh in meta["splits"][split]["shards"] for ds in [IndexedDataset(out / sh["name"])] for j in range(len(ds))]
    assert set(got) == want and len(got) == len(texts) + int(meta["val_fallback"])
    assert {tok.decode(t[:-1]) for t in got} == set(texts)  # byte-level BPE round-trips indentation and unicode


def test_hf_export_tokenizer_matches_ours(hf_prepared, tmp_path):
    """The HF export's tokenizer files: AutoTokenizer gives the same ids and EOS as our Tokenizer."""
    from transformers import AutoTokenizer

    from mythos.hf.tokenizer import write_tokenizer
    out, _, texts = hf_prepared
    ours = write_tokenizer(out / "tokenizer.json", tmp_path)
    auto = AutoTokenizer.from_pretrained(str(tmp_path))
    assert auto.eos_token_id == ours.eos_id
    for t in texts:
        assert auto(t, add_special_tokens=False)["input_ids"] == ours.encode(t)


def test_sharded_prep_with_tokenizer_json(hf_prepared, tmp_path):
    """--tokenizer-only --tokenizer HF_DIR puts tokenizer.json (+ config) in DIR; the tasks and the merge use it."""
    from data_prep.cli import main
    from tests.data.test_sharded_prep import PREP, documents
    single, tok_dir, _ = hf_prepared
    out = tmp_path / "sharded"
    assert main([str(single.parent / "corpus"), "--out", str(out), "--tokenizer-only", "--tokenizer", str(tok_dir),
                 *PREP]) == 0
    for i in range(2):
        assert main([str(single.parent / "corpus"), "--out", str(out), "--num-shards", "2", "--shard-index", str(i),
                     "--val-fraction", "0.1", "--val-min-tokens", "0", *PREP]) == 0
    assert main(["merge", str(out)]) == 0
    meta = read_metadata(out)
    assert meta["tokenizer"] == read_metadata(single)["tokenizer"] and (out / "tokenizer_config.json").is_file()
    for split in ("train", "val"):
        assert documents(out, split) == documents(single, split) and documents(out, split)


def test_megatron_prefix_with_tokenizer_json_beside_it(hf_prepared, tmp_path):
    """Megatron-LM shards made with a GPT-2-style tokenizer: tokenizer.json beside the prefix gives the vocab."""
    from tests.data.megatron_ref import write_megatron
    out, tok_dir, texts = hf_prepared
    tok = Tokenizer(out / "tokenizer.json")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((tok_dir / name).read_bytes())
    prefix = write_megatron(tmp_path / "c_text_document", [[tok.encode(t) + [tok.eos_id]] for t in texts],
                            tok.vocab_size)
    meta = read_metadata(prefix)
    assert meta["vocab_size"] == tok.vocab_size > meta["max_token"] and meta["eos_id"] == tok.eos_id
    assert meta["tokenizer"]["file"] == "tokenizer.json" and meta["tokenizer"]["type"] == "huggingface"


@pytest.mark.slow
def test_train_and_generate_with_tokenizer_json(hf_prepared, tmp_path, capsys, one_thread):
    from mythos.evals.generate_cli import main as generate
    from mythos.hf.export_cli import main as export
    out, _, _ = hf_prepared
    run = tmp_path / "run"
    r = run_cli(train_args(run, out, 4))
    assert r.returncode == 0, r.stderr[-2000:]
    assert export([str(run), "--out", str(tmp_path / "model.safetensors")]) == 0
    outputs = []
    for src in (run, tmp_path / "model.safetensors"):  # the run finds tokenizer.json beside its data; the export
        capsys.readouterr()                             # file carries it
        assert generate([str(src), "--prompt", "def function_1(x", "--max-new-tokens", "8"]) == 0
        outputs.append(capsys.readouterr().out)
        assert outputs[-1].startswith("def function_1(x") and len(outputs[-1].strip()) > len("def function_1(x")
    assert outputs[0] == outputs[1]
    from transformers import AutoTokenizer

    from mythos.hf.export import export_hf
    hf = export_hf(run, tmp_path / "hf")  # mythos-export --format hf: AutoTokenizer loads the tokenizer.json
    auto, ours = AutoTokenizer.from_pretrained(str(hf)), Tokenizer(out / "tokenizer.json")
    assert auto("def f(x):\n    λ→ café", add_special_tokens=False)["input_ids"] == ours.encode("def f(x):\n    λ→ café")
    assert json.loads((hf / "config.json").read_text())["eos_token_id"] == auto.eos_token_id == ours.eos_id


def test_large_vocab_tokenizer_json_gives_int32_shards(tmp_path):
    """A vocab past uint16 (Llama-3's 128256) is written as int32, ids above 65535 intact."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers
    vocab = {"[UNK]": 0, EOS: 1, **{f"w{i}": i + 2 for i in range(70_000)}}
    tok = HFTokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    (tmp_path / "tok").mkdir()
    tok.save(str(tmp_path / "tok" / "tokenizer.json"))
    (tmp_path / "tok" / "tokenizer_config.json").write_text(json.dumps({"eos_token": EOS, "unk_token": "[UNK]"}))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("w69999 w3 w65534 zzz")
    r = run_cli(["data_prep", str(tmp_path / "src"), "--tokenizer", str(tmp_path / "tok"), "--out",
                 str(tmp_path / "out"), "--val-fraction", "0", "--workers", "1", "--no-progress"])
    assert r.returncode == 0, r.stderr[-2000:]
    meta = read_metadata(tmp_path / "out")
    assert meta["dtype"] == "int32" and meta["vocab_size"] == 70_002 and meta["unk_id"] == 0
    ds = IndexedDataset(tmp_path / "out" / meta["splits"]["train"]["shards"][0]["name"])
    assert ds[0].tolist() == [70_001, 5, 65_536, 0, 1]


def test_tokenizer_json_without_eos_is_refused(tmp_path):
    src = make_corpus(tmp_path, n_files=2)
    tok_dir = byte_bpe_dir(tmp_path, _docs(src), eos=None)
    out = tmp_path / "data"
    r = run_cli(["data_prep", str(src), "--tokenizer", str(tok_dir), "--out", str(out)])
    assert_user_error(r, str(tok_dir / "tokenizer.json"), "no EOS token", "tokenizer_config.json")
    assert not out.exists()


def test_sentencepiece_prep_after_an_hf_prep_in_one_process(hf_prepared, tmp_path):
    """Encoders loaded in-process (one worker) keep module state: a SentencePiece prep after an HF one must not
    encode with the HF tokenizer (it did: EOS ids were the HF tokenizer's)."""
    from data_prep import workers
    from data_prep.cli import main
    single, tok_dir, _ = hf_prepared
    workers._load(str(tok_dir / "tokenizer.json"), "uint16")  # what an in-process HF prep leaves behind
    out = tmp_path / "spm"
    assert main([str(single.parent / "corpus"), "--out", str(out), "--vocab-size", "300", "--workers", "1",
                 "--val-fraction", "0.1", "--val-min-tokens", "0"]) == 0
    meta = read_metadata(out)
    ds = open_split(out, "train", meta)[0]
    assert int(ds[0][-1]) == meta["eos_id"]
