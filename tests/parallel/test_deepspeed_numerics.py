"""DeepSpeed ZeRO 1, 2 and 3 (2 ranks, gloo, CPU) against the single-process FSDP engine on the same global batches:
the looped MoE model with per-step sampled loop counts and the dense model, AdamW + clipping at 1.0 + the MoE bias
update, 5 steps through the one `train_step`, with gradient accumulation (global batch 4 in micro-batches of 1:
4 per step in the reference, 2 per rank under DeepSpeed's gradient_accumulation_steps); also ZeRO-Offload (optimizer state, and ZeRO-3 parameters, on the CPU).
All DeepSpeed cases run in one 2-rank launch (DeepSpeed's import is slow), the reference in the shared 1-rank launch
(tests/parallel/conftest.py::register_runs); no DeepSpeed op may be compiled on the way
(TORCH_EXTENSIONS_DIR stays empty)."""
from __future__ import annotations

import pytest
import torch
from tests.conftest import made_once
from tests.parallel.conftest import register_runs
from tests.parallel.dist_run import launch

STEPS = 5
STAGES = (1, 2, 3)
MODELS = ("moe", "dense")
OFFLOAD = ("deepspeed:2:moe:offload", "deepspeed:3:moe:offload")  # optimizer (+ ZeRO-3 params) offloaded to CPU


CASE_ARGS = ["--steps", str(STEPS), "--sampled-loops", "--micro-batch", "1"]
register_runs("deepspeed", {1: {"ref": [*CASE_ARGS, *[f"--case=fsdp:0:{m}" for m in MODELS]]}})


@pytest.fixture(scope="module")
def runs(dist_runs, tmp_path_factory, worker_id):
    """The 1-rank FSDP reference (in the shared 1-rank launch) and the 2-rank DeepSpeed launch, made once per test
    run (both xdist workers read it: the parametrized tests may land on either)."""
    def make(tmp):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TORCH_EXTENSIONS_DIR", str(tmp / "torch_extensions"))
            launch(2, ["--out", str(tmp / "ds.pt"), *CASE_ARGS, *[f"--case=deepspeed:{z}:{m}" for m in MODELS
                                                                  for z in STAGES], *[f"--case={c}" for c in OFFLOAD]])

    tmp = made_once(tmp_path_factory, worker_id, "deepspeed_runs", make)
    ds, ext = tmp / "ds.pt", tmp / "torch_extensions"
    biases = [torch.load(f"{ds}.bias{r}", weights_only=True) for r in range(2)]
    built = sorted(p.name for p in ext.iterdir()) if ext.exists() else []
    ref = torch.load(dist_runs(1, "deepspeed.ref"), weights_only=True)
    return ref, torch.load(ds, weights_only=True), biases, built


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stage", STAGES)
def test_zero_matches_single_process_fsdp(runs, stage, model):
    ref_all, ds_all, biases, _ = runs
    ref, res = ref_all[f"fsdp:0:{model}"], ds_all[f"deepspeed:{stage}:{model}"]
    assert res["loops"] == ref["loops"]
    if model == "moe":
        assert len(set(ref["loops"])) > 1, "loop counts must be sampled per step"
    assert len(res["losses"]) == STEPS
    for a, b in zip(ref["losses"], res["losses"]):
        assert abs(a - b) <= 1e-5, (ref["losses"], res["losses"])
    for a, b in zip(ref["grad_norms"], res["grad_norms"]):  # DeepSpeed's pre-clip norm; >1, so clipping acted
        assert abs(a - b) <= 1e-5 * max(1.0, a), (ref["grad_norms"], res["grad_norms"])
    assert max(ref["grad_norms"]) > 1.0
    case = f"deepspeed:{stage}:{model}"
    assert all(torch.equal(x, y) for x, y in zip(biases[0][case], biases[1][case])), "ranks' MoE biases differ"
    assert all(torch.allclose(x, y, atol=1e-7) for x, y in zip(ref["biases"], res["biases"]))
    if model == "moe":
        assert any(b.abs().sum() > 0 for b in res["biases"]), "the MoE bias was updated"


@pytest.mark.slow
@pytest.mark.parametrize("case", OFFLOAD)
def test_zero_offload_matches_single_process_fsdp(runs, case):
    ref, res = runs[0]["fsdp:0:moe"], runs[1][case]
    for a, b in zip(ref["losses"], res["losses"]):
        assert abs(a - b) <= 1e-5, (ref["losses"], res["losses"])


@pytest.mark.slow
def test_no_deepspeed_op_compiled(runs):
    assert runs[3] == [], f"DeepSpeed compiled ops during training: {runs[3]}"


@pytest.mark.slow
def test_nonfinite_step_is_skipped_like_fsdp(tmp_path, monkeypatch):
    """A NaN loss at step 2 (fault injection): both engines skip the update (DeepSpeed sees the non-finite norm), keep
    the schedule going, and the later losses still agree. One process, so DeepSpeed runs on a gloo group of one."""
    out = tmp_path / "nan.pt"
    monkeypatch.setenv("MYTHOS_FAULTS", "nan_loss@2")
    launch(1, ["--out", str(out), "--steps", "4", "--case=fsdp:0:moe", "--case=deepspeed:2:moe"])
    res = torch.load(out, weights_only=True)
    fsdp, ds = res["fsdp:0:moe"], res["deepspeed:2:moe"]
    assert fsdp["skipped"] == ds["skipped"] == [False, True, False, False]
    for a, b in [(fsdp["losses"][i], ds["losses"][i]) for i in (0, 2, 3)]:
        assert abs(a - b) <= 1e-5, (fsdp["losses"], ds["losses"])
