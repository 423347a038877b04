"""ModelConfig: one nested dataclass of plain fields, so the trainer's TOML / `--model.moe.n_routed 16` overrides can
set any of them generically, plus the registry of named configs.

Fields use plain types only (int/float/str/bool, Literal choices, nested dataclasses); each field's comment is its
`mythos-train --help` text. `0` means "derive" where a comment says so. `validate()` raises UserError naming the bad
key (`model.moe.top_k`); the trainer calls it after overrides.
"""
from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Callable, Literal

from mythos.errors import UserError


@dataclass
class LoopConfig:
    """How many times the shared block runs. Training draws a count per step (same on every rank, see LoopSampler)."""

    distribution: Literal["fixed", "poisson"] = "poisson"  # how training draws the loop count of each step
    mean: float = 4.0  # poisson mean; for `fixed`, the count itself (an integer)
    min: int = 1  # poisson draws are clamped to [min, max]
    max: int = 8  # also the number of per-loop LoRA scales (later loops reuse the last one)
    backprop_k: int = 2  # gradients flow through only the last k loops; 0 = all loops
    inference: int = 4  # default count in eval mode (and n_loops=None)
    state_init: Literal["zero", "embed"] = "zero"  # h_0 = 0 (zero) or h_0 = e, the prelude output (embed)

    @property
    def train_count(self) -> int:
        """The loop count a run is characterised by (rounded mean, at least 1): the default in training mode, the
        count for FLOP accounting, and the validation count (with twice it)."""
        return max(1, round(self.mean))


@dataclass
class AttentionConfig:
    """Attention of every block: MLA (DeepSeek-V2, compressed KV cache) or GQA."""

    kind: Literal["mla", "gqa"] = "mla"  # multi-head latent attention, or grouped-query attention
    # rope, or none: attend with no position signal (causal mask only, as in Fan et al.)
    position: Literal["rope", "none"] = "rope"
    rope_theta: float = 10000.0  # RoPE base frequency
    n_kv_heads: int = 0  # gqa: key/value heads; 0 = n_heads (plain multi-head)
    head_dim: int = 0  # gqa: dims per head; 0 = dim // n_heads
    # mla (DeepSeek-V2): the cache holds only c_kv (kv_lora_rank) and one shared RoPE key (rope_dim) per token
    q_lora_rank: int = 0  # mla: rank of the query compression; 0 = no query compression
    kv_lora_rank: int = 128  # mla: dims of the compressed key/value latent c_kv (what the cache holds)
    nope_dim: int = 32  # mla: per-head q/k dims without RoPE
    rope_dim: int = 16  # mla: per-head q RoPE dims = the shared key's dims
    v_head_dim: int = 32  # mla: per-head value dims


@dataclass
class MoEConfig:
    """The looped block's feed-forward: DeepSeekMoE routed experts plus always-on shared experts."""

    n_routed: int = 8  # routed experts
    top_k: int = 2  # routed experts per token
    expert_dim: int = 512  # hidden dim of one routed expert (SwiGLU)
    n_shared: int = 1  # always-on shared experts, fused into one SwiGLU of n_shared * shared_dim
    shared_dim: int = 0  # 0 = expert_dim
    score: Literal["sigmoid", "softmax"] = "sigmoid"  # router score function
    norm_topk: bool = True  # renormalise the k gates to sum 1
    route_scale: float = 1.0  # multiplier of the routed experts' gates
    bias_update_rate: float = 1e-3  # aux-loss-free balancing step (bias += rate * sign(mean - load))


@dataclass
class InjectionConfig:
    """How the prelude output e re-enters the loop state each iteration (u = a * h + dt * B e)."""

    # parcae: stable by construction (a in (0, 1)); openmythos: its scalar dt and vector B; additive: u = h + e (no
    # parameters); unconstrained: A full and unbounded (a stability control only)
    kind: Literal["parcae", "openmythos", "additive", "unconstrained"] = "parcae"
    a_init: float = 0.5  # initial per-channel decay a (parcae: A_log chosen so a = a_init at dt init)
    dt_init: float = 1.0  # initial softplus(dt)


@dataclass
class ACTConfig:
    """Adaptive computation time: a per-position halting probability, with a ponder cost in the loss."""

    enabled: bool = False  # learn when to stop looping (training still runs every loop on every rank)
    ponder_weight: float = 1e-3  # weight of the ponder cost in the loss
    threshold: float = 0.99  # cumulative halting probability at which a position halts


@dataclass
class ModelConfig:
    """The model: a looped (rdt) or plain (dense) Transformer; `model.name` picks the defaults these override."""

    mode: Literal["rdt", "dense"] = "rdt"  # rdt: prelude, looped block, coda; dense: a plain Transformer
    vocab_size: int = 4096  # token ids; must cover the tokenizer's vocabulary
    dim: int = 256  # model width
    n_heads: int = 4  # attention heads
    n_prelude: int = 1  # rdt: dense blocks before the loop
    n_coda: int = 1  # rdt: dense blocks after the loop
    n_layers: int = 4  # dense mode: L unique dense blocks (prelude/coda/loop ignored)
    ffn_dim: int = 0  # SwiGLU hidden dim of dense blocks; 0 = 8/3 * dim rounded up to 64
    lora_rank: int = 8  # depth-wise LoRA on the looped block's output; 0 = off
    loop_embedding: bool = True  # sinusoidal loop-index signal added before the looped block
    tie_embeddings: bool = True  # the output head shares the token embedding matrix
    dropout: float = 0.0  # dropout probability after embeddings and in each block
    norm_eps: float = 1e-6  # RMSNorm epsilon
    init_std: float = 0.02  # std of the normal init of matrices (output projections scaled down by depth)
    loops: LoopConfig = field(default_factory=LoopConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    moe: MoEConfig = field(default_factory=MoEConfig)
    injection: InjectionConfig = field(default_factory=InjectionConfig)
    act: ACTConfig = field(default_factory=ACTConfig)

    # ---- derived values -------------------------------------------------------------------------------------------
    @property
    def dense_ffn_dim(self) -> int:
        return self.ffn_dim or 64 * -(-(8 * self.dim // 3) // 64)

    @property
    def head_dim(self) -> int:
        return self.attention.head_dim or self.dim // self.n_heads

    @property
    def n_kv_heads(self) -> int:
        return self.attention.n_kv_heads or self.n_heads

    @property
    def rope_dim(self) -> int:
        """Dims per head that RoPE rotates: MLA's rope_dim, GQA's whole head."""
        return self.attention.rope_dim if self.attention.kind == "mla" else self.head_dim

    # ---- registry ---------------------------------------------------------------------------------------------------
    @staticmethod
    def names() -> list[str]:
        return sorted(_NAMED)

    @classmethod
    def named(cls, name: str) -> "ModelConfig":
        """A fresh instance of a named config; unknown name -> UserError listing the known ones."""
        if name not in _NAMED:
            raise UserError(f"unknown model name {name!r}; known: {', '.join(cls.names())}")
        cfg = _NAMED[name]()
        cfg.validate()
        return copy.deepcopy(cfg)

    # ---- validation -------------------------------------------------------------------------------------------------
    def validate(self) -> "ModelConfig":
        """Raise UserError naming the first bad key (`model.<path>`); returns self for chaining."""
        def bad(key: str, msg: str) -> None:
            raise UserError(f"config key 'model.{key}': {msg}")

        def positive(key: str, value: float, allow_zero: bool = False) -> None:
            if not (value >= 0 if allow_zero else value > 0):
                bad(key, f"expected {'>= 0' if allow_zero else 'a positive value'}, got {value}")

        check_choices(self, "model.")
        for key in ("vocab_size", "dim", "n_heads", "n_layers", "init_std", "norm_eps"):
            positive(key, getattr(self, key))
        for key in ("n_prelude", "n_coda", "ffn_dim", "lora_rank"):
            positive(key, getattr(self, key), allow_zero=True)
        if not 0.0 <= self.dropout < 1.0:
            bad("dropout", f"expected a value in [0, 1), got {self.dropout}")
        a = self.attention
        positive("attention.rope_theta", a.rope_theta)
        if a.kind == "gqa":
            positive("attention.n_kv_heads", a.n_kv_heads, allow_zero=True)
            positive("attention.head_dim", a.head_dim, allow_zero=True)
            if not a.head_dim and self.dim % self.n_heads:
                bad("attention.head_dim", f"0 needs dim ({self.dim}) divisible by n_heads ({self.n_heads})")
            if self.n_heads % self.n_kv_heads:
                bad("attention.n_kv_heads", f"n_heads ({self.n_heads}) must be a multiple of it ({self.n_kv_heads})")
            if self.head_dim % 2:
                bad("attention.head_dim", f"must be even for RoPE, got {self.head_dim}")
        else:
            for key in ("kv_lora_rank", "nope_dim", "rope_dim", "v_head_dim"):
                positive(f"attention.{key}", getattr(a, key))
            positive("attention.q_lora_rank", a.q_lora_rank, allow_zero=True)
            if a.rope_dim % 2:
                bad("attention.rope_dim", f"must be even, got {a.rope_dim}")
        if self.mode == "dense":
            return self
        lp = self.loops
        positive("loops.mean", lp.mean)
        positive("loops.min", lp.min)
        if lp.max < lp.min:
            bad("loops.max", f"must be >= loops.min ({lp.min}), got {lp.max}")
        if lp.distribution == "fixed" and lp.mean != int(lp.mean):
            bad("loops.mean", f"a fixed loop count must be an integer, got {lp.mean}")
        positive("loops.backprop_k", lp.backprop_k, allow_zero=True)
        positive("loops.inference", lp.inference)
        m = self.moe
        for key in ("n_routed", "top_k", "expert_dim", "route_scale"):
            positive(f"moe.{key}", getattr(m, key))
        positive("moe.n_shared", m.n_shared, allow_zero=True)
        positive("moe.shared_dim", m.shared_dim, allow_zero=True)
        positive("moe.bias_update_rate", m.bias_update_rate, allow_zero=True)
        if m.top_k > m.n_routed:
            bad("moe.top_k", f"must be <= moe.n_routed ({m.n_routed}), got {m.top_k}")
        inj = self.injection
        if not 0.0 < inj.a_init < 1.0:
            bad("injection.a_init", f"expected a value in (0, 1), got {inj.a_init}")
        positive("injection.dt_init", inj.dt_init)
        positive("act.ponder_weight", self.act.ponder_weight, allow_zero=True)
        if not 0.0 < self.act.threshold <= 1.0:
            bad("act.threshold", f"expected a value in (0, 1], got {self.act.threshold}")
        return self

    def replace(self, **changes) -> "ModelConfig":
        """A copy with top-level fields changed (nested ones: pass a whole sub-dataclass)."""
        return dataclasses.replace(copy.deepcopy(self), **changes)


def check_choices(obj, prefix: str) -> None:
    """Every Literal-typed field of a config dataclass (nested ones too) holds one of its choices: the parser checks
    this for TOML and the CLI, this for a config built in Python."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, tp = getattr(obj, f.name), hints[f.name]
        if dataclasses.is_dataclass(value):
            check_choices(value, f"{prefix}{f.name}.")
        elif typing.get_origin(tp) is Literal and value not in typing.get_args(tp):
            choices = "|".join(str(c) for c in typing.get_args(tp))
            raise UserError(f"config key '{prefix}{f.name}': expected one of {choices}, got {value!r}")


# ---- named configs --------------------------------------------------------------------------------------------------
# Sizes are checked by tests/model/test_stats.py (rdt-770m and dense-1.3b within 3% of 770M / 1.3B total params).
def _tiny() -> ModelConfig:
    """CPU demo model (~6M params at vocab 4096): trains in minutes on 2 cores at seq_len 256."""
    return ModelConfig(
        vocab_size=4096, dim=256, n_heads=4, n_prelude=1, n_coda=1, lora_rank=8,
        loops=LoopConfig(distribution="poisson", mean=4.0, min=1, max=8, backprop_k=2, inference=4),
        attention=AttentionConfig(kind="mla", kv_lora_rank=64, nope_dim=32, rope_dim=16, v_head_dim=64),
        moe=MoEConfig(n_routed=8, top_k=2, expert_dim=384, n_shared=1, bias_update_rate=1e-3),
    )


def _small() -> ModelConfig:
    """~49M params (vocab 32000): the largest model that is still practical on a CPU."""
    return ModelConfig(
        vocab_size=32000, dim=512, n_heads=8, n_prelude=2, n_coda=2, lora_rank=16,
        loops=LoopConfig(distribution="poisson", mean=4.0, min=1, max=12, backprop_k=2, inference=4),
        attention=AttentionConfig(kind="mla", kv_lora_rank=128, nope_dim=32, rope_dim=32, v_head_dim=64),
        moe=MoEConfig(n_routed=16, top_k=2, expert_dim=768, n_shared=1),
    )


def _rdt_770m() -> ModelConfig:
    """Looped half of the seeds' comparison pair, 777M total (Parcae-style: Poisson(8) loops, 3 backprop loops)."""
    return ModelConfig(
        vocab_size=32000, dim=2048, n_heads=16, n_prelude=3, n_coda=3, lora_rank=32,
        loops=LoopConfig(distribution="poisson", mean=8.0, min=1, max=32, backprop_k=3, inference=8),
        attention=AttentionConfig(kind="mla", q_lora_rank=1024, kv_lora_rank=512, nope_dim=128, rope_dim=64,
                                  v_head_dim=128),
        moe=MoEConfig(n_routed=64, top_k=6, expert_dim=1024, n_shared=2),
    )


def _dense_1_3b() -> ModelConfig:
    """Dense half of the comparison pair, 1.296B total: a plain Transformer from the same blocks (same attention)."""
    return ModelConfig(
        mode="dense", vocab_size=32000, dim=2048, n_heads=16, n_layers=26, ffn_dim=5632,
        attention=AttentionConfig(kind="mla", q_lora_rank=1024, kv_lora_rank=512, nope_dim=128, rope_dim=64,
                                  v_head_dim=128),
    )


def _rdt_3b() -> ModelConfig:
    """2.94B total, ~1.07B active per token."""
    return ModelConfig(
        vocab_size=32000, dim=3072, n_heads=24, n_prelude=4, n_coda=4, lora_rank=64,
        loops=LoopConfig(distribution="poisson", mean=8.0, min=1, max=32, backprop_k=3, inference=8),
        attention=AttentionConfig(kind="mla", q_lora_rank=1536, kv_lora_rank=512, nope_dim=128, rope_dim=64,
                                  v_head_dim=128),
        moe=MoEConfig(n_routed=128, top_k=6, expert_dim=1664, n_shared=2),
    )


_NAMED: dict[str, Callable[[], ModelConfig]] = {
    "tiny": _tiny,
    "small": _small,
    "rdt-770m": _rdt_770m,
    "dense-1.3b": _dense_1_3b,
    "rdt-3b": _rdt_3b,
}
