"""ACT that saves compute at inference (cached decode with `KVCache(skip_halted=True)`, grad disabled).

The default ACT masks: every position runs every loop (see mythos/model/act.py), which is what training needs (all
ranks run the same loops). Here, at inference only, a loop computes just the batch rows that still have a running
position; a halted position keeps its state, and its KV entries for the loops it skips are filled, as Huginn does,
from the entries of the last loop it computed (so later tokens attend to them at every loop index). Within a
computed row (prefill) a halted position is computed but its new KV entries are replaced by that fill as well, so
the cache is the same however the batch or the prompt is split. Batching is a pure optimisation: one row decoded
alone gives the same logits as in a batch.
"""
from __future__ import annotations

import torch

from mythos.model.act import ACTState
from mythos.model.attention import LayerCache


class _FillCache:
    """One loop's LayerCache as seen by the computed rows: appends a full-batch chunk (computed entries for running
    positions, last-computed entries for halted ones) and returns the computed rows' view of the cache."""

    def __init__(self, base: LayerCache, rows: torch.Tensor | None, halted_BT: torch.Tensor, last: dict) -> None:
        self.base, self.rows, self.halted_BT, self.last = base, rows, halted_BT, last

    @property
    def attn_mask(self) -> torch.Tensor | None:
        """The padding mask of the computed rows."""
        m = self.base.attn_mask
        return m if m is None or self.rows is None else m[self.rows]

    def update(self, **new: torch.Tensor) -> dict[str, torch.Tensor]:
        chunk = {}
        for name, x in new.items():
            halted = self.halted_BT if self.rows is None else self.halted_BT[self.rows]
            prev = self.last.get(name)
            if prev is None:  # loop 0: nothing has halted yet, every row is computed
                full = x
            else:
                full = prev.clone()
                mask = halted.view(*halted.shape, *([1] * (x.dim() - 2)))
                sub = prev if self.rows is None else prev[self.rows]
                computed = torch.where(mask, sub, x)
                if self.rows is None:
                    full = computed
                else:
                    full[self.rows] = computed
            self.last[name] = chunk[name] = full
        views = self.base.update(**chunk)
        return views if self.rows is None else {k: v[self.rows] for k, v in views.items()}


class HaltingSkip:
    """Runs one loop iteration for the rows that still have a running position (inference only)."""

    def __init__(self, recurrence, halt: torch.nn.Module, act: ACTState) -> None:
        self.recurrence, self.halt, self.act = recurrence, halt, act
        self.last: dict[str, torch.Tensor] = {}  # per cache tensor name: each position's last computed entry
        self.rows_computed: list[int] = []  # rows computed at each loop (for reports and tests)

    def step(self, h_BTD, e_BTD, t: int, cos_TF, sin_TF, cache: LayerCache):
        b = h_BTD.shape[0]
        halted_BT = self.act.halted_BT
        rows = (~halted_BT).any(dim=1).nonzero().squeeze(1)
        p_BT = h_BTD.new_zeros(halted_BT.shape, dtype=torch.float32)
        self.rows_computed.append(int(rows.numel()))
        if rows.numel() == 0:  # everyone halted: only the cache fill for this loop index
            cache.update(**self.last)
            return h_BTD, p_BT, h_BTD.new_zeros(self.recurrence.moe.n_experts, dtype=torch.float32)
        if rows.numel() == b:
            h_new, load_E = self.recurrence(h_BTD, e_BTD, t, cos_TF, sin_TF, _FillCache(cache, None, halted_BT,
                                                                                          self.last))
            return h_new, torch.sigmoid(self.halt(h_new).float()).squeeze(-1), load_E
        if cos_TF.dim() == 4:  # per-row RoPE tables [B, 1, T, F] (padded batch): the computed rows' only
            cos_TF, sin_TF = cos_TF[rows], sin_TF[rows]
        h_sub, load_E = self.recurrence(h_BTD[rows], e_BTD[rows], t, cos_TF, sin_TF,
                                        _FillCache(cache, rows, halted_BT, self.last))
        h_new = h_BTD.clone()
        h_new[rows] = h_sub
        p_BT[rows] = torch.sigmoid(self.halt(h_sub).float()).squeeze(-1)
        return h_new, p_BT, load_E
