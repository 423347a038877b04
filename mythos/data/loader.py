"""The training/validation loader: global order, per-rank slicing, blending and a world-size-free state.

Order. Global sample index g = 0, 1, 2, ... Global batch s is g in [s*G, (s+1)*G); rank r of W takes
batch[r::W], so the union of the ranks' batches is the single-rank batch and the state
{fingerprint, seed, epoch, samples_consumed} does not depend on W.
Blending. Each block of BLOCK global indices holds a fixed number of samples of each dataset (largest-remainder
rounding of weight * BLOCK), shuffled by (seed, block); the m-th sample drawn from dataset k is sample
perm_{k, e}[m mod n_k] with e = m // n_k, where perm_{k, e} is a permutation seeded by (seed, k, e): a new order
every epoch of every dataset. A single dataset is the K = 1 case. Validation loaders do not shuffle.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from mythos.data.indexed import IndexedDataset, dtype_capacity
from mythos.data.megatron import is_megatron_prefix, megatron_metadata, open_range
from mythos.data.packed import PackedDataset
from mythos.errors import UserError

BLOCK = 4096
FORMAT_VERSION = 1


def read_metadata(data_dir: str | os.PathLike) -> dict:
    """metadata.json of a prepared directory, checked for the keys the loader needs (or the equivalent of a
    Megatron-LM `PREFIX_text_document` prefix, see mythos/data/megatron.py)."""
    if is_megatron_prefix(data_dir):
        return megatron_metadata(data_dir)
    path = Path(data_dir) / "metadata.json"
    if not Path(data_dir).is_dir():
        hint = " --vocab-size 4096" if Path(data_dir).name == "stdlib" else ""
        src = "stdlib" if hint else "SOURCE"
        raise UserError(f"{data_dir}: no such data directory (prepare it first: mythos-prep {src} --out "
                        f"{data_dir}{hint})")
    if not path.is_file():
        raise UserError(f"{path}: missing (not a finished mythos-prep output directory)")
    try:
        meta = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: invalid JSON ({e})") from None
    for key in ("format_version", "vocab_size", "eos_id", "dtype", "splits"):
        if key not in meta:
            raise UserError(f"{path}: missing key {key!r}")
    if meta["format_version"] != FORMAT_VERSION:
        raise UserError(f"{path}: format_version {meta['format_version']}, expected {FORMAT_VERSION}")
    if meta["dtype"] not in ("uint16", "int32"):
        raise UserError(f"{path}: dtype {meta['dtype']!r}, expected 'uint16' or 'int32'")
    cap = dtype_capacity(meta["dtype"])
    if not isinstance(meta["vocab_size"], int) or not 0 < meta["vocab_size"] <= cap:
        raise UserError(f"{path}: vocab_size {meta['vocab_size']} is too large for dtype {meta['dtype']} "
                        f"(holds at most {cap} ids)")
    return meta


def check_vocab(meta: dict, model_vocab: int, data_dir: str | os.PathLike = "data") -> None:
    """UserError unless the data's vocabulary equals the model's (Megatron shards: every id is below it)."""
    if meta.get("megatron"):
        if int(meta["max_token"]) >= int(model_vocab):
            raise UserError(f"{data_dir}.bin: token id {meta['max_token']} >= the model's vocab_size {model_vocab}")
        return
    if int(meta["vocab_size"]) != int(model_vocab):
        raise UserError(f"{Path(data_dir) / 'metadata.json'}: vocab_size {meta['vocab_size']} differs from the "
                        f"model's {model_vocab}")


def open_split(data_dir: str | os.PathLike, split: str, meta: dict | None = None) -> list[IndexedDataset]:
    """Readers of every shard of a split, checked against metadata.json."""
    meta = meta or read_metadata(data_dir)
    mpath = Path(data_dir) / "metadata.json"
    if split not in meta["splits"]:
        raise UserError(f"{mpath}: no split {split!r} (has {sorted(meta['splits'])})")
    shards = []
    for entry in meta["splits"][split]["shards"]:
        ds = open_range(IndexedDataset(Path(data_dir) / entry["name"]), entry)
        idx = f"{ds.prefix}.idx"
        if ds.dtype.name != meta["dtype"]:
            raise UserError(f"{idx}: dtype {ds.dtype.name} differs from {mpath}'s {meta['dtype']}")
        if ds.n_tokens != entry["tokens"] or len(ds) != entry["documents"]:
            raise UserError(f"{idx}: {ds.n_tokens} tokens / {len(ds)} documents, {mpath} lists "
                            f"{entry['tokens']} / {entry['documents']}")
        shards.append(ds)
    if not shards:
        raise UserError(f"{mpath}: split {split!r} has no shards")
    return shards


def split_weight(spec: str) -> tuple[str, float]:
    """'thing@0.7' -> ('thing', 0.7); no (numeric) '@' suffix -> weight 1. UserError for a non-positive weight."""
    body, weight = spec.strip(), 1.0
    if "@" in body:
        head, _, tail = body.rpartition("@")
        try:
            weight, body = float(tail), head
        except ValueError:
            pass
    if not (weight > 0 and np.isfinite(weight)):
        raise UserError(f"{spec}: weight must be a positive number")
    return body, weight


def parse_spec(data_spec) -> list[tuple[str, float]]:
    """'path' or 'path1@0.7,path2@0.3' -> [(path, weight)] with weights summing to 1."""
    if isinstance(data_spec, (list, tuple)):
        parts = [str(p) for p in data_spec]
    else:
        parts = [p for p in str(data_spec).split(",") if p.strip()]
    if not parts:
        raise UserError(f"data spec {data_spec!r} is empty")
    out = [split_weight(p) for p in parts]
    total = sum(w for _, w in out)
    return [(p, w / total) for p, w in out]


def _data_hash(meta: dict, split: str) -> str:
    key = {"tokenizer": meta.get("tokenizer", {}).get("sha256"), "vocab": meta["vocab_size"],
           "dtype": meta["dtype"], "shards": meta["splits"][split]["shards"]}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


class DataLoader:
    """See the module docstring. `next_batch()` -> (inputs [G/W, S], targets [G/W, S]) int64 tensors."""

    def __init__(self, datasets: list[PackedDataset], weights: list[float], *, seq_len: int, global_batch: int,
                 rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True, fingerprint: str = ""):
        if world_size < 1 or not 0 <= rank < world_size:
            raise UserError(f"rank {rank} is not in a world of size {world_size}")
        if global_batch < 1 or global_batch % world_size:
            raise UserError(f"global_batch {global_batch} must be a positive multiple of world_size {world_size}")
        self.datasets, self.seq_len, self.global_batch = datasets, seq_len, global_batch
        self.rank, self.world_size, self.seed, self.shuffle = rank, world_size, int(seed), shuffle
        self.fingerprint = fingerprint
        self.samples_consumed = 0
        self.epoch_len = sum(len(d) for d in datasets)
        self.counts = self._block_counts(weights)
        self._perms: OrderedDict = OrderedDict()
        self._block: tuple[int, np.ndarray, np.ndarray] | None = None

    @staticmethod
    def _block_counts(weights: list[float]) -> np.ndarray:
        raw = np.asarray(weights, dtype=np.float64) * BLOCK
        counts = np.floor(raw).astype(np.int64)
        rest = BLOCK - counts.sum()
        order = np.argsort(-(raw - counts), kind="stable")
        counts[order[:rest]] += 1
        for k in np.flatnonzero(counts == 0):  # every weighted dataset appears at least once a block
            counts[k] = 1
            counts[int(np.argmax(counts))] -= 1
        return counts

    # ---- the global order -------------------------------------------------------------------------------------
    def _block_schedule(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        if self._block is None or self._block[0] != b:
            which = np.repeat(np.arange(len(self.counts)), self.counts)
            if len(self.counts) > 1:
                which = np.random.default_rng([self.seed, 0x0B1E7D, b]).permutation(which)
            nth = np.empty(BLOCK, dtype=np.int64)
            for k in range(len(self.counts)):
                pos = np.flatnonzero(which == k)
                nth[pos] = np.arange(pos.size)
            self._block = (b, which, nth)
        return self._block[1], self._block[2]

    def _perm(self, k: int, epoch: int) -> np.ndarray | None:
        if not self.shuffle:
            return None
        key = (k, epoch)
        if key not in self._perms:
            n = len(self.datasets[k])
            self._perms[key] = np.random.default_rng([self.seed, k, epoch]).permutation(n)
            while len(self._perms) > 2 * len(self.datasets) + 1:
                self._perms.popitem(last=False)
        return self._perms[key]

    def locate(self, g: int) -> tuple[int, int]:
        """Global sample index -> (dataset k, sample index within dataset k)."""
        b, j = divmod(int(g), BLOCK)
        which, nth = self._block_schedule(b)
        k = int(which[j])
        m = b * int(self.counts[k]) + int(nth[j])
        n = len(self.datasets[k])
        epoch, i = divmod(m, n)
        perm = self._perm(k, epoch)
        return k, int(perm[i]) if perm is not None else i

    def global_indices(self, step_start: int) -> list[int]:
        """Global sample indices this rank reads for the global batch starting at `step_start`."""
        return list(range(step_start + self.rank, step_start + self.global_batch, self.world_size))

    def windows(self, gs: list[int]) -> np.ndarray:
        out = np.empty((len(gs), self.seq_len + 1), dtype=np.int64)
        for row, g in enumerate(gs):
            k, i = self.locate(g)
            self.datasets[k].window(i, out[row])
        return out

    def next_batch(self):
        import torch  # imported here so data_prep (which never builds batches) starts without torch

        x = self.windows(self.global_indices(self.samples_consumed))
        self.samples_consumed += self.global_batch
        return torch.from_numpy(np.ascontiguousarray(x[:, :-1])), torch.from_numpy(np.ascontiguousarray(x[:, 1:]))

    def __iter__(self):
        while True:
            yield self.next_batch()

    # ---- state -----------------------------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        """Completed passes over the data (for a blend: over the sum of the datasets' samples)."""
        return self.samples_consumed // self.epoch_len

    def state_dict(self) -> dict:
        return {"fingerprint": self.fingerprint, "seed": self.seed, "epoch": self.epoch,
                "samples_consumed": self.samples_consumed}

    def load_state_dict(self, sd: dict) -> None:
        missing = {"fingerprint", "seed", "epoch", "samples_consumed"} - set(sd)
        if missing:
            raise UserError(f"data loader state: missing keys {sorted(missing)}")
        if sd["fingerprint"] != self.fingerprint:
            raise UserError(f"data loader state: {_describe_mismatch(sd['fingerprint'], self.fingerprint)}")
        consumed = int(sd["samples_consumed"])
        if consumed < 0:
            raise UserError(f"data loader state: samples_consumed {consumed} is negative")
        self.seed = int(sd["seed"])  # resume the saved stream exactly, even if the config's seed changed
        self.samples_consumed = consumed
        self._perms.clear()
        self._block = None


def _describe_mismatch(saved: str, current: str) -> str:
    a, b = dict(_fp_fields(saved)), dict(_fp_fields(current))
    diffs = [f"{k} {a.get(k)!r} != {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    what = "; ".join(diffs) if diffs else f"{saved!r} != {current!r}"
    return f"fingerprint of the saved data differs from this data (saved vs now: {what})"


def _fp_fields(fp: str) -> list[tuple[str, str]]:
    return [tuple(p.split("=", 1)) if "=" in p else ("?", p) for p in fp.split("|")]


def build_loader(data_spec, split: str = "train", *, seq_len: int, global_batch: int, rank: int = 0,
                 world_size: int = 1, seed: int = 0, vocab_size: int | None = None,
                 shuffle: bool | None = None) -> DataLoader:
    """A DataLoader over `data_spec` ('dir' or 'dir1@0.7,dir2@0.3'). `vocab_size`: the model's, checked against
    every dataset (UserError if it differs). `shuffle` defaults to True for train and False for val."""
    specs = parse_spec(data_spec)
    datasets, parts, vocab = [], [], None
    for path, w in specs:
        meta = read_metadata(path)
        if vocab_size is not None:
            check_vocab(meta, vocab_size, path)
        if vocab is not None and meta["vocab_size"] != vocab:
            raise UserError(f"{Path(path) / 'metadata.json'}: vocab_size {meta['vocab_size']} differs from the "
                            f"other blended datasets' {vocab}")
        vocab = meta["vocab_size"]
        datasets.append(PackedDataset(open_split(path, split, meta), seq_len, name=f"{path} ({split})"))
        parts.append(f"{_data_hash(meta, split)}@{w:.6g}")
    fingerprint = f"split={split}|seq_len={seq_len}|data={'+'.join(parts)}"
    return DataLoader(datasets, [w for _, w in specs], seq_len=seq_len, global_batch=global_batch, rank=rank,
                      world_size=world_size, seed=seed, shuffle=(split == "train") if shuffle is None else shuffle,
                      fingerprint=fingerprint)
