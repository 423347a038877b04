"""`[profile] steps = "A-B"` (`--profile.steps A-B`): a torch.profiler trace of optimizer steps A..B on every rank,
with the model's module names in it, and on CUDA a memory snapshot (torchtitan's way), in `RUN/profile/`.

A callback (mythos/train/callbacks.py): `on_step_start(step)` / `on_step_end(step, step_time_s)` with the 1-based
step about to run / just run.
Module names: torch.profiler's `with_modules` covers TorchScript only, so while profiling every named module's
forward runs inside a `record_function("module: <name>")` range (forward hooks, removed after the last step).
Open the trace in https://ui.perfetto.dev (or chrome://tracing); the memory snapshot in https://pytorch.org/memory_viz.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from mythos.config import parse_steps
from mythos.train.callbacks import Callback

_WRAPPERS = ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module.")



def module_label(name: str) -> str:
    for w in _WRAPPERS:
        name = name.replace(w, "")
    return f"module: {name or 'model'}"


class _ModuleRanges:
    """record_function ranges around every named module's forward (pre hook opens, post hook closes)."""

    def __init__(self, model: nn.Module) -> None:
        self.handles = []
        for name, mod in model.named_modules():
            if any(name.endswith(w.rstrip(".")) for w in _WRAPPERS):
                continue  # the wrapper's inner module carries the same name
            self.handles.append(mod.register_forward_pre_hook(self._enter(module_label(name))))
            self.handles.append(mod.register_forward_hook(self._exit, always_call=True))

    @staticmethod
    def _enter(label: str):
        def hook(module, args):
            rf = torch.autograd.profiler.record_function(label)
            rf.__enter__()
            module.__dict__.setdefault("_mythos_ranges", []).append(rf)
        return hook

    @staticmethod
    def _exit(module, args, output):
        stack = module.__dict__.get("_mythos_ranges")
        if stack:
            stack.pop().__exit__(None, None, None)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class StepProfiler(Callback):
    """Profiles steps [first, last] (1-based) on this rank; does nothing outside them or when `steps` is ""."""

    def __init__(self, steps: str, run_dir: str | Path, rank: int, model: nn.Module, device: torch.device,
                 say: Callable[[str], None] = print, warn: Callable[[str], None] = print) -> None:
        self.window = parse_steps(steps)
        self.dir = Path(run_dir) / "profile"
        self.rank, self.model, self.device, self.say, self.warn = rank, model, device, say, warn
        self.prof = None
        self.ranges: _ModuleRanges | None = None
        self.memory = False

    @property
    def stem(self) -> str:
        a, b = self.window
        return f"rank{self.rank}_steps{a}-{b}"

    def on_step_start(self, step: int) -> None:
        if self.window is None or step != self.window[0]:
            return
        from torch.profiler import ProfilerActivity, profile
        self.dir.mkdir(parents=True, exist_ok=True)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        self.memory = self.device.type == "cuda" and _start_memory_history(self.warn if self.rank == 0 else None)
        self.ranges = _ModuleRanges(self.model)
        self.prof = profile(activities=activities, record_shapes=True, profile_memory=True)
        self.prof.__enter__()

    def on_step_end(self, step: int, step_time_s: float | None = None, **_) -> dict:
        if self.prof is None or step != self.window[1]:
            return {}
        self.prof.__exit__(None, None, None)
        self.ranges.remove()
        trace = self.dir / f"trace_{self.stem}.json"
        self.prof.export_chrome_trace(str(trace))
        self.prof = self.ranges = None
        lines = [f"profile: steps {self.window[0]}-{self.window[1]}: trace {trace} (open it in "
                 f"https://ui.perfetto.dev or chrome://tracing; one file per rank)"]
        if self.memory:
            snap = self.dir / f"memory_{self.stem}.pickle"
            torch.cuda.memory._dump_snapshot(str(snap))
            torch.cuda.memory._record_memory_history(enabled=None)
            lines.append(f"profile: CUDA memory snapshot {snap} (drag it into https://pytorch.org/memory_viz)")
        if self.rank == 0:
            for line in lines:
                self.say(line)
        return {}


def _start_memory_history(warn: Callable[[str], None] | None) -> bool:
    """torch.cuda.memory._record_memory_history (private, tested on torch 2.13): skipped with one line if absent."""
    mem = torch.cuda.memory
    if not (callable(getattr(mem, "_record_memory_history", None)) and callable(getattr(mem, "_dump_snapshot", None))):
        if warn is not None:
            warn(f"profile: no CUDA memory snapshot: torch {torch.__version__} lacks "
                 f"torch.cuda.memory._record_memory_history/_dump_snapshot (tested on 2.13)")
        return False
    mem._record_memory_history(max_entries=100_000)
    return True
