"""Run metrics: `metrics.jsonl` (one object per optimizer step), TensorBoard under `tb/`, and a console line.

Only rank 0 writes. On resume the history is cut back to the checkpoint's step (jsonl rewritten atomically,
TensorBoard's purge_step), so the files read as one uninterrupted run.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

from mythos.data.atomic import atomic_write

# Dense peak bf16 FLOP/s of common accelerators, for MFU.
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


class Peak(float):
    """The MFU denominator in FLOP/s per rank, with `source`: where the number came from (printed at start-up)."""

    def __new__(cls, value: float, source: str):
        obj = super().__new__(cls, value)
        obj.source = source
        return obj


def peak_flops(device: torch.device, configured_tflops: float, dtype: torch.dtype = torch.float32) -> Peak:
    """The MFU denominator: configured, a GPU's bf16 table value, or this CPU's theoretical peak (an upper bound, so
    MFU stays <= 100%; a matmul timed at start-up reads low on a busy machine and once gave MFU 114%). Rank 0 prints
    the value and its source."""
    if configured_tflops > 0:
        peak = Peak(configured_tflops * 1e12, "metrics.peak_tflops in the config")
    elif device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        key = next((k for k in GPU_PEAK_TFLOPS if k in name), None)
        peak = (Peak(GPU_PEAK_TFLOPS[key] * 1e12, f"dense bf16 datasheet value of the {key} ({name})") if key else
                Peak(100e12, f"unknown GPU {name!r}: a 100 TFLOP/s guess; set metrics.peak_tflops"))
    else:
        peak = cpu_peak_flops(dtype)
    if os.environ.get("RANK", "0") == "0":
        print(f"MFU peak: {peak / 1e12:.3g} TFLOP/s per rank ({peak.source})", flush=True)
    return peak


def _cpuinfo() -> tuple[set[str], float]:
    """(CPU flags, highest clock in GHz this machine reports: cpufreq max, `cpu MHz`, or the model name's @ GHz)."""
    flags: set[str] = set()
    ghz = 0.0
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key = key.strip()
        if key == "flags" and not flags:
            flags = set(val.split())
        elif key == "cpu MHz":
            ghz = max(ghz, float(val) / 1e3)
        elif key == "model name" and "GHz" in val:
            with contextlib.suppress(ValueError):
                ghz = max(ghz, float(val.rsplit("@", 1)[-1].replace("GHz", "").strip()))
    with contextlib.suppress(OSError, ValueError):
        ghz = max(ghz, int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1e6)
    return flags, ghz


def cpu_peak_flops(dtype: torch.dtype = torch.float32, threads: int | None = None) -> Peak:
    """threads x clock x FLOP/cycle/core (two FMA pipes at the widest vector width the CPU has; AMX/AVX512-BF16 for
    bf16). Falls back to a timed matmul when the clock is unknown."""
    flags, ghz = _cpuinfo()
    threads = threads or torch.get_num_threads()
    fp32 = 64 if "avx512f" in flags else 32 if ("avx2" in flags or "fma" in flags) else 16
    per_cycle, unit = fp32, "AVX512" if fp32 == 64 else "AVX2/FMA" if fp32 == 32 else "SSE"
    if dtype == torch.bfloat16 and "amx_bf16" in flags:
        per_cycle, unit = 1024, "AMX-BF16"
    elif dtype == torch.bfloat16 and "avx512_bf16" in flags:
        per_cycle, unit = 128, "AVX512-BF16"
    if ghz <= 0:
        measured = measured_cpu_matmul_flops(dtype=dtype)
        return Peak(measured, "timed 1024^3 matmul at start-up (clock unknown; reads low on a busy machine)")
    return Peak(threads * ghz * 1e9 * per_cycle,
                f"CPU theoretical: {threads} threads x {ghz:.2f} GHz x {per_cycle} FLOP/cycle ({unit}), /proc/cpuinfo")


def measured_cpu_matmul_flops(n: int = 1024, trials: int = 7, dtype: torch.dtype = torch.float32) -> float:
    """Matmul throughput of this CPU (best of several trials: a busy machine only slows a trial down)."""
    g = torch.Generator().manual_seed(0)  # its own generator: a resumed run's global RNG stream stays untouched
    a, b = torch.randn(n, n, generator=g).to(dtype), torch.randn(n, n, generator=g).to(dtype)
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
        atomic_write(self.path, "".join(line + "\n" for line in kept))

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
