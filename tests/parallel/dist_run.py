"""Worker script for the multi-process tests: trains a tiny Mythos for a few steps on a fixed synthetic global batch
and writes losses / full gradients / collective counts to --out (rank 0). Launched by `launch()` below as N plain
processes (gloo, env:// rendezvous) or as one process for the single-rank reference.

    python tests/parallel/dist_run.py --out r.pt --steps 5 --ep 2         (under launch(..., nproc=2))
"""
from __future__ import annotations

import argparse
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


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--ep", type=int, default=1)
    p.add_argument("--dp-shard", type=int, default=-1)
    p.add_argument("--ac", default="none")
    p.add_argument("--mp", default="fp32")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--loops", type=int, default=3)
    p.add_argument("--backprop-k", type=int, default=2)
    p.add_argument("--global-batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--count-comm", action="store_true")
    p.add_argument("--fixed-data", action="store_true", help="the same global batch every step (loss must fall)")
    p.add_argument("--no-defer", action="store_true", help="FSDP2's default per-call post-backward (comparison)")
    a = p.parse_args(argv)

    import torch
    import torch.nn.functional as F

    from mythos.config import ParallelConfig, TrainConfig
    from mythos.model import Mythos
    from mythos.parallel import DistEnv, all_reduce_mean, all_reduce_sum, build_mesh, clip_grad_norm, parallelize
    from mythos.parallel.env import exit_after_distributed
    from mythos.parallel.fsdp import count_collectives
    from mythos.train.optim import build_optimizer

    torch.set_num_threads(1)
    if a.no_defer:
        import mythos.parallel.fsdp as fsdp_mod
        fsdp_mod._defer_post_backward = lambda module: None
    env = DistEnv.from_environment("cpu")
    pcfg = ParallelConfig(dp_shard=a.dp_shard, ep=a.ep, ac=a.ac, compile=a.compile, mixed_precision=a.mp)
    torch.manual_seed(0)
    model = Mythos(tiny_model_config(a.loops, a.backprop_k))
    model = parallelize(model, build_mesh(env, pcfg), pcfg, device=env.device)
    opt = build_optimizer(model, TrainConfig(lr=a.lr, weight_decay=0.1))
    local = a.global_batch // env.world_size
    losses, grad_norms, comm, grads = [], [], [], {}
    for step in range(a.steps):
        g = torch.Generator().manual_seed(1000 + (0 if a.fixed_data else step))
        tokens = torch.randint(0, 256, (a.global_batch, a.seq_len + 1), generator=g)
        tokens = tokens[env.rank * local:(env.rank + 1) * local]
        ctx = count_collectives() if a.count_comm else None
        counts = ctx.__enter__() if ctx else None
        out = model(tokens[:, :-1], n_loops=a.loops)
        ce = F.cross_entropy(out.logits_BTV.float().flatten(0, 1), tokens[:, 1:].flatten())
        (ce + out.aux_loss).backward()
        if ctx:
            ctx.__exit__(None, None, None)
            comm.append(dict(counts))
        if step == 0:
            for name, prm in model.named_parameters():
                if prm.grad is not None:
                    gr = prm.grad
                    grads[name.replace("_checkpoint_wrapped_module.", "").replace("_orig_mod.", "")] = (
                        gr.full_tensor() if hasattr(gr, "full_tensor") else gr).detach().float().clone()
        grad_norms.append(clip_grad_norm(model, 1.0))
        opt.step()
        opt.zero_grad(set_to_none=True)
        for moe in model.moe_modules():
            moe.update_bias(all_reduce_sum(moe.tokens_per_expert.clone()))
        losses.append(all_reduce_mean(ce.detach()))
    biases = [m.bias.clone() for m in model.moe_modules()]
    graphs = 0
    if a.compile:
        from torch._dynamo.utils import counters
        graphs = int(counters["stats"]["unique_graphs"])
    if env.rank == 0:
        torch.save({"compiled_graphs": graphs, "losses": losses, "grad_norms": grad_norms, "grads": grads, "comm": comm, "biases": biases},
                   a.out)
    if env.world_size > 1:  # every rank reports its bias: they must agree
        torch.save(biases, f"{a.out}.bias{env.rank}")
    env.shutdown()
    if env.world_size > 1:
        exit_after_distributed(0)


# ---- launching ------------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(nproc: int, args: list[str], timeout: float = 300, script: str = __file__) -> list[subprocess.Popen]:
    """Start `nproc` ranks of `script` (env:// rendezvous on a free port) and wait; raises on failure."""
    port = free_port()
    procs = []
    for r in range(nproc):
        env = {**os.environ, "RANK": str(r), "WORLD_SIZE": str(nproc), "LOCAL_RANK": str(r),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
               "PYTHONPATH": str(REPO)}
        if nproc == 1:
            for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
                env.pop(k)
        procs.append(subprocess.Popen([sys.executable, script, *args], env=env, cwd=REPO,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = []
    try:
        for pr in procs:
            outs.append(pr.communicate(timeout=timeout)[0])
    finally:
        for pr in procs:
            if pr.poll() is None:
                pr.kill()
    bad = [(i, pr.returncode) for i, pr in enumerate(procs) if pr.returncode != 0]
    if bad:
        raise RuntimeError(f"ranks failed {bad}:\n" + "\n".join(o[-4000:] for o in outs))
    return procs


if __name__ == "__main__":
    main()
