"""Read a run for inference: load a trained model from a run directory (latest checkpoint) or a `mythos-export` file."""
from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import torch

from mythos.checkpoint.deepspeed import DeepSpeedWeightsPayload
from mythos.checkpoint.manager import CheckpointManager
from mythos.config import apply_dict, build_config, load_toml
from mythos.data.atomic import atomic_path
from mythos.data.loader import parse_spec
from mythos.data.tokenizer import tokenizer_in
from mythos.data.tokenizer_hf import CONFIG
from mythos.errors import UserError
from mythos.model import ModelConfig, Mythos
from mythos.perms import apply_umask

EXPORT_FORMAT = "mythos-export-v1"
TOKENIZER_KEY = "__tokenizer_model__"
HF_TOKENIZER_KEYS = {"__tokenizer_json__": "tokenizer.json", "__tokenizer_config__": CONFIG}  # a tokenizer.json run


def load_run(run_dir: str | Path):
    """(model in eval mode, Config, tokenizer path) from a run directory's config.toml and latest checkpoint."""
    return load_run_state(run_dir)[:3]


def load_run_state(run_dir: str | Path):
    """load_run plus the checkpoint's trainer state (step, tokens_seen, ...), for reports that name them."""
    run = Path(run_dir)
    if not (run / "config.toml").is_file():
        raise UserError(f"{run}: not a run directory (no config.toml)")
    cfg = build_config(load_toml(run / "config.toml"))
    model = Mythos(cfg.model)
    payload = DeepSpeedWeightsPayload() if cfg.parallel.backend == "deepspeed" else None  # None: DCP
    state = CheckpointManager(run, keep=1, payload=payload).load(model, optimizer=None)  # newest that verifies and
    # loads; refuses hostile files
    model.eval()
    tok = tokenizer_in(parse_spec(cfg.data.path)[0][0])
    return model, cfg, tok, state if isinstance(state, dict) else {}


def export(run_dir: str | Path, out: str | Path) -> Path:
    from safetensors.torch import save_file
    model, cfg, tok = load_run(run_dir)
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    files = {TOKENIZER_KEY: tok} if tok.name != "tokenizer.json" else {
        k: tok.with_name(n) for k, n in HF_TOKENIZER_KEYS.items()}
    for key, f in files.items():
        if f.is_file():
            tensors[key] = torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8)
    meta = {"format": EXPORT_FORMAT, "model_config": json.dumps(dataclasses.asdict(cfg.model)),
            "model_name": cfg.model_name}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
        apply_umask(tmp)  # safetensors writes 0600: colleagues on a shared filesystem could not read it
    return out


def load_exported(path: str | Path):
    """(model in eval mode, model config, tokenizer path in a temp dir or None) from an exported file."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != EXPORT_FORMAT:
        raise UserError(f"{path}: not a mythos-export file (format {meta.get('format')!r})")
    cfg = ModelConfig()
    apply_dict(cfg, json.loads(meta["model_config"]), "model.")
    tensors = load_file(str(path))
    tok_path = None
    files = {k: n for k, n in {TOKENIZER_KEY: "tokenizer.model", **HF_TOKENIZER_KEYS}.items() if k in tensors}
    if files:
        tmp = Path(tempfile.mkdtemp(prefix="mythos-tok-"))
        for key, name in files.items():
            (tmp / name).write_bytes(tensors.pop(key).numpy().tobytes())
        tok_path = tokenizer_in(tmp)
    model = Mythos(cfg)
    model.load_state_dict(tensors)
    model.eval()
    return model, cfg, tok_path


def load_any(path: str | Path):
    """(model, model config, tokenizer path) from a run directory or an exported file."""
    p = Path(path)
    if p.is_dir():
        model, cfg, tok = load_run(p)
        return model, cfg.model, tok
    if p.is_file():
        return load_exported(p)
    raise UserError(f"{p}: no such run directory or export file")
