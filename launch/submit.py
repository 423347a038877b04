"""mythos-submit: training (and sharded prep) jobs on SLURM through submitit.

    mythos-submit --config FILE [--section.key value ...] --nodes N --gpus-per-node G [--tasks-per-node T] ...
    mythos-submit prep SOURCE... --out DIR --array N [mythos-prep options] [--partition P --time MIN ...]

One process per task, started by srun (never torchrun); the trainer takes its rendezvous from SLURM. Everything
that can be checked (config, data, partition, node and GPU counts, the batch split) is checked before anything is
submitted. `--dry-run` needs no SLURM: it prints the script and lists the checks it could not make (no scontrol on
PATH) or that failed (a partition smaller than the request), so a job can be previewed from a laptop.
"""
from __future__ import annotations

import sys
from pathlib import Path

from launch.job import TrainJob
from launch.prep import submit_prep
from launch.slurm import cluster_checks, make_executor, print_notes, sbatch_script, slurm_parser
from mythos.config import load_config, load_toml, parse_overrides
from mythos.data import read_metadata
from mythos.data.loader import parse_spec
from mythos.errors import UserError, cli_entry
from mythos.parallel.mesh import describe_mesh, mesh_shape
from mythos.train.batch import batch_split

TRAIN_EPILOG = """\
config overrides: any key of the config, as for mythos-train: --train.steps 1000 --model.name small
  --data.path data/code --run.dir runs/x (checked here, then passed to every task); mythos-train --help lists
  every key with its meaning and default.
sharded prep on the cluster: mythos-submit prep SOURCE... --out DIR --array N [mythos-prep options]
  [--partition P --time MIN ...] (see mythos-submit prep --help).
--dry-run prints the sbatch script without SLURM; checks it could not make are listed on stderr."""


# ---- training ------------------------------------------------------------------------------------------------------
def default_hsdp(cfg, file_values: dict, overrides: dict, nodes: int, tasks: int) -> str | None:
    """With --nodes > 1 and parallel.dp_replicate set nowhere, one HSDP shard group per node (dp_replicate = nodes:
    FSDP's all-gathers stay inside a node, gradients are all-reduced across nodes) when the node's tasks hold whole
    dp_shard x ep groups. Sets it in `overrides` (passed to every task) and `cfg`; returns a note for stderr."""
    p = cfg.parallel
    chosen = "dp_replicate" in (file_values.get("parallel") or {}) or "parallel.dp_replicate" in overrides
    if nodes <= 1 or chosen or p.backend != "fsdp":
        return None
    if tasks % p.ep or (p.dp_shard != -1 and p.dp_shard * p.ep != tasks):
        return (f"parallel.dp_replicate stays 1 (FSDP over all {nodes * tasks} ranks): a node's {tasks} tasks do not "
                f"hold whole dp_shard x ep groups")
    overrides["parallel.dp_replicate"] = str(nodes)
    p.dp_replicate = nodes
    return (f"HSDP by default on {nodes} nodes: one shard group per node (parallel.dp_replicate = {nodes}; "
            f"--parallel.dp_replicate 1 shards over all ranks instead)")


def submit_train(argv: list[str]) -> int:
    p = slurm_parser("mythos-submit", __doc__.split("\n\n")[0], TRAIN_EPILOG)
    p.add_argument("--config", required=True, help="TOML config (the same file mythos-train and slurm/ take)")
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--gpus-per-node", type=int, required=True, help="0 for CPU-only jobs")
    p.add_argument("--tasks-per-node", type=int, help="processes per node (default: one per GPU, 1 without GPUs)")
    p.add_argument("--folder", help="submitit's job folder (logs, pickles); default RUN_DIR/slurm")
    a, rest = p.parse_known_args(argv)

    config = Path(a.config).resolve()
    overrides = parse_overrides(rest)
    cfg = load_config(config, overrides)
    run_dir = Path(cfg.run.dir).resolve()
    overrides["run.dir"] = str(run_dir)
    if not cfg.data.path:
        raise UserError(f"{config}: config key 'data.path': required (a directory made by mythos-prep)")
    for path, _ in parse_spec(cfg.data.path):
        read_metadata(path)
    tasks = a.tasks_per_node or max(a.gpus_per_node, 1)
    if a.nodes < 1 or tasks < 1:
        raise UserError(f"--nodes {a.nodes} --tasks-per-node {tasks}: must be >= 1")
    part, time_min, notes = cluster_checks(a, a.nodes, tasks, a.gpus_per_node)
    world = a.nodes * tasks
    split = batch_split(cfg, world, f"{a.nodes} nodes x {tasks} tasks")  # the rule the trainer applies
    hsdp_note = default_hsdp(cfg, load_toml(config), overrides, a.nodes, tasks)
    mesh = describe_mesh(world, cfg.parallel)
    folder = Path(a.folder).resolve() if a.folder else run_dir / "slurm"
    a.partition = part["name"]
    ex = make_executor(folder, a, nodes=a.nodes, tasks_per_node=tasks, gpus_per_node=a.gpus_per_node,
                       time_min=time_min)
    if a.dry_run:
        print(sbatch_script(ex))
        print(f"checked: config, data, batch {split.describe()}, mesh {mesh}", file=sys.stderr)
        if hsdp_note:
            print(hsdp_note, file=sys.stderr)
        print_notes(notes)
        return 0
    job = ex.submit(TrainJob(str(config), [x for k, v in overrides.items() for x in (f"--{k}", str(v))]))
    print(f"submitted job {job.job_id}: {a.nodes} nodes x {tasks} tasks on partition {part['name']}, "
          f"time limit {time_min} min, mesh {mesh}")
    if hsdp_note:
        print(hsdp_note)
    print(f"logs:    {folder}/{job.job_id}_TASK_log.out and .err (TASK = 0 .. {a.nodes * tasks - 1})")
    print(f"run dir: {run_dir}")
    print(f"watch:   tensorboard --logdir {run_dir / 'tb'}")
    return 0


@cli_entry
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "prep":
        return submit_prep(argv[1:])
    return submit_train(argv)


if __name__ == "__main__":
    sys.exit(main())
