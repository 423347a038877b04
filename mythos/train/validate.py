"""Validation loss: a fixed set of validation batches (fresh loader each time, so every call sees the same data).
`validation_stats` also gives the tokens scored and the spread over batches, so a report can say how much data a
number rests on; `val_split_tokens` says how many distinct tokens the validation split holds (a small one wraps)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mythos.config import Config
from mythos.data import build_loader
from mythos.parallel.env import DistEnv
from mythos.parallel.ranks import all_reduce_sum


@dataclass
class ValStats:
    loss: float  # mean nats/token over every scored token
    tokens: int  # tokens scored (all ranks)
    batch_losses: list[float]  # mean loss of each global batch

    @property
    def stderr(self) -> float:
        """Standard error of the mean over batches (0 with one batch): the noise of `loss`."""
        n = len(self.batch_losses)
        if n < 2:
            return 0.0
        mean = sum(self.batch_losses) / n
        return math.sqrt(sum((x - mean) ** 2 for x in self.batch_losses) / (n - 1) / n)


@torch.no_grad()
def validation_stats(model: torch.nn.Module, data_spec: str, *, seq_len: int, global_batch: int, batches: int,
                     env: DistEnv, n_loops: int | None, micro_batch: int, seed: int = 0) -> ValStats:
    model.eval()
    loader = build_loader(data_spec, split="val", seq_len=seq_len, global_batch=global_batch, rank=env.rank,
                          world_size=env.world_size, seed=seed)
    per_batch = torch.zeros(batches, 2, dtype=torch.float64, device=env.device)  # summed loss, token count
    for b in range(batches):
        inputs_BT, targets_BT = loader.next_batch()
        for start in range(0, inputs_BT.shape[0], micro_batch):
            x_BT = inputs_BT[start:start + micro_batch].to(env.device)
            y_BT = targets_BT[start:start + micro_batch].to(env.device)
            logits = model(x_BT, n_loops=n_loops).logits_BTV.float()
            per_batch[b, 0] += F.cross_entropy(logits.flatten(0, 1), y_BT.flatten(), reduction="sum").double()
            per_batch[b, 1] += y_BT.numel()
    all_reduce_sum(per_batch)
    total = per_batch.sum(0)
    return ValStats(float(total[0] / total[1]), int(total[1]), (per_batch[:, 0] / per_batch[:, 1]).tolist())


def validation_loss(model: torch.nn.Module, data_spec: str, **kw) -> float:
    """validation_stats' mean loss (nats/token)."""
    return validation_stats(model, data_spec, **kw).loss


def val_split_tokens(data_spec: str) -> tuple[int, int]:
    """(tokens, documents) of the validation split over every dataset of the spec (metadata.json)."""
    from mythos.data.loader import parse_spec, read_metadata
    tokens = docs = 0
    for path, _ in parse_spec(data_spec):
        val = read_metadata(path).get("splits", {}).get("val", {})
        tokens, docs = tokens + int(val.get("tokens", 0)), docs + int(val.get("documents", 0))
    return tokens, docs


def validation_results(model: torch.nn.Module, cfg: Config, env: DistEnv, loop_counts: list[int],
                       batches: int | None = None):
    """(n_loops, ValStats) for each loop count, as each is computed, on the run's validation data. A dense model has
    no loop count: one (None, stats)."""
    for n in [None] if cfg.model.mode == "dense" else loop_counts:
        yield n, validation_stats(model, cfg.data.path, seq_len=cfg.train.seq_len,
                                  global_batch=cfg.train.global_batch, batches=batches or cfg.data.val_batches,
                                  env=env, n_loops=n, micro_batch=cfg.train.micro_batch, seed=cfg.train.seed)


def validation_losses(model: torch.nn.Module, cfg: Config, env: DistEnv, loop_counts: list[int],
                      batches: int | None = None):
    """(n_loops, loss) for each loop count (validation_results' means)."""
    for n, st in validation_results(model, cfg, env, loop_counts, batches):
        yield n, st.loss
