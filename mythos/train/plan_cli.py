"""mythos-plan --config FILE [--section.key v ...] --nodes N --gpus-per-node G [--gpu-mem 80] [--json]

What one rank of a run would hold and send, from a dry run of the real model, mesh and `parallelize` on torch's fake
process group (mythos/train/planner.py): parameter, gradient and AdamW bytes, step memory at the configured
micro-batch, sequence length and loop count (with the configured activation checkpointing and with none),
collective bytes per optimizer step by kind and mesh dim, and in all inside a group of --group-size consecutive
ranks (default: a node) and across groups (HSDP, parallel.dp_replicate > 1: a shard group is a node by default),
whether it fits a GPU of --gpu-mem GB, and the largest micro-batch that does among those that divide the per-rank
batch (the trainer accepts it as --train.micro_batch).
Exit code 0: the config fits; 1: it does not (the report says what would); 2: bad input.
"""
from __future__ import annotations

import argparse
import json
import math
import sys

from mythos.config import load_config, parse_overrides
from mythos.errors import UserError, cli_entry
from mythos.train.planner import dry_run

GB = 1e9


def plan(cfg, world: int, gpu_mem_gb: float, rank: int = 0, group_size: int | None = None) -> dict:
    res = dry_run(cfg, world, rank, group_size=group_size)
    st = res["state_bytes"]
    params = sum(v for k, v in st.items() if k.startswith("params"))
    grads = sum(v for k, v in st.items() if k.startswith("grads"))
    optim = sum(v for k, v in st.items() if k.startswith("optim"))
    peak = res["step_peak_bytes"][cfg.parallel.ac]
    need = params + optim + max(peak, grads)
    res["per_rank_bytes"] = {"params": params, "grads": grads, "optim": optim, "step_peak": peak, "total": need}
    res["gpu_mem_gb"], res["fits"] = gpu_mem_gb, need <= gpu_mem_gb * GB
    from mythos.train.batch import largest_divisor_at_most
    fit = _largest_micro_batch(cfg, world, rank, res, gpu_mem_gb * GB - params - optim)
    per_rank = cfg.train.global_batch // world
    res["per_rank_batch"], res["largest_micro_batch_memory"] = per_rank, fit  # fit: by memory alone
    res["largest_micro_batch"] = largest_divisor_at_most(per_rank, fit) if fit >= 1 else 0
    return res


def _largest_micro_batch(cfg, world: int, rank: int, res: dict, budget: float) -> int:
    """Step memory is affine in the micro-batch: measured at the configured size and at one other, solved."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from mythos.parallel.env import DistEnv
    from mythos.parallel.mesh import build_mesh
    from mythos.train.planner import _step_peak, fake_process_group, step_shape
    m0, p0 = res["micro_batch"], res["step_peak_bytes"][cfg.parallel.ac]
    m1 = 1 if m0 > 1 else 2
    shape = step_shape(cfg, world)
    shape.micro_batch = m1
    with fake_process_group(world, rank):
        mesh = build_mesh(DistEnv(rank, world, 0, __import__("torch").device("cpu")), cfg.parallel)
        p1 = _step_peak(cfg, mesh, shape, cfg.parallel.ac, FakeTensorMode(allow_non_fake_inputs=True))
    slope = (p0 - p1) / (m0 - m1)
    if slope <= 0:
        return m0
    return max(0, math.floor((budget - (p0 - slope * m0)) / slope))


def _gib(b: float) -> str:
    return f"{b / 2**30:8.2f} GiB"


def _header(r: dict) -> str:
    m = r["mesh"]
    hsdp = f"dp_replicate {m['dp_replicate']} (HSDP) x " if m["dp_replicate"] > 1 else ""
    return (f"world {r['world']} = {hsdp}dp_shard {m['dp_shard']} x ep {m['ep']} | rank {r['rank']} | "
            f"micro-batch {r['micro_batch']} x {r['n_micro']} per step | seq {r['seq_len']} | "
            + (f"loops {r['loops']}" if r["loops"] is not None else "dense"))


def _comm_lines(r: dict) -> list[str]:
    lines = ["collectives per optimizer step (this rank's input bytes):"]
    for key, v in r["collectives"].items():
        span = r["dim_spans"].get(key.split("@")[1], "inter")
        lines.append(f"  {key:<26} {v['calls']:6d} calls {_gib(v['bytes'])}   {span}-group")
    cb = r["collective_bytes"]
    lines.append(f"  sent inside a group of {r['group_size']} ranks {_gib(cb['intra_group'])}, "
                 f"across groups {_gib(cb['inter_group'])}")
    return lines


def format_comm(r: dict) -> str:
    """--comm-only: state bytes and collectives."""
    st = r["state_bytes"]
    parts = [f"  {k:<20} {_gib(sum(v for n, v in st.items() if n.startswith(k)))}"
             for k in ("params", "grads", "optim")]
    return "\n".join([_header(r), "per-rank state:", *parts, *_comm_lines(r)])


def format_plan(r: dict) -> str:
    b = r["per_rank_bytes"]
    lines = [_header(r),
             "per-rank memory:",
             f"  parameters           {_gib(b['params'])}",
             f"  gradients            {_gib(b['grads'])}",
             f"  optimizer (AdamW)    {_gib(b['optim'])}"]
    for ac, peak in r["step_peak_bytes"].items():
        lines.append(f"  step peak (ac={ac:<5}) {_gib(peak)}   activations, temporaries, gradients, gathered params")
    lines += [f"  total                {_gib(b['total'])}   "
              f"{'fits' if r['fits'] else 'does NOT fit'} a {r['gpu_mem_gb']:g} GB GPU",
              _largest_line(r), *_comm_lines(r)]
    return "\n".join(lines)


def _largest_line(r: dict) -> str:
    m, per_rank = r["largest_micro_batch"], r.get("per_rank_batch")
    if m == 0:
        return ("  no micro-batch fits: even 1 sequence per forward needs more memory (more ranks, a larger "
                "--gpu-mem, a shorter train.seq_len or parallel.ac = \"loop\")")
    return (f"  largest micro-batch that fits and divides the {per_rank} sequences per rank: {m} "
            f"(--train.micro_batch {m})")


@cli_entry
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mythos-plan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="TOML config (see configs/)")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--gpu-mem", type=float, default=80.0, help="GPU memory in GB (1e9 bytes)")
    p.add_argument("--rank", type=int, default=0, help="the rank to report (ranks differ only by uneven shards)")
    p.add_argument("--group-size", type=int, default=None,
                   help="ranks per group for the inside/across split of collective bytes (default --gpus-per-node)")
    p.add_argument("--comm-only", action="store_true",
                   help="state bytes and collectives only (no step-memory passes, no fit verdict; much faster)")
    p.add_argument("--json", action="store_true")
    args, rest = p.parse_known_args(argv)
    cfg = load_config(args.config, parse_overrides(rest))
    world = args.nodes * args.gpus_per_node
    if world < 1 or not 0 <= args.rank < world:
        raise UserError(f"--nodes x --gpus-per-node must be >= 1 and --rank in [0, world): got {world}, {args.rank}")
    group = args.group_size or args.gpus_per_node
    if args.comm_only:
        res = dry_run(cfg, world, args.rank, memory=False, group_size=group)
        print(json.dumps(res, indent=1) if args.json else format_comm(res))
        return 0
    res = plan(cfg, world, args.gpu_mem, args.rank, group)
    print(json.dumps(res, indent=1) if args.json else format_plan(res))
    return 0 if res["fits"] else 1


if __name__ == "__main__":
    sys.exit(main())
