"""The model's own parallel plan: which submodules are run-once blocks, which is the looped block, which hold the
routed experts. `mythos.parallel` reads it (as dotted module paths) and never names model attributes."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParallelPlan:
    blocks: tuple[str, ...]  # run once per forward (prelude, coda; dense mode: every layer), in forward order
    looped: str | None  # called once per loop iteration with shared weights; None in dense mode
    experts: tuple[str, ...]  # RoutedExperts modules (stacked expert weights, grouped-matmul forward)
