"""The per-step metrics callback: each step's record (loss, lr, grad norm, tok/s, MFU, ...) to metrics.jsonl and
TensorBoard with the per-loop model scalars, and every `train.log_interval` steps (and the first and last) the
console line with tok/s, MFU and the ETA."""
from __future__ import annotations

import time
from typing import Any

import torch

from mythos.config import Config
from mythos.model import model_stats
from mythos.parallel import DistEnv
from mythos.train.callbacks import Callback
from mythos.train.engine import StepResult
from mythos.train.metrics import MetricsLogger, format_duration, memory_mb, peak_flops


class StepMetrics(Callback):
    """Placed after the callbacks whose record fields it writes (profiler, straggler report)."""

    def __init__(self, cfg: Config, env: DistEnv, metrics: MetricsLogger, counters) -> None:
        self.cfg, self.env, self.metrics, self.counters = cfg, env, metrics, counters
        dtype = torch.bfloat16 if cfg.train.dtype == "bf16" else torch.float32
        self.flops_peak = peak_flops(env.device, cfg.metrics.peak_tflops, dtype)
        self.tokens_per_step = cfg.train.global_batch * cfg.train.seq_len
        self.flops_by_loops: dict[int | None, int] = {}
        self.start_step, self.start_s = 0, time.perf_counter()

    def on_start(self, step: int) -> None:
        self.start_step, self.start_s = step, time.perf_counter()

    def flops_per_token(self, loops: int | None) -> int:
        if loops not in self.flops_by_loops:
            self.flops_by_loops[loops] = model_stats(self.cfg.model, n_loops=loops,
                                                     seq_len=self.cfg.train.seq_len)["flops_per_token"]
        return self.flops_by_loops[loops]

    def on_step_end(self, step: int, step_time_s: float, *, result: StepResult, loops: int | None,
                    fields: dict, **_: Any) -> None:
        tok_s = self.tokens_per_step / step_time_s
        mfu = self.flops_per_token(loops) * tok_s / (self.flops_peak * self.env.world_size)
        record = {"step": step, "loss": result.loss, "lr": result.lr, "grad_norm": result.grad_norm,
                  "tokens_per_s": tok_s, "loops": loops if loops is not None else 0, "ponder": result.ponder,
                  "mfu": mfu, "tokens": self.counters.tokens_seen, "world_size": self.env.world_size} | fields
        self.metrics.log_step(record, per_loop_scalars(result.out) | {"sys/memory_mb": memory_mb(self.env.device)})
        last = self.cfg.train.steps
        if step % self.cfg.train.log_interval == 0 or step == last or step == self.start_step + 1:
            eta = (time.perf_counter() - self.start_s) / (step - self.start_step) * (last - step)
            self.metrics.console(f"step {step}/{last} | loss {result.loss:.4f} | loops {record['loops']} | "
                                 f"lr {result.lr:.2e} | gnorm {result.grad_norm:.2f} | {tok_s / 1e3:.1f}k tok/s | "
                                 f"MFU {100 * mfu:.1f}% | ETA {format_duration(eta)}")


def per_loop_scalars(out) -> dict[str, float]:
    scalars = {"model/injection_decay_max": float(out.injection_decay_max), "model/ponder": float(out.ponder)}
    if out.hidden_norm_L is not None:
        for i, v in enumerate(out.hidden_norm_L.tolist()):
            scalars[f"model/hidden_norm/loop_{i:02d}"] = v
    if out.router_load_LE is not None:
        load = out.router_load_LE.float()
        ratio = load.max(dim=1).values / load.mean(dim=1).clamp_min(1e-9)
        for i, v in enumerate(ratio.tolist()):
            scalars[f"moe/load_max_over_mean/loop_{i:02d}"] = v
    for k, v in (out.halt_stats or {}).items():
        scalars[f"act/{k}"] = float(v)
    return scalars
