"""`mythos-prep SOURCE [SOURCE ...] --out DIR ...` and `mythos-prep inspect DIR`."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from data_prep import files as F
from data_prep import sharded
from data_prep import sources as S
from data_prep.encode import SPLITS, ShardSink, run_encode, scan_complete
from data_prep.tokenizer_import import HF_FILES, copy_tokenizer, resolve_tokenizer
from data_prep.tokenizer_train import MIN_VOCAB, sample_documents, train_tokenizer
from data_prep.valsplit import VAL_MIN_TOKENS, val_threshold
from mythos.data.atomic import atomic_write
from mythos.data.indexed import CODE_OF, dtype_capacity, dtype_for_vocab
from mythos.data.loader import FORMAT_VERSION, check_vocab, open_split, read_metadata
from mythos.data.tokenizer import Tokenizer, file_sha256
from mythos.errors import UserError, cli_entry

PLAN = "prep.json"  # the arguments of an unfinished prep, so a re-run can check it resumes the same job
VAL_POLICY = ("a document goes to val when blake2b(its UTF-8 bytes) / 2**64 < val_threshold: val_fraction, raised on "
              "a corpus under 64 MB until val holds val_min_tokens (at most 20% of the bytes); if no document is "
              "in val (tiny corpus), the lowest-hash document is also copied into val (it stays in train)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mythos-prep", description="Tokenize corpora into Megatron-format shards (see also: mythos-prep "
        "inspect DIR). SOURCE: a directory, a file, hf:NAME[:CONFIG][:SPLIT] (a `datasets` dataset or "
        "save_to_disk folder), or stdlib (Python's own sources). Files: " + F.ACCEPTED + ". In a directory every "
        "file is read or counted as skipped with its reason (hidden, empty, binary, archive), reported at the end "
        "and in metadata.json. SOURCE:KEY sets the JSONL field / Parquet column of that source alone; "
        "SOURCE@WEIGHT repeats (w > 1) or subsamples (w < 1) a source: data/a.jsonl:body@0.3.")
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    p.add_argument("--out", required=True, help="output directory")
    tok = p.add_mutually_exclusive_group()
    tok.add_argument("--vocab-size", type=int, default=None, help="train a SentencePiece BPE model (default 4096)")
    tok.add_argument("--tokenizer", help="use an existing SentencePiece .model or a Hugging Face tokenizer "
                     "directory (its SentencePiece model, else its tokenizer.json)")
    p.add_argument("--val-fraction", type=float, default=0.01, help="share of documents in the validation split")
    p.add_argument("--val-min-tokens", type=int, default=VAL_MIN_TOKENS,
                   help=f"on a small corpus, more documents go to val until it holds this many tokens (at most 20%% "
                        f"of the corpus; default {VAL_MIN_TOKENS}; 0: the fraction alone)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="encoder processes (default: cores)")
    p.add_argument("--shard-tokens", type=int, default=100_000_000, help="tokens per shard (cut at document ends)")
    p.add_argument("--text-key", default="text", help="JSONL field holding the text")
    p.add_argument("--text-column", default="text", help="Parquet / datasets column holding the text")
    p.add_argument("--dtype", choices=("auto", "uint16", "int32"), default="auto", help="token dtype of the shards")
    p.add_argument("--sample-mb", type=float, default=20.0, help="tokenizer training sample size (MB)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--no-progress", action="store_true")
    g = p.add_argument_group("sharded prep (a SLURM array; see `mythos-submit prep` and `mythos-prep merge DIR`)")
    g.add_argument("--tokenizer-only", action="store_true", help="only train DIR/tokenizer.model (once, first)")
    g.add_argument("--num-shards", type=int, help="split the corpus over N tasks...")
    g.add_argument("--shard-index", type=int, help="...and encode part I of them into DIR/part-I-of-N")
    return p


def _check_args(a) -> None:
    if a.vocab_size is None and a.tokenizer is None:
        a.vocab_size = 4096
    if a.tokenizer is not None:
        a.tokenizer = resolve_tokenizer(a.tokenizer)
    if not 0.0 <= a.val_fraction < 1.0:
        raise UserError(f"--val-fraction {a.val_fraction}: must be in [0, 1)")
    if a.val_min_tokens < 0:
        raise UserError(f"--val-min-tokens {a.val_min_tokens}: must be >= 0")
    if a.workers < 1:
        raise UserError(f"--workers {a.workers}: must be >= 1")
    if a.shard_tokens < 1:
        raise UserError(f"--shard-tokens {a.shard_tokens}: must be >= 1")
    if a.sample_mb <= 0:
        raise UserError(f"--sample-mb {a.sample_mb}: must be > 0")
    if a.vocab_size is not None and a.vocab_size < MIN_VOCAB:
        raise UserError(f"--vocab-size {a.vocab_size}: too small (byte fallback needs at least {MIN_VOCAB})")
    if a.vocab_size is not None:
        cap = dtype_capacity("int32" if a.dtype == "auto" else a.dtype)
        if a.vocab_size > cap:
            dt = "int32" if a.dtype == "auto" else a.dtype
            raise UserError(f"--vocab-size {a.vocab_size}: too large for dtype {dt} (holds at most {cap} ids)")


def _plan(a, sources: list[S.Source]) -> dict:
    return {"sources": [S.describe(s) for s in sources], "vocab_size": a.vocab_size,
            "tokenizer_sha256": file_sha256(a.tokenizer) if a.tokenizer else None, "val_fraction": a.val_fraction,
            "val_min_tokens": a.val_min_tokens, "shard_tokens": a.shard_tokens, "text_key": a.text_key, "text_column": a.text_column,
            "dtype": a.dtype, "sample_mb": a.sample_mb, "num_shards": a.num_shards, "shard_index": a.shard_index}


def _ours(out: Path):
    for pattern in ("train_*", "val_*", "tokenizer.model", "tokenizer.model.tmp", *HF_FILES, "metadata.json",
                    "metadata.json.tmp", PLAN):
        yield from out.glob(pattern)


def _prepare_dir(out: Path, plan: dict, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    if out.is_dir():
        if overwrite:
            for p in _ours(out):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        elif (out / "metadata.json").exists():
            raise UserError(f"{out}: already holds a finished prep (metadata.json); pass --overwrite to replace it")
        elif (out / PLAN).exists():
            try:
                old = json.loads((out / PLAN).read_text())
            except ValueError:
                old = {}
            diff = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
            if diff:
                raise UserError(f"{out}: holds an unfinished prep with different arguments ({', '.join(diff)} "
                                f"differ); pass --overwrite to start over")
            print(f"resuming the unfinished prep in {out}", file=sys.stderr)
            return
        elif any(out.iterdir()):
            raise UserError(f"{out}: exists and is not empty; pass --overwrite to write into it")
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / PLAN, plan)


def _write_json(path: Path, obj: dict) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _check_dtype(tok: Tokenizer, want: str, where) -> str:
    dtype = dtype_for_vocab(tok.vocab_size) if want == "auto" else want
    if tok.vocab_size > dtype_capacity(dtype):
        raise UserError(f"{where}: vocab_size {tok.vocab_size} too large for dtype {dtype} "
                        f"(holds at most {dtype_capacity(dtype)} ids)")
    return dtype


def prep(a) -> int:
    _check_args(a)
    sharded.check_shard_args(a)
    sources = [S.parse_source(s) for s in a.sources]
    out = Path(a.out)
    opts = S.ReadOptions(text_key=a.text_key, text_column=a.text_column)
    probe = S.Stats()
    if next(S.iter_corpus(sources, opts, probe), None) is None:
        where = ", ".join(s.target if s.kind != "hf" else s.spec for s in sources)
        raise UserError(f"{where}: empty corpus (no non-empty documents found; {probe.files.summary()})")
    if a.tokenizer_only:
        return sharded.train_tokenizer_only(a, S.iter_corpus(sources, opts))
    if a.tokenizer:
        _check_dtype(Tokenizer(a.tokenizer), a.dtype, a.tokenizer)  # validate before touching DIR
    created = not out.exists()
    _prepare_dir(out, _plan(a, sources), a.overwrite)
    try:
        return _prep_into(a, sources, opts, out)
    except UserError:
        if created:  # bad input found mid-run: leave no half-made directory behind
            for p in _ours(out):
                p.unlink()
            if not any(out.iterdir()):
                out.rmdir()
        raise


def _prep_into(a, sources: list[S.Source], opts: S.ReadOptions, out: Path) -> int:
    model_path = out / "tokenizer.model"
    t0 = time.perf_counter()
    if a.tokenizer:
        model_path = copy_tokenizer(a.tokenizer, out)
    elif not model_path.exists():
        sample = sample_documents(S.iter_corpus(sources, opts), int(a.sample_mb * 1e6), int(a.sample_mb * 50e6))
        print(f"training tokenizer (vocab {a.vocab_size}) on {sum(map(len, sample)) / 1e6:.2f} M chars "
              f"from {len(sample)} documents", file=sys.stderr)
        train_tokenizer(sample, a.vocab_size, model_path)
    t_tok = time.perf_counter() - t0
    tok = Tokenizer(model_path)
    dtype = _check_dtype(tok, a.dtype, a.tokenizer or model_path)
    sinks = {s: ShardSink(out, s, dtype, a.shard_tokens, shards=scan_complete(out, s)) for s in SPLITS}
    done = sum(len(s.shards) for s in sinks.values())
    if done:
        print(f"skipping {done} complete shard(s) of the interrupted run", file=sys.stderr)
    threshold, floored = val_threshold(S.iter_corpus(sources, opts), lambda text: len(tok.encode(text)) + 1,
                                       a.val_fraction, a.val_min_tokens)  # the whole stream: same in every part
    stats = S.Stats()
    docs = sharded.select(S.iter_corpus(sources, opts, stats), a)  # all of them unless --num-shards
    res = run_encode(docs, str(model_path), sinks, workers=a.workers,
                     val_fraction=threshold, progress=not a.no_progress)
    splits = {s: {"documents": sum(x["documents"] for x in sinks[s].shards),
                  "tokens": sum(x["tokens"] for x in sinks[s].shards), "shards": sinks[s].shards} for s in SPLITS}
    meta = {
        "format_version": FORMAT_VERSION, "vocab_size": tok.vocab_size, "bos_id": tok.bos_id, "eos_id": tok.eos_id,
        "pad_id": tok.pad_id, "unk_id": tok.unk_id, "dtype": dtype, "dtype_code": CODE_OF[dtype],
        "tokenizer": {"file": model_path.name, "sha256": file_sha256(model_path), "type": tok.kind,
                      "trained": not a.tokenizer, "vocab_size": tok.vocab_size},
        "splits": splits, "shard_tokens": a.shard_tokens,
        "sources": [dict(S.describe(s), **stats.per_source.get(s.spec, {})) for s in sources],
        "documents": stats.docs, "bytes": stats.bytes, "val_fraction": a.val_fraction, "val_policy": VAL_POLICY,
        "val_min_tokens": a.val_min_tokens, "val_threshold": threshold, "val_floor_applied": floored,
        "val_fallback": res.val_fallback,
        "non_utf8": {"policy": "replace", "documents": stats.non_utf8_docs},
        "empty_documents_skipped": stats.empty_docs, "eos_appended": True, "files": stats.files.to_json(),
        **({"val_fallback_hash": res.val_fallback_hash} if res.val_fallback else {}),
    }
    _write_json(out / "metadata.json", meta)
    (out / PLAN).unlink(missing_ok=True)
    rate = res.tokens / res.seconds if res.seconds > 0 else 0.0
    total = sum(splits[s]["tokens"] for s in SPLITS)
    print(f"{out}: {stats.docs} documents, {total} tokens ({splits['train']['tokens']} train in "
          f"{len(splits['train']['shards'])} shards, {splits['val']['tokens']} val in "
          f"{len(splits['val']['shards'])}); vocab {tok.vocab_size}, {dtype}; "
          f"{res.tokens / 1e6:.2f} M tokens encoded in {res.seconds:.1f} s ({rate / 1e6:.2f} M tok/s, "
          f"{a.workers} workers); tokenizer {t_tok:.1f} s")
    print(f"non-UTF-8 documents (decoded with replacement characters): {stats.non_utf8_docs}; "
          f"empty documents skipped: {stats.empty_docs}" + ("; val: no document hashed into val, copied the "
                                                            "lowest-hash one" if res.val_fallback else ""))
    if floored:
        print(f"val: raised from --val-fraction {a.val_fraction} to {threshold:.4f} of the documents to hold "
              f"--val-min-tokens {a.val_min_tokens}: {splits['val']['tokens']} tokens")
    elif a.val_fraction > 0 and not a.num_shards and splits["val"]["tokens"] < a.val_min_tokens:
        print(f"warning: the validation split holds {splits['val']['tokens']} tokens, under --val-min-tokens "
              f"{a.val_min_tokens} (the floor takes at most 20% of the corpus); raise --val-fraction for a "
              f"less noisy validation loss", file=sys.stderr)
    if stats.files.n_read or stats.files.n_skipped:
        print(stats.files.summary())
    return 0


def inspect(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mythos-prep inspect", description="Check and summarise a prepared directory.")
    p.add_argument("dir")
    p.add_argument("--model-vocab", type=int, help="also check the data against a model with this vocab size")
    p.add_argument("--sample-tokens", type=int, default=48, help="tokens of the decoded sample")
    a = p.parse_args(argv)
    meta = read_metadata(a.dir)
    if a.model_vocab is not None:
        check_vocab(meta, a.model_vocab, a.dir)
    model = Path(a.dir) / meta.get("tokenizer", {}).get("file", "tokenizer.model")
    tok = Tokenizer(model)
    if meta.get("tokenizer", {}).get("sha256") not in (None, file_sha256(model)):
        raise UserError(f"{model}: checksum differs from the one in {Path(a.dir) / 'metadata.json'}")
    if tok.vocab_size != meta["vocab_size"]:
        raise UserError(f"{model}: vocab_size {tok.vocab_size} differs from metadata.json's {meta['vocab_size']}")
    print(f"{a.dir}: vocab {meta['vocab_size']} (bos {meta.get('bos_id')}, eos {meta['eos_id']}, "
          f"pad {meta.get('pad_id')}), dtype {meta['dtype']}, non-UTF-8 docs "
          f"{meta.get('non_utf8', {}).get('documents', '?')}")
    files = meta.get("files")
    if files and (files.get("read") or files.get("skipped")):
        reasons = "; ".join(f"{r} {v['files']}" for r, v in sorted(files.get("skipped_reasons", {}).items(),
                                                                    key=lambda kv: -kv[1]["files"]))
        print(f"  files: {files['read']} read, {files['skipped']} skipped" + (f" ({reasons})" if reasons else ""))
    first = None
    for split in SPLITS:
        if split not in meta["splits"] or not meta["splits"][split]["shards"]:
            print(f"  {split}: empty")
            continue
        shards = open_split(a.dir, split, meta)
        for ds in shards:
            top = ds.max_token()
            if top >= meta["vocab_size"]:
                raise UserError(f"{ds.prefix}.bin: token id {top} >= vocab_size {meta['vocab_size']}")
        docs, toks = sum(len(d) for d in shards), sum(d.n_tokens for d in shards)
        print(f"  {split}: {len(shards)} shards, {docs} documents, {toks} tokens "
              f"({toks / max(docs, 1):.0f} tokens/doc)")
        first = first or shards[0]
    if first is not None and len(first):
        ids = [int(i) for i in first[0][: a.sample_tokens]]
        print(f"sample (first {len(ids)} tokens of {first.prefix}.bin, document 0):")
        print(repr(tok.decode([i for i in ids if i != tok.eos_id])))
    return 0


@cli_entry
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "inspect":
        return inspect(argv[1:])
    if argv and argv[0] == "merge":
        if len(argv) != 2:
            raise UserError("usage: mythos-prep merge DIR")
        return sharded.merge(argv[1])
    return prep(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
