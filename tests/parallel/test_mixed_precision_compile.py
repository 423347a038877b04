"""bf16 mixed precision (FSDP2 MixedPrecisionPolicy on 2 ranks; autocast on 1 rank) trains and tracks fp32, and a
torch.compile smoke test. Each run is a configuration in the shared launch of
its rank count (tests/parallel/conftest.py::register_runs: each builds its own engine).

Tolerance (stated): 8 steps on a fixed batch (loss falls from 5.55 to ~2.2); per step |loss_bf16 - loss_fp32|
<= 0.05 (measured 0.012 max on this machine), and the bf16 loss must fall by more than half."""
from __future__ import annotations

import pytest
import torch
from tests.parallel.conftest import register_runs

BF16_TOL = 0.05
TRACK = ["--steps", "8", "--fixed-data", "--lr", "1e-2"]
register_runs("mp", {
    2: {"fp32": TRACK, "bf16": [*TRACK, "--mp", "bf16", "--ep", "2", "--ac", "loop"]},
    1: {"fp32": TRACK, "bf16": [*TRACK, "--mp", "bf16"],
        "eager": ["--steps", "2", "--ac", "loop"], "compiled": ["--steps", "2", "--compile", "--ac", "loop"]},
})


@pytest.fixture(scope="module")
def runs(dist_runs):
    """runs(nproc, name): rank 0's result of configuration `name`."""
    return lambda nproc, name: torch.load(dist_runs(nproc, f"mp.{name}"), weights_only=True)


@pytest.mark.slow
def test_bf16_fsdp_tracks_fp32(runs):
    fp32, bf16 = runs(2, "fp32")["losses"], runs(2, "bf16")["losses"]
    assert bf16[-1] < 0.5 * bf16[0], bf16
    assert max(abs(a - b) for a, b in zip(fp32, bf16)) <= BF16_TOL, (fp32, bf16)
    assert fp32 != bf16  # bf16 really computed in bf16


@pytest.mark.slow
def test_bf16_single_rank_autocast_tracks_fp32(runs):
    fp32, bf16 = runs(1, "fp32")["losses"], runs(1, "bf16")["losses"]
    assert bf16[-1] < 0.5 * bf16[0]
    assert max(abs(a - b) for a, b in zip(fp32, bf16)) <= BF16_TOL, (fp32, bf16)
    assert fp32 != bf16


@pytest.mark.slow
def test_compile_smoke(runs):
    """parallel.compile = true (per-block torch.compile, with per-loop checkpointing) matches eager."""
    c, e = runs(1, "compiled"), runs(1, "eager")
    assert c["compiled_graphs"] > 0
    assert all(abs(a - b) <= 1e-4 for a, b in zip(c["losses"], e["losses"])), (c["losses"], e["losses"])
