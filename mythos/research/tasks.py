"""Depth-extrapolation tasks generated on the fly (seeded torch.Generator, no files).

khop (pointer following in context): N nodes form S chains, each ending in a sink (a node that points to itself).
Every node's out-edge is ONE token `src→dst` (vocab N + N² + 1), so a hop is a single content lookup (attend to the
edge whose src is the current node, read its dst) rather than the two-token induction circuit that stalled both
earlier pilots. The N edge tokens are shuffled, then QUERY and Q query nodes; the answer at each query position is
the sink reached from it. The first query is the start node, k hops from its sink (the row's k, the accuracy that is
reported); the others are extra supervision, nodes at most max(k) hops from their sinks. Length is N + 1 + Q for
every k; every sequence holds each node once as a
src, exactly S self-loops and N − S distinct dst values (every chain has at least two nodes), so k cannot be read off length or token counts. Hopping
past the sink is harmless (the sink points to itself), so more loops than k never hurt the right algorithm.
Chance: 1/S (guess a sink).

prefix parity (mythos/research/parity.py): BOS + n bits, target at each bit = parity so far, one n per batch.

p-hop induction (mythos/research/isodepth.py): follow "the symbol after the previous occurrence" p times.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    tokens_BT: torch.Tensor  # int64 inputs
    targets_BT: torch.Tensor  # int64, -100 where not scored
    k_B: torch.Tensor  # difficulty of each row (hops / scored bits)
    answer_pos_B: torch.Tensor  # the position scored for the per-k accuracy (the last, hardest, target)


def empty_rows(what: str, batch: int, seq_len: int, k_values: list[int], max_k: int, gen: torch.Generator):
    """Token and target buffers (targets -100: not scored) and each row's difficulty drawn from k_values."""
    if max(k_values) > max_k or min(k_values) < 1:
        raise ValueError(f"{what} must be in [1, {max_k}], got {k_values}")
    toks = torch.empty(batch, seq_len, dtype=torch.long)
    tgt = torch.full((batch, seq_len), -100, dtype=torch.long)
    return toks, tgt, torch.tensor(k_values)[torch.randint(len(k_values), (batch,), generator=gen)]


class KHop:
    name = "khop"

    def __init__(self, n_nodes: int = 13, n_chains: int = 3, n_queries: int = 4) -> None:
        if n_nodes < 2 * n_chains or n_chains < 2 or n_queries < 1:
            raise ValueError(f"khop needs n_chains >= 2, n_nodes >= 2 n_chains, n_queries >= 1; got {n_nodes}, "
                             f"{n_chains}, {n_queries}")
        self.n, self.s, self.n_queries = n_nodes, n_chains, n_queries
        self.query = n_nodes + n_nodes * n_nodes
        self.vocab_size = self.query + 1
        self.seq_len = n_nodes + 1 + n_queries
        self.max_k = n_nodes - 2 * n_chains + 1  # the start chain holds k + 1 nodes; the others at least two each
        self.chance = 1.0 / n_chains

    def edge_token(self, src: int, dst: int) -> int:
        return self.n + src * self.n + dst

    def sample(self, batch: int, k_values: list[int], gen: torch.Generator) -> Batch:
        n, s = self.n, self.s
        toks, tgt, ks = empty_rows("khop k", batch, self.seq_len, k_values, self.max_k, gen)
        for b in range(batch):
            k = int(ks[b])
            perm = torch.randperm(n, generator=gen).tolist()
            # chain sizes: the start chain k+1 nodes; the other n-k-1 split into s-1 chains of >= 2 nodes (a lone
            # sink would add a distinct target and leak k through the counts). Stars and bars over the extra nodes.
            extra, slots = n - k - 1 - 2 * (s - 1), n - k - 1 - 2 * (s - 1) + s - 2
            bars = sorted(torch.randperm(slots, generator=gen)[: s - 2].tolist())
            parts = [b1 - b0 - 1 for b0, b1 in zip([-1] + bars, bars + [slots])]
            sizes = [k + 1] + [2 + p for p in parts]
            assert sum(sizes) == n and extra >= 0
            succ, dist, sink_of = [0] * n, [0] * n, [0] * n
            i = 0
            for size in sizes:
                chain = perm[i:i + size]
                for j, v in enumerate(chain):
                    succ[v] = chain[min(j + 1, size - 1)]
                    dist[v], sink_of[v] = size - 1 - j, chain[-1]
                i += size
            extra = [v for v in range(n) if 1 <= dist[v] <= max(k_values)] or [perm[0]]
            picks = torch.randint(len(extra), (self.n_queries - 1,), generator=gen).tolist()
            queries = [perm[0]] + [extra[j] for j in picks]
            order = torch.randperm(n, generator=gen).tolist()
            toks[b, :n] = torch.tensor([self.edge_token(v, succ[v]) for v in order])
            toks[b, n] = self.query
            toks[b, n + 1:] = torch.tensor(queries)
            tgt[b, n + 1:] = torch.tensor([sink_of[v] for v in queries])
        return Batch(toks, tgt, ks, torch.full((batch,), n + 1, dtype=torch.long))


class PrefixParity:
    """BOS followed by n bits; the target at bit i is the parity of bits 1..i (BOS is not scored). Every row of a
    batch has the same n, so the loop count can be set to n. A loop that reads the previous position's running
    parity and XORs in its own bit extends the correct prefix by one position per loop. Chance: 1/2."""

    name = "prefix-parity"
    ZERO, ONE, BOS = 0, 1, 2
    vocab_size = 3
    chance = 0.5

    def sample(self, batch: int, n: int, gen: torch.Generator) -> Batch:
        if n < 1:
            raise ValueError(f"prefix parity needs n >= 1 bits, got {n}")
        bits = torch.randint(2, (batch, n), generator=gen)
        toks = torch.cat((torch.full((batch, 1), self.BOS, dtype=torch.long), bits), dim=1)
        tgt = torch.cat((torch.full((batch, 1), -100, dtype=torch.long), torch.cumsum(bits, dim=1) % 2), dim=1)
        return Batch(toks, tgt, torch.full((batch,), n, dtype=torch.long), torch.full((batch,), n, dtype=torch.long))


class PHop:
    """p-hop induction (Sanford et al. 2024; Saunshi et al. 2025's iso-depth task): a hop-count token HOP_p, then T
    symbols v_1..v_T from an alphabet of `n_symbols`. hop(i) = 1 + the last j < i with v_j = v_i (the symbol after
    the previous occurrence of v_i); the target at every position i is v at hop^p(i) (not scored where a hop finds
    no previous occurrence), so each row trains every prefix, as in prefix parity; the evaluated answer is the last
    position's, and a row whose last position has no answer is drawn again. Each hop is one induction step, so p hops
    need depth that grows with p (log p with doubling); the row's k is p. Chance: about 1/n_symbols."""

    name = "p-hop"

    def __init__(self, n_symbols: int = 4, length: int = 24, max_p: int = 4) -> None:
        if n_symbols < 2 or length < 4 or max_p < 1:
            raise ValueError(f"p-hop needs n_symbols >= 2, length >= 4, max_p >= 1; got {n_symbols}, {length}, {max_p}")
        self.n_symbols, self.length, self.max_p = n_symbols, length, max_p
        self.vocab_size = n_symbols + max_p  # symbols, then HOP_1 .. HOP_max_p
        self.seq_len = length + 1
        self.chance = 1.0 / n_symbols

    @staticmethod
    def answer(v: list[int], p: int, i: int | None = None) -> int | None:
        """v at hop^p(i) (default the last position), or None when a hop finds no previous occurrence (0-based)."""
        i = len(v) - 1 if i is None else i
        for _ in range(p):
            prev = [j for j in range(i) if v[j] == v[i]]
            if not prev:
                return None
            i = prev[-1] + 1
        return v[i]

    def sample(self, batch: int, k_values: list[int], gen: torch.Generator) -> Batch:
        toks, tgt, ps = empty_rows("p-hop p", batch, self.seq_len, k_values, self.max_p, gen)
        for b in range(batch):
            p = int(ps[b])
            while True:
                v = torch.randint(self.n_symbols, (self.length,), generator=gen).tolist()
                if (a := self.answer(v, p)) is not None:
                    break
            toks[b, 0] = self.n_symbols + p - 1
            toks[b, 1:] = torch.tensor(v)
            tgt[b, 1:] = torch.tensor([-100 if (t := self.answer(v, p, i)) is None else t for i in range(len(v))])
        return Batch(toks, tgt, ps, torch.full((batch,), self.seq_len - 1, dtype=torch.long))


def curriculum_max_n(step: int, steps: int, n_start: int, n_end: int, frac: float = 1 / 3) -> int:
    """Largest n at `step`: n_start raised linearly to n_end over the first `frac` of training, then n_end."""
    ramp = max(1, int(steps * frac))
    return n_start + (n_end - n_start) * min(step, ramp) // ramp


TASKS = {"khop": KHop, "p-hop": PHop}
