"""The one config tree: nested dataclasses, filled from TOML and dotted CLI overrides (`--train.steps 30`).

Each field's comment is its `mythos-train --help` text and each choice is a Literal type: tyro reads both. A TOML file
and the overrides become one list of `--key=value` tokens that tyro parses once, later tokens winning, so a file and
the command line get the same checks. Unknown keys and rejected values are one-line UserErrors that name the key, so
a typo never trains silently with a default. `model` is special: `model.name` picks a named ModelConfig and every
other `model.*` key overrides a field of it. The resolved config is written back as TOML with tomli-w.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import tomli_w
import tyro

from mythos.errors import UserError
from mythos.model import ModelConfig

@dataclass
class RunConfig:
    """Where the run lives: config.toml, metrics.jsonl, tb/ and checkpoints/ are written under it."""

    dir: str = "runs/default"  # the run directory; a run resumes from the newest checkpoint found in it


@dataclass
class DataConfig:
    """The token shards (made by mythos-prep) the run trains and validates on."""

    path: str = ""  # a prepared directory, or "dirA@0.7,dirB@0.3" to blend
    val_batches: int = 4  # global batches read for one validation pass


@dataclass
class TrainConfig:
    """The optimisation: steps, batch, AdamW, the learning-rate schedule, precision and device."""

    steps: int = 100  # optimizer steps to train for (the total, counting those before a resume)
    seed: int = 0  # seeds the init, the data order and the per-step loop counts
    global_batch: int = 8  # sequences per optimizer step, over all ranks
    micro_batch: int = 8  # sequences per forward/backward on one rank
    seq_len: int = 256  # tokens per training sequence
    lr: float = 3e-4  # peak learning rate (AdamW)
    min_lr_ratio: float = 0.1  # the schedule ends at lr * min_lr_ratio
    warmup_steps: int = 10  # linear warmup from lr / warmup_steps to lr
    schedule: Literal["cosine", "wsd"] = "cosine"  # cosine decay, or warmup-stable-decay
    decay_fraction: float = 0.2  # wsd: the final fraction of steps that decays
    weight_decay: float = 0.1  # AdamW weight decay of matrices (vectors, norms and gains never decay)
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.95  # AdamW beta2
    eps: float = 1e-8  # AdamW epsilon
    grad_clip: float = 1.0  # clip gradients to this global norm; <= 0: no clipping
    # the one bf16 switch: bf16 autocasts the forward, FSDP all-gathers and computes parameters in bf16 (gradients
    # reduced in fp32), DeepSpeed runs its bf16 mode
    dtype: Literal["fp32", "bf16"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when available
    max_nonfinite_steps: int = 3  # consecutive skipped (non-finite) steps before the run stops as diverged
    log_interval: int = 10  # steps between console lines (metrics.jsonl gets every step)
    eval_interval: int = 0  # steps between validation passes; 0: validate only at the end
    time_limit_minutes: float = 0.0  # 0: none; else checkpoint and stop cleanly when reached


@dataclass
class CheckpointConfig:
    """When checkpoints are written and how many are kept."""

    interval: int = 100  # steps; 0 disables step-based checkpoints
    interval_minutes: float = 0.0  # 0 disables time-based checkpoints
    keep: int = 3  # the newest this many checkpoints are kept, older ones deleted
    final: bool = True  # checkpoint after the last step
    async_save: bool = False  # write in a background thread; the loop waits only for the in-memory copy


@dataclass
class ParallelConfig:
    """How the model is spread over ranks: FSDP2 with expert parallelism, or DeepSpeed ZeRO."""

    backend: Literal["fsdp", "deepspeed"] = "fsdp"  # deepspeed: ZeRO (mythos/train/engine_deepspeed.py)
    # HSDP: shard groups, each of dp_shard x ep consecutive ranks, replicated across groups (1: plain FSDP)
    dp_replicate: int = 1
    dp_shard: int = -1  # ranks the parameters are sharded over; -1: all ranks not used by dp_replicate and ep
    ep: int = 1  # expert-parallel ranks: the routed experts are split over them
    # activation checkpointing: none, each loop iteration (loop), every block (block), or every block keeping the
    # matmul and attention outputs (selective)
    ac: Literal["none", "loop", "block", "selective"] = "loop"
    compile: bool = False  # torch.compile each block
    zero_stage: Literal[1, 2, 3] = 2  # deepspeed: ZeRO stage
    offload_optimizer: Literal["none", "cpu"] = "none"  # deepspeed: ZeRO-Offload of optimizer state
    offload_params: Literal["none", "cpu"] = "none"  # deepspeed: parameters on the CPU (ZeRO-3 only)
    deepspeed_config: str = ""  # deepspeed: a JSON file merged over the generated config
    collective_timeout_s: float = 600.0  # a step (with its save/validation) stalled this long: dump stacks, exit 75


@dataclass
class MetricsConfig:
    """What the run reports besides metrics.jsonl."""

    tensorboard: bool = True  # write TensorBoard events under RUN/tb
    peak_tflops: float = 0.0  # MFU's denominator; 0: measured matmul throughput on CPU, table value on known GPUs
    # warn when a rank's step time stays >= this x the median (0: off, and no per-step barrier)
    straggler_factor: float = 1.5
    straggler_intervals: int = 3  # ... for this many log intervals in a row


@dataclass
class ProfileConfig:
    """torch.profiler traces of chosen steps."""

    steps: str = ""  # "A-B": a trace of steps A..B on every rank into RUN/profile/ ("": off)


@dataclass
class Config:
    """mythos-train's config: a TOML file (--config) and dotted overrides of any key, which win."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    # a named model (tiny, small, rdt-770m, dense-1.3b, rdt-3b): the defaults the other model.* keys override
    model_name: Annotated[str, tyro.conf.arg(name="model.name")] = "tiny"
    model: ModelConfig = field(default_factory=lambda: ModelConfig.named("tiny"))  # keys over model.name's defaults

    def validate(self) -> None:
        """The checks a type cannot express (choices are Literal types, checked while parsing)."""
        t = self.train
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
        parse_steps(self.profile.steps)
        self._validate_deepspeed()

    def _validate_deepspeed(self) -> None:
        p = self.parallel
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


# ---- reading: TOML and overrides -> `--key=value` tokens -> tyro -----------------------------------------------------
REMOVED_KEYS = {"parallel.mixed_precision": "train.dtype"}  # a key that is gone -> the one that does its job now
_REGISTRY = tyro.constructors.ConstructorRegistry()


_STEPS_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def parse_steps(spec: str) -> tuple[int, int] | None:
    """`profile.steps`: "A-B" (1 <= A <= B) -> (A, B); "" -> None; anything else a UserError naming the key."""
    if not spec.strip():
        return None
    m = _STEPS_RANGE.match(spec)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise UserError(f"config key 'profile.steps': expected \"A-B\" with 1 <= A <= B (e.g. \"3-4\"), got {spec!r}")
    return int(m.group(1)), int(m.group(2))


@_REGISTRY.primitive_rule
def _bool_value(info: tyro.constructors.PrimitiveTypeInfo) -> tyro.constructors.PrimitiveConstructorSpec | None:
    """Booleans take a value, as in TOML (`--parallel.compile true`), instead of tyro's --x / --no-x flag pair."""
    if info.type is not bool:
        return None

    def parse(args: list[str]) -> bool:
        if args[0].lower() not in ("true", "false"):
            raise ValueError(f"expected true or false, got {args[0]!r}")
        return args[0].lower() == "true"
    return tyro.constructors.PrimitiveConstructorSpec(
        nargs=1, metavar="true|false", instance_from_str=parse, is_instance=lambda v: isinstance(v, bool),
        str_from_instance=lambda v: [str(v).lower()])


_TYRO = {"config": (tyro.conf.FlagConversionOff,), "use_underscores": True, "registry": _REGISTRY}


def _leaf_types(cls: type) -> dict[str, Any]:
    """{dotted key: declared type} of every value field under the dataclass `cls` (`model.moe.top_k`: int)."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update({f"{f.name}.{k}": v for k, v in _leaf_types(tp).items()})
        elif f.name != "model_name":  # set as `model.name`, before the rest (it picks the model's defaults)
            out[f.name] = tp
    return out


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested dict (TOML tables) as {dotted key: value}; dotted keys pass through."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_keys(values: dict[str, Any], types: dict[str, Any], prefix: str) -> None:
    """Unknown keys are errors that list the keys known where the typo is."""
    for key in values:
        if key in types:
            continue
        full = prefix + key
        if full in REMOVED_KEYS:
            raise UserError(f"config key '{full}' was removed: use '{REMOVED_KEYS[full]}', which does its job now")
        if any(t.startswith(key + ".") for t in types):
            raise UserError(f"config key '{full}': expected a table of keys, got {values[key]!r}")
        parts = key.split(".")
        for depth in range(len(parts) - 1, -1, -1):  # the deepest section of the key that exists
            section = "".join(p + "." for p in parts[:depth])
            known = sorted({prefix + section + t[len(section):].split(".")[0] for t in types if t.startswith(section)})
            if known:
                break
        raise UserError(f"unknown config key '{full}' (known here: {', '.join(known)})")


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _parses(cls: type, default: Any, values: dict[str, Any]) -> Any:
    """tyro's result for `--key=value` tokens over `default` (None: the class's own defaults), or None where it
    rejects them (its error box unprinted)."""
    tokens = [f"--{k}={_text(v)}" for k, v in values.items()]  # `=`: a value may start with '-'
    over = {} if default is None else {"default": default}
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return tyro.cli(cls, args=tokens, console_outputs=False, **over, **_TYRO)
    except SystemExit:
        return None


def _expected(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + "|".join(str(c) for c in typing.get_args(tp))
    return "bool (true|false)" if tp is bool else getattr(tp, "__name__", str(tp))


def _parse(cls: type, default: Any, values: dict[str, Any], prefix: str = "") -> Any:
    """`default` with `values` (dotted keys under `cls`) applied by tyro. Where tyro rejects the lot, each value is
    tried alone against its field's type, so the error is one line naming the key, not tyro's multi-line box."""
    types = _leaf_types(cls)
    _check_keys(values, types, prefix)
    out = _parses(cls, default, values)
    if out is not None:
        return out
    for key, value in values.items():
        one = dataclasses.make_dataclass("Value", [("v", types[key])])
        if _parses(one, None, {"v": value}) is None:
            raise UserError(f"config key '{prefix}{key}': expected {_expected(types[key])}, got {value!r}")
    raise UserError(f"config: tyro rejected {', '.join(f'{prefix}{k}' for k in values)} together")


def build_config(file_values: dict[str, Any], overrides: dict[str, Any] | None = None) -> Config:
    """Config from a TOML dict plus dotted overrides (strings from the CLI or typed values), which win."""
    values = {**_flatten(file_values), **_flatten(overrides or {})}
    name = values.pop("model.name", "tiny")
    if not isinstance(name, str):
        raise UserError(f"config key 'model.name': expected str, got {name!r}")
    cfg = _parse(Config, Config(model_name=name, model=ModelConfig.named(name)), values)
    cfg.model.validate()
    cfg.validate()
    return cfg


def apply_dict(obj: Any, values: dict[str, Any], prefix: str = "") -> None:
    """Set fields of a config dataclass in place from a nested dict, with the checks a config file gets."""
    new = _parse(type(obj), obj, _flatten(values), prefix)
    for f in dataclasses.fields(obj):
        setattr(obj, f.name, getattr(new, f.name))


def parse_overrides(argv: list[str]) -> dict[str, str]:
    """`--a.b value` and `--a.b=value` pairs into {"a.b": "value"}: the form mythos-submit forwards to its tasks."""
    out: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise UserError(f"unexpected argument {arg!r}: overrides look like --section.key value")
        key, eq, val = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(argv):
                raise UserError(f"config key '{key}': missing value")
            val = argv[i + 1]
        out[key] = val
        i += 1 if eq else 2
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: config file not found")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{p}: invalid TOML ({e})") from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    return build_config(_upgrade(load_toml(path), path), overrides)


def _upgrade(values: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """A config saved before bf16 was one key (every RUN/config.toml of an older run holds
    `parallel.mixed_precision`) still loads when `train.dtype` says the same; otherwise one line naming the file."""
    parallel = values.get("parallel")
    if not isinstance(parallel, dict) or "mixed_precision" not in parallel:
        return values
    old, dtype = parallel["mixed_precision"], (values.get("train") or {}).get("dtype", "fp32")
    if old not in ("fp32", dtype):
        raise UserError(f"{path}: config key 'parallel.mixed_precision' was removed: use 'train.dtype', which does its "
                        f"job now (this file sets mixed_precision {old!r} with train.dtype {dtype!r})")
    return {**values, "parallel": {k: v for k, v in parallel.items() if k != "mixed_precision"}}


def config_help(prog: str, description: str, path: str | None = None) -> None:
    """Print every config key with its comment and default (the file's values with `path`), then exit 0."""
    default = load_config(path) if path else Config()
    tyro.cli(Config, args=["--help"], default=default, prog=prog, description=description, **_TYRO)


# ---- writing ------------------------------------------------------------------------------------------------------
def to_dict(cfg: Config) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    model = d.pop("model")
    d["model"] = {"name": d.pop("model_name"), **model}
    return d


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(tomli_w.dumps(to_dict(cfg)))
