"""(a) Depth extrapolation on khop: train on k <= 4, test k up to 8 at many inference loop counts (parity: parity.py).

Arms (same task, same steps, same batch):
  looped-sampled  loop count ~ Poisson(mean) clamped to [1, 12] per step (Huginn/Parcae)
  looped-fixed    exactly `mean` loops every step
  dense-params    a plain Transformer with about the looped model's parameter count
  dense-flops     a plain Transformer with prelude + coda + mean layers (the looped model's per-token training FLOPs)
Results: learning curves (accuracy per training k during training) and a grid accuracy[loops][k].
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from mythos.model import AttentionConfig, LoopConfig, ModelConfig, MoEConfig, model_stats
from mythos.research.jobs import run_pieces
from mythos.research.synthetic import accuracy_by_k, to_device, train_arm
from mythos.research.tasks import TASKS

EVAL_LOOPS = [1, 2, 4, 6, 8, 12, 16, 24]
TRAIN_K = [1, 2, 3, 4]


@dataclass
class DepthScale:
    dim: int
    steps: int
    batch: int
    lr: float
    loop_mean: int
    eval_batch: int
    test_k_max: int
    seeds: tuple[int, ...]
    device: str = "cpu"


# CPU defaults measured on the shared 2-core machine (docs/research.md); "gpu" for a lent accelerator.
SCALES = {
    "khop": {"tiny": DepthScale(32, 6, 16, 3e-3, 3, 8, 5, (0,)),
             "cpu": DepthScale(64, 300, 64, 3e-3, 6, 64, 8, (0,)),
             "gpu": DepthScale(256, 20000, 256, 1e-3, 6, 1024, 8, (0, 1), "cuda")},
}


def looped_config(vocab: int, dim: int, mean: int, sampled: bool) -> ModelConfig:
    return ModelConfig(
        vocab_size=vocab, dim=dim, n_heads=4, n_prelude=1, n_coda=1, lora_rank=4,
        loops=LoopConfig(distribution="poisson" if sampled else "fixed", mean=float(mean), min=1, max=12,
                         backprop_k=0, inference=mean),
        attention=AttentionConfig(kind="gqa"),
        moe=MoEConfig(n_routed=4, top_k=2, expert_dim=2 * dim, n_shared=1)).validate()


def dense_config(vocab: int, dim: int, n_layers: int) -> ModelConfig:
    return ModelConfig(mode="dense", vocab_size=vocab, dim=dim, n_heads=4, n_layers=n_layers,
                       attention=AttentionConfig(kind="gqa")).validate()


def dense_layers_matching_params(looped: ModelConfig) -> int:
    """Dense params are affine in the layer count: two measurements give it (no search over model builds)."""
    target = model_stats(looped, seq_len=8)["total_params"]
    p1, p2 = (model_stats(dense_config(looped.vocab_size, looped.dim, n), seq_len=8)["total_params"] for n in (1, 2))
    return max(1, round(1 + (target - p1) / (p2 - p1)))


def arms(vocab: int, s: DepthScale) -> dict[str, ModelConfig]:
    sampled = looped_config(vocab, s.dim, s.loop_mean, True)
    return {
        "looped-sampled": sampled,
        "looped-fixed": looped_config(vocab, s.dim, s.loop_mean, False),
        "dense-params": dense_config(vocab, s.dim, dense_layers_matching_params(sampled)),
        "dense-flops": dense_config(vocab, s.dim, sampled.n_prelude + sampled.n_coda + s.loop_mean),
    }


def _eval_batches(task, s: DepthScale) -> dict:
    gen = torch.Generator().manual_seed(10_000)
    return {k: to_device(task.sample(s.eval_batch, [k], gen), s.device) for k in range(1, s.test_k_max + 1)}


def train_and_grid(task_name: str, s: DepthScale, name: str, cfg: ModelConfig, seed: int, log=print) -> dict:
    """One arm at one seed: train, then accuracy on every (loop count, k). Self-contained, so it can run in a worker
    process and give exactly what it gives in the parent."""
    task = TASKS[task_name]()
    eval_batches = _eval_batches(task, s)
    model, res = train_arm(name, cfg, task, train_k=TRAIN_K, steps=s.steps, batch=s.batch, lr=s.lr, seed=seed,
                           eval_every=max(1, s.steps // 10), eval_batches={k: eval_batches[k] for k in TRAIN_K},
                           device=s.device, log=log)
    loops = EVAL_LOOPS if cfg.mode == "rdt" else [None]
    grid = {str(n or "dense"): {str(k): a for k, a in accuracy_by_k(model, eval_batches, n).items()} for n in loops}
    return {"seed": seed, "curve": res.curve, "grid": grid, "seconds": res.seconds}


def run_depth(task_name: str, scale: str, log=print, steps: int | None = None, on_progress=None,
              jobs: int = 1) -> dict:
    """Train every arm (per seed) and evaluate the grid; returns the JSON-ready results. `jobs` > 1 trains that
    many (arm, seed) pairs at once in worker processes (same results: every pair is seeded on its own)."""
    s = SCALES[task_name][scale]
    if steps:
        s = dataclasses.replace(s, steps=steps)
    task = TASKS[task_name]()
    results = {"task": task_name, "scale": dataclasses.asdict(s), "chance": task.chance, "train_k": TRAIN_K,
               "test_k": list(range(1, s.test_k_max + 1)), "eval_loops": EVAL_LOOPS, "arms": {}}
    configs = arms(task.vocab_size, s)
    for name, cfg in configs.items():
        stats = model_stats(cfg, seq_len=task.seq_len)
        results["arms"][name] = {"params": stats["total_params"], "train_flops_per_token": stats["flops_per_token"],
                                 "n_layers": cfg.n_layers if cfg.mode == "dense" else None,
                                 "loops": dataclasses.asdict(cfg.loops) if cfg.mode == "rdt" else None,
                                 "seeds": []}
    # every arm at seed 0 first: a run cut short still compares the arms
    pairs = [(name, cfg, seed) for seed in s.seeds for name, cfg in configs.items()]

    def done(name: str, row: dict) -> None:
        results["arms"][name]["seeds"].append(row)
        results["arms"][name]["seeds"].sort(key=lambda r: r["seed"])
        last = row["curve"][-1]
        log(f"[{name}] seed {row['seed']} done in {row['seconds']:.0f}s: " +
            " ".join(f"k{k}={last[f'acc_k{k}']:.2f}" for k in TRAIN_K))
        if on_progress is not None:
            on_progress(results)

    run_pieces(train_and_grid, [(name, (task_name, s, name, cfg, seed)) for name, cfg, seed in pairs], jobs, done)
    return results
