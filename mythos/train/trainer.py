"""The training loop. A Trainer is built once from its Stateful parts (the engine's model, optimizer and schedule,
the data loader, the run's counters; each rank's RNG travels with its checkpoint files) and its callbacks
(step_callbacks.py); `fit` reads top to bottom: one optimizer step per iteration, the callbacks' hooks around it.
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
from mythos.model import LoopSampler, ModelConfig, Mythos, model_stats
from mythos.parallel import DistEnv, meta_device
from mythos.parallel.mesh import describe_mesh
from mythos.train import faults
from mythos.train.batch import batch_split
from mythos.train.counters import RunCounters
from mythos.train.engine import StepResult
from mythos.train.engines import build_engine
from mythos.train.metrics import MetricsLogger
from mythos.train.signals import EXIT_REQUEUE, StopFlag, stop_flag
from mythos.train.step_callbacks import build_callbacks
from mythos.train.watchdog import pg_timeout_s

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
    return Trainer(cfg, env, stop).fit()


class Trainer:
    """Set up once: the config's checks, the Stateful parts, the resume, the callbacks; then `fit`."""

    def __init__(self, cfg: Config, env: DistEnv, stop: StopFlag) -> None:
        t = self.t = cfg.train
        run_dir = Path(cfg.run.dir)
        if not cfg.data.path:
            raise UserError("config key 'data.path': required (a directory made by mythos-prep)")
        data_dir = Path(parse_spec(cfg.data.path)[0][0])
        cfg.model = resolve_model_config(cfg, read_metadata(data_dir), data_dir)
        split = batch_split(cfg, env.world_size)  # UserError before anything is written
        mesh_desc = describe_mesh(env.world_size, cfg.parallel)
        if env.rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, run_dir / "config.toml")

        # ---- model, optimizer, data: the Stateful parts
        fault = faults.install()  # the fault-injection callback, only when MYTHOS_FAULTS is set (tests)
        if fault:
            fault.on_setup()
        torch.manual_seed(t.seed)
        with meta_device():  # no rank builds the whole model: parallelize materialises its shards
            model = Mythos(cfg.model)
        stats = model_stats(cfg.model, n_loops=1, seq_len=t.seq_len)
        self.engine = build_engine(model, cfg, env, run_dir)  # parallelize + optimizer + schedule (FSDP or DeepSpeed)
        if fault:
            fault.on_engine(self.engine)
        self.loader = build_loader(cfg.data.path, split="train", seq_len=t.seq_len, global_batch=t.global_batch,
                                   rank=env.rank, world_size=env.world_size, seed=t.seed)
        self.sampler = LoopSampler(cfg.model.loops) if cfg.model.mode != "dense" else None
        self.counters = RunCounters(cfg.model)
        parts = {"counters": self.counters, "data": self.loader}  # the counters first: a vocab mismatch names itself

        # ---- resume (the newest checkpoint that verifies and loads on every rank), then the callbacks
        self.engine.load(parts)
        self.metrics = MetricsLogger(run_dir, enabled=env.rank == 0, tensorboard=cfg.metrics.tensorboard,
                                     resume_step=self.counters.step)
        if self.counters.step:
            self.metrics.console(f"resumed from {self.engine.ckpt.loaded_from} at step {self.counters.step}")
        self.metrics.console(f"model {cfg.model_name}: {stats['total_params'] / 1e6:.2f}M params, "
                             f"{stats['active_params'] / 1e6:.2f}M active/token | {mesh_desc} "
                             f"| batch {split.describe()} | device {env.device}")
        self.callbacks = build_callbacks(cfg, env, run_dir, self.engine, parts, self.counters, self.metrics, stop,
                                         fault)
        self.nonfinite_in_a_row = 0

    def fit(self) -> int:
        """0 when the last step is done, EXIT_REQUEUE when the ranks agreed to stop early (after saving)."""
        t, counters, callbacks = self.t, self.counters, self.callbacks
        self.engine.model.train()
        callbacks.on_start(counters.step)
        while counters.step < t.steps:
            step = counters.step + 1
            callbacks.on_step_start(step)
            t0 = time.perf_counter()
            loops = loops_for_step(self.sampler, t.seed, step - 1) if self.sampler else None
            inputs_BT, targets_BT = self.loader.next_batch()
            result = self.engine.train_step(inputs_BT, targets_BT, loops)
            callbacks.on_train_step(step, time.perf_counter() - t0)
            counters.step = step
            if self.skipped(step, result):
                continue
            counters.tokens_seen += t.global_batch * t.seq_len
            callbacks.on_step_end(step, time.perf_counter() - t0, result=result, loops=loops)
            stopping, saving = callbacks.agree(step)
            if stopping or saving:
                callbacks.on_save(step)
            if stopping and step < t.steps:
                callbacks.on_stop(step)
                self.metrics.close()
                return EXIT_REQUEUE
        callbacks.on_end(counters.step)
        self.metrics.close()
        return 0

    def skipped(self, step: int, result: StepResult) -> bool:
        """Whether the step's update was skipped (non-finite loss or norm); TrainingDiverged after
        train.max_nonfinite_steps of them in a row."""
        if not result.skipped:
            self.nonfinite_in_a_row = 0
            return False
        self.nonfinite_in_a_row += 1
        limit = self.t.max_nonfinite_steps
        self.metrics.warn(f"step {step}: non-finite loss {result.loss} / grad norm {result.grad_norm}; step skipped "
                          f"({self.nonfinite_in_a_row}/{limit})")
        if self.nonfinite_in_a_row >= limit:
            raise TrainingDiverged(f"{self.nonfinite_in_a_row} non-finite steps in a row (train.max_nonfinite_steps); "
                                   f"stopped at step {step}; last checkpoint: {self.engine.ckpt.latest_dir()}")
        return True
