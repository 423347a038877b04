"""Model training throughput on CPU: forward + backward + AdamW tokens/s and MFU for `tiny` and `small`, fp32 and
bf16 autocast, beside a naive per-expert-mask MoE, against the machine's matmul throughput measured in this process.

    .venv/bin/python benchmarks/model_throughput.py [--configs tiny,small] [--steps 6] [--threads N]

MFU = model_stats(cfg, n_loops, seq_len)["flops_per_token"] × tokens/s ÷ measured matmul FLOP/s of the same dtype
(see mythos/model/stats.py for the FLOP convention: truncated backprop counts backward only for the last k loops).
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn.functional as F

from mythos.config import Config, ParallelConfig, TrainConfig
from mythos.model import ModelConfig, Mythos, model_stats
from mythos.model.moe import MoE
from mythos.parallel import DistEnv
from mythos.train.engines import build_engine
from mythos.train.metrics import measured_cpu_matmul_flops


def matmul_flops(dtype: torch.dtype, n: int = 2048, reps: int = 6) -> float:
    """Best-of FLOP/s of an n×n×n matmul (the 'peak' MFU is measured against): the trainer's own measurement."""
    return measured_cpu_matmul_flops(n, reps, dtype)


def naive_moe_forward(self: MoE, x_BTD: torch.Tensor):
    """The baseline dispatch: for every expert, a boolean mask over all tokens (what the issue forbids)."""
    shape = x_BTD.shape
    x_ND = x_BTD.reshape(-1, shape[-1])
    idx_NK, gates_NK, _ = self.route(x_ND)
    out = torch.zeros_like(x_ND)
    for e in range(self.n_experts):
        mask_NK = idx_NK == e
        tok = mask_NK.any(-1)
        if tok.any():
            g, u = (x_ND[tok] @ self.experts.w13_EDF[e]).chunk(2, -1)
            y = (F.silu(g) * u) @ self.experts.w2_EFD[e]
            out = out.index_put((tok,), out[tok] + y * (gates_NK * mask_NK).sum(-1)[tok, None].to(y.dtype))
    if self.shared is not None:
        out = out + self.shared(x_ND).to(out.dtype)
    counts = torch.bincount(idx_NK.reshape(-1), minlength=self.n_experts)
    return out.view(shape), counts.float()


def bench(name: str, dtype: str, moe_impl: str, batch: int, seq: int, steps: int) -> dict:
    torch.manual_seed(0)
    cfg = Config()
    cfg.model = ModelConfig.named(name)
    cfg.train = TrainConfig(lr=1e-4, global_batch=batch, micro_batch=batch, seq_len=seq, dtype=dtype, device="cpu")
    cfg.parallel = ParallelConfig(ac="none")
    model = Mythos(cfg.model)
    n_loops = cfg.model.loops.train_count
    if moe_impl == "naive":
        for m in model.moe_modules():
            m.forward = naive_moe_forward.__get__(m)
    with tempfile.TemporaryDirectory() as run_dir:  # the engine's checkpoint root (nothing is saved)
        engine = build_engine(model, cfg, DistEnv(0, 1, 0, torch.device("cpu")), run_dir)
    x = torch.randint(0, cfg.model.vocab_size, (batch, seq + 1))
    inp, tgt = x[:, :-1], x[:, 1:]

    def step(i: int = 0):  # the trainer's step: forward, backward, clip, AdamW, schedule, MoE bias update
        engine.train_step(inp, tgt, n_loops)

    step()  # warm-up (allocator, kernels)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    dt = sorted(times)[len(times) // 2]  # median step: robust to the other users of the 2 cores
    tok_s = batch * seq / dt
    flops = model_stats(cfg.model, n_loops=n_loops, seq_len=seq)["flops_per_token"]
    return {"tok_s": tok_s, "flops_s": flops * tok_s, "step_s": dt}


def bench_moe_layer(n_routed: int, top_k: int, impl: str, n_tokens: int = 4096, dim: int = 512, hidden: int = 256,
                    reps: int = 5) -> float:
    """Seconds per forward+backward of the MoE layer alone (fp32): where the dispatch, not the model, dominates."""
    cfg = ModelConfig.named("small")
    cfg.dim, cfg.moe.n_routed, cfg.moe.top_k, cfg.moe.expert_dim, cfg.moe.n_shared = dim, n_routed, top_k, hidden, 0
    torch.manual_seed(0)
    moe = MoE(cfg)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.02)
    if impl == "naive":
        moe.forward = naive_moe_forward.__get__(moe)
    x = torch.randn(1, n_tokens, dim, requires_grad=True)
    times = []
    for _ in range(reps + 1):
        t = time.perf_counter()
        moe(x)[0].square().mean().backward()
        times.append(time.perf_counter() - t)
    return sorted(times[1:])[reps // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="tiny,small")
    ap.add_argument("--steps", type=int, default=7, help="timed steps per row (median reported)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--no-naive", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = {"tiny": (8, 256), "small": (4, 512)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads. 'peak' = best 2048^3 matmul FLOP/s of the "
          f"row's dtype, re-measured right before each row (the machine is shared: this keeps ratios honest)")
    print(f"{'config':<7} {'dtype':<5} {'moe':<10} {'B x T':<9} {'step s':>7} {'tok/s':>8} {'GFLOP/s':>8} "
          f"{'peak':>7} {'MFU':>6} {'fp32 peak':>9} {'vs fp32 mm':>10} {'vs naive':>8}")
    for name in args.configs.split(","):
        b, t = shapes.get(name, (4, 256))
        for dtype in ("fp32", "bf16"):
            rows = {}
            for impl in ("vectorised",) + (() if args.no_naive else ("naive",)):
                peak = {"fp32": matmul_flops(torch.float32)}
                peak["bf16"] = matmul_flops(torch.bfloat16) if dtype == "bf16" else peak["fp32"]
                rows[impl] = r = bench(name, dtype, impl, b, t, args.steps)
                ratio = f"{rows['vectorised']['tok_s'] / r['tok_s']:7.2f}x" if impl == "naive" else ""
                print(f"{name:<7} {dtype:<5} {impl:<10} {f'{b}x{t}':<9} {r['step_s']:7.3f} {r['tok_s']:8.0f} "
                      f"{r['flops_s'] / 1e9:8.1f} {peak[dtype] / 1e9:7.1f} {r['flops_s'] / peak[dtype]:6.1%} "
                      f"{peak['fp32'] / 1e9:9.1f} {r['flops_s'] / peak['fp32']:10.1%} {ratio:>8}", flush=True)
    if args.no_naive:
        return
    print("\nMoE layer alone, fp32 forward+backward, 4096 tokens, dim 512, expert hidden 256, no shared expert:")
    print(f"{'experts':>7} {'top_k':>5} {'vectorised ms':>13} {'naive ms':>9} {'speed-up':>8}")
    for n_routed, top_k in ((8, 2), (64, 6), (128, 8)):
        v, nv = (bench_moe_layer(n_routed, top_k, impl) for impl in ("vectorised", "naive"))
        print(f"{n_routed:>7} {top_k:>5} {v * 1e3:13.1f} {nv * 1e3:9.1f} {nv / v:7.2f}x", flush=True)


if __name__ == "__main__":
    main()
