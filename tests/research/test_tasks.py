"""The depth tasks' answers, checked by brute force on the tokens alone, and k hidden from length and counts."""
import collections

import pytest
import torch

from mythos.research.tasks import KHop, Parity


def _khop_solve(task: KHop, row: list[int]) -> tuple[list[int], list[int]]:
    """Follow the edges written in the row from every query node until a self-loop: (sinks, hop counts)."""
    succ = {}
    for tok in row[: task.n]:
        src, dst = divmod(tok - task.n, task.n)
        assert src not in succ, "a node has two out-edges"
        succ[src] = dst
    assert sorted(succ) == list(range(task.n)) and row[task.n] == task.query
    sinks, hops = [], []
    for v in row[task.n + 1:]:
        k = 0
        while succ[v] != v:
            v, k = succ[v], k + 1
            assert k <= task.n, "a cycle that is not a self-loop"
        sinks.append(v)
        hops.append(k)
    return sinks, hops


@pytest.mark.parametrize("k_values", [[1, 2, 3, 4], [5, 6, 7], [8]])
def test_khop_answers_by_brute_force(k_values):
    task = KHop()
    b = task.sample(64, k_values, torch.Generator().manual_seed(1))
    assert b.tokens_BT.shape == (64, task.seq_len)
    for r in range(64):
        sinks, hops = _khop_solve(task, b.tokens_BT[r].tolist())
        assert b.targets_BT[r, task.n + 1:].tolist() == sinks
        assert (b.targets_BT[r, : task.n + 1] == -100).all()
        assert hops[0] == b.k_B[r] and int(b.answer_pos_B[r]) == task.n + 1
        assert all(1 <= h <= max(k_values) for h in hops[1:])  # extra queries within the trained depth


def test_khop_k_not_recoverable_from_length_or_counts():
    """Every sequence, whatever k, has the same length, one QUERY, the same number of self-loops, the same number of
    distinct edge targets and the same multiset of token kinds."""
    task = KHop()
    gen = torch.Generator().manual_seed(2)
    signatures = collections.defaultdict(set)
    for k in range(1, task.max_k + 1):
        for row in task.sample(40, [k], gen).tokens_BT.tolist():
            edges = [divmod(t - task.n, task.n) for t in row[: task.n]]
            sig = (len(row), row.count(task.query), sum(s == d for s, d in edges), len({d for _, d in edges}),
                   sum(t < task.n for t in row))
            signatures[sig].add(k)
    assert task.max_k == 8
    assert len(signatures) == 1 and signatures.popitem()[1] == set(range(1, 9))


def test_parity_answers_by_brute_force():
    task = Parity(seq_len=20)
    b = task.sample(128, list(range(1, 20)), torch.Generator().manual_seed(3))
    for r in range(128):
        row, tgt = b.tokens_BT[r].tolist(), b.targets_BT[r].tolist()
        assert len(row) == 20 and row.count(Parity.MARK) == 1
        m = row.index(Parity.MARK)
        assert 19 - m == b.k_B[r]
        acc = 0
        for i in range(20):
            if i <= m:
                assert tgt[i] == -100
            else:
                acc ^= row[i]
                assert tgt[i] == acc


def test_parity_k_not_recoverable_from_length_or_counts():
    task = Parity(seq_len=20)
    gen = torch.Generator().manual_seed(4)
    for k in (1, 4, 9, 16):
        toks = task.sample(32, [k], gen).tokens_BT
        assert toks.shape == (32, 20)
        assert ((toks != Parity.MARK).sum(1) == 19).all()  # bits + one marker, whatever k
    # the bit counts carry no information about k: same distribution of ones for short and long k
    ones = {k: (task.sample(4000, [k], gen).tokens_BT == Parity.ONE).float().sum(1).mean().item() for k in (1, 16)}
    assert abs(ones[1] - ones[16]) < 0.2


def test_bad_k_is_rejected():
    with pytest.raises(ValueError, match="khop k"):
        KHop().sample(2, [9], torch.Generator())
    with pytest.raises(ValueError, match="parity k"):
        Parity(seq_len=8).sample(2, [8], torch.Generator())
