"""One DeepSpeed job through mythos-submit on the real two-node SLURM: 2 tasks (one per node) train under ZeRO-2,
checkpoint through the verified CheckpointManager and complete; every task returns."""
from __future__ import annotations

import json

import pytest
import submitit

from tests.launch.conftest import losses
from tests.launch.test_submit import job_log, submit

pytestmark = pytest.mark.slow
STEPS = 6


def test_deepspeed_job_runs_across_two_nodes(slurm, prepared_data, tmp_path):
    from mythos.checkpoint import manifest
    run = tmp_path / "ds"
    jid = submit(run, prepared_data, "--time", "10", "--train.steps", str(STEPS), "--parallel.backend", "deepspeed",
                 "--parallel.zero_stage", "2")
    job = {"id": jid, "info": slurm.wait_done(jid, timeout=300), "run": run}
    log = job_log(job)
    assert job["info"]["JobState"] == "COMPLETED", log[-3000:]
    assert job["info"]["NodeList"] == "node[1-2]"
    assert "world 2" in log
    assert json.loads((run / "deepspeed_config.json").read_text())["zero_optimization"]["stage"] == 2
    assert sorted(losses(run)) == list(range(1, STEPS + 1))
    last = run / "checkpoints" / f"step_{STEPS:07d}"
    assert (run / "checkpoints" / "latest").read_text().strip() == last.name
    for r in range(2):  # each node's task wrote its ZeRO-2 optimizer partition
        assert (last / f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt").is_file()
    assert manifest.verify(last, required=("trainer_state.json",)) is None
    results = submitit.SlurmJob(run / "slurm", jid, tasks=[0, 1]).results()
    assert [r["exit"] for r in results] == [0, 0] and [r["rank"] for r in results] == [0, 1]
