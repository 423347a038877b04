"""Markdown tables for docs/research.md from the finished parity runs: the ablation table (one row per changed part
of the loops = n model) and the ACT table (loops used and accuracy against length). Read from the run files, so a
table always shows exactly what was measured."""
from __future__ import annotations


def _runs(res: dict, arm: str) -> list[dict]:
    return sorted((r for r in res["runs"].values() if r["arm"] == arm), key=lambda r: r["seed"])


def _per_seed(rows: list[dict], sch: str, n: int) -> str:
    return " / ".join(f"{r['last_bit'][sch][str(n)]:.3f}" for r in rows)


def ablation_table(res: dict, ablations: dict, baseline: dict) -> str:
    """One row per ablation arm that has finished runs, the loops = n baseline first (restricted to the seeds the
    ablations ran, so every row compares the same seeds). Last-bit accuracy per seed at n loops, and at 2n loops for
    the headline length (loops past the trained count and past `loops.max`)."""
    sc = res["scale"]
    ns = [sc["n_train"], sc["n_probe"], round(5 * sc["n_train"] / 3), sc["n_test"]]
    done = [a for a in ablations if _runs(res, a)]
    seeds = sorted({r["seed"] for a in done for r in _runs(res, a)})
    head = (["| part | setting | arm | seeds"] + [f"n = {n}" for n in ns] + [f"n = {sc['n_probe']}, 2n loops",
                                                                            "train s / seed |"])
    lines = [" | ".join(head), "|" + "---|" * (4 + len(ns) + 2)]

    def row(part, setting, arm, rows):
        cells = [part, setting, arm, ", ".join(str(r["seed"]) for r in rows)]
        cells += [_per_seed(rows, "n", n) for n in ns] + [_per_seed(rows, "2n", sc["n_probe"])]
        cells.append(", ".join(f"{r['train_seconds']:.0f}" for r in rows))
        return "| " + " | ".join(cells) + " |"

    base = [r for r in _runs(res, "loops=n") if r["seed"] in seeds]
    if base:
        lines.append(row("(baseline)", ", ".join(f"{k} {v}" for k, v in baseline.items()), "loops=n", base))
    for a in done:
        part, setting, _ = ablations[a]
        lines.append(row(part, setting, a, _runs(res, a)))
    return "\n".join(lines) + "\n"


def act_table(res: dict) -> str:
    """Per length: mean loops the last bit ran before halting and last-bit accuracy (per seed), at each loop cap; and
    the loops = n arm's last-bit accuracy with n loops (its seeds) for comparison."""
    rows, base = _runs(res, "act"), _runs(res, "loops=n")
    caps = list(rows[0]["loops_used"]) if rows else []
    head = ["| n"] + [f"loops used, last bit ({c})" for c in caps] + [f"last bit ({c})" for c in caps]
    head += ["loops=n last bit, n loops |"] if base else []
    lines = [" | ".join(head), "|" + "---|" * len(head)]
    for n in range(1, res["scale"]["n_test"] + 1):
        cells = [str(n)]
        cells += [" / ".join(f"{r['loops_used'][c][str(n)][-1]:.1f}" for r in rows) for c in caps]
        cells += [_per_seed(rows, c, n) for c in caps]
        cells += [_per_seed(base, "n", n)] if base else []
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def draws_summary(draws: list[tuple[int, int]], long_n: int = 10, few_loops: int = 4) -> dict:
    """What a run's training saw (parity.training_draws): mean loops, their correlation with n, the share of steps
    with loops >= n, and the steps with a long input (n >= long_n) but few loops (<= few_loops)."""
    import torch
    n, loops = (torch.tensor(x, dtype=torch.float64) for x in zip(*draws))
    return {"mean_loops": float(loops.mean()), "corr_n_loops": float(torch.corrcoef(torch.stack([n, loops]))[0, 1]),
            "frac_loops_ge_n": float((loops >= n).double().mean()),
            "long_few_steps": int(((n >= long_n) & (loops <= few_loops)).sum())}
