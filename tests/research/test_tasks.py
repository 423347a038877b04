"""The depth tasks' answers, checked by brute force on the tokens alone, and k hidden from length and counts."""
import collections

import pytest
import torch

from mythos.research.tasks import KHop, PrefixParity, curriculum_max_n


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


def test_bad_k_is_rejected():
    with pytest.raises(ValueError, match="khop k"):
        KHop().sample(2, [9], torch.Generator())
    with pytest.raises(ValueError, match="n >= 1"):
        PrefixParity().sample(2, 0, torch.Generator())


@pytest.mark.parametrize("n", [1, 2, 7, 24])
def test_prefix_parity_answers_by_brute_force(n):
    b = PrefixParity().sample(64, n, torch.Generator().manual_seed(n))
    assert b.tokens_BT.shape == b.targets_BT.shape == (64, n + 1)
    assert (b.k_B == n).all() and (b.answer_pos_B == n).all()
    for row, tgt in zip(b.tokens_BT.tolist(), b.targets_BT.tolist()):
        assert row[0] == PrefixParity.BOS and tgt[0] == -100 and set(row[1:]) <= {0, 1}
        for i in range(1, n + 1):
            assert tgt[i] == sum(row[1:i + 1]) % 2, (row, i)
    if n >= 7:  # both answers occur at the last bit: the targets are not constant
        assert 0.3 < b.targets_BT[:, -1].float().mean() < 0.7


def test_curriculum_raises_max_n_over_the_first_third():
    steps = 3000
    ns = [curriculum_max_n(s, steps, 4, 12) for s in range(steps)]
    assert ns[0] == 4 and ns[999] < 12 and ns[1000] == 12 and ns[-1] == 12
    assert all(a <= b for a, b in zip(ns, ns[1:])) and set(ns) == set(range(4, 13))


def test_phop_answers_match_brute_force():
    """Every position's target is the symbol reached after p 'previous occurrence' hops from it (not scored where a
    hop has nowhere to go), recomputed here independently; the last position always has one."""
    from mythos.research.tasks import PHop
    task = PHop(n_symbols=3, length=10, max_p=3)
    b = task.sample(64, [1, 2, 3], torch.Generator().manual_seed(0))
    assert b.tokens_BT.shape == (64, 11) and set(b.k_B.tolist()) == {1, 2, 3}
    for row, tgt, p in zip(b.tokens_BT.tolist(), b.targets_BT.tolist(), b.k_B.tolist()):
        assert row[0] == task.n_symbols + p - 1 and all(0 <= v < task.n_symbols for v in row[1:])
        v = row[1:]
        assert tgt[0] == -100
        for start, t in enumerate(tgt[1:]):
            i = start
            for _ in range(p):
                prev = [j for j in range(i) if v[j] == v[i]]
                i = prev[-1] + 1 if prev else None
                if i is None:
                    break
            assert t == (-100 if i is None else v[i])
        assert tgt[-1] != -100
    assert sum(t != -100 for t in b.targets_BT.flatten().tolist()) > 64 * 3  # most prefixes are scored
    assert PHop.answer([0, 1, 2], 1) is None and PHop.answer([2, 0, 1, 2], 1) == 0
