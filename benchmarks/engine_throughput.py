"""Training engines side by side: tokens/s and per-rank peak memory of FSDP2 vs DeepSpeed ZeRO 1/2/3, 2 ranks (gloo,
CPU), the same model, data and train step (`Engine.train_step`), one fresh 2-process launch per engine.

    PYTHONPATH=. .venv/bin/python benchmarks/engine_throughput.py [--model small] [--seq-len 64] [--steps 3]

tok/s: global tokens per median step after one warm-up step. Memory per rank: peak RSS (getrusage ru_maxrss) and
its growth over the RSS just before the engine was built (model + grads + optimizer state + activations; the
imports, DeepSpeed's included, are in the first number only). Ratios are against FSDP from the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENGINES = [("fsdp", 0), ("deepspeed", 1), ("deepspeed", 2), ("deepspeed", 3)]


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(a) -> None:
    import torch

    from mythos.config import Config, ParallelConfig, TrainConfig
    from mythos.model import ModelConfig, Mythos
    from mythos.parallel import DistEnv
    from mythos.train.engines import build_engine
    if a.backend == "deepspeed":
        from mythos.checkpoint.deepspeed import import_deepspeed
        import_deepspeed(torch.device("cpu"))  # its import is not the engine's memory

    torch.set_num_threads(1)
    env = DistEnv.from_environment("cpu")
    cfg = Config(model=ModelConfig.named(a.model), parallel=ParallelConfig(backend=a.backend, zero_stage=a.stage or 2,
                                                                           ac=a.ac),
                 train=TrainConfig(global_batch=a.global_batch, micro_batch=a.global_batch // env.world_size,
                                   seq_len=a.seq_len, device="cpu"))
    rss_before = _rss_mib()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as run_dir:
        engine = build_engine(Mythos(cfg.model), cfg, env, run_dir)
        g = torch.Generator().manual_seed(0)
        local = a.global_batch // env.world_size
        n_loops = None if cfg.model.mode == "dense" else cfg.model.loops.train_count
        times = []
        for step in range(a.steps + 1):
            tokens = torch.randint(0, cfg.model.vocab_size, (a.global_batch, a.seq_len + 1), generator=g)
            tokens = tokens[env.rank * local:(env.rank + 1) * local]
            t0 = time.perf_counter()
            r = engine.train_step(tokens[:, :-1], tokens[:, 1:], n_loops)
            times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    dt = sorted(times[1:])[len(times[1:]) // 2]
    print("RESULT " + json.dumps({"rank": env.rank, "tok_s": a.global_batch * a.seq_len / dt, "step_s": dt,
                                  "peak_mib": peak, "growth_mib": peak - rss_before, "loss": r.loss}), flush=True)
    env.shutdown()
    from mythos.parallel.env import exit_after_distributed
    exit_after_distributed(0)


def launch(a, backend: str, stage: int) -> list[dict]:
    from tests.parallel.dist_run import start, wait
    rcs, outs = wait(start(a.nproc, [__file__, "--worker", "--backend", backend, "--stage", str(stage), "--model",
                                     a.model, "--seq-len", str(a.seq_len), "--global-batch", str(a.global_batch),
                                     "--steps", str(a.steps), "--ac", a.ac]), timeout=3600)
    if any(rcs):
        raise SystemExit(f"{backend} {stage} failed:\n" + outs[0][-3000:])
    return sorted((json.loads(ln[7:]) for o in outs for ln in o.splitlines() if ln.startswith("RESULT ")),
                  key=lambda d: d["rank"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--global-batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up (median reported)")
    p.add_argument("--ac", default="loop")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--backend", default="fsdp", help=argparse.SUPPRESS)
    p.add_argument("--stage", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        return worker(a)
    sys.path.insert(0, str(REPO))
    rows = [(b, z, launch(a, b, z)) for b, z in ENGINES]
    base = rows[0][2]
    print(f"model {a.model}, {a.nproc} ranks (gloo, CPU, 1 thread each), global batch {a.global_batch} x seq "
          f"{a.seq_len}, ac {a.ac}, fp32, {a.steps} timed steps (median); ratios against FSDP")
    print(f"{'engine':<12} {'tok/s':>8} {'vs fsdp':>8} " + " ".join(
        f"{f'r{r} peak MiB':>12} {f'r{r} growth':>10}" for r in range(a.nproc)) + f" {'growth vs fsdp':>15}")
    for b, z, res in rows:
        name = "fsdp" if b == "fsdp" else f"zero-{z}"
        growth = sum(d["growth_mib"] for d in res) / sum(d["growth_mib"] for d in base)
        print(f"{name:<12} {res[0]['tok_s']:>8.1f} {res[0]['tok_s'] / base[0]['tok_s']:>7.2f}x " + " ".join(
            f"{d['peak_mib']:>12.0f} {d['growth_mib']:>10.0f}" for d in res) + f" {growth:>14.2f}x")


if __name__ == "__main__":
    main()
