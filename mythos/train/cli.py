"""mythos-train --config configs/NAME.toml [--section.key value ...] (alone or under torchrun).

Every key below can be set in the TOML file ([train] steps = 500) and overridden here (--train.steps 500), which wins.
--config FILE with --help shows that file's values as the defaults."""
from __future__ import annotations

import argparse
import os
import sys

from mythos.errors import UserError, cli_entry, launched_world_size
from mythos.train.signals import EXIT_REQUEUE, stop_flag


def check_launch(cfg) -> None:
    """The batch split and the mesh at this launch's world size, before any process group exists: a misfit is one
    line from rank 0 (mythos.errors.SameOnEveryRank) and exit 2 on every rank, with no rendezvous to wait for."""
    from mythos.parallel.mesh import mesh_shape
    from mythos.train.batch import batch_split
    world = launched_world_size()
    batch_split(cfg, world)
    mesh_shape(world, cfg.parallel.dp_shard, cfg.parallel.ep, cfg.parallel.dp_replicate)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    stop_flag()  # first, before torch is imported: a USR1/USR2/TERM from here on means "checkpoint, exit 75"
    from mythos.config import config_help, load_config, parse_overrides
    p = argparse.ArgumentParser(prog="mythos-train", add_help=False)  # the help lists the config keys (tyro)
    p.add_argument("--config")
    p.add_argument("-h", "--help", action="store_true")
    args, rest = p.parse_known_args(argv)
    if args.help:
        config_help("mythos-train", __doc__, args.config)
    if not args.config:
        raise UserError("--config FILE is required: a TOML config (see configs/); mythos-train --help lists its keys")
    cfg = load_config(args.config, parse_overrides(rest))
    check_launch(cfg)
    from mythos.errors import exit_after_distributed
    from mythos.train.trainer import run
    rc = run(cfg)
    if rc == 0:
        stop_flag().finished()
    if rc == EXIT_REQUEUE and os.environ.get("MYTHOS_REQUEUE_MARKER"):  # torchrun hides our exit code from sbatch
        open(os.environ["MYTHOS_REQUEUE_MARKER"], "a").close()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # set by torchrun, or from SLURM_* by DistEnv
        exit_after_distributed(rc)
    return rc


if __name__ == "__main__":
    sys.exit(main())
