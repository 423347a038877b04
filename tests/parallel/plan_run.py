"""Worker for the scaling tests: one optimizer step (the trainer's engine) of the tiny looped MoE
(tests/parallel/dist_run.py's config), built on meta (`--init meta`, the trainer's path) or eagerly, with
micro-batches. Every rank writes
`{out}.rank{r}`: initial full weights (rank 0), per-rank state bytes after the step, collectives counted per
(kind, mesh dim) with mythos.parallel.accounting, the loss, and its peak RSS. Launched with dist_run.launch."""
from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--init", choices=("meta", "eager"), default="meta")
    p.add_argument("--ep", type=int, default=1)
    p.add_argument("--dp-shard", type=int, default=-1)
    p.add_argument("--dp-replicate", type=int, default=1, help="HSDP shard groups")
    p.add_argument("--ac", default="loop")
    p.add_argument("--loops", type=int, default=3)
    p.add_argument("--backprop-k", type=int, default=0)
    p.add_argument("--micro", type=int, default=1, help="micro-batches per rank per step")
    p.add_argument("--global-batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--no-weights", action="store_true")
    p.add_argument("--save-grads", action="store_true", help="full gradients after the step's backward (rank 0)")
    a = p.parse_args(argv)

    import torch

    from mythos.config import Config, ParallelConfig, TrainConfig
    from mythos.model import Mythos
    from mythos.parallel import DistEnv, build_mesh, meta_device
    from mythos.parallel.accounting import CollectiveCounter, dim_spans, mesh_dim_groups, state_bytes
    from mythos.errors import exit_after_distributed
    from mythos.train.engine import FSDPEngine
    from tests.parallel.dist_run import tiny_model_config

    torch.set_num_threads(1)
    env = DistEnv.from_environment("cpu")
    local = a.global_batch // env.world_size
    pcfg = ParallelConfig(dp_shard=a.dp_shard, ep=a.ep, ac=a.ac, dp_replicate=a.dp_replicate)
    cfg = Config(model=tiny_model_config(a.loops, a.backprop_k), parallel=pcfg,
                 train=TrainConfig(lr=1e-3, weight_decay=0.1, global_batch=a.global_batch, micro_batch=local // a.micro,
                                   seq_len=a.seq_len, device="cpu"))
    mesh = build_mesh(env, pcfg)
    torch.manual_seed(0)
    with meta_device() if a.init == "meta" else torch.device("cpu"):
        model = Mythos(cfg.model)
    engine = FSDPEngine(model, cfg, env, None, mesh=mesh)  # the trainer's engine: parallelize, AdamW, the step
    model = engine.model
    weights = {} if a.no_weights else {
        n.replace("_checkpoint_wrapped_module.", ""): (w.full_tensor() if hasattr(w, "full_tensor") else w).detach()
        for n, w in model.named_parameters()}

    g = torch.Generator().manual_seed(1000)
    tokens = torch.randint(0, 256, (a.global_batch, a.seq_len + 1), generator=g)
    tokens = tokens[env.rank * local:(env.rank + 1) * local]
    counter = CollectiveCounter(mesh_dim_groups(mesh) if mesh is not None else None)
    with counter:  # forward + backward of every micro-batch (the optimizer step's norm all-reduce is not counted)
        for micro in engine.micro_batches(tokens[:, :-1], tokens[:, 1:], a.loops):
            engine.forward_backward(micro)
    grads: dict = {}
    held: dict = {}  # the gradient bytes (the step clears the gradients)

    def inspect(m) -> None:  # after the step's backward, before clip and update
        held.update({k: v for k, v in state_bytes(m).items() if k.startswith("grads")})
        if a.save_grads:  # full gradients
            grads.update({n.replace("_checkpoint_wrapped_module.", ""): (
                w.grad.full_tensor() if hasattr(w.grad, "full_tensor") else w.grad).detach().clone()
                for n, w in m.named_parameters() if w.grad is not None})
    engine.inspect_grads = inspect
    result = engine.optim_step()
    res = {"grads": grads, "state": {**state_bytes(model, engine.optimizer), **held}, "comm": counter.table(),
           "loss": result.loss,
           "spans": dim_spans(mesh, env.world_size // a.dp_replicate), "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    if env.rank == 0:
        res["weights"] = weights
    torch.save(res, f"{a.out}.rank{env.rank}")
    env.shutdown()
    if env.world_size > 1:
        exit_after_distributed(0)


if __name__ == "__main__":
    main()
