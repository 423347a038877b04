"""`profile.steps = "A-B"`: a torch.profiler Chrome trace of those steps in RUN/profile/, with our module names, and
a log line that says where it is and how to open it (on its own, and through the trainer CLI)."""
from __future__ import annotations

import json

import pytest
import torch

from mythos.errors import UserError
from mythos.train.profile import StepProfiler, parse_steps


def test_parse_steps():
    assert parse_steps("") is None and parse_steps("3-4") == (3, 4) and parse_steps(" 2 - 2 ") == (2, 2)
    for bad in ("4-3", "0-2", "3", "a-b"):
        with pytest.raises(UserError, match=r"^config key 'profile.steps': expected \"A-B\""):
            parse_steps(bad)


def test_trace_of_the_configured_steps_holds_our_module_names(tmp_path, one_thread):
    from mythos.model import Mythos
    from tests.parallel.dist_run import tiny_model_config
    torch.manual_seed(0)
    model = Mythos(tiny_model_config())
    said = []
    prof = StepProfiler("2-3", tmp_path, 0, model, torch.device("cpu"), say=said.append)
    tokens = torch.randint(0, 256, (1, 17))
    for step in range(1, 5):
        prof.on_step_start(step)
        model(tokens[:, :-1]).logits_BTV.sum().backward()
        prof.on_step_end(step, 0.1)
    trace = tmp_path / "profile" / "trace_rank0_steps2-3.json"
    names = {e.get("name") for e in json.loads(trace.read_text())["traceEvents"]}
    for module in ("module: model", "module: prelude.0", "module: recurrence", "module: recurrence.block.ffn.experts"):
        assert module in names, module
    assert len(said) == 1 and str(trace) in said[0] and "ui.perfetto.dev" in said[0]
    assert not model._forward_pre_hooks and not model.recurrence._forward_hooks  # hooks removed after the window


@pytest.mark.slow
def test_trainer_writes_the_trace(profiled_run):
    run, r = profiled_run  # 3 steps, --profile.steps 2-3
    assert r.returncode == 0, r.stderr[-3000:]
    trace = run / "profile" / "trace_rank0_steps2-3.json"
    assert f"trace {trace}" in r.stdout and "chrome://tracing" in r.stdout
    assert "module: recurrence" in trace.read_text()
