"""DeepSpeed checkpoints get the FSDP path's guarantees: damage to the newest ones (a truncated optimizer partition,
one that passes its rewritten manifest but not the load, a garbled trainer_state.json) falls back to step 2 with one
warning line each and bitwise-equal losses after it; a file that asks to run code is refused with one line by resume
(2 ranks, the file on rank 1 only) and by mythos-export / the eval loader, and never runs.

One 2-rank ZeRO-2 reference run (checkpoints every 2 steps, all kept; test_deepspeed_resume's, made once) is copied
and damaged for the cases; the damaged resume and the refused one run one after the other in one 2-rank launch
(`resumes`, tests/mains.py: the import and process-group start-up paid once)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import made_once, read_metrics
from tests.train.test_checkpoint_integrity import _RunsCode, ckpt
from tests.mains import run_mains
from tests.train.test_deepspeed_resume import STEPS, _args, _record, _result
from tests.train.test_deepspeed_resume import references  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow
OPTIM = "zero_pp_rank_1_mp_rank_00_optim_states.pt"  # read by rank 1 only


def losses(run: Path, first: int) -> list[float]:
    m = read_metrics(run)
    return [m[s]["loss"] for s in range(first, STEPS + 1)]


@pytest.fixture(scope="module")
def reference(references) -> Path:
    """The uninterrupted ZeRO-2 run: only ever copied here, never changed."""
    run = references[2]
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == [ckpt(run, s).name for s in (2, 4, 6, 8)]
    return run


def _copy_at_step_2(reference: Path, dest: Path) -> Path:
    shutil.copytree(reference, dest)
    (dest / "metrics.jsonl").write_text("".join(line + "\n" for line in
                                                (reference / "metrics.jsonl").read_text().splitlines()[:2]))
    return dest


def _damage(run: Path) -> None:
    """Checkpoints 8, 6 and 4 unusable, each in its own way."""
    from mythos.checkpoint import manifest
    optim8, optim6 = ckpt(run, 8) / OPTIM, ckpt(run, 6) / OPTIM
    optim8.write_bytes(optim8.read_bytes()[:1000])  # caught by the manifest
    optim6.write_bytes(optim6.read_bytes()[:1000])
    manifest.write_manifest(ckpt(run, 6), 6)  # passes verification; fails on rank 1 before DeepSpeed reads anything
    (ckpt(run, 4) / "trainer_state.json").write_text('{"step": oops')
    manifest.write_manifest(ckpt(run, 4), 4)


def _plant_hostile(run: Path, marker: Path) -> Path:
    from mythos.checkpoint import manifest
    bad = ckpt(run, STEPS) / OPTIM
    torch.save({"optimizer_state_dict": _RunsCode(marker)}, bad)
    manifest.write_manifest(ckpt(run, STEPS), STEPS)  # a forger rewrites the manifest too: it must not matter
    return bad


@pytest.fixture(scope="module")
def resumes(reference, prepared_data, tmp_path_factory, worker_id) -> Path:
    """The two 2-rank resumes, from copies of the reference at step 2, in one launch (made once): the damaged run
    first (in fresh processes), then the one with a hostile file (its refusal ends the processes, through the CLI's
    own exit). DIR/damaged/run and DIR/hostile/run; the exit codes and rank 0's output of each in DIR/NAME/."""
    def make(d: Path) -> None:
        damaged, hostile = (_copy_at_step_2(reference, d / name / "run") for name in ("damaged", "hostile"))
        _damage(damaged)
        _plant_hostile(hostile, d / "hostile" / "PWNED")
        for run, r in zip((damaged, hostile), run_mains(_args(damaged, prepared_data, 2),
                                                        _args(hostile, prepared_data, 2), nproc=2, merge_stderr=True)):
            _record(run.parent, r.rcs, r.stdout)

    return made_once(tmp_path_factory, worker_id, "deepspeed_integrity_resumes", make)


def test_damaged_checkpoints_fall_back_bitwise(reference, resumes):
    run = resumes / "damaged" / "run"
    result, out = _result(run.parent)
    assert result["rcs"] == [0, 0], out[-4000:]
    warnings = [ln for ln in out.splitlines() if ln.startswith("warning: checkpoint")]
    assert len(warnings) == 3, out[-4000:]
    for line, (step, name) in zip(warnings, [(8, OPTIM), (6, OPTIM), (4, "trainer_state.json")]):
        assert line.startswith(f"warning: checkpoint step_{step:07d} unusable: ") and name in line, line
    assert f"resumed from {ckpt(run, 2)} at step 2" in out
    assert losses(run, 3) == losses(reference, 3)  # bitwise


def test_code_in_a_deepspeed_file_is_refused_by_resume(resumes):
    run, marker = resumes / "hostile" / "run", resumes / "hostile" / "PWNED"
    bad = ckpt(run, STEPS) / OPTIM
    result, out = _result(run.parent)
    assert result["rcs"] == [2, 2], out[-4000:]
    assert "Traceback" not in out
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"error: {bad}: refused: it asks to load posix.system"), out[-3000:]
    assert not marker.exists() and bad.is_file()


def test_code_in_a_deepspeed_file_is_refused_by_export_and_eval(reference, tmp_path, capsys):
    from mythos.errors import UserError
    from mythos.checkpoint.load import load_run
    from mythos.hf.export_cli import main as export_main
    run, marker = tmp_path / "run", tmp_path / "PWNED"
    shutil.copytree(reference, run)
    model, _, _ = load_run(run)  # the untouched run loads
    assert model is not None
    bad = _plant_hostile(run, marker)
    expected = f"{bad}: refused: it asks to load posix.system"
    with pytest.raises(UserError, match="refused: it asks to load posix.system"):
        load_run(run)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        export_main([str(run), "--out", str(tmp_path / "x.safetensors")])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"error: {expected}")
    assert not marker.exists() and not (tmp_path / "x.safetensors").exists()


def test_eval_loader_falls_back_past_a_damaged_deepspeed_checkpoint(reference, tmp_path, capsys):
    from mythos.checkpoint.load import load_run
    from mythos.checkpoint.deepspeed import load_weights
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    optim = ckpt(run, STEPS) / OPTIM
    optim.write_bytes(optim.read_bytes()[:1000])
    model, _, _ = load_run(run)
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning: checkpoint")]
    assert len(warnings) == 1 and f"{optim}: " in warnings[0] and warnings[0].endswith("trying step_0000006")
    step6 = load_weights(ckpt(reference, 6))
    assert all(torch.equal(v, step6[k]) for k, v in model.state_dict().items())
    assert not all(torch.equal(v, load_weights(ckpt(reference, 8))[k]) for k, v in model.state_dict().items()
                   if k in step6)
