"""Worker script for the multi-process tests: trains a tiny Mythos for a few steps on a fixed synthetic global batch
and writes losses / full gradients / collective counts to --out (rank 0). Launched by `launch()` below as N plain
processes (gloo, env:// rendezvous) or as one process for the single-rank reference.

    python tests/parallel/dist_run.py --out r.pt --steps 5 --ep 2         (under launch(..., nproc=2))
"""
from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def tiny_model_config(loops: int = 3, backprop_k: int = 2, vocab: int = 256):
    from mythos.model import ModelConfig
    from mythos.model.config import AttentionConfig, LoopConfig, MoEConfig
    return ModelConfig(
        vocab_size=vocab, dim=64, n_heads=2, n_prelude=1, n_coda=1, lora_rank=4,
        loops=LoopConfig(distribution="fixed", mean=float(loops), min=1, max=max(loops, 4), backprop_k=backprop_k,
                         inference=loops),
        attention=AttentionConfig(kind="mla", kv_lora_rank=32, nope_dim=16, rope_dim=8, v_head_dim=16),
        moe=MoEConfig(n_routed=4, top_k=2, expert_dim=64, n_shared=1, bias_update_rate=1e-2),
    )


def _case_config(a, backend: str, zero_stage: int, model: str, world: int, out: str, offload: bool = False):
    """The engine's Config for one case: constant lr (wsd without decay), clipping at 1.0, one micro-batch."""
    from mythos.config import Config, ParallelConfig, TrainConfig
    from mythos.model.config import LoopConfig
    cfg = Config()
    cfg.run.dir = f"{out}.run"
    cfg.model = tiny_model_config(a.loops, a.backprop_k)
    if model == "dense":
        cfg.model = cfg.model.replace(mode="dense", n_layers=2)
    elif a.sampled_loops:  # Poisson loop counts, the trainer's per-step draw
        cfg.model = cfg.model.replace(loops=LoopConfig(distribution="poisson", mean=float(a.loops), min=1, max=5,
                                                       backprop_k=a.backprop_k, inference=a.loops))
    cfg.train = TrainConfig(steps=a.steps, lr=a.lr, weight_decay=0.1, grad_clip=1.0, warmup_steps=0, schedule="wsd",
                            decay_fraction=0.0, global_batch=a.global_batch,
                            micro_batch=a.micro_batch or a.global_batch // world, seq_len=a.seq_len, device="cpu",
                            dtype=a.mp)
    cfg.parallel = ParallelConfig(backend=backend, zero_stage=zero_stage or 2, dp_shard=a.dp_shard, ep=a.ep,
                                  dp_replicate=a.dp_replicate, ac=a.ac, compile=a.compile)
    if offload:  # ZeRO-Offload: optimizer state (and with ZeRO-3 the parameters) on the CPU
        cfg.parallel.offload_optimizer = "cpu"
        cfg.parallel.offload_params = "cpu" if zero_stage == 3 else "none"
    return cfg


def run_case(a, env, backend: str, zero_stage: int, model: str, out: str, offload: bool = False) -> dict:
    """Train one case for a.steps steps through the engine's train_step; losses, grad norms, step-0 gradients
    (FSDP: full tensors), collectives of each forward/backward, final MoE biases."""
    import torch

    from mythos.model import LoopSampler, Mythos
    from mythos.parallel.accounting import CollectiveCounter
    from mythos.train import faults
    from mythos.train.engines import build_engine
    from mythos.train.trainer import loops_for_step

    cfg = _case_config(a, backend, zero_stage, model, env.world_size, out, offload)
    torch.manual_seed(0)
    engine = build_engine(Mythos(cfg.model), cfg, env, cfg.run.dir)
    at = [0]  # the step being run, for MYTHOS_FAULTS=nan_loss@N
    engine.loss_hooks.append(lambda ce: ce * float("nan") if faults.active("nan_loss", at[0] + 1) else ce)
    sampler = LoopSampler(cfg.model.loops) if a.sampled_loops and model != "dense" else None
    local = a.global_batch // env.world_size
    res = {"losses": [], "grad_norms": [], "comm": [], "grads": {}, "loops": [], "skipped": []}
    for step in range(a.steps):
        at[0] = step
        g = torch.Generator().manual_seed(1000 + (0 if a.fixed_data else step))
        tokens = torch.randint(0, 256, (a.global_batch, a.seq_len + 1), generator=g)
        tokens = tokens[env.rank * local:(env.rank + 1) * local]
        loops = None if model == "dense" else loops_for_step(sampler, 0, step) if sampler else a.loops
        with CollectiveCounter() if a.count_comm else contextlib.nullcontext() as counts:
            engine.inspect_grads = lambda m, s=step, c=counts: _inspect(res, m, s, c)
            r = engine.train_step(tokens[:, :-1], tokens[:, 1:], loops)
        res["losses"].append(r.loss)
        res["grad_norms"].append(r.grad_norm)
        res["loops"].append(loops)
        res["skipped"].append(r.skipped)
    res["biases"] = [m.bias.clone() for m in engine.moe_modules()]
    return res


def _inspect(res: dict, model, step: int, counts) -> None:
    """After the backward of a step: the collectives so far (forward + backward only) and step-0 full gradients."""
    if counts is not None:  # calls per collective kind ("all_to_all", "all_gather", ...), over all groups
        calls: dict = {}
        for (kind, _), rec in counts.by_kind.items():
            calls[kind] = calls.get(kind, 0) + rec["calls"]
        res["comm"].append(calls)
    if step == 0:
        for name, prm in model.named_parameters():
            if prm.grad is not None:
                gr = prm.grad
                res["grads"][name.replace("_checkpoint_wrapped_module.", "").replace("_orig_mod.", "")] = (
                    gr.full_tensor() if hasattr(gr, "full_tensor") else gr).detach().float().clone()


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--ep", type=int, default=1)
    p.add_argument("--dp-shard", type=int, default=-1)
    p.add_argument("--dp-replicate", type=int, default=1, help="HSDP shard groups")
    p.add_argument("--ac", default="none")
    p.add_argument("--mp", default="fp32")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--loops", type=int, default=3)
    p.add_argument("--backprop-k", type=int, default=2)
    p.add_argument("--global-batch", type=int, default=4)
    p.add_argument("--micro-batch", type=int, default=0, help="sequences per forward (default: the rank's whole batch)")
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--count-comm", action="store_true")
    p.add_argument("--fixed-data", action="store_true", help="the same global batch every step (loss must fall)")
    p.add_argument("--no-defer", action="store_true", help="FSDP2's default per-call post-backward (comparison)")
    p.add_argument("--sampled-loops", action="store_true", help="Poisson loop counts drawn per step (trainer's)")
    p.add_argument("--case", action="append", default=[],
                   help="BACKEND:ZERO_STAGE:MODEL[:offload] (e.g. deepspeed:3:moe, fsdp:0:dense); several run in one "
                        "process "
                        "and --out holds {case: result}. Default: one fsdp moe case, --out holds its result")
    a = p.parse_args(argv)

    import torch

    from mythos.parallel import DistEnv
    from mythos.errors import exit_after_distributed

    import mythos.parallel.fsdp as fsdp_mod

    torch.set_num_threads(1)
    defer = fsdp_mod._defer_post_backward  # restored below: the next run of a shared launch (tests/mains.py) defers
    if a.no_defer:
        fsdp_mod._defer_post_backward = lambda module: None
    env = DistEnv.from_environment("cpu")
    results = {}
    for case in a.case or ["fsdp:0:moe"]:
        backend, stage, model, *offload = case.split(":")
        results[case] = run_case(a, env, backend, int(stage), model, a.out, offload == ["offload"])
    graphs = 0
    if a.compile:
        from torch._dynamo.utils import counters
        graphs = int(counters["stats"]["unique_graphs"])
    first = next(iter(results.values()))
    if env.rank == 0:
        torch.save(results if a.case else {**first, "compiled_graphs": graphs}, a.out)
    if env.world_size > 1:  # every rank reports its bias: they must agree
        torch.save(first["biases"] if not a.case else {c: r["biases"] for c, r in results.items()},
                   f"{a.out}.bias{env.rank}")
    fsdp_mod._defer_post_backward = defer
    env.shutdown()
    if env.world_size > 1:
        exit_after_distributed(0)


# ---- launching ------------------------------------------------------------------------------------------------------
_PORTS_PER_WORKER = 2500
_next_port = 0


def free_port() -> int:
    """A port below Linux's ephemeral range (32768+), from a block of its own per pytest-xdist worker: a port taken
    with bind(0) can be handed to another worker's socket (or to gloo's own connections) before the rendezvous binds
    it. Each call moves on, so back-to-back runs in one process never reuse a port still in TIME_WAIT."""
    global _next_port
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    base = 10000 + _PORTS_PER_WORKER * (int(worker[2:]) if worker[2:].isdigit() else 0)
    for _ in range(_PORTS_PER_WORKER):
        port = base + (os.getpid() + _next_port) % _PORTS_PER_WORKER
        _next_port += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {base}-{base + _PORTS_PER_WORKER - 1}")


def start(nproc: int, argv: list[str], env_extra: dict | None = None) -> list[subprocess.Popen]:
    """Start `nproc` ranks of `python ARGV...` (env:// rendezvous on a free port, one process per rank as srun
    starts them); nproc = 1 runs without the rank variables."""
    port = free_port()
    procs = []
    for r in range(nproc):
        env = {**os.environ, "RANK": str(r), "WORLD_SIZE": str(nproc), "LOCAL_RANK": str(r),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
               "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **(env_extra or {})}
        if nproc == 1:
            for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
                env.pop(k)
        procs.append(subprocess.Popen([sys.executable, *argv], env=env, cwd=REPO,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def wait(procs: list[subprocess.Popen], timeout: float = 300) -> tuple[list[int], list[str]]:
    """(return codes, outputs) of started ranks; any rank still running after `timeout` is killed."""
    outs = []
    try:
        for pr in procs:
            outs.append(pr.communicate(timeout=timeout)[0])
    finally:
        for pr in procs:
            if pr.poll() is None:
                pr.kill()
    return [pr.returncode for pr in procs], outs


def launch(nproc: int, args: list[str], timeout: float = 300, script: str = __file__) -> list[subprocess.Popen]:
    """Start `nproc` ranks of `script` and wait; raises on failure."""
    procs = start(nproc, [script, *args])
    rcs, outs = wait(procs, timeout)
    bad = [(i, rc) for i, rc in enumerate(rcs) if rc != 0]
    if bad:
        raise RuntimeError(f"ranks failed {bad}:\n" + "\n".join(o[-4000:] for o in outs))
    return procs


if __name__ == "__main__":
    main()
