"""Run metrics: `metrics.jsonl` (one object per optimizer step), TensorBoard under `tb/`, and a console line.

Only rank 0 writes. On resume the history is cut back to the checkpoint's step (jsonl rewritten atomically,
TensorBoard's purge_step), so the files read as one uninterrupted run.
"""
from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

# Dense peak bf16 FLOP/s of common accelerators, for MFU.
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def peak_flops(device: torch.device, configured_tflops: float, dtype: torch.dtype = torch.float32) -> float:
    """The MFU denominator: configured, a GPU's bf16 table value, or this CPU's measured matmul rate in the dtype
    the run computes in."""
    if configured_tflops > 0:
        return configured_tflops * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in GPU_PEAK_TFLOPS.items():
            if key in name:
                return tflops * 1e12
        return 100e12
    return measured_cpu_matmul_flops(dtype=dtype)


def measured_cpu_matmul_flops(n: int = 1024, trials: int = 7, dtype: torch.dtype = torch.float32) -> float:
    """Matmul throughput of this CPU (best of several trials: a busy machine only slows a trial down),
    the denominator of CPU MFU."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(trials):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class MetricsLogger:
    def __init__(self, run_dir: str | Path, *, enabled: bool, tensorboard: bool, resume_step: int = 0):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        self._truncate(resume_step)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=resume_step + 1 if resume_step else None)
        self.file = self.path.open("a")

    def _truncate(self, resume_step: int) -> None:
        """Drop lines after the checkpoint we resume from (a killed run may have logged steps past it)."""
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)

    def log_step(self, record: dict[str, Any], scalars: dict[str, float]) -> None:
        """`record` goes to metrics.jsonl; `record` and `scalars` go to TensorBoard."""
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            step = record["step"]
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"train/{k}", v, step)
            for k, v in scalars.items():
                if math.isfinite(v):
                    self.tb.add_scalar(k, v, step)

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        if self.enabled and self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
            self.tb.flush()

    def console(self, msg: str) -> None:
        if self.enabled:
            print(msg, flush=True)

    def warn(self, msg: str) -> None:
        if self.enabled:
            print(f"warning: {msg}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()
