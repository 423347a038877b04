"""Checkpoints that survive damage and never run code: every corruption of the newest checkpoint falls back to the
previous one with bitwise-equal losses after it; a crafted `.metadata` is refused by resume and by the three reading
CLIs; a disk filling up mid-save leaves the previous checkpoint intact; async saves write the same bytes as sync ones
and a kill during the background write resumes from the previous checkpoint.

One 12-step reference run (checkpoints every 2 steps, all kept) is copied and damaged for the individual cases."""
from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.conftest import made_once, read_metrics, run_cli, train_args
from tests.mains import run_mains

STEPS = 12
KINDS = ["truncated_distcp", "random_bytes_distcp", "deleted_metadata", "garbage_trainer_state", "manifest_mismatch"]


def args(run: Path, data: Path, *extra: str) -> list[str]:
    return train_args(run, data, STEPS, "--checkpoint.interval", "2", "--checkpoint.keep", "6", *extra)


@pytest.fixture(scope="session")  # not module: the slow-first order splits the module's tests
def reference(prepared_data, tmp_path_factory, worker_id) -> Path:
    """Made once for both xdist workers: the tests copy it or read it, and the trainer takes --data.path from the
    command line, not from the copied config."""
    def make(d: Path) -> None:
        r = run_cli(args(d / "ref", prepared_data))
        assert r.returncode == 0, r.stderr

    return made_once(tmp_path_factory, worker_id, "integrity_reference", make) / "ref"


def ckpt(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:07d}"


def _mount_small_fs(mnt: Path) -> str | None:
    """A 4 MiB tmpfs at `mnt`: one tiny checkpoint (~2.7 MB) fits, a second does not. Why it cannot, or None."""
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    return r.stderr.strip() or "mount failed" if r.returncode else None


def _make_trainer_runs(d: Path, reference: Path, data: Path) -> None:
    """The trainer runs of the slow tests, each on its own run directory as the test set it up: the async run killed
    by a fault while writing step 4 in the background runs alone (it dies); every other run then runs in ONE
    interpreter (run_mains: one start-up instead of six). Disk-full runs write their checkpoints to a small tmpfs,
    whose contents are copied back into the run (then unmounted) for the tests to read. Outcomes: results.json."""
    res: dict = {}
    runs: dict[str, list[str]] = {}  # name: trainer arguments
    runs["async_resumed"] = args(d / "async", data, "--checkpoint.async_save", "true")
    res["async_killed"] = vars(run_cli(runs["async_resumed"], env_extra={"MYTHOS_FAULTS": "checkpoint_write@4"}))
    res["async_after_kill"] = {"latest": (d / "async" / "checkpoints" / "latest").read_text().strip(),
                               "step4": ckpt(d / "async", 4).exists(),
                               "step4_tmp": ckpt(d / "async", 4).with_name("step_0000004.tmp").is_dir()}

    run = d / "every_corruption"  # the five corruptions on the five newest checkpoints at once
    shutil.copytree(reference, run)
    (run / "metrics.jsonl").write_text("".join(line + "\n" for line in
                                               (reference / "metrics.jsonl").read_text().splitlines()[:2]))
    shutil.rmtree(run / "tb")
    res["corrupted_names"] = {step: corrupt(ckpt(run, step), kind) for step, kind in zip((12, 10, 8, 6, 4), KINDS)}
    runs["every_corruption"] = args(run, data)

    run = d / "none_verifies"
    shutil.copytree(reference, run)
    for step in range(2, STEPS + 1, 2):
        corrupt(ckpt(run, step), "manifest_mismatch")
    res["none_verifies_files"] = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    runs["none_verifies"] = args(run, data)

    run = d / "crafted"
    shutil.copytree(reference, run)
    (ckpt(run, STEPS) / ".metadata").write_bytes(pickle.dumps(_RunsCode(d / "PWNED")))
    from mythos.checkpoint import manifest
    manifest.write_manifest(ckpt(run, STEPS), STEPS)  # a forger rewrites the manifest too: it must not matter
    runs["crafted"] = args(run, data)

    mounts = []
    for mode in ("sync", "async"):
        run, mnt = d / f"disk_full_{mode}", d / f"small_fs_{mode}"
        res[f"disk_full_{mode}_skip"] = _mount_small_fs(mnt)
        if res[f"disk_full_{mode}_skip"] is None:
            mounts.append(mnt)
            run.mkdir()
            (mnt / "checkpoints").mkdir()
            (run / "checkpoints").symlink_to(mnt / "checkpoints")
            runs[f"disk_full_{mode}"] = args(run, data, "--checkpoint.async_save", str(mode == "async").lower())
    try:
        res.update({name: vars(r) for name, r in zip(runs, run_mains(*runs.values()))})
        for mnt in mounts:  # the checkpoints the run left on its full disk, into the run
            link = d / mnt.name.replace("small_fs", "disk_full") / "checkpoints"
            link.unlink()
            shutil.copytree(mnt / "checkpoints", link)
    finally:
        for mnt in mounts:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
    (d / "results.json").write_text(json.dumps(res))


@pytest.fixture(scope="session")  # not module: the slow-first order splits the module's tests
def trainer_runs(reference, prepared_data, tmp_path_factory, worker_id) -> SimpleNamespace:
    """The slow tests' trainer runs (_make_trainer_runs), made once for all xdist workers: their directory `dir` and
    outcomes."""
    d = made_once(tmp_path_factory, worker_id, "integrity_trainer_runs",
                  lambda d: _make_trainer_runs(d, reference, prepared_data))
    return SimpleNamespace(dir=d, **json.loads((d / "results.json").read_text()))


def losses(run: Path, first: int) -> list[float]:
    m = read_metrics(run)
    return [m[s]["loss"] for s in range(first, STEPS + 1)]


def corrupt(ck: Path, kind: str) -> str:
    """Damage checkpoint directory `ck` in one way; returns the file name the fallback warning must name."""
    shard = ck / "__0_0.distcp"
    data = shard.read_bytes()
    if kind == "truncated_distcp":
        shard.write_bytes(data[: len(data) // 2])
    elif kind == "random_bytes_distcp":  # the report: 100 random bytes over the start of the shard
        shard.write_bytes(random.Random(0).randbytes(100) + data[100:])
    elif kind == "deleted_metadata":
        (ck / ".metadata").unlink()
        return ".metadata"
    elif kind == "garbage_trainer_state":
        (ck / "trainer_state.json").write_text('{"step": oops')
        return "trainer_state.json"
    elif kind == "manifest_mismatch":
        m = json.loads((ck / "manifest.json").read_text())
        m["files"]["__0_0.distcp"]["sha256"] = "0" * 64
        (ck / "manifest.json").write_text(json.dumps(m))
    return "__0_0.distcp"


def model_for(run: Path):
    from mythos.config import build_config, load_toml
    from mythos.model import Mythos
    return Mythos(build_config(load_toml(run / "config.toml")).model)


def model_and_optimizer(run: Path):
    from mythos.config import build_config, load_toml
    from mythos.train.optim import build_optimizer
    model = model_for(run)
    return model, build_optimizer(model, build_config(load_toml(run / "config.toml")).train)


@pytest.mark.parametrize("kind", KINDS + ["distcp_damaged_manifest_rewritten"])
def test_each_corruption_falls_back_one_checkpoint(reference, tmp_path, kind):
    from mythos.checkpoint import manifest
    from mythos.checkpoint import CheckpointManager
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    if kind == "distcp_damaged_manifest_rewritten":  # passes verification, fails inside DCP's load
        corrupt(ckpt(run, STEPS), "truncated_distcp")
        manifest.write_manifest(ckpt(run, STEPS), STEPS)
        name = f"{ckpt(run, STEPS)}: loading failed: RuntimeError: PytorchStreamReader failed"
    else:
        name = corrupt(ckpt(run, STEPS), kind)
    said: list[str] = []
    mgr = CheckpointManager(run, keep=6, say=said.append)
    state = mgr.load(*model_and_optimizer(run))  # the resume path: model and optimizer
    assert mgr.loaded_from == ckpt(run, STEPS - 2) and state["step"] == STEPS - 2
    assert len(said) == 1 and said[0].startswith("warning: checkpoint step_0000012 unusable:"), said
    assert name in said[0] and said[0].endswith("trying step_0000010") and "\n" not in said[0]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == sorted(
        p.name for p in (reference / "checkpoints").iterdir())  # nothing deleted


@pytest.mark.slow
def test_every_corruption_resume_falls_back_bitwise(reference, trainer_runs):
    """The five corruptions on the five newest checkpoints at once: resume walks back to step 2, saying why at each."""
    run, r = trainer_runs.dir / "every_corruption", trainer_runs.every_corruption
    assert r["returncode"] == 0, r["stderr"]
    warnings = [ln for ln in r["stderr"].splitlines() if ln.startswith("warning: checkpoint")]
    assert len(warnings) == 5, r["stderr"]
    for line, (step, name) in zip(warnings, trainer_runs.corrupted_names.items()):
        assert f"step_{int(step):07d} unusable: " in line and name in line, line
    assert f"resumed from {ckpt(run, 2)} at step 2" in r["stdout"]
    assert losses(run, 3) == losses(reference, 3)  # bitwise
    assert (run / "checkpoints" / "latest").read_text().strip() == f"step_{STEPS:07d}"


@pytest.mark.slow
def test_no_verifying_checkpoint_is_an_error_and_deletes_nothing(trainer_runs):
    run, r = trainer_runs.dir / "none_verifies", trainer_runs.none_verifies
    assert r["returncode"] == 2 and "Traceback" not in r["stderr"], r["stderr"]
    assert r["stderr"].strip().splitlines()[-1].startswith("error: ") and "no checkpoint verifies and loads" in r["stderr"]
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == trainer_runs.none_verifies_files


# ---- hostile files --------------------------------------------------------------------------------------------------
class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.slow
def test_crafted_metadata_is_refused_everywhere(trainer_runs, tmp_path, capsys):
    from mythos.evals.cli import main as eval_main
    from mythos.evals.generate_cli import main as generate_main
    from mythos.hf.export_cli import main as export_main
    run, marker, r = trainer_runs.dir / "crafted", trainer_runs.dir / "PWNED", trainer_runs.crafted
    expected = f"error: {ckpt(run, STEPS) / '.metadata'}: refused: it asks to load posix.system"

    # the trainer in its own interpreter (it installs signal handlers), the reading CLIs in this one
    assert r["returncode"] == 2 and "Traceback" not in r["stderr"], r["stderr"]
    assert r["stderr"].strip().splitlines()[-1].startswith(expected), r["stderr"]
    for main, argv in ((eval_main, [str(run), "--loops", "1"]), (generate_main, [str(run), "--prompt", "def"]),
                       (export_main, [str(run), "--out", str(tmp_path / "x.safetensors")])):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        assert capsys.readouterr().err.strip().startswith(expected)
    assert not marker.exists()
    assert (ckpt(run, STEPS) / ".metadata").is_file()  # refused, not deleted


def test_byte_entries_load_weights_only(tmp_path):
    """Non-tensor entries (optimizer param groups) are unpickled weights_only; DCP's default would run code."""
    import io

    from torch.distributed.checkpoint.metadata import MetadataIndex
    from torch.distributed.checkpoint.planner import LoadItemType, ReadItem

    from mythos.checkpoint.safe_pickle import SafeLoadPlanner, UnsafeCheckpoint
    planner = SafeLoadPlanner()
    planner.set_up_planner({"x": {"lr": 0.0}}, None, True)
    item = ReadItem(type=LoadItemType.BYTE_IO, dest_index=MetadataIndex("x.lr"), dest_offsets=torch.Size([0]),
                    storage_index=MetadataIndex("x.lr"), storage_offsets=torch.Size([0]), lengths=torch.Size([0]))
    buf = io.BytesIO()
    torch.save({"lr": 0.5, "betas": (0.9, 0.95)}, buf)
    buf.seek(0)
    planner.load_bytes(item, buf)
    assert planner.original_state_dict["x"]["lr"] == {"lr": 0.5, "betas": (0.9, 0.95)}
    marker = tmp_path / "PWNED"
    buf = io.BytesIO()
    torch.save(_RunsCode(marker), buf)
    buf.seek(0)
    with pytest.raises(UnsafeCheckpoint, match="refused by weights_only"):
        planner.load_bytes(item, buf)
    assert not marker.exists()


# ---- disk full ------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_disk_full_keeps_previous_checkpoint(reference, trainer_runs, mode):
    """Checkpoints on a 4 MiB tmpfs (step 2's fits, step 4's does not). Async: the background write of step 4 fails;
    the error surfaces when the loop next waits for it (step 6)."""
    from mythos.checkpoint import manifest
    from mythos.checkpoint import CheckpointManager
    if getattr(trainer_runs, f"disk_full_{mode}_skip"):
        pytest.skip(f"cannot mount a tmpfs here: {getattr(trainer_runs, f'disk_full_{mode}_skip')}")
    run, r = trainer_runs.dir / f"disk_full_{mode}", getattr(trainer_runs, f"disk_full_{mode}")
    assert r["returncode"] == 2 and "Traceback" not in r["stderr"], r["stderr"]
    last = r["stderr"].strip().splitlines()[-1]
    assert last.startswith("error: checkpoint step 4: writing") and "disk full (ENOSPC)" in last, r["stderr"]
    assert "`latest` still names step_0000002" in last
    ck = run / "checkpoints"  # copied from the tmpfs after the run
    assert sorted(p.name for p in ck.iterdir()) == ["latest", "step_0000002"]
    assert (ck / "latest").read_text().strip() == "step_0000002"
    assert manifest.verify(ck / "step_0000002") is None
    model, ref_model = model_for(run), model_for(reference)
    CheckpointManager(run, keep=6).load(model, optimizer=None)
    CheckpointManager(reference, keep=6).load(ref_model, None, path=ckpt(reference, 2))
    ref_sd = ref_model.state_dict()
    assert all(torch.equal(v, ref_sd[k]) for k, v in model.state_dict().items())


# ---- async saves ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_async_save_matches_sync_and_survives_kill(reference, trainer_runs):
    """Killed (SIGKILL from the background writer) while writing step 4, then resumed to the end."""
    run, killed, after = trainer_runs.dir / "async", trainer_runs.async_killed, trainer_runs.async_after_kill
    assert killed["returncode"] == -9, killed["stderr"]
    assert after == {"latest": "step_0000002", "step4": False, "step4_tmp": True}
    r = trainer_runs.async_resumed
    assert r["returncode"] == 0, r["stderr"]
    assert f"resumed from {ckpt(run, 2)} at step 2" in r["stdout"]
    assert "written in the background, committed" in r["stderr"]
    assert losses(run, 3) == losses(reference, 3)
    for step in range(2, STEPS + 1, 2):  # the same shards and state as the sync saves, bit for bit
        got, ref = (json.loads((ckpt(d, step) / "manifest.json").read_text())["files"] for d in (run, reference))
        for name in ("__0_0.distcp", "trainer_state.json"):
            assert got[name] == ref[name], (step, name)
    # RNG files embed a per-save serialization id: compare the state (step 2: both runs had the same history)
    rng_got, rng_ref = (torch.load(ckpt(d, 2) / "rng_rank00000.pt", weights_only=True) for d in (run, reference))
    assert torch.equal(rng_got["cpu"], rng_ref["cpu"])


def test_metadata_naming_files_outside_the_checkpoint_is_refused(reference, tmp_path):
    """Only DCP types, but a storage entry pointing outside the directory: refused too (and real metadata loads)."""
    from mythos.checkpoint.safe_pickle import UnsafeCheckpoint, load_metadata
    md = load_metadata(ckpt(reference, STEPS) / ".metadata")
    assert {info.relative_path for info in md.storage_data.values()} == {"__0_0.distcp"}
    first = next(iter(md.storage_data))
    md.storage_data[first].relative_path = "../../../etc/passwd"
    (tmp_path / ".metadata").write_bytes(pickle.dumps(md))
    with pytest.raises(UnsafeCheckpoint, match="is not a file in the checkpoint directory"):
        load_metadata(tmp_path / ".metadata")
