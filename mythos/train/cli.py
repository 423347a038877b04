"""mythos-train --config configs/NAME.toml [--section.key value ...] (alone or under torchrun)."""
from __future__ import annotations

import argparse
import os
import sys

from mythos.errors import cli_entry
from mythos.train.signals import EXIT_REQUEUE, stop_flag


@cli_entry
def main(argv: list[str] | None = None) -> int:
    stop_flag()  # first, before torch is imported: a USR1/USR2/TERM from here on means "checkpoint, exit 75"
    from mythos.config import load_config, parse_overrides
    p = argparse.ArgumentParser(prog="mythos-train", description=__doc__,
                                epilog="Any config key can be overridden: --train.steps 100 --model.name small")
    p.add_argument("--config", required=True, help="TOML config (see configs/)")
    args, rest = p.parse_known_args(argv)
    cfg = load_config(args.config, parse_overrides(rest))
    from mythos.parallel.env import exit_after_distributed
    from mythos.train.trainer import EXIT_DIVERGED, TrainingDiverged, train
    try:
        rc = train(cfg)
    except TrainingDiverged as e:
        print(f"error: training diverged: {e}", file=sys.stderr)
        rc = EXIT_DIVERGED
    if rc == 0:
        stop_flag().finished()
    if rc == EXIT_REQUEUE and os.environ.get("MYTHOS_REQUEUE_MARKER"):  # torchrun hides our exit code from sbatch
        open(os.environ["MYTHOS_REQUEUE_MARKER"], "a").close()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # set by torchrun, or from SLURM_* by DistEnv
        exit_after_distributed(rc)
    return rc


if __name__ == "__main__":
    sys.exit(main())
