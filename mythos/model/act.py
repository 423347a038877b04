"""Adaptive computation time over loop iterations (Graves-style), in a form that is safe for data parallelism.

Every call runs ALL n_loops iterations, in training and in eval: halting is a mask, never a break, so every rank
runs the same number of loops (and the same collectives). A position that halts keeps its state from then on
(`h = where(halted, h_prev, h_new)`) and its later compute is MASKED (computed, then discarded) — not skipped. That
keeps the semantics identical in training, eval and cached decode (later positions attend to the frozen state).

Output = Σ_t w_t h_t with w_t = p_t while running and the remainder 1 - Σ p at the halting step (forced at the
last loop), so Σ_t w_t = 1 per position. Ponder cost = mean over positions of (steps taken + remainder).
"""
from __future__ import annotations

import torch


class ACTState:
    def __init__(self, h_BTD: torch.Tensor, threshold: float) -> None:
        b, t, _ = h_BTD.shape
        self.threshold = threshold
        self.cum_BT = h_BTD.new_zeros((b, t), dtype=torch.float32)
        self.halted_BT = torch.zeros((b, t), dtype=torch.bool, device=h_BTD.device)
        self.steps_BT = h_BTD.new_zeros((b, t), dtype=torch.float32)
        self.remainder_BT = h_BTD.new_zeros((b, t), dtype=torch.float32)
        self.out_BTD = torch.zeros_like(h_BTD)

    def step(self, h_prev_BTD, h_new_BTD, p_BT, last: bool) -> torch.Tensor:
        """Fold one iteration in; returns the state to carry (halted positions keep h_prev)."""
        halted = self.halted_BT
        h_BTD = torch.where(halted[..., None], h_prev_BTD, h_new_BTD)
        running = (~halted).float()
        if last:
            halting = ~halted
        else:
            halting = (~halted) & (self.cum_BT + p_BT.detach() >= self.threshold)
        remainder = 1.0 - self.cum_BT
        w_BT = torch.where(halting, remainder, p_BT) * running
        self.out_BTD = self.out_BTD + w_BT[..., None].to(h_BTD.dtype) * h_BTD
        self.steps_BT = self.steps_BT + running
        self.remainder_BT = torch.where(halting, remainder, self.remainder_BT)
        self.cum_BT = self.cum_BT + p_BT * running
        self.halted_BT = halted | halting
        return h_BTD

    def ponder(self) -> torch.Tensor:
        return (self.steps_BT + self.remainder_BT).mean()

    def stats(self, n_loops: int) -> dict[str, torch.Tensor]:
        """Detached 0-d tensors (no host sync inside the forward)."""
        steps = self.steps_BT.detach()
        return {"mean_steps": steps.mean(), "max_steps": steps.max(),
                "frac_halted_early": (steps < n_loops).float().mean()}
