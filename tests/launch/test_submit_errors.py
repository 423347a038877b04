"""mythos-submit refuses bad input before anything is submitted: one line naming the problem, exit 2, no job."""
from __future__ import annotations

import subprocess

import pytest

from tests.conftest import REPO, run_cli
from tests.launch.conftest import job_env, job_train_args


def submit(tmp_path, data, *args: str, train: list[str] | None = None, capsys=None):
    """The CLI in this process (torch imported once for all cases); as a subprocess without capsys."""
    argv = [*(train or job_train_args(tmp_path / "run", data)), *args]
    if capsys is None:
        return run_cli(["launch.submit", *argv], env_extra=job_env(), timeout=120)
    from launch.submit import main
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    out = capsys.readouterr()
    return subprocess.CompletedProcess(argv, rc, out.out, out.err)


@pytest.mark.parametrize("case,args,expected", [
    ("missing config", ["--nodes", "2", "--gpus-per-node", "0"], "no-such.toml"),
    ("unknown key", ["--nodes", "2", "--gpus-per-node", "0", "--train.no_such_key", "1"], "train.no_such_key"),
    ("zero nodes", ["--nodes", "0", "--gpus-per-node", "0"], "--nodes 0"),
    ("too many nodes", ["--nodes", "3", "--gpus-per-node", "0"], "--nodes 3: partition debug has 2 nodes"),
    ("unknown partition", ["--nodes", "1", "--gpus-per-node", "0", "--partition", "gpu"], "--partition gpu"),
    ("too many gpus", ["--nodes", "1", "--gpus-per-node", "8"], "--gpus-per-node 8: partition debug has 0 GPUs"),
    ("batch", ["--nodes", "2", "--gpus-per-node", "0", "--tasks-per-node", "3"], "train.global_batch"),
])
def test_bad_input_is_one_line_and_submits_nothing(slurm, prepared_data, tmp_path, capsys, case, args, expected):
    train = None
    if case == "missing config":  # and through the real command line once
        train = ["--config", str(tmp_path / "no-such.toml"), "--data.path", str(prepared_data)]
    before = slurm.queue()
    r = submit(tmp_path, prepared_data, *args, train=train, capsys=None if case == "missing config" else capsys)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert slurm.queue() == before
    assert not (tmp_path / "run" / "slurm").exists()


def test_dry_run_prints_the_sbatch_script(slurm, prepared_data, tmp_path, capsys):
    before = slurm.queue()
    r = submit(tmp_path, prepared_data, "--nodes", "2", "--gpus-per-node", "0", "--time", "30", "--dry-run",
               capsys=capsys)
    assert r.returncode == 0, r.stderr
    script = r.stdout
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --requeue", "#SBATCH --time=30",
                 "#SBATCH --signal=USR2@180", "#SBATCH --partition=debug", "srun --unbuffered",
                 "--kill-on-bad-exit=1", "submitit.core._submit"):
        assert line in script, script
    assert "torchrun" not in script and "gpus" not in script
    assert slurm.queue() == before


def test_signal_lead_fits_the_time_limit():
    from launch.slurm import signal_lead
    assert signal_lead(1, None) == 15 and signal_lead(30, None) == 180 and signal_lead(24 * 60, None) == 300
    assert signal_lead(1, 59) == 59
    from mythos.errors import UserError
    with pytest.raises(UserError, match="--signal-lead 60"):
        signal_lead(1, 60)


def test_templates_are_valid_bash():
    for name in ("train.sbatch", "train_torchrun.sbatch"):
        subprocess.run(["bash", "-n", str(REPO / "slurm" / name)], check=True)


def test_prep_dry_run_and_bad_array(slurm, tmp_path, capsys):
    from launch.submit import main
    from tests.conftest import make_corpus
    src = make_corpus(tmp_path, n_files=2)
    before = slurm.queue()
    assert main(["prep", str(src), "--out", str(tmp_path / "out"), "--array", "4", "--dry-run"]) == 0
    assert "#SBATCH --partition=debug" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["prep", str(src), "--out", str(tmp_path / "out"), "--array", "0"])
    assert e.value.code == 2 and "--array 0" in capsys.readouterr().err
    assert slurm.queue() == before and not (tmp_path / "out").exists()
