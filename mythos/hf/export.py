"""Export a run (or a `mythos-export` safetensors file) as a Hugging Face model directory.

DIR gets config.json (with `auto_map` to the bundled code), model.safetensors (sharded past `max_shard_size`, with
model.safetensors.index.json), tokenizer files, generation_config.json and the modeling code (mythos/hf/bundle.py).
Everything is written into a temporary sibling directory that is renamed to DIR at the end: a failed export leaves
nothing behind.
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

from mythos.data.tokenizer import tokenizer_in
from mythos.errors import UserError

AUTO_MAP = {"AutoConfig": "configuration_mythos.MythosConfig",
            "AutoModelForCausalLM": "modeling_mythos.MythosForCausalLM"}
DEFAULT_CONTEXT = 2048  # max_position_embeddings of an export file (which does not record the training seq_len)


def load_source(src: str | Path):
    """(model, model config, tokenizer path, training seq_len) from a run directory or an export file."""
    from mythos.checkpoint.load import load_exported, load_run
    p = Path(src)
    if p.is_dir():
        model, cfg, tok = load_run(p)
        if not tok.is_file() and tokenizer_in(tok.parent.parent).is_file():
            tok = tokenizer_in(tok.parent.parent)  # data.path is a Megatron prefix: the model sits beside it
        return model, cfg.model, tok, cfg.train.seq_len
    if p.is_file():
        model, mcfg, tok = load_exported(p)
        return model, mcfg, tok, DEFAULT_CONTEXT
    raise UserError(f"{p}: no such run directory or export file")


def check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: directory exists and is not empty (pass --overwrite to replace it)")


def export_hf(src: str | Path, out: str | Path, *, max_shard_size: str | int = "2GB",
              overwrite: bool = False) -> Path:
    """Export a run directory or export file to `out` (see the module docstring)."""
    out = Path(out)
    check_out(out, overwrite)
    model, mcfg, tok_path, seq_len = load_source(src)
    if tok_path is None or not Path(tok_path).is_file():
        raise UserError(f"{src}: no tokenizer found (expected {tok_path}); the HF export needs it")
    return write_hf(model, mcfg, Path(tok_path), seq_len, out, max_shard_size=max_shard_size)


def write_hf(model, mcfg, tok_path: Path, seq_len: int, out: Path, *, max_shard_size: str | int = "2GB") -> Path:
    """Write an in-memory Mythos model as an HF directory `out` (replaced if it exists)."""
    from transformers import GenerationConfig
    from transformers.utils import logging as hf_logging

    from mythos.hf.bundle import write_bundle
    from mythos.hf.configuration_mythos import MythosConfig
    from mythos.hf.modeling_mythos import MythosForCausalLM
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        sp = _write_tokenizer(tok_path, tmp)
        special = {"bos_token_id": sp.bos_id if sp.bos_id >= 0 else None, "eos_token_id": sp.eos_id,
                   "pad_token_id": sp.pad_id if sp.pad_id >= 0 else sp.eos_id}
        config = MythosConfig(mythos=dataclasses.asdict(mcfg), max_position_embeddings=seq_len, auto_map=AUTO_MAP,
                              architectures=["MythosForCausalLM"], **special)
        hf = MythosForCausalLM(config)
        hf.model.load_state_dict(model.state_dict())
        hf_logging.disable_progress_bar()  # a shard-writing bar per export is noise in CLI output
        try:
            hf.save_pretrained(str(tmp), max_shard_size=max_shard_size)
        finally:
            hf_logging.enable_progress_bar()
        GenerationConfig(do_sample=False, **special).save_pretrained(str(tmp))
        write_bundle(tmp)
        from mythos.perms import apply_umask
        apply_umask(tmp)  # mkdtemp is 0700 and safetensors 0600: give the directory the umask's permissions
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_tokenizer(model_file: Path, out: Path):
    from mythos.hf.tokenizer import write_tokenizer
    return write_tokenizer(model_file, out)
