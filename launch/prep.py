"""mythos-submit prep SOURCE... --out DIR --array N: a corpus prepared by a SLURM array, in three dependent jobs.

1. one task trains DIR/tokenizer.model (skipped with --tokenizer),
2. an array of N tasks, task I encoding part I into DIR/part-I-of-N (`mythos-prep --num-shards N --shard-index I`),
3. one task writes DIR/metadata.json over all parts (`mythos-prep merge DIR`), without copying data.
"""
from __future__ import annotations

import os
from pathlib import Path

from launch.slurm import cluster_checks, make_executor, print_notes, sbatch_script, slurm_parser
from mythos.errors import UserError


def run_prep(argv: list[str]) -> int:
    """One `mythos-prep` inside a job; a bad exit fails the task (and so the jobs that depend on it)."""
    from data_prep.cli import main

    rc = main(argv)
    if rc:
        raise RuntimeError(f"mythos-prep {' '.join(argv)} exited {rc}")
    return rc


def submit_prep(argv: list[str]) -> int:
    from data_prep.cli import build_parser

    p = slurm_parser("mythos-submit prep", __doc__.split("\n")[0])
    p.add_argument("--array", type=int, required=True, metavar="N", help="tasks that encode the corpus")
    a, prep_args = p.parse_known_args(argv)
    prep = build_parser().parse_args(prep_args)  # mythos-prep's own checks, before anything is submitted
    if a.array < 1:
        raise UserError(f"--array {a.array}: must be >= 1")
    if prep.num_shards is not None or prep.shard_index is not None or prep.tokenizer_only:
        raise UserError("mythos-submit prep sets --num-shards/--shard-index/--tokenizer-only itself")
    out = Path(prep.out).resolve()
    if (out / "metadata.json").exists() and not prep.overwrite:
        raise UserError(f"{out}: already holds a finished prep (metadata.json); pass --overwrite to replace it")
    part, time_min, notes = cluster_checks(a, 1, 1, 0)
    a.partition = part["name"]
    folder = out.parent / f".{out.name}.slurm"
    base = a.dependency

    def executor(dependency: str | None, name: str):
        a.dependency, a.job_name = dependency, name
        return make_executor(folder, a, nodes=1, tasks_per_node=1, gpus_per_node=0, time_min=time_min)

    tok_args = [*prep_args, "--tokenizer-only"]
    shard_args = [[*prep_args, "--num-shards", str(a.array), "--shard-index", str(i), "--no-progress"]
                  for i in range(a.array)]
    if a.dry_run:
        print(sbatch_script(executor(base, "mythos-prep-tokenizer")))
        print_notes(notes)
        return 0
    jobs = []
    dep = base
    if prep.tokenizer is None:
        tok = executor(base, "mythos-prep-tokenizer").submit(run_prep, tok_args)
        jobs.append(("tokenizer", tok.job_id))
        dep = f"afterok:{tok.job_id}"
    else:
        os.makedirs(out, exist_ok=True)
        run_prep(tok_args)  # copies the given tokenizer to DIR/tokenizer.model (instant)
    arr = executor(dep, "mythos-prep").map_array(run_prep, shard_args)
    array_id = arr[0].job_id.split("_")[0]
    jobs.append((f"encode x{a.array}", array_id))
    merge = executor(f"afterok:{array_id}", "mythos-prep-merge").submit(run_prep, ["merge", str(out)])
    jobs.append(("merge", merge.job_id))
    print("submitted: " + ", ".join(f"{what} {jid}" for what, jid in jobs))
    print(f"logs:      {folder}")
    print(f"output:    {out} (metadata.json appears when the merge job {merge.job_id} is done)")
    return 0
