"""The one config tree: nested dataclasses, filled from TOML and dotted CLI overrides (`--train.steps 30`).

Unknown keys and values of the wrong type are UserErrors that name the key, so a typo never trains silently with a
default. `model` is special: `model.name` picks a named ModelConfig and every other `model.*` key overrides a field of
it, through the same machinery.
"""
from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mythos.errors import UserError
from mythos.model import ModelConfig


@dataclass
class RunConfig:
    dir: str = "runs/default"


@dataclass
class DataConfig:
    path: str = ""  # a prepared directory, or "dirA@0.7,dirB@0.3" to blend
    val_batches: int = 4  # global batches read for one validation pass


@dataclass
class TrainConfig:
    steps: int = 100
    seed: int = 0
    global_batch: int = 8  # sequences per optimizer step, over all ranks
    micro_batch: int = 8  # sequences per forward/backward on one rank
    seq_len: int = 256
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 10
    schedule: str = "cosine"  # cosine | wsd
    decay_fraction: float = 0.2  # wsd: the final fraction of steps that decays
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    dtype: str = "fp32"  # fp32 | bf16 (autocast)
    device: str = "auto"  # auto | cpu | cuda
    max_nonfinite_steps: int = 3  # consecutive skipped steps before stopping
    log_interval: int = 10
    eval_interval: int = 0  # 0: validate only at the end
    time_limit_minutes: float = 0.0  # 0: none; else checkpoint and stop cleanly when reached


@dataclass
class CheckpointConfig:
    interval: int = 100  # steps; 0 disables step-based checkpoints
    interval_minutes: float = 0.0  # 0 disables time-based checkpoints
    keep: int = 3
    final: bool = True
    async_save: bool = False  # write in a background thread; the loop waits only for the in-memory copy


@dataclass
class ParallelConfig:
    backend: str = "fsdp"  # fsdp | deepspeed (ZeRO; mythos/train/engine_deepspeed.py)
    dp_replicate: int = 1  # HSDP: shard groups, each of dp_shard x ep consecutive ranks, replicated (1: plain FSDP)
    dp_shard: int = -1  # -1: all ranks not used by dp_replicate and ep
    ep: int = 1
    ac: str = "loop"  # none | loop | block | selective
    compile: bool = False
    mixed_precision: str = "fp32"  # fp32 | bf16 (FSDP param dtype for compute; DeepSpeed's bf16 mode)
    zero_stage: int = 2  # deepspeed: 1 | 2 | 3
    offload_optimizer: str = "none"  # deepspeed: none | cpu (ZeRO-Offload of optimizer state)
    offload_params: str = "none"  # deepspeed: none | cpu (ZeRO-3 only)
    deepspeed_config: str = ""  # deepspeed: a JSON file merged over the generated config
    collective_timeout_s: float = 600.0  # a step (with its save/validation) stalled this long: dump stacks, exit 75


@dataclass
class MetricsConfig:
    tensorboard: bool = True
    peak_tflops: float = 0.0  # 0: measured matmul throughput on CPU, table value on known GPUs
    straggler_factor: float = 1.5  # warn when a rank's step time stays >= this x the median (0: off, no step barrier)
    straggler_intervals: int = 3  # ... for this many log intervals in a row


@dataclass
class ProfileConfig:
    steps: str = ""  # "A-B": torch.profiler trace of steps A..B on every rank into RUN/profile/ ("": off)


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    model_name: str = "tiny"
    model: ModelConfig = field(default_factory=lambda: ModelConfig.named("tiny"))

    def validate(self) -> None:
        t = self.train
        choices = {
            "train.schedule": (t.schedule, ("cosine", "wsd")),
            "train.dtype": (t.dtype, ("fp32", "bf16")),
            "train.device": (t.device, ("auto", "cpu", "cuda")),
            "parallel.backend": (self.parallel.backend, ("fsdp", "deepspeed")),
            "parallel.offload_optimizer": (self.parallel.offload_optimizer, ("none", "cpu")),
            "parallel.offload_params": (self.parallel.offload_params, ("none", "cpu")),
            "parallel.ac": (self.parallel.ac, ("none", "loop", "block", "selective")),
            "parallel.mixed_precision": (self.parallel.mixed_precision, ("fp32", "bf16")),
        }
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise UserError(f"config key '{key}': expected one of {'|'.join(allowed)}, got {value!r}")
        positive = {"train.steps": t.steps, "train.global_batch": t.global_batch, "train.micro_batch": t.micro_batch,
                    "train.seq_len": t.seq_len, "checkpoint.keep": self.checkpoint.keep}
        for key, value in positive.items():
            if value <= 0:
                raise UserError(f"config key '{key}': expected a positive value, got {value}")
        if not self.parallel.collective_timeout_s > 0:
            raise UserError("config key 'parallel.collective_timeout_s': expected a positive number of seconds, "
                            f"got {self.parallel.collective_timeout_s}")
        if not t.lr > 0:
            raise UserError(f"config key 'train.lr': expected a positive value, got {t.lr}")
        if self.parallel.ep < 1:
            raise UserError(f"config key 'parallel.ep': expected >= 1, got {self.parallel.ep}")
        if self.parallel.dp_replicate < 1:
            raise UserError(f"config key 'parallel.dp_replicate': expected >= 1, got {self.parallel.dp_replicate}")
        if self.metrics.straggler_factor < 0 or self.metrics.straggler_intervals < 1:
            raise UserError("config keys 'metrics.straggler_factor' / 'metrics.straggler_intervals': expected >= 0 / "
                            f">= 1, got {self.metrics.straggler_factor} / {self.metrics.straggler_intervals}")
        from mythos.train.profile import parse_steps
        parse_steps(self.profile.steps)
        self._validate_deepspeed()

    def _validate_deepspeed(self) -> None:
        p = self.parallel
        if p.zero_stage not in (1, 2, 3):
            raise UserError(f"config key 'parallel.zero_stage': expected one of 1|2|3, got {p.zero_stage}")
        if p.backend != "deepspeed":
            return
        if p.ep > 1:
            raise UserError(f"config key 'parallel.ep': {p.ep} with parallel.backend = \"deepspeed\" is not "
                            "supported: ZeRO would flatten our expert shards (other experts on every rank) with the "
                            "dense weights and average them over all ranks, and DeepSpeed's expert groups serve only "
                            "its own MoE layer; use parallel.backend = \"fsdp\" for expert parallelism, or ep = 1 "
                            "with DeepSpeed (every rank then runs all experts)")
        if p.dp_replicate > 1:
            raise UserError(f"config key 'parallel.dp_replicate': {p.dp_replicate} (HSDP) is an FSDP2 layout, not "
                            "supported with parallel.backend = \"deepspeed\"; set it to 1 or use backend fsdp")
        if self.checkpoint.async_save:
            raise UserError("config key 'checkpoint.async_save': not supported with parallel.backend = \"deepspeed\" "
                            "(DeepSpeed writes its checkpoint synchronously); set it to false or use backend fsdp")
        if p.offload_params != "none" and p.zero_stage != 3:
            raise UserError(f"config key 'parallel.offload_params': parameter offload needs parallel.zero_stage = 3, "
                            f"got {p.zero_stage}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check a TOML value (or parse a CLI string) against a field's declared type."""
    if isinstance(value, str) and tp is not str:
        text = value.strip()
        try:
            if tp is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                return text.lower() in ("true", "1")
            return tp(text)
        except (TypeError, ValueError):
            raise UserError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}") from None
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool) or tp is not bool and isinstance(value, bool):
        raise UserError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if not isinstance(value, tp):
        raise UserError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    return value


def apply_dict(obj: Any, values: dict[str, Any], prefix: str) -> None:
    """Set fields of a (nested) dataclass from a nested dict; unknown keys are errors naming the key."""
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for k, v in values.items():
        key = f"{prefix}{k}"
        if k not in names:
            known = ", ".join(sorted(f"{prefix}{n}" for n in names))
            raise UserError(f"unknown config key '{key}' (known here: {known})")
        current = getattr(obj, k)
        if dataclasses.is_dataclass(current):
            if not isinstance(v, dict):
                raise UserError(f"config key '{key}': expected a table of keys, got {v!r}")
            apply_dict(current, v, f"{key}.")
        else:
            setattr(obj, k, _coerce(key, v, hints[k]))


def _nest(dotted: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, v in dotted.items():
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise UserError(f"config key '{key}': '{p}' is a value, not a table")
            node = nxt
        node[parts[-1]] = v
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: config file not found")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{p}: invalid TOML ({e})") from None


def build_config(file_values: dict[str, Any], overrides: dict[str, Any] | None = None) -> Config:
    """Config from a TOML dict plus dotted overrides (strings from the CLI or typed values)."""
    values = _merge(file_values, _nest(overrides or {}))
    model_values = dict(values.pop("model", {}) or {})
    if not isinstance(model_values, dict):
        raise UserError("config key 'model': expected a table of keys")
    name = model_values.pop("name", "tiny")
    if not isinstance(name, str):
        raise UserError(f"config key 'model.name': expected str, got {name!r}")
    cfg = Config(model_name=name, model=ModelConfig.named(name))
    if "model_name" in values:
        raise UserError("unknown config key 'model_name' (use 'model.name')")
    apply_dict(cfg, values, "")
    apply_dict(cfg.model, model_values, "model.")
    if hasattr(cfg.model, "validate"):
        cfg.model.validate()
    cfg.validate()
    return cfg


def parse_overrides(argv: list[str]) -> dict[str, str]:
    """`--a.b value` and `--a.b=value` pairs into {"a.b": "value"}."""
    out: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise UserError(f"unexpected argument {arg!r}: overrides look like --section.key value")
        key = arg[2:]
        if "=" in key:
            key, val = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(argv):
                raise UserError(f"config key '{key}': missing value")
            val = argv[i + 1]
            i += 2
        out[key] = val
    return out


def to_dict(cfg: Config) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    model = d.pop("model")
    d["model"] = {"name": d.pop("model_name"), **model}
    return d


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, float):
        return repr(v) if v == v and abs(v) != float("inf") else ("nan" if v != v else ("inf" if v > 0 else "-inf"))
    return str(v)


def dumps_toml(d: dict[str, Any], prefix: str = "") -> str:
    scalars = [f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
    lines = ([f"[{prefix}]"] if prefix and scalars else []) + scalars
    for k, v in d.items():
        if isinstance(v, dict):
            sub = dumps_toml(v, f"{prefix}.{k}" if prefix else k)
            lines += ["", sub] if lines else [sub]
    return "\n".join(lines)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(dumps_toml(to_dict(cfg)) + "\n")


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    return build_config(load_toml(path), overrides)
