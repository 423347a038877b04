"""(a) "Think longer": prefix parity with a length curriculum, where the loop count can carry the work to do.

Task (tasks.PrefixParity): BOS + n bits, target at each bit = parity so far; one n per batch, n uniform in
[1, max n], max n raised from `n_start` to `n_train` over the first third of training. Arms (same data, steps, seed):
  loops=n         the looped model runs exactly n loops on a batch of length n (training and evaluation)
  independent     the same model, loops ~ Poisson(6) clamped to [1, 12] per step, whatever n (the old recipe)
  dense-params    a plain Transformer with about the looped model's parameter count
  dense-flops     n_train dense layers, FFN widened to the looped model's FLOPs/token at n_train loops
  ablations       loops=n with one part changed (ABLATIONS: no RoPE, loop embedding, LoRA, injection, h0, prelude/coda)
  act             loops=n's model with ACT halting, run n_train loops whatever n: does halting spend more on longer n?
Evaluation: every length 1 .. 2 n_train, looped arms at n/2, n and 2n loops; accuracy at every position.

Each (arm, seed) writes OUT/parity/<scale>/runs/<arm>_s<seed>.json when it finishes, with a fingerprint of its
settings; a rerun skips every run whose file exists with the same fingerprint, so a stopped suite resumes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mythos.model import ACTConfig, AttentionConfig, LoopConfig, ModelConfig, MoEConfig, Mythos, model_stats
from mythos.research.depth import dense_config, dense_layers_matching_params
from mythos.research.jobs import run_pieces
from mythos.research.synthetic import to_device, train_arm
from mythos.research.tasks import PrefixParity, curriculum_max_n

HEADLINE_ARMS = ("loops=n", "independent", "dense-params", "dense-flops")
# Ablations of the loops=n arm (issue 21 item 2): name -> (part, setting, the change to loops=n's config). loops=n
# itself is every part's other row (RoPE, no loop embedding, no LoRA, parcae, h0 = 0, no prelude/coda).
ABLATIONS = {
    "loops=n-nopos": ("position", "none", lambda c: c.attention.__setattr__("position", "none")),
    "loops=n+loopemb": ("loop-index embedding", "on", lambda c: setattr(c, "loop_embedding", True)),
    "loops=n+lora": ("per-loop LoRA", "rank 8", lambda c: setattr(c, "lora_rank", 8)),
    "loops=n-openmythos": ("injection", "openmythos", lambda c: c.injection.__setattr__("kind", "openmythos")),
    "loops=n-additive": ("injection", "additive", lambda c: c.injection.__setattr__("kind", "additive")),
    "loops=n-h0embed": ("state init", "embed", lambda c: c.loops.__setattr__("state_init", "embed")),
    "loops=n+prelude-coda": ("prelude + coda", "1 + 1",
                             lambda c: (setattr(c, "n_prelude", 1), setattr(c, "n_coda", 1))),
}
BASELINE_SETTINGS = {"position": "rope", "loop-index embedding": "off", "per-loop LoRA": "off", "injection": "parcae",
                     "state init": "zero", "prelude + coda": "off"}
# ACT (issue 21 item 3): the loops=n model with halting, run for a fixed n_train loops whatever n (it is not told
# n), evaluated with at most n_train and 2 n_train loops; each position's loops used are recorded.
ACT_PONDER = 1e-2
ARMS = HEADLINE_ARMS + tuple(ABLATIONS) + ("act",)
SCHEDULES = ("n/2", "n", "2n")


@dataclass
class ParityScale:
    dim: int
    steps: int
    batch: int
    lr: float
    n_start: int  # curriculum: largest n at step 0 ...
    n_train: int  # ... and after the first third of training (the longest training length)
    eval_batch: int
    seeds: tuple[int, ...]
    device: str = "cpu"
    indep_mean: float = 6.0  # the independent arm's Poisson mean (clamped to [1, n_train])

    @property
    def n_test(self) -> int:
        return 2 * self.n_train

    @property
    def n_probe(self) -> int:
        """The headline length: 1.33x the longest training length (16 for n_train 12)."""
        return round(4 * self.n_train / 3)


# cpu: the measurement of issue 21 (3000 steps, ~7 CPU-minutes per arm); tiny: seconds, for the tests.
SCALES = {
    "tiny": ParityScale(dim=32, steps=8, batch=16, lr=3e-3, n_start=2, n_train=4, eval_batch=16, seeds=(0,)),
    "cpu": ParityScale(dim=64, steps=3000, batch=64, lr=1e-3, n_start=4, n_train=12, eval_batch=512,
                       seeds=(0, 1, 2)),
    "gpu": ParityScale(dim=128, steps=20000, batch=256, lr=1e-3, n_start=4, n_train=24, eval_batch=2048,
                       seeds=(0, 1, 2), device="cuda"),
}


def schedule_loops(schedule: str, n: int) -> int:
    return {"n/2": max(1, math.ceil(n / 2)), "n": n, "2n": 2 * n}[schedule]


def looped_config(s: ParityScale, loops_eq_n: bool) -> ModelConfig:
    """Issue 21's model: rdt, no prelude/coda/LoRA/loop embedding, 4 routed + 1 shared expert, backprop through
    every loop."""
    loops = (LoopConfig(distribution="fixed", mean=float(s.n_train), min=1, max=s.n_train, backprop_k=0,
                        inference=s.n_train) if loops_eq_n else
             LoopConfig(distribution="poisson", mean=s.indep_mean, min=1, max=s.n_train, backprop_k=0,
                        inference=round(s.indep_mean)))
    return ModelConfig(vocab_size=PrefixParity.vocab_size, dim=s.dim, n_heads=4, n_prelude=0, n_coda=0,
                       lora_rank=0, loop_embedding=False, loops=loops,
                       attention=AttentionConfig(kind="gqa"),
                       moe=MoEConfig(n_routed=4, top_k=2, expert_dim=2 * s.dim, n_shared=1)).validate()


def dense_matching_flops(looped: ModelConfig, n_layers: int) -> ModelConfig:
    """n_layers dense blocks (one per loop at the longest training length) whose SwiGLU width makes the per-token
    FLOPs equal the looped model's at n_layers loops: the looped block's MoE (top-2 of 4 routed + shared) costs
    more than a default dense FFN. FLOPs are affine in the FFN width, so two measurements give it."""
    def flops(ffn: int) -> float:
        cfg = dense_config(looped.vocab_size, looped.dim, n_layers).replace(ffn_dim=ffn)
        return model_stats(cfg, seq_len=n_layers + 1)["flops_per_token"]
    target = model_stats(looped, seq_len=n_layers + 1)["flops_per_token"]  # loops.train_count = n_layers loops
    f1, f2 = flops(64), flops(128)
    ffn = max(8, 8 * round((64 + (target - f1) * 64 / (f2 - f1)) / 8))
    return dense_config(looped.vocab_size, looped.dim, n_layers).replace(ffn_dim=ffn).validate()


def arm_config(name: str, s: ParityScale) -> ModelConfig:
    if name == "loops=n":
        return looped_config(s, True)
    if name == "act":
        cfg = looped_config(s, True)
        cfg.act = ACTConfig(enabled=True, ponder_weight=ACT_PONDER, threshold=0.99)
        return cfg.validate()
    if name in ABLATIONS:
        cfg = looped_config(s, True)
        ABLATIONS[name][2](cfg)
        return cfg.validate()
    if name == "independent":
        return looped_config(s, False)
    if name == "dense-params":
        return dense_config(PrefixParity.vocab_size, s.dim, dense_layers_matching_params(looped_config(s, True)))
    if name == "dense-flops":
        return dense_matching_flops(looped_config(s, True), s.n_train)
    raise ValueError(f"unknown parity arm {name!r}; known: {', '.join(ARMS)}")


def fingerprint(name: str, s: ParityScale, seed: int) -> str:
    """What decides a run's result: a finished file with another fingerprint is stale and is rerun."""
    blob = json.dumps([name, seed, dataclasses.asdict(s), dataclasses.asdict(arm_config(name, s))], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def eval_batches(s: ParityScale) -> dict[int, object]:
    """Fixed evaluation sequences for every length 1 .. n_test (the same for every arm and seed)."""
    task, gen = PrefixParity(), torch.Generator().manual_seed(10_000)
    return {n: to_device(task.sample(s.eval_batch, n, gen), s.device) for n in range(1, s.n_test + 1)}


@torch.no_grad()
def position_accuracy(model: Mythos, batches: dict[int, object], loops_of_n,
                      steps: dict | None = None) -> dict[str, list[float]]:
    """Length -> accuracy at each bit position 1..n, with loops_of_n(n) loops (None: dense). With ACT and a `steps`
    dict, also length -> mean loops each bit position ran before halting."""
    model.eval()
    out = {}
    for n, b in batches.items():
        res = model(b.tokens_BT, n_loops=loops_of_n(n))
        pred = res.logits_BTV[:, 1:].argmax(-1)
        out[str(n)] = (pred == b.targets_BT[:, 1:]).float().mean(0).tolist()
        if steps is not None and res.halt_steps_BT is not None:
            steps[str(n)] = res.halt_steps_BT[:, 1:].float().mean(0).tolist()
    return out


def sample_batch(s: ParityScale, task: PrefixParity, step: int, gen: torch.Generator):
    """The training batch of `step`: one n uniform in [1, the curriculum's max n], `batch` rows of n bits."""
    n = 1 + int(torch.randint(curriculum_max_n(step, s.steps, s.n_start, s.n_train), (1,), generator=gen))
    return task.sample(s.batch, n, gen)


def training_draws(name: str, s: ParityScale, seed: int) -> list[tuple[int, int]]:
    """(bits, loops) of every training step of a run, replayed from its seed without training (what an arm saw)."""
    from mythos.model import LoopSampler
    from mythos.research.synthetic import data_generator
    from mythos.train.trainer import loops_for_step
    cfg, task, gen = arm_config(name, s), PrefixParity(), data_generator(seed)
    sampler = LoopSampler(cfg.loops)
    out = []
    for step in range(s.steps):
        n = int(sample_batch(s, task, step, gen).k_B[0])
        fixed_n = cfg.loops.distribution == "fixed" and not cfg.act.enabled
        out.append((n, n if fixed_n else loops_for_step(sampler, seed, step)))
    return out


def train_one(name: str, s: ParityScale, seed: int, log=print) -> dict:
    """Train one arm at one seed and evaluate it on every length and loop schedule. Self-contained (worker-safe)."""
    cfg = arm_config(name, s)
    task = PrefixParity()
    looped = cfg.mode == "rdt"
    loops_eq_n = looped and cfg.loops.distribution == "fixed" and not cfg.act.enabled
    batches = eval_batches(s)

    curve_n = sorted({max(1, s.n_train // 3), 2 * s.n_train // 3, s.n_train})
    model, res = train_arm(name, cfg, task, train_k=[], steps=s.steps, batch=s.batch, lr=s.lr, seed=seed,
                           eval_every=max(1, s.steps // 10), eval_batches={n: batches[n] for n in curve_n},
                           device=s.device, log=log, sample=lambda step, gen: sample_batch(s, task, step, gen),
                           loops_fn=(lambda step, b: int(b.k_B[0])) if loops_eq_n else None,
                           eval_loops=(lambda n: n) if loops_eq_n else None)
    t0 = time.perf_counter()
    loops_used = {}
    if cfg.act.enabled:  # at most n_train (as trained) and 2 n_train loops: halting decides how many each bit uses
        acc = {f"max {c}": position_accuracy(model, batches, lambda n, c=c: c, loops_used.setdefault(f"max {c}", {}))
               for c in (s.n_train, s.n_test)}
    elif looped:
        acc = {sch: position_accuracy(model, batches, lambda n, sch=sch: schedule_loops(sch, n)) for sch in SCHEDULES}
    else:
        acc = {"dense": position_accuracy(model, batches, lambda n: None)}
    stats = model_stats(cfg, seq_len=s.n_train + 1)
    return {"arm": name, "seed": seed, "fingerprint": fingerprint(name, s, seed), "params": stats["total_params"],
            "flops_per_token": stats["flops_per_token"], "train_seconds": res.seconds,
            "eval_seconds": time.perf_counter() - t0, "curve": res.curve, "position_acc": acc,
            "last_bit": {sch: {n: row[-1] for n, row in rows.items()} for sch, rows in acc.items()},
            **({"loops_used": loops_used} if loops_used else {})}


def load_done(runs_dir: Path, s: ParityScale) -> dict[tuple[str, int], dict]:
    """Finished runs on disk whose fingerprint matches these settings."""
    done = {}
    for path in sorted(runs_dir.glob("*.json")):
        row = json.loads(path.read_text())
        if row.get("arm") in ARMS and row.get("fingerprint") == fingerprint(row["arm"], s, row["seed"]):
            done[(row["arm"], row["seed"])] = row
    return done


def summarise(rows: dict[tuple[str, int], dict], s: ParityScale) -> dict:
    """Per arm: last-bit accuracy at the headline length (1.33x training) per schedule and seed, and run times."""
    out = {}
    for (arm, seed), row in sorted(rows.items()):
        a = out.setdefault(arm, {"seeds": [], "last_bit_at_probe": {}, "last_bit_at_test": {}, "train_seconds": []})
        a["seeds"].append(seed)
        a["train_seconds"].append(round(row["train_seconds"], 1))
        for sch, by_n in row["last_bit"].items():
            a["last_bit_at_probe"].setdefault(sch, []).append(round(by_n[str(s.n_probe)], 4))
            a["last_bit_at_test"].setdefault(sch, []).append(round(by_n[str(s.n_test)], 4))
    return out


def markdown_table(res: dict) -> str:
    """The summary as a markdown table (docs/research.md): last-bit accuracy per seed at 1.33x and 2x the longest
    training length, per loop schedule."""
    sc = res["scale"]
    lines = [f"| arm | seeds | params | train s / seed | schedule | last bit, n = {sc['n_probe']} | "
             f"last bit, n = {sc['n_test']} |", "|---|---|---|---|---|---|---|"]
    for arm, a in res["summary"].items():
        params = next(r["params"] for r in res["runs"].values() if r["arm"] == arm)
        for sch in a["last_bit_at_probe"]:
            probe, test = a["last_bit_at_probe"][sch], a["last_bit_at_test"][sch]
            lines.append(f"| {arm} | {', '.join(map(str, a['seeds']))} | {params} | "
                         f"{', '.join(f'{t:.0f}' for t in a['train_seconds'])} | {sch} | "
                         f"{' / '.join(f'{v:.3f}' for v in probe)} | {' / '.join(f'{v:.3f}' for v in test)} |")
    return "\n".join(lines) + "\n"


def run_parity(out_dir: Path, scale: str, log=print, steps: int | None = None, jobs: int = 1,
               arms: list[str] | None = None, seeds: list[int] | None = None, on_progress=None):
    """Run the missing (arm, seed) pairs, then aggregate every finished run on disk into results + plots."""
    from mythos.research import parity_report, plots
    s = SCALES[scale]
    if steps:
        s = dataclasses.replace(s, steps=steps)
    arms = list(arms or HEADLINE_ARMS)
    for a in arms:
        arm_config(a, s)  # unknown arm: ValueError before any training
    seeds = list(seeds if seeds is not None else s.seeds)
    runs_dir = out_dir / scale / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    done = load_done(runs_dir, s)
    todo = [(a, sd) for sd in seeds for a in arms if (a, sd) not in done]  # every arm at seed 0 first
    for a, sd in sorted(set((a, sd) for sd in seeds for a in arms) - set(todo)):
        log(f"[{a}] seed {sd}: finished earlier, skipped")

    def results() -> dict:
        return {"task": "prefix-parity", "scale": {**dataclasses.asdict(s), "n_test": s.n_test, "n_probe": s.n_probe},
                "chance": PrefixParity.chance, "schedules": list(SCHEDULES),
                "summary": summarise(done, s),
                "run_files": [f"{scale}/runs/{a}_s{sd}.json" for (a, sd) in sorted(done)]}

    def with_runs() -> dict:
        """results() plus every run's rows, for the plots and the table (not written twice: the run files hold them)."""
        return {**results(), "runs": {f"{a}_s{sd}": row for (a, sd), row in sorted(done.items())}}

    def finished(key: str, row: dict) -> None:
        done[(row["arm"], row["seed"])] = row
        (runs_dir / f"{key}.json").write_text(json.dumps(row, separators=(",", ":")) + "\n")  # one line: small diffs
        probe = {sch: round(v[str(s.n_probe)], 3) for sch, v in row["last_bit"].items()}
        log(f"[{row['arm']}] seed {row['seed']} done in {row['train_seconds']:.0f}s; last bit at n={s.n_probe}: "
            f"{probe}")
        if on_progress is not None:
            on_progress(results())

    run_pieces(train_one, [(f"{a}_s{sd}", (a, s, sd, log if jobs <= 1 else print)) for a, sd in todo], jobs,
               finished)
    full = with_runs()
    arms_done = {a for a, _ in done}
    files = []
    if arms_done & set(HEADLINE_ARMS):
        (out_dir / "summary.md").write_text(markdown_table(full))
        files += [plots.parity_vs_length(full, out_dir / "parity_vs_length.png"),
                  plots.parity_by_position(full, out_dir / "parity_by_position.png")]
    if arms_done & set(ABLATIONS):
        (out_dir / "ablations.md").write_text(parity_report.ablation_table(full, ABLATIONS, BASELINE_SETTINGS))
        files.append(plots.parity_ablations(full, list(ABLATIONS), out_dir / "parity_ablations.png"))
    if "act" in arms_done:
        (out_dir / "act.md").write_text(parity_report.act_table(full))
        files.append(plots.parity_act(full, out_dir / "parity_act.png"))
    return results(), files
