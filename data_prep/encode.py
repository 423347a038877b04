"""Parallel, streaming encoding of the document stream into shards.

The main process reads documents in order, assigns each to train/val by a hash of its bytes, groups them into
batches of ~BATCH_BYTES and hands batches to worker processes (at most a few batches in flight, so memory stays
bounded). Results are written back in submission order, so the output does not depend on the worker count.
Shard boundaries: a shard is closed after the document that brings it to >= shard_tokens tokens. That rule
depends only on the document order, so a re-run after an interruption can skip the documents held by complete
shards and reproduce the remaining shards byte for byte.
"""
from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_prep.sources import hash_frac
from mythos.data.indexed import IndexedDataset, IndexedWriter
from mythos.errors import UserError

BATCH_BYTES = 256 * 1024
SPLITS = ("train", "val")

_sp = None
_eos = 0
_dtype = np.uint16


def _die_with_parent() -> None:
    try:  # Linux: a worker gets SIGKILL when the prep process dies (e.g. killed with SIGKILL)
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _init_worker(model_path: str, dtype: str, in_child: bool = True) -> None:
    global _sp, _eos, _dtype
    import sentencepiece as spm

    if in_child:
        _die_with_parent()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _sp = spm.SentencePieceProcessor()
    _sp.load(model_path)
    _eos = _sp.eos_id()
    _dtype = np.dtype(dtype)


def encode_batch(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of `texts` back to back, EOS after each, and the per-document lengths (EOS included)."""
    ids = _sp.encode(texts, num_threads=1)
    lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
    flat = np.empty(int(lengths.sum()), dtype=_dtype)
    ends = np.cumsum(lengths)
    pos = 0
    for x, end in zip(ids, ends):
        flat[pos: end - 1] = x
        pos = end
    flat[ends - 1] = _eos
    return flat, lengths


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


@dataclass
class EncodeResult:
    tokens: int = 0  # tokens encoded in this run (skipped shards excluded)
    seconds: float = 0.0
    val_fallback: bool = False


def run_encode(docs, model_path: str, sinks: dict[str, ShardSink], *, workers: int, val_fraction: float,
               progress: bool = True) -> EncodeResult:
    """Encode the (text, bytes) stream `docs` into `sinks`. Sinks that already hold complete shards (a resumed
    run) make the stream skip that many documents of their split without encoding them."""
    from tqdm import tqdm

    skip = {s: sinks[s].docs_written for s in SPLITS}
    seen = {s: 0 for s in SPLITS}
    dtype = sinks["train"].dtype
    res = EncodeResult()
    best: tuple[float, str] | None = None  # the lowest-hash document: the val fallback for tiny corpora
    pool = None
    if workers > 1:
        pool = mp.get_context("fork").Pool(workers, initializer=_init_worker, initargs=(model_path, dtype))
    else:
        _init_worker(model_path, dtype, in_child=False)
    pending: deque = deque()
    bar = tqdm(unit="tok", unit_scale=True, desc="encode", disable=None if progress else True, file=sys.stderr,
               dynamic_ncols=True, mininterval=0.5)
    t_start = time.perf_counter()

    def drain(limit: int) -> None:
        while len(pending) > limit:
            job, flags = pending.popleft()
            tokens, lengths = job.get() if pool is not None else job
            write(tokens, lengths, flags)

    def write(tokens: np.ndarray, lengths: np.ndarray, flags: np.ndarray) -> None:
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

    def submit(texts: list[str], flags: list[bool]) -> None:
        f = np.array(flags, dtype=bool)
        pending.append((pool.apply_async(encode_batch, (texts,)) if pool is not None else encode_batch(texts), f))
        drain(2 * workers + 2 if pool is not None else 0)

    try:
        texts: list[str] = []
        flags: list[bool] = []
        size = 0
        for text, data in docs:
            h = hash_frac(data)
            if best is None or h < best[0]:
                best = (h, text)
            split = "val" if h < val_fraction else "train"
            seen[split] += 1
            if seen[split] <= skip[split]:
                continue
            texts.append(text)
            flags.append(split == "val")
            size += len(data)
            if size >= BATCH_BYTES:
                submit(texts, flags)
                texts, flags, size = [], [], 0
        if texts:
            submit(texts, flags)
        drain(0)
        if seen["train"] < skip["train"] or (seen["val"] < skip["val"] and not (seen["val"] == 0 and skip["val"] == 1)):
            raise UserError(f"{sinks['train'].out_dir}: its complete shards hold more documents than the corpus now "
                            f"has (the sources changed since the interrupted run); re-run with --overwrite")
        if val_fraction > 0 and seen["val"] == 0 and best is not None:
            # No document hashed into val (a tiny corpus): copy the lowest-hash document into val (it stays in train).
            res.val_fallback = True
            if skip["val"] == 0:
                if pool is not None:
                    tokens, lengths = pool.apply(encode_batch, ([best[1]],))
                else:
                    tokens, lengths = encode_batch([best[1]])
                write(tokens, lengths, np.ones(1, dtype=bool))
        for s in SPLITS:
            sinks[s].finish()
    except BaseException:
        for s in SPLITS:
            sinks[s].abort()
        if pool is not None:
            pool.terminate()
            pool = None
        raise
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    res.seconds = time.perf_counter() - t_start
    return res
