"""How a global batch splits over ranks and micro-batches: the one rule the engines, `mythos-plan` and
`mythos-submit` share, so a config one of them accepts is accepted by all.

`train.micro_batch` is an upper bound (what fits in memory): a rank runs the largest micro-batch that is at most that
and divides its share of the global batch, with gradient accumulation over the rest. Any world size that divides
`train.global_batch` therefore works (a config written for 1 rank runs on 2 or 8); one that does not is refused
with the nearest values that would work.
"""
from __future__ import annotations

from dataclasses import dataclass

from mythos.errors import SameOnEveryRank


class BatchSplitError(SameOnEveryRank):
    """Depends only on the config and the world size: rank 0 alone reports it."""


@dataclass(frozen=True)
class BatchSplit:
    world: int
    per_rank: int  # sequences per rank per optimizer step
    micro_batch: int  # sequences per forward/backward
    n_micro: int  # gradient-accumulation steps
    requested: int  # train.micro_batch as configured

    @property
    def derived(self) -> bool:
        return self.micro_batch != self.requested

    def describe(self) -> str:
        """'16 = 2 ranks x 1 x micro-batch 8 (train.micro_batch 16 lowered to divide 8 per rank)'."""
        s = f"{self.world * self.per_rank} = {self.world} ranks x {self.n_micro} x micro-batch {self.micro_batch}"
        if self.derived:
            s += f" (train.micro_batch {self.requested} lowered to divide {self.per_rank} per rank)"
        return s


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def largest_divisor_at_most(n: int, cap: int) -> int:
    """The largest divisor of n that is <= cap (at least 1)."""
    return max((d for d in divisors(n) if d <= max(cap, 1)), default=1)


def _nearest(values: list[int], x: int) -> list[int]:
    below = [v for v in values if v < x]
    above = [v for v in values if v > x]
    return ([below[-1]] if below else []) + ([above[0]] if above else [])


def split_batch(global_batch: int, world: int, micro_batch: int, ranks_desc: str = "") -> BatchSplit:
    """The split of `global_batch` over `world` ranks with micro-batches of at most `micro_batch`; BatchSplitError
    naming the nearest world sizes and global batches that would work. `ranks_desc`: how the ranks came about
    ("2 nodes x 4 tasks"), for the message."""
    if world < 1 or global_batch < 1 or micro_batch < 1:
        raise BatchSplitError(f"batch split needs positive sizes: train.global_batch {global_batch}, "
                              f"train.micro_batch {micro_batch}, {world} ranks")
    if global_batch % world:
        ranks = " or ".join(map(str, _nearest(divisors(global_batch), world)))
        batches = " or ".join(map(str, [b for b in (global_batch // world * world, -(-global_batch // world) * world)
                                        if b > 0]))
        how = f" ({ranks_desc})" if ranks_desc else ""
        raise BatchSplitError(f"config key 'train.global_batch': {global_batch} sequences do not split over {world} "
                              f"ranks{how}; run on {ranks} ranks, or set --train.global_batch {batches}")
    per_rank = global_batch // world
    mb = largest_divisor_at_most(per_rank, micro_batch)
    return BatchSplit(world, per_rank, mb, per_rank // mb, micro_batch)


def batch_split(cfg, world: int, ranks_desc: str = "") -> BatchSplit:
    """split_batch for a Config."""
    return split_batch(cfg.train.global_batch, world, cfg.train.micro_batch, ranks_desc)
