"""Parallel, streaming encoding of the document stream into shards.

The main process reads documents in order, assigns each to train/val by a hash of its bytes, groups them into
batches of ~BATCH_BYTES and hands batches to worker processes (at most a few batches in flight, so memory stays
bounded). Results are written back in submission order, so the output does not depend on the worker count.
Shard boundaries: a shard is closed after the document that brings it to >= shard_tokens tokens. That rule
depends only on the document order, so a re-run after an interruption can skip the documents held by complete
shards and reproduce the remaining shards byte for byte.
"""
from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_prep.sources import hash_frac
from data_prep.workers import start_encoders
from mythos.data.indexed import IndexedDataset, IndexedWriter
from mythos.errors import UserError

BATCH_BYTES = 256 * 1024
SPLITS = ("train", "val")


@dataclass
class ShardSink:
    """Writes one split's shards `<split>_NNNNN.bin/.idx` in DIR, cutting at `shard_tokens`."""
    out_dir: Path
    split: str
    dtype: str
    shard_tokens: int
    shards: list[dict] = field(default_factory=list)  # complete shards: name, documents, tokens
    writer: IndexedWriter | None = None

    @property
    def docs_written(self) -> int:
        return sum(s["documents"] for s in self.shards) + (self.writer.n_docs if self.writer else 0)

    def _open(self) -> IndexedWriter:
        if self.writer is None:
            name = f"{self.split}_{len(self.shards):05d}"
            self.writer = IndexedWriter(self.out_dir / name, self.dtype)
        return self.writer

    def _close(self) -> None:
        w = self.writer
        w.finalize()
        self.shards.append({"name": w.prefix.name, "documents": w.n_docs, "tokens": w.n_tokens})
        self.writer = None

    def add(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        t0 = d0 = 0
        while d0 < lengths.size:
            w = self._open()
            cum = np.cumsum(lengths[d0:])
            j = int(np.searchsorted(cum, self.shard_tokens - w.n_tokens))  # first doc that fills the shard
            n = min(j + 1, lengths.size - d0)
            nt = int(cum[n - 1])
            w.add_documents(tokens[t0: t0 + nt], lengths[d0: d0 + n])
            t0, d0 = t0 + nt, d0 + n
            if w.n_tokens >= self.shard_tokens:
                self._close()

    def finish(self) -> None:
        if self.writer is not None and self.writer.n_docs:
            self._close()
        elif self.writer is not None:
            self.writer.abort()
            self.writer = None

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None


def scan_complete(out_dir: Path, split: str) -> list[dict]:
    """Complete shards of an interrupted run (a prefix train_00000, train_00001, ...); removes everything else."""
    done = []
    while True:
        prefix = out_dir / f"{split}_{len(done):05d}"
        if not Path(f"{prefix}.idx").exists():
            break
        try:
            ds = IndexedDataset(prefix)
        except UserError:
            break
        done.append({"name": prefix.name, "documents": len(ds), "tokens": ds.n_tokens})
    keep = {f"{d['name']}{ext}" for d in done for ext in (".bin", ".idx")}
    for p in out_dir.glob(f"{split}_*"):
        if p.name not in keep:
            p.unlink()
    return done


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(progress: bool):
    """tqdm on an interactive stderr; otherwise (SLURM logs, --no-progress) nothing, and tqdm is not imported."""
    if not progress or not sys.stderr.isatty():
        return _NoBar()
    from tqdm import tqdm

    return tqdm(unit="tok", unit_scale=True, desc="encode", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)


@dataclass
class EncodeResult:
    tokens: int = 0  # tokens encoded in this run (skipped shards excluded)
    seconds: float = 0.0
    val_fallback: bool = False
    val_fallback_hash: float = 2.0  # the copied document's hash (a sharded prep's merge picks the lowest)


def run_encode(docs, model_path: str, sinks: dict[str, ShardSink], *, workers: int, val_fraction: float,
               progress: bool = True) -> EncodeResult:
    """Encode the (text, bytes) stream `docs` into `sinks`. Sinks that already hold complete shards (a resumed
    run) make the stream skip that many documents of their split without encoding them."""
    skip = {s: sinks[s].docs_written for s in SPLITS}
    seen = {s: 0 for s in SPLITS}
    res = EncodeResult()
    best: tuple[float, bytes] | None = None  # the lowest-hash document: the val fallback for tiny corpora
    flags_q: deque = deque()  # the val flags of each batch in flight, in submission order
    enc = start_encoders(workers, model_path, sinks["train"].dtype)
    bar = progress_bar(progress)
    t_start = time.perf_counter()

    def write_next() -> None:
        tokens, lengths = enc.result()
        flags = flags_q.popleft()
        if not flags.any():
            sinks["train"].add(tokens, lengths)
        elif flags.all():
            sinks["val"].add(tokens, lengths)
        else:
            tmask = np.repeat(flags, lengths)
            sinks["train"].add(tokens[~tmask], lengths[~flags])
            sinks["val"].add(tokens[tmask], lengths[flags])
        res.tokens += tokens.size
        bar.update(tokens.size)

    def submit(batch: list[bytes], flags: list[bool]) -> None:
        enc.submit(batch)
        flags_q.append(np.array(flags, dtype=bool))
        while enc.in_flight >= enc.depth:
            write_next()

    def drain() -> None:
        while enc.in_flight:
            write_next()

    try:
        batch: list[bytes] = []
        flags: list[bool] = []
        size = 0
        for _, data in docs:
            h = hash_frac(data)
            if best is None or h < best[0]:
                best = (h, data)
            split = "val" if h < val_fraction else "train"
            seen[split] += 1
            if seen[split] <= skip[split]:
                continue
            batch.append(data)
            flags.append(split == "val")
            size += len(data)
            if size >= BATCH_BYTES:
                submit(batch, flags)
                batch, flags, size = [], [], 0
        if batch:
            submit(batch, flags)
        drain()
        if seen["train"] < skip["train"] or (seen["val"] < skip["val"] and not (seen["val"] == 0 and skip["val"] == 1)):
            raise UserError(f"{sinks['train'].out_dir}: its complete shards hold more documents than the corpus now "
                            f"has (the sources changed since the interrupted run); re-run with --overwrite")
        if val_fraction > 0 and seen["val"] == 0 and best is not None:
            # No document hashed into val (a tiny corpus): copy the lowest-hash document into val (it stays in train).
            res.val_fallback, res.val_fallback_hash = True, best[0]
            if skip["val"] == 0:
                submit([best[1]], [True])
                drain()
        for s in SPLITS:
            sinks[s].finish()
    except BaseException:
        for s in SPLITS:
            sinks[s].abort()
        enc.terminate()
        raise
    else:
        enc.close()
    finally:
        bar.close()
    res.seconds = time.perf_counter() - t_start
    return res
