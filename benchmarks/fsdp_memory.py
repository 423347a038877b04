"""Per-rank parameter + gradient + optimizer-state bytes under FSDP2 for N = 1, 2, 4 ranks (goal: <= 0.30x at N = 4).

Each N runs in a fresh process on torch's FAKE process group (`FakeStore`, `init_process_group("fake", ...)`): the
real DeviceMesh, `parallelize` (FSDP2 per block + root, per-loop checkpointing) and AdamW run on one CPU with the
shapes and memory of rank 0 of N (collectives are no-ops, so values are meaningless; bytes are real). One forward +
backward + optimizer step materialises gradients and AdamW state, then the LOCAL bytes of every parameter, gradient
and optimizer-state tensor are summed (DTensor -> to_local()). N = 1 is the unsharded model (no FSDP).

    .venv/bin/python benchmarks/fsdp_memory.py                 # model `small`, N = 1 2 4
    .venv/bin/python benchmarks/fsdp_memory.py --model tiny --ranks 1 2 4 8
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _local_bytes(t) -> int:
    from torch.distributed.tensor import DTensor
    t = t.to_local() if isinstance(t, DTensor) else t
    return t.numel() * t.element_size()


def one(model_name: str, n: int) -> dict:
    sys.path.insert(0, str(REPO))
    import torch
    import torch.distributed as dist
    import tempfile

    from mythos.config import Config, ParallelConfig, TrainConfig
    from mythos.model import ModelConfig, Mythos
    from mythos.parallel import DistEnv
    from mythos.train.engines import build_engine

    torch.set_num_threads(1)
    env = DistEnv(rank=0, world_size=n, local_rank=0, device=torch.device("cpu"))
    if n > 1:
        from torch.testing._internal.distributed.fake_pg import FakeStore
        dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=n)
    cfg = Config(model=ModelConfig.named(model_name), parallel=ParallelConfig(ac="loop"),
                 train=TrainConfig(global_batch=n, micro_batch=1, seq_len=64, device="cpu"))
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as run_dir:
        engine = build_engine(Mythos(cfg.model), cfg, env, run_dir)
    grads: list = []
    engine.inspect_grads = lambda model: grads.extend(p.grad for p in model.parameters() if p.grad is not None)
    tokens = torch.randint(0, cfg.model.vocab_size, (1, 65))
    engine.train_step(tokens[:, :-1], tokens[:, 1:], 2)  # the trainer's step (fake collectives: values moot)
    opt = engine.optimizer
    p_bytes = sum(_local_bytes(p) for p in engine.model.parameters())
    g_bytes = sum(_local_bytes(g) for g in grads)
    o_bytes = sum(_local_bytes(v) for s in opt.state.values() for v in s.values() if torch.is_tensor(v))
    total_params = sum(p.numel() for p in Mythos(cfg.model).parameters())
    if n > 1:
        dist.destroy_process_group()
    return {"ranks": n, "model": model_name, "params": total_params, "param_bytes": p_bytes, "grad_bytes": g_bytes,
            "optim_bytes": o_bytes, "total_bytes": p_bytes + g_bytes + o_bytes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--json", action="store_true")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(a.model, a.one)))
        return
    rows = []
    for n in sorted(set(a.ranks) | {1}):
        r = subprocess.run([sys.executable, __file__, "--model", a.model, "--one", str(n)], capture_output=True,
                           text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    base = rows[0]["total_bytes"]
    for r in rows:
        r["ratio"] = round(r["total_bytes"] / base, 4)
    if a.json:
        print(json.dumps(rows))
        return
    mib = 2 ** 20
    print(f"model {a.model} ({rows[0]['params'] / 1e6:.1f}M params), fp32 AdamW, fake process group, rank 0 of N; "
          f"ratio against N=1 (no FSDP)")
    print(f"{'N':>3} {'params MiB':>11} {'grads MiB':>10} {'optim MiB':>10} {'total MiB':>10} {'ratio':>7}")
    for r in rows:
        print(f"{r['ranks']:>3} {r['param_bytes'] / mib:>11.1f} {r['grad_bytes'] / mib:>10.1f} "
              f"{r['optim_bytes'] / mib:>10.1f} {r['total_bytes'] / mib:>10.1f} {r['ratio']:>7.3f}")


if __name__ == "__main__":
    main()
