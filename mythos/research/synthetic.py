"""Train and evaluate one arm on a generated task (khop / parity): the (a) experiment's engine.

A small single-process loop over on-the-fly batches: the LM trainer reads prepared shards and scores every token,
while these tasks score a few masked positions of sequences that never touch disk (targets -100 elsewhere, the loss's
ignore_index). Each step is the trainer's engine (`forward_backward` + `optim_step`: AdamW groups, clip, warmup-cosine
schedule, the MoE bias hook) with the trainer's per-step loop-count draw (`loops_for_step`), so an arm trains the way
`mythos-train` would.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from mythos.config import Config, ParallelConfig, TrainConfig
from mythos.model import LoopSampler, ModelConfig, Mythos
from mythos.parallel import DistEnv
from mythos.train.engine import FSDPEngine, MicroBatch
from mythos.train.trainer import loops_for_step


@dataclass
class ArmResult:
    name: str
    params: int
    curve: list[dict] = field(default_factory=list)  # {step, loss, acc_k{k}} at each eval point
    grid: dict[str, dict[str, float]] = field(default_factory=dict)  # loops -> k -> accuracy ("dense" for dense)
    seconds: float = 0.0


def to_device(batch, device):
    return type(batch)(*(x.to(device) for x in (batch.tokens_BT, batch.targets_BT, batch.k_B, batch.answer_pos_B)))


@torch.no_grad()
def accuracy_by_k(model: Mythos, batches: dict[int, object], n_loops) -> dict[int, float]:
    """Accuracy of the last (hardest) scored position, per k, on fixed evaluation batches. `n_loops` is a count,
    None (the model's default) or a function of k (loops = n)."""
    was = model.training
    model.eval()
    acc = {}
    for k, batch in batches.items():
        logits = model(batch.tokens_BT, n_loops=n_loops(k) if callable(n_loops) else n_loops).logits_BTV
        rows = torch.arange(batch.tokens_BT.shape[0], device=batch.tokens_BT.device)
        pred = logits[rows, batch.answer_pos_B].argmax(-1)
        acc[k] = float((pred == batch.targets_BT[rows, batch.answer_pos_B]).float().mean())
    model.train(was)
    return acc


def data_generator(seed: int) -> torch.Generator:
    """The generator a run's training batches are drawn from (so an analysis can replay them without training)."""
    return torch.Generator().manual_seed(seed * 7919 + 17)


def train_arm(name: str, model_cfg: ModelConfig, task, *, train_k: list[int], steps: int, batch: int, lr: float,
              seed: int, eval_every: int, eval_batches: dict[int, object], device: str = "cpu",
              log=print, sample=None, loops_fn=None, eval_loops=None) -> tuple[Mythos, ArmResult]:
    """`sample(step, gen)` replaces the default draw of `batch` rows over `train_k` (a curriculum); `loops_fn(step,
    batch)` replaces the config's per-step loop draw (loops = n), `eval_loops` the loop count of the learning-curve
    evaluation (see accuracy_by_k). All default to the LM trainer's behaviour."""
    torch.manual_seed(seed)
    model = Mythos(model_cfg).to(device)
    tcfg = TrainConfig(steps=steps, lr=lr, warmup_steps=max(1, steps // 20), min_lr_ratio=0.1, weight_decay=0.05,
                       schedule="cosine", seed=seed, global_batch=batch, micro_batch=batch, grad_clip=1.0,
                       dtype="fp32", device=device)
    cfg = Config(train=tcfg, parallel=ParallelConfig(ac="none"), model=model_cfg)
    engine = FSDPEngine(model, cfg, DistEnv(0, 1, 0, torch.device(device)), None, mesh=None)
    sampler = LoopSampler(model_cfg.loops) if model_cfg.mode != "dense" else None
    gen = data_generator(seed)
    res = ArmResult(name, sum(p.numel() for p in model.parameters()))
    t0 = time.perf_counter()
    model.train()
    running = None
    for step in range(steps):
        b = to_device(sample(step, gen) if sample else task.sample(batch, train_k, gen), device)
        if loops_fn is not None and sampler:
            loops = loops_fn(step, b)
        else:
            loops = loops_for_step(sampler, seed, step) if sampler else None
        engine.forward_backward(MicroBatch(b.tokens_BT, b.targets_BT, loops))  # one micro-batch: the sampled batch
        v = engine.optim_step().loss
        running = v if running is None or not math.isfinite(running) else 0.9 * running + 0.1 * v
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            acc = accuracy_by_k(model, eval_batches, eval_loops if sampler else None)
            point = {"step": step + 1, "loss": running, **{f"acc_k{k}": a for k, a in acc.items()}}
            res.curve.append(point)
            log(f"[{name}] step {step + 1}/{steps} loss {running:.4f} " +
                " ".join(f"k{k}={a:.2f}" for k, a in acc.items()) + f" ({time.perf_counter() - t0:.0f}s)")
    res.seconds = time.perf_counter() - t0
    return model, res
