"""Training throughput on one GPU: the dense and the looped-MoE `small` configs, bf16 (FSDP2-style mixed precision
via autocast on one device), torch.compile per block, forward + backward + AdamW; tokens/s and MFU against the card's
dense bf16 datasheet peak (mythos.train.metrics.GPU_PEAK_TFLOPS), with eager bf16 in the same process as the baseline.

    .venv/bin/python benchmarks/gpu_throughput.py [--configs small,small-dense] [--steps 20] [--batch 16]

Goals (issue 12, one H100): dense `small` >= 45% MFU, looped-MoE `small` >= 30% MFU. Needs CUDA.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mythos.config import ParallelConfig  # noqa: E402
from mythos.model import ModelConfig, Mythos, model_stats  # noqa: E402
from mythos.parallel import meta_device, parallelize  # noqa: E402
from mythos.train.metrics import peak_flops  # noqa: E402


def config(name: str) -> ModelConfig:
    if name == "small-dense":  # the dense side of the comparison: same width, as many layers as small applies
        c = ModelConfig.named("small")
        return dataclasses.replace(c, mode="dense", n_layers=c.n_prelude + c.n_coda + int(c.loops.mean))
    return ModelConfig.named(name)


def run(name: str, compiled: bool, steps: int, batch: int, seq_len: int) -> dict:
    cfg = config(name)
    torch.manual_seed(0)
    with meta_device():
        model = Mythos(cfg)
    model = parallelize(model, None, ParallelConfig(ac="none", compile=compiled), device=torch.device("cuda"),
                        dtype="bf16")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    loops = cfg.loops.train_count if cfg.mode != "dense" else None
    tokens = torch.randint(0, cfg.vocab_size, (batch, seq_len + 1), device="cuda")

    def step():
        out = model(tokens[:, :-1], n_loops=loops)
        F.cross_entropy(out.logits_BTV.flatten(0, 1), tokens[:, 1:].flatten()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):  # warm-up (compilation)
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    tok_s = steps * batch * seq_len / (time.perf_counter() - t0)
    flops = model_stats(cfg, n_loops=loops, seq_len=seq_len)["flops_per_token"] * tok_s
    peak = peak_flops(torch.device("cuda"), 0.0, torch.bfloat16)
    return {"config": name, "compile": compiled, "tok_s": tok_s, "mfu": flops / peak,
            "mem_gb": torch.cuda.max_memory_allocated() / 1e9}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="small-dense,small")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=2048)
    a = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("error: benchmarks/gpu_throughput.py needs a CUDA device")
    print(f"{'config':<12} {'mode':<14} {'tok/s':>10} {'MFU':>7} {'vs eager':>9} {'mem GB':>7}")
    for name in a.configs.split(","):
        base = run(name, False, a.steps, a.batch, a.seq_len)
        comp = run(name, True, a.steps, a.batch, a.seq_len)
        for r in (base, comp):
            mode = "bf16 compile" if r["compile"] else "bf16 eager"
            print(f"{name:<12} {mode:<14} {r['tok_s']:>10.0f} {100 * r['mfu']:>6.1f}% "
                  f"{r['tok_s'] / base['tok_s']:>8.2f}x {r['mem_gb']:>7.1f}")


if __name__ == "__main__":
    main()
