"""Fixtures for the Hugging Face interop tests: a tiny trained run, its HF export, HF exports of random models."""
from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import pytest
import torch

from tests.conftest import run_cli, train_args

if importlib.util.find_spec("transformers") is None:  # the optional extra `.[hf]` is not installed
    collect_ignore_glob = ["test_*.py"]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# trust_remote_code copies each export's modeling code into a module cache, by default ~/.cache/huggingface/modules
# shared by every process of the machine: a test run gets its own, so concurrent runs never import each other's files.
os.environ.setdefault("HF_MODULES_CACHE", tempfile.mkdtemp(prefix="mythos-hf-modules-"))


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """One intra-op thread: on a loaded 2-core machine OpenMP threads spin-wait and a 1 s generate takes 90 s."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def tiny_run(prepared_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("hf_run") / "run"
    r = run_cli(train_args(run, prepared_data, 4))
    assert r.returncode == 0, r.stderr
    return run


@pytest.fixture(scope="session")
def run_export(tiny_run, tmp_path_factory) -> Path:
    from mythos.hf.export import export_hf
    return export_hf(tiny_run, tmp_path_factory.mktemp("hf_export") / "tiny_hf", max_shard_size="100KB")


def random_export(kind: str, tok_path: Path, out: Path, seed: int = 0):
    """(our model, HF directory) for a random-init micro model: kind is '<rdt|dense>-<mla|gqa>[-act]'."""
    from mythos.hf.export import write_hf
    from mythos.model import Mythos
    from tests.model.helpers import micro_cfg
    mode, attn, *extra = kind.split("-")
    cfg = micro_cfg(attn, act="act" in extra, mode=mode, vocab_size=300, tie_embeddings="act" not in extra,
                    init_std=0.3)  # large enough that greedy continuations are not one repeated token
    torch.manual_seed(seed)
    model = Mythos(cfg).eval()
    return model, write_hf(model, cfg, tok_path, 64, out)


def load_hf(path: Path, **kw):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(str(path), trust_remote_code=True, **kw).eval()
