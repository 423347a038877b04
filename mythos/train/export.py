"""mythos-export RUN --out FILE: a single safetensors file with weights, model config and tokenizer."""
from __future__ import annotations

import argparse
import sys

from mythos.errors import cli_entry


@cli_entry
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mythos-export", description=__doc__)
    p.add_argument("run", help="run directory (its latest checkpoint is exported)")
    p.add_argument("--out", required=True, help="output .safetensors file")
    args = p.parse_args(argv)
    from mythos.evals.load import export
    print(f"wrote {export(args.run, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
