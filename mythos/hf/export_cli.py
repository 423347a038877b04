"""mythos-export RUN --out PATH [--format safetensors|hf]: a single safetensors file with weights, model config and
tokenizer (`safetensors`, read by mythos-generate), or a Hugging Face model directory (`hf`: loads with
`AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)`, see mythos/hf/export.py)."""
from __future__ import annotations

import argparse
import sys

from mythos.errors import UserError, cli_entry

FORMATS = ("safetensors", "hf")


def _quiet_deepspeed() -> None:
    """transformers imports DeepSpeed when it is installed, which warns "Setting accelerator to CPU" on a machine
    without a GPU; an export runs on the CPU anyway, so say so up front (a DS_ACCELERATOR already set is kept)."""
    import os

    import torch
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


@cli_entry
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mythos-export", description=__doc__)
    p.add_argument("run", help="run directory (its latest checkpoint is exported)")
    p.add_argument("--out", required=True, help="output .safetensors file (safetensors) or directory (hf)")
    p.add_argument("--format", default="safetensors", help="safetensors (default) | hf")
    p.add_argument("--max-shard-size", default="2GB", help="hf: split model.safetensors past this size")
    p.add_argument("--overwrite", action="store_true", help="hf: replace a non-empty output directory")
    args = p.parse_args(argv)
    if args.format not in FORMATS:
        raise UserError(f"--format {args.format!r}: expected one of {'|'.join(FORMATS)}")
    if args.format == "hf":
        _quiet_deepspeed()
        try:
            from mythos.hf.export import export_hf
        except ImportError as e:
            raise UserError(f"--format hf needs the optional extra: pip install -e '.[hf]' ({e})") from None
        print(f"wrote {export_hf(args.run, args.out, max_shard_size=args.max_shard_size, overwrite=args.overwrite)}")
        return 0
    from mythos.checkpoint.load import export
    print(f"wrote {export(args.run, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
