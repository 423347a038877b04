"""The training loop. Reads top to bottom: set up, resume, then one optimizer step per iteration.

Checkpointing, metrics and signal handling are small components (checkpoint.py, metrics.py, signals.py) hung off it.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import torch

from mythos.config import Config, save_config
from mythos.data import build_loader, check_vocab, read_metadata
from mythos.data.loader import parse_spec
from mythos.errors import UserError
from mythos.train.validate import validation_losses
from mythos.model import LoopSampler, ModelConfig, Mythos, model_stats
from mythos.parallel import DistEnv, meta_device
from mythos.train import faults
from mythos.parallel.mesh import describe_mesh
from mythos.train.batch import batch_split
from mythos.train.engines import build_engine
from mythos.train.metrics import MetricsLogger, format_duration, memory_mb, peak_flops
from mythos.train.signals import EXIT_REQUEUE, StopFlag, stop_flag
from mythos.train.step_callbacks import build_step_callbacks
from mythos.train.watchdog import Watchdog, pg_timeout_s

EXIT_DIVERGED = 3


class TrainingDiverged(Exception):
    pass


def loops_for_step(sampler: LoopSampler, seed: int, step: int) -> int:
    """The loop count of `step`, a function of (seed, step) only: every rank draws the same count, and a resumed
    run draws what the uninterrupted run drew, with no sampler state to save."""
    return sampler.sample(torch.Generator().manual_seed(seed * 1_000_003 + step))


def resolve_model_config(cfg: Config, meta: dict, data_dir: Path) -> ModelConfig:
    """The data decides the vocab unless the user set model.vocab_size, which must then match it."""
    named_vocab = ModelConfig.named(cfg.model_name).vocab_size
    if cfg.model.vocab_size != named_vocab:
        check_vocab(meta, cfg.model.vocab_size, data_dir)
        return cfg.model
    return dataclasses.replace(cfg.model, vocab_size=int(meta["vocab_size"]))


def run(cfg: Config) -> int:
    """The exit code of one training run, the one entry of `mythos-train` and the submitit job (launch/job.py):
    0 done, EXIT_DIVERGED (3) on TrainingDiverged, EXIT_REQUEUE (75) when stopped to be requeued."""
    try:
        return train(cfg)
    except TrainingDiverged as e:
        print(f"error: training diverged: {e}", file=sys.stderr)
        return EXIT_DIVERGED


def train(cfg: Config) -> int:
    stop = stop_flag()  # before any slow start-up work: a signal from here on stops the run at its first boundary
    env = DistEnv.from_environment(cfg.train.device, timeout_s=pg_timeout_s(cfg.parallel.collective_timeout_s))
    try:
        return _train(cfg, env, stop)
    finally:
        env.shutdown()


def _train(cfg: Config, env: DistEnv, stop: StopFlag) -> int:
    t = cfg.train
    run_dir = Path(cfg.run.dir)
    if not cfg.data.path:
        raise UserError("config key 'data.path': required (a directory made by mythos-prep)")
    data_dir = Path(parse_spec(cfg.data.path)[0][0])
    meta = read_metadata(data_dir)
    cfg.model = resolve_model_config(cfg, meta, data_dir)
    split = batch_split(cfg, env.world_size)  # UserError before anything is written
    mesh_desc = describe_mesh(env.world_size, cfg.parallel)
    if env.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.toml")

    # ---- model, optimizer, data
    fault = faults.install()  # the fault-injection callback, only when MYTHOS_FAULTS is set (tests)
    if fault:
        fault.on_startup()
    torch.manual_seed(t.seed)
    with meta_device():  # no rank builds the whole model: parallelize materialises its shards
        model = Mythos(cfg.model)
    stats = model_stats(cfg.model, n_loops=1, seq_len=t.seq_len)
    engine = build_engine(model, cfg, env, run_dir)  # parallelize + optimizer + schedule (FSDP or DeepSpeed)
    model = engine.model
    if fault:
        fault.attach(engine)
    loader = build_loader(cfg.data.path, split="train", seq_len=t.seq_len, global_batch=t.global_batch,
                          rank=env.rank, world_size=env.world_size, seed=t.seed)
    sampler = LoopSampler(cfg.model.loops) if cfg.model.mode != "dense" else None
    ckpt = engine.ckpt

    # ---- resume (the newest checkpoint that verifies and loads on every rank)
    step, tokens_seen = 0, 0
    state = engine.load()
    if state is not None:
        if state.get("vocab_size", cfg.model.vocab_size) != cfg.model.vocab_size:
            raise UserError(f"{ckpt.loaded_from}: checkpoint vocab {state['vocab_size']} differs from the data's "
                            f"{cfg.model.vocab_size}")
        loader.load_state_dict(state["data"])
        step, tokens_seen = state["step"], state["tokens_seen"]
    metrics = MetricsLogger(run_dir, enabled=env.rank == 0, tensorboard=cfg.metrics.tensorboard, resume_step=step)
    if step:
        metrics.console(f"resumed from {ckpt.loaded_from} at step {step}")
    metrics.console(f"model {cfg.model_name}: {stats['total_params'] / 1e6:.2f}M params, "
                    f"{stats['active_params'] / 1e6:.2f}M active/token | {mesh_desc} "
                    f"| batch {split.describe()} | device {env.device}")

    def trainer_state() -> dict:
        return {"data": loader.state_dict(), "tokens_seen": tokens_seen,
                "vocab_size": cfg.model.vocab_size, "model_config": dataclasses.asdict(cfg.model)}

    def save(at_step: int) -> None:
        engine.save(at_step, trainer_state())
        metrics.console(f"checkpoint step {at_step} -> {ckpt.root / f'step_{at_step:07d}'}")

    # ---- the loop
    bf16 = t.dtype == "bf16"
    flops_peak = peak_flops(env.device, cfg.metrics.peak_tflops, torch.bfloat16 if bf16 else torch.float32)
    tokens_per_step = t.global_batch * t.seq_len
    start_step, t_start, t_last_ckpt = step, time.perf_counter(), time.perf_counter()
    nonfinite_in_a_row = 0
    flops_by_loops: dict[int | None, int] = {}
    model.train()
    watchdog = Watchdog(run_dir, cfg.parallel.collective_timeout_s).start()
    callbacks = build_step_callbacks(cfg, env, run_dir, model, metrics)  # profiler, straggler report
    while step < t.steps:
        watchdog.beat(step + 1)
        if fault:
            fault.on_step_start(step + 1)
        ckpt.poll()
        for cb in callbacks:
            cb.on_step_start(step + 1)
        t0 = time.perf_counter()
        loops = loops_for_step(sampler, t.seed, step) if sampler else None
        inputs_BT, targets_BT = loader.next_batch()
        result = engine.train_step(inputs_BT, targets_BT, loops)
        if fault:
            fault.after_train_step(time.perf_counter() - t0)
        ce_mean, ponder, grad_norm, lr, out = result.loss, result.ponder, result.grad_norm, result.lr, result.out
        step += 1
        if result.skipped:
            nonfinite_in_a_row += 1
            metrics.warn(f"step {step}: non-finite loss {ce_mean} / grad norm {grad_norm}; step skipped "
                         f"({nonfinite_in_a_row}/{t.max_nonfinite_steps})")
            if nonfinite_in_a_row >= t.max_nonfinite_steps:
                raise TrainingDiverged(f"{nonfinite_in_a_row} non-finite steps in a row (train.max_nonfinite_steps); "
                                       f"stopped at step {step}; last checkpoint: {ckpt.latest_dir()}")
            continue
        nonfinite_in_a_row = 0
        tokens_seen += tokens_per_step

        # ---- metrics
        dt = time.perf_counter() - t0
        tok_s = tokens_per_step / dt
        if loops not in flops_by_loops:
            flops_by_loops[loops] = model_stats(cfg.model, n_loops=loops, seq_len=t.seq_len)["flops_per_token"]
        flops_tok = flops_by_loops[loops]
        mfu = flops_tok * tok_s / (flops_peak * env.world_size)
        record = {"step": step, "loss": ce_mean, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tok_s,
                  "loops": loops if loops is not None else 0, "ponder": ponder,
                  "mfu": mfu, "tokens": tokens_seen, "world_size": env.world_size}
        for cb in callbacks:
            record |= cb.on_step_end(step, dt)
        metrics.log_step(record, per_loop_scalars(out) | {"sys/memory_mb": memory_mb(env.device)})
        if step % t.log_interval == 0 or step == t.steps or step == start_step + 1:
            elapsed = time.perf_counter() - t_start
            eta = elapsed / (step - start_step) * (t.steps - step)
            metrics.console(f"step {step}/{t.steps} | loss {ce_mean:.4f} | loops {record['loops']} | lr {lr:.2e} | "
                            f"gnorm {grad_norm:.2f} | {tok_s / 1e3:.1f}k tok/s | MFU {100 * mfu:.1f}% | "
                            f"ETA {format_duration(eta)}")

        # ---- validation, checkpoints, stop requests
        if t.eval_interval and step % t.eval_interval == 0 and step < t.steps:
            run_validation(model, cfg, env, metrics, step)
        now = time.perf_counter()
        timed = cfg.checkpoint.interval_minutes > 0 and now - t_last_ckpt >= 60 * cfg.checkpoint.interval_minutes
        if t.time_limit_minutes and now - t_start >= 60 * t.time_limit_minutes:
            stop.request()
        stopping, timed = stop.agree(env.device, timed)
        if stopping or timed or (cfg.checkpoint.interval and step % cfg.checkpoint.interval == 0):
            save(step)
            t_last_ckpt = time.perf_counter()
        if stopping and step < t.steps:
            watchdog.stop()
            ckpt.wait()
            metrics.console(f"stop requested (signal {stop.signum}); checkpointed step {step}; "
                            f"exit {EXIT_REQUEUE} (requeue)")
            metrics.close()
            return EXIT_REQUEUE

    watchdog.stop()
    if cfg.checkpoint.final and not ckpt.committed(step):
        save(step)
    ckpt.wait()
    if step > start_step or step == t.steps:
        run_validation(model, cfg, env, metrics, step)
    metrics.close()
    return 0


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


def run_validation(model, cfg: Config, env: DistEnv, metrics: MetricsLogger, step: int) -> None:
    """Validation loss at the training loop count and at twice it (the 'think longer' check)."""
    t = cfg.model.loops.train_count
    results = {f"val/loss_loops_{n}" if n else "val/loss": loss
               for n, loss in validation_losses(model, cfg, env, [t, 2 * t])}
    metrics.log_scalars(step, results)
    metrics.console("validation | " + " | ".join(f"{k} {v:.4f}" for k, v in results.items()))
    model.train()
