"""Validation loss: a fixed set of validation batches (fresh loader each time, so every call sees the same data)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mythos.config import Config
from mythos.data import build_loader
from mythos.parallel.env import DistEnv, all_reduce_sum


@torch.no_grad()
def validation_loss(model: torch.nn.Module, data_spec: str, *, seq_len: int, global_batch: int, batches: int,
                    env: DistEnv, n_loops: int | None, micro_batch: int, seed: int = 0) -> float:
    model.eval()
    loader = build_loader(data_spec, split="val", seq_len=seq_len, global_batch=global_batch, rank=env.rank,
                          world_size=env.world_size, seed=seed)
    total = torch.zeros(2, dtype=torch.float64, device=env.device)  # summed loss, token count
    for _ in range(batches):
        inputs_BT, targets_BT = loader.next_batch()
        for start in range(0, inputs_BT.shape[0], micro_batch):
            x_BT = inputs_BT[start:start + micro_batch].to(env.device)
            y_BT = targets_BT[start:start + micro_batch].to(env.device)
            logits = model(x_BT, n_loops=n_loops).logits_BTV.float()
            total[0] += F.cross_entropy(logits.flatten(0, 1), y_BT.flatten(), reduction="sum").double()
            total[1] += y_BT.numel()
    all_reduce_sum(total)
    return float(total[0] / total[1])


def validation_losses(model: torch.nn.Module, cfg: Config, env: DistEnv, loop_counts: list[int],
                      batches: int | None = None):
    """(n_loops, loss) for each loop count, as each is computed, on the run's validation data. A dense model has no
    loop count: one (None, loss)."""
    for n in [None] if cfg.model.mode == "dense" else loop_counts:
        yield n, validation_loss(model, cfg.data.path, seq_len=cfg.train.seq_len, global_batch=cfg.train.global_batch,
                                 batches=batches or cfg.data.val_batches, env=env, n_loops=n,
                                 micro_batch=cfg.train.micro_batch, seed=cfg.train.seed)
