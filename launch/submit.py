"""mythos-submit: training (and sharded prep) jobs on SLURM through submitit.

    mythos-submit --config FILE [--section.key value ...] --nodes N --gpus-per-node G [--tasks-per-node T] ...
    mythos-submit prep SOURCE... --out DIR --array N [mythos-prep options] [--partition P --time MIN ...]

One process per task, started by srun (never torchrun); the trainer takes its rendezvous from SLURM. Everything
that can be checked (config, data, partition, node and GPU counts, the batch split) is checked before anything is
submitted. `--dry-run` needs no SLURM: it prints the script and lists the checks it could not make (no scontrol on
PATH) or that failed (a partition smaller than the request), so a job can be previewed from a laptop.
"""
from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

from mythos.errors import UserError, cli_entry

MAX_LEAD_S, MIN_LEAD_S = 300, 15
DEFAULT_TIME_MIN = 24 * 60
TRAIN_EPILOG = """\
config overrides: any key of the config, as for mythos-train: --train.steps 1000 --model.name small
  --data.path data/code --run.dir runs/x (checked here, then passed to every task).
sharded prep on the cluster: mythos-submit prep SOURCE... --out DIR --array N [mythos-prep options]
  [--partition P --time MIN ...] (see mythos-submit prep --help).
--dry-run prints the sbatch script without SLURM; checks it could not make are listed on stderr."""


def slurm_parser(prog: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("SLURM")
    g.add_argument("--partition", help="default: the cluster's default partition")
    g.add_argument("--time", type=int, help="time limit in minutes (default: the partition's default or max)")
    g.add_argument("--account")
    g.add_argument("--qos")
    g.add_argument("--dependency", help="as sbatch --dependency, e.g. afterok:123")
    g.add_argument("--cpus-per-task", type=int, default=None)
    g.add_argument("--job-name", default="mythos")
    g.add_argument("--signal-lead", type=int, default=None, metavar="S",
                   help=f"seconds before the time limit at which SLURM signals the job to checkpoint (default: 10%% "
                        f"of the limit, within [{MIN_LEAD_S}, {MAX_LEAD_S}]; SLURM may send it up to 60 s earlier)")
    g.add_argument("--max-timeouts", type=int, default=20,
                   help="time-limit requeues before giving up (submitit's slurm_max_num_timeout)")
    g.add_argument("--dry-run", action="store_true", help="print the sbatch script and exit")
    return p


def signal_lead(time_min: int, lead: int | None) -> int:
    if lead is not None:
        if not 0 < lead < time_min * 60:
            raise UserError(f"--signal-lead {lead}: must be between 1 and the time limit ({time_min * 60} s)")
        return lead
    return max(MIN_LEAD_S, min(MAX_LEAD_S, time_min * 6))


# ---- what the cluster offers --------------------------------------------------------------------------------------
def _scontrol(*args: str) -> str:
    if shutil.which("scontrol") is None:
        raise UserError("no SLURM here: scontrol not found on PATH")
    r = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise UserError(f"scontrol {' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def _records(text: str) -> list[dict[str, str]]:
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in text.splitlines() if line.strip()]


def partition_info(name: str | None) -> dict:
    """{name, nodes, cpus (per node, min), gpus (per node, min), default_time, max_time} of a partition."""
    parts = _records(_scontrol("show", "partition", "-o"))
    if name is None:
        parts = [p for p in parts if p.get("Default") == "YES"] or parts[:1]
        if not parts:
            raise UserError("the cluster has no partition")
    else:
        known = [p.get("PartitionName") for p in parts]
        parts = [p for p in parts if p.get("PartitionName") == name]
        if not parts:
            raise UserError(f"--partition {name}: no such partition (the cluster has {', '.join(known)})")
    part = parts[0]
    hosts = _scontrol("show", "hostnames", part.get("Nodes", "")).split() if part.get("Nodes") else []
    nodes = [n for n in _records(_scontrol("show", "node", "-o")) if n.get("NodeName") in hosts]

    def gpus(node: dict) -> int:
        m = re.search(r"gpu(?::[^:,()]+)?:(\d+)", node.get("Gres", ""))
        return int(m.group(1)) if m else 0

    def minutes(v: str | None) -> int | None:
        if not v or v in ("UNLIMITED", "NONE", "INFINITE"):
            return None
        days, _, hms = v.rpartition("-")
        parts_ = [int(x) for x in hms.split(":")]
        h, m = (parts_ + [0, 0])[:2] if len(parts_) == 3 else (0, parts_[0])
        return int(days or 0) * 1440 + h * 60 + m

    return {"name": part["PartitionName"], "nodes": len(hosts),
            "cpus": min((int(n.get("CPUTot", 0)) for n in nodes), default=0),
            "gpus": min((gpus(n) for n in nodes), default=0),
            "default_time": minutes(part.get("DefaultTime")), "max_time": minutes(part.get("MaxTime"))}


def check_resources(part: dict, nodes: int, tasks_per_node: int, cpus_per_task: int, gpus_per_node: int,
                    time_min: int | None) -> int:
    """UserError for a request the partition cannot hold; returns the time limit to use (minutes)."""
    if nodes < 1:
        raise UserError(f"--nodes {nodes}: must be >= 1")
    if gpus_per_node < 0:
        raise UserError(f"--gpus-per-node {gpus_per_node}: must be >= 0")
    if tasks_per_node < 1 or cpus_per_task < 1:
        raise UserError("--tasks-per-node and --cpus-per-task must be >= 1")
    if nodes > part["nodes"]:
        raise UserError(f"--nodes {nodes}: partition {part['name']} has {part['nodes']} nodes")
    if gpus_per_node > part["gpus"]:
        raise UserError(f"--gpus-per-node {gpus_per_node}: partition {part['name']} has {part['gpus']} GPUs per node")
    if part["cpus"] and tasks_per_node * cpus_per_task > part["cpus"]:
        raise UserError(f"--tasks-per-node {tasks_per_node} x --cpus-per-task {cpus_per_task}: partition "
                        f"{part['name']} has {part['cpus']} CPUs per node")
    if time_min is None:
        return part["default_time"] or part["max_time"] or 24 * 60
    if time_min < 1 or (part["max_time"] and time_min > part["max_time"]):
        raise UserError(f"--time {time_min}: must be between 1 and partition {part['name']}'s limit "
                        f"({part['max_time'] or 'unlimited'} minutes)")
    return time_min


def cluster_checks(a, nodes: int, tasks_per_node: int, gpus_per_node: int) -> tuple[dict, int, list[str]]:
    """(partition, time limit, notes): the partition and resource checks. With --dry-run a check that cannot run
    (no SLURM) or fails becomes a note and the preview goes on; without it, a UserError."""
    try:
        part = partition_info(a.partition)
    except UserError as e:
        if not a.dry_run:
            raise
        time_min = a.time or DEFAULT_TIME_MIN
        return ({"name": a.partition}, time_min,
                [f"skipped: partition, node, GPU, CPU and time-limit checks ({e})",
                 *([] if a.time else [f"--time not given: the preview uses {time_min} min"])])
    try:
        time_min = check_resources(part, nodes, tasks_per_node, a.cpus_per_task or 1, gpus_per_node, a.time)
    except UserError as e:
        if not a.dry_run:
            raise
        return part, a.time or part["default_time"] or part["max_time"] or DEFAULT_TIME_MIN, [f"FAILED: {e}"]
    return part, time_min, []


def print_notes(notes: list[str]) -> None:
    if notes:
        print("dry run, not checked against the cluster:\n" + "\n".join(f"  {n}" for n in notes), file=sys.stderr)


@contextlib.contextmanager
def _no_srun_needed(dry_run: bool):
    """submitit's SlurmExecutor refuses to exist without srun on PATH; a dry run only renders its script."""
    if not dry_run or shutil.which("srun"):
        yield
        return
    from submitit.slurm.slurm import SlurmExecutor
    saved = SlurmExecutor.__dict__["affinity"]
    SlurmExecutor.affinity = classmethod(lambda cls: 1)
    try:
        yield
    finally:
        SlurmExecutor.affinity = saved


def make_executor(folder: Path, a, *, nodes: int, tasks_per_node: int, gpus_per_node: int, time_min: int):
    import submitit

    try:
        with _no_srun_needed(a.dry_run):
            ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=a.max_timeouts)
    except RuntimeError as e:
        raise UserError(f"no SLURM here: {e}") from None
    params = {"requeue": True, **({"account": a.account} if a.account else {}),
              **({"dependency": a.dependency} if a.dependency else {})}
    ex.update_parameters(name=a.job_name, nodes=nodes, tasks_per_node=tasks_per_node, timeout_min=time_min,
                         slurm_partition=a.partition, slurm_qos=a.qos, slurm_signal_delay_s=signal_lead(time_min,
                         a.signal_lead), slurm_srun_args=["--kill-on-bad-exit=1"],
                         slurm_additional_parameters=params,
                         **({"cpus_per_task": a.cpus_per_task} if a.cpus_per_task else {}),
                         **({"gpus_per_node": gpus_per_node} if gpus_per_node else {}))
    return ex


def sbatch_script(ex) -> str:
    """The script submitit would submit (no public API for it in submitit 1.5: guarded private call)."""
    inner = getattr(ex, "_executor", None)
    make = getattr(inner, "_make_submission_file_text", None)
    command = getattr(inner, "_submitit_command_str", None)
    if make is None or command is None:
        raise UserError("--dry-run: this submitit version has no SlurmExecutor._make_submission_file_text "
                        "(tested with submitit 1.5)")
    return make(command, "dry-run")


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
    from mythos.config import load_config, load_toml, parse_overrides
    from mythos.data import read_metadata
    from mythos.data.loader import parse_spec

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
    from mythos.parallel.mesh import describe_mesh
    from mythos.train.batch import batch_split

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
    from launch.job import TrainJob

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
        from launch.prep import submit_prep

        return submit_prep(argv[1:])
    return submit_train(argv)


if __name__ == "__main__":
    sys.exit(main())
