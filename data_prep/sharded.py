"""Prep split over many processes (a SLURM array): train the tokenizer once, encode one part per task, merge.

    mythos-prep SOURCE... --out DIR --tokenizer-only [--vocab-size V]        # once: DIR/tokenizer.model
    mythos-prep SOURCE... --out DIR --num-shards N --shard-index I          # task I of N: DIR/part-I-of-N/
    mythos-prep merge DIR                                                   # DIR/metadata.json over all parts

Task I encodes documents I, I+N, I+2N, ... of the corpus stream (every task reads the stream; encoding, the costly
part, is split). Each part is an ordinary prep directory, so an interrupted task resumes like any prep. The merge
writes one metadata.json whose shard names point into the parts: no data is copied. The result holds the same
documents, token for token, as a single-process prep with the same tokenizer; only the order differs (part by
part). Val: the same per-document hash rule; the tiny-corpus fallback (one document copied into val when none
hashes there) is decided over the whole corpus at the merge, as a single-process prep would.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from mythos.data.atomic import atomic_path, atomic_write
from mythos.data.loader import read_metadata
from data_prep.tokenizer_import import copy_tokenizer
from mythos.data.tokenizer import file_sha256, tokenizer_in
from mythos.errors import UserError

PART_RE = re.compile(r"^part-(\d{5})-of-(\d{5})$")


def part_dir(out: Path, index: int, count: int) -> Path:
    return out / f"part-{index:05d}-of-{count:05d}"


def check_shard_args(a) -> None:
    """Validates --num-shards/--shard-index and points a sharded task at its part and the shared tokenizer."""
    if a.num_shards is None and a.shard_index is None:
        return
    if a.num_shards is None or a.shard_index is None:
        raise UserError("--num-shards and --shard-index go together")
    if a.num_shards < 1 or not 0 <= a.shard_index < a.num_shards:
        raise UserError(f"--shard-index {a.shard_index} --num-shards {a.num_shards}: need 0 <= index < count")
    if a.tokenizer_only:
        raise UserError("--tokenizer-only trains the one tokenizer for all shards: drop --num-shards/--shard-index")
    shared = tokenizer_in(a.out)  # tokenizer.model, or a tokenizer.json put there by --tokenizer-only --tokenizer
    if a.tokenizer is None:
        if not shared.is_file():
            raise UserError(f"{shared}: missing; train it once first: mythos-prep SOURCE... --out {a.out} "
                            f"--tokenizer-only (or pass --tokenizer)")
        a.tokenizer, a.vocab_size = str(shared), None
    a.out = str(part_dir(Path(a.out), a.shard_index, a.num_shards))


def select(docs, a):
    """This task's documents of the stream (all of them when not sharded)."""
    if not a.num_shards or a.num_shards == 1:
        yield from docs
        return
    for i, doc in enumerate(docs):
        if i % a.num_shards == a.shard_index:
            yield doc


def train_tokenizer_only(a, corpus) -> int:
    """DIR/tokenizer.model from a sample of the corpus (or the --tokenizer given, an HF tokenizer.json included);
    kept if already there (a requeued task)."""
    from data_prep.tokenizer_train import sample_documents, train_tokenizer

    out = Path(a.out)
    model = tokenizer_in(out)
    if model.is_file() and not a.overwrite:
        print(f"{model}: exists, kept (--overwrite retrains it)", file=sys.stderr)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    if a.tokenizer:  # given: every task uses this one
        copy_tokenizer(a.tokenizer, out)
        return 0
    sample = sample_documents(corpus, int(a.sample_mb * 1e6), int(a.sample_mb * 50e6))
    model = out / "tokenizer.model"
    with atomic_path(model) as tmp:
        train_tokenizer(sample, a.vocab_size, tmp)
    print(f"{model}: vocab {a.vocab_size}, trained on {len(sample)} documents")
    return 0


def merge(out_dir: str) -> int:
    out = Path(out_dir)
    found = [PART_RE.match(p.name) for p in out.glob("part-*") if p.is_dir()]
    counts = {int(m.group(2)) for m in found if m}
    if not counts:
        raise UserError(f"{out}: no part-I-of-N directories to merge")
    if len(counts) != 1:
        raise UserError(f"{out}: parts of different splits ({sorted(counts)} shards); remove the stale ones")
    n = counts.pop()
    parts = [part_dir(out, i, n) for i in range(n)]
    missing = [p.name for p in parts if not (p / "metadata.json").is_file()]
    if missing:
        raise UserError(f"{out}: parts not finished: {', '.join(missing)}")
    metas = [read_metadata(p) for p in parts]
    name = metas[0]["tokenizer"].get("file", "tokenizer.model")
    tok = out / name
    sha = file_sha256(tok) if tok.is_file() else metas[0]["tokenizer"]["sha256"]
    for p, m in zip(parts, metas):
        if m["tokenizer"]["sha256"] != sha or m["dtype"] != metas[0]["dtype"]:
            raise UserError(f"{p / 'metadata.json'}: tokenizer or dtype differs from the other parts")
    if not tok.is_file():
        copy_tokenizer(str(parts[0] / name), out)
    real_val = [i for i, m in enumerate(metas) if not m.get("val_fallback")]
    if not any(metas[i]["splits"]["val"]["documents"] for i in real_val) and metas[0]["val_fraction"] > 0:
        real_val = [min(range(n), key=lambda i: metas[i].get("val_fallback_hash", 2.0))]  # the corpus's lowest hash
    splits = {}
    for split in ("train", "val"):
        take = range(n) if split == "train" else real_val
        shards = [dict(s, name=f"{parts[i].name}/{s['name']}")
                  for i in take for s in metas[i]["splits"][split]["shards"]]
        splits[split] = {"documents": sum(s["documents"] for s in shards), "tokens": sum(s["tokens"] for s in shards),
                         "shards": shards}
    meta = {k: v for k, v in metas[0].items() if k != "val_fallback_hash"}
    meta.update(splits=splits, val_fallback=len(real_val) == 1 and bool(metas[real_val[0]].get("val_fallback")),
                sharded={"parts": n, "order": "part by part; part I holds documents I, I+N, ... of the stream"})
    atomic_write(out / "metadata.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    print(f"{out}: merged {n} parts: {splits['train']['documents']} train / {splits['val']['documents']} val "
          f"documents, {splits['train']['tokens'] + splits['val']['tokens']} tokens")
    return 0
