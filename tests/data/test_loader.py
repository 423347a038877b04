"""Packed windows, the world-size-independent global order, resume, blending and validation loading."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.data.datahelp import write_dataset
from mythos.data import build_loader, check_vocab, read_metadata
from mythos.errors import UserError

S, G = 16, 8


def make(tmp_path, name="d", n_docs=40, lo=4, hi=1000, seed=0, val_docs=None, **kw):
    rng = np.random.default_rng(seed)
    docs = [rng.integers(lo, hi, size=rng.integers(1, 60)).tolist() + [2] for _ in range(n_docs)]
    val = val_docs if val_docs is not None else [rng.integers(lo, hi, size=30).tolist() + [2] for _ in range(5)]
    return write_dataset(tmp_path / name, {"train": docs, "val": val}, **kw), docs, val


def global_batch(loader_factory, world: int, steps: int, start_sd=None):
    """Per step: the global batch rebuilt from the ranks' batches (rank r holds rows r, r+W, ...)."""
    loaders = [loader_factory(r, world) for r in range(world)]
    if start_sd is not None:
        for ld in loaders:
            ld.load_state_dict(start_sd)
    out = []
    for _ in range(steps):
        parts = [ld.next_batch() for ld in loaders]
        x = torch.empty((G, S), dtype=torch.int64)
        y = torch.empty((G, S), dtype=torch.int64)
        for r, (xi, yi) in enumerate(parts):
            assert xi.shape == (G // world, S) and xi.dtype == torch.int64
            x[r::world], y[r::world] = xi, yi
        out.append((x, y))
    states = {json.dumps(ld.state_dict(), sort_keys=True) for ld in loaders}
    assert len(states) == 1  # every rank holds the same, world-size-free state
    return out, loaders[0].state_dict()


def test_packed_windows_cross_document_and_shard_boundaries(tmp_path):
    path, docs, _ = make(tmp_path)
    stream = np.concatenate([np.asarray(d) for d in docs])
    ld = build_loader(path, "train", seq_len=S, global_batch=G, seed=0, shuffle=False)
    n = (stream.size - 1) // S
    assert len(ld.datasets[0]) == n
    seen = []
    for _ in range(n // G):
        x, y = ld.next_batch()
        seen.extend(zip(x.tolist(), y.tolist()))
    for i, (x, y) in enumerate(seen):
        assert x == stream[i * S: i * S + S].tolist() and y == stream[i * S + 1: i * S + S + 1].tolist()


@pytest.mark.parametrize("world", [1, 2, 4])
def test_union_of_ranks_is_the_single_rank_batch(tmp_path, world):
    path, _, _ = make(tmp_path)
    factory = lambda r, w: build_loader(path, "train", seq_len=S, global_batch=G, rank=r, world_size=w, seed=7)
    ref, ref_sd = global_batch(factory, 1, 12)
    got, sd = global_batch(factory, world, 12)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(ref, got))
    assert sd == ref_sd and sd["samples_consumed"] == 12 * G and set(sd) == {"fingerprint", "seed", "epoch",
                                                                                 "samples_consumed"}


@pytest.mark.parametrize("w_before,w_after", [(1, 1), (2, 4), (4, 1), (1, 2)])
def test_resume_gives_the_same_later_batches_on_any_world_size(tmp_path, w_before, w_after):
    path, _, _ = make(tmp_path)
    factory = lambda r, w: build_loader(path, "train", seq_len=S, global_batch=G, rank=r, world_size=w, seed=3)
    ref, _ = global_batch(factory, 1, 30)  # crosses epochs: ~1,100 tokens -> ~68 samples -> ~8 steps/epoch
    _, sd = global_batch(factory, w_before, 11)
    sd = json.loads(json.dumps(sd))  # survives serialisation
    later, _ = global_batch(lambda r, w: build_loader(path, "train", seq_len=S, global_batch=G, rank=r,
                                                      world_size=w, seed=999), w_after, 19, start_sd=sd)
    for a, b in zip(ref[11:], later):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_epochs_cover_every_sample_once_in_a_new_order(tmp_path):
    path, _, _ = make(tmp_path)
    ld = build_loader(path, "train", seq_len=S, global_batch=1, seed=5)
    n = len(ld.datasets[0])
    firsts = lambda: [ld.next_batch()[0][0].tolist() for _ in range(n)]
    e0, e1 = firsts(), firsts()
    assert ld.state_dict()["epoch"] == 2
    assert sorted(e0) == sorted(e1) and len({tuple(x) for x in e0}) == n and e0 != e1
    other = build_loader(path, "train", seq_len=S, global_batch=1, seed=6)
    assert [other.next_batch()[0][0].tolist() for _ in range(n)] != e0


def test_blending_follows_weights_and_is_world_size_independent(tmp_path):
    a, _, _ = make(tmp_path, "a", lo=4, hi=500, n_docs=60, seed=1)
    b, _, _ = make(tmp_path, "b", lo=500, hi=1000, n_docs=20, seed=2)
    spec = f"{a}@3,{b}@1"
    factory = lambda r, w: build_loader(spec, "train", seq_len=S, global_batch=G, rank=r, world_size=w, seed=1)
    ref, _ = global_batch(factory, 1, 1024)  # 8,192 samples = two blocks
    got, _ = global_batch(factory, 4, 1024)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(ref, got))
    rows = torch.cat([x for x, _ in ref])
    from_a = (rows < 500).all(dim=1)
    from_b = ((rows >= 500) | (rows == 2)).all(dim=1)  # (EOS = 2 in both)
    assert bool((from_a | from_b).all())
    assert from_a.sum().item() == 2 * 3072  # exactly 3/4 of every 4,096-sample block
    assert build_loader(f"{a}@1,{b}@1", "train", seq_len=S, global_batch=G).fingerprint != factory(0, 1).fingerprint


def test_fingerprint_mismatch_names_what_differs(tmp_path):
    path, _, _ = make(tmp_path)
    other, _, _ = make(tmp_path, "other", seed=9)
    sd = build_loader(path, "train", seq_len=S, global_batch=G).state_dict()
    with pytest.raises(UserError, match="seq_len '16' != '32'"):
        build_loader(path, "train", seq_len=32, global_batch=G).load_state_dict(sd)
    with pytest.raises(UserError, match="data "):
        build_loader(other, "train", seq_len=S, global_batch=G).load_state_dict(sd)
    with pytest.raises(UserError, match="missing keys"):
        build_loader(path, "train", seq_len=S, global_batch=G).load_state_dict({"seed": 0})


def test_validation_loader_is_fixed_and_tiny_splits_wrap(tmp_path):
    path, _, val = make(tmp_path, val_docs=[[5, 6, 7, 2]])  # 4 tokens: fewer than one window
    a = build_loader(path, "val", seq_len=S, global_batch=2, seed=1)
    b = build_loader(path, "val", seq_len=S, global_batch=2, seed=2)
    xa, ya = a.next_batch()
    xb, _ = b.next_batch()
    assert torch.equal(xa, xb)
    assert xa[0].tolist() == ([5, 6, 7, 2] * 5)[:S] and ya[0].tolist() == ([5, 6, 7, 2] * 5)[1:S + 1]


def test_vocab_checks(tmp_path):
    path, _, _ = make(tmp_path, vocab_size=1000)
    meta = read_metadata(path)
    check_vocab(meta, 1000, path)
    with pytest.raises(UserError, match=r"d/metadata.json: vocab_size 1000 differs from the model's 8000"):
        check_vocab(meta, 8000, path)
    with pytest.raises(UserError, match="differs from the model's 999"):
        build_loader(path, "train", seq_len=S, global_batch=G, vocab_size=999)
    meta_path = path / "metadata.json"
    m = json.loads(meta_path.read_text())
    m["vocab_size"] = 70000
    meta_path.write_text(json.dumps(m))
    with pytest.raises(UserError, match="vocab_size 70000 is too large for dtype uint16"):
        read_metadata(path)


def test_bad_loader_arguments(tmp_path):
    path, _, _ = make(tmp_path)
    with pytest.raises(UserError, match="multiple of world_size 3"):
        build_loader(path, "train", seq_len=S, global_batch=G, world_size=3)
    with pytest.raises(UserError, match="no split 'test'"):
        build_loader(path, "test", seq_len=S, global_batch=G)
    with pytest.raises(UserError, match="missing"):
        build_loader(tmp_path, "train", seq_len=S, global_batch=G)


def test_missing_data_dir_says_to_run_the_prep(tmp_path):
    """A newcomer's first `mythos-train` before any prep: the error names the command that makes the directory."""
    from mythos.data import read_metadata
    from mythos.errors import UserError
    with pytest.raises(UserError, match=r"data/stdlib: no such data directory \(prepare it first: mythos-prep "
                                        r"stdlib --out .*data/stdlib --vocab-size 4096\)"):
        read_metadata(tmp_path / "data" / "stdlib")
    with pytest.raises(UserError, match=r"prepare it first: mythos-prep SOURCE --out "):
        read_metadata(tmp_path / "data" / "code")
