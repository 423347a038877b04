"""PNG plots for the research experiments (matplotlib, Agg). Every plot draws its reference lines (chance, dense
baseline, unigram entropy) so a difference is read against an honest scale; legends sit outside the axes, so they
never cover the data."""
from __future__ import annotations

from pathlib import Path


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def legend_outside(ax, **kw):
    """The legend to the right of `ax`, outside it (the saved figure grows to hold it)."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kw)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=80, bbox_inches="tight")
    _plt().close(fig)
    return path


def depth_curves(res: dict, path: Path) -> Path:
    """Learning curves: accuracy on each training k against step, one panel per arm (seed 0)."""
    plt = _plt()
    names = list(res["arms"])
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], names):
        curve = res["arms"][name]["seeds"][0]["curve"]
        steps = [p["step"] for p in curve]
        for k in res["train_k"]:
            ax.plot(steps, [p[f"acc_k{k}"] for p in curve], label=f"k={k}")
        ax.axhline(res["chance"], color="gray", ls=":", label="chance")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylim(0, 1.02)
    axes[0][0].set_ylabel("accuracy (train k)")
    legend_outside(axes[0][-1], fontsize=7)
    return _save(fig, path)


def _mean_grid(arm: dict) -> dict[str, dict[str, float]]:
    grids = [s["grid"] for s in arm["seeds"]]
    return {n: {k: sum(g[n][k] for g in grids) / len(grids) for k in grids[0][n]} for n in grids[0]}


def depth_grid(res: dict, path: Path) -> Path:
    """Accuracy against k: one line per inference loop count for the looped arms, dense arms dashed."""
    plt = _plt()
    looped = [n for n, a in res["arms"].items() if a["loops"]]
    fig, axes = plt.subplots(1, len(looped), figsize=(4.5 * len(looped), 3.4), sharey=True, squeeze=False)
    ks = res["test_k"]
    cmap = plt.get_cmap("viridis")
    for ax, name in zip(axes[0], looped):
        grid = _mean_grid(res["arms"][name])
        for i, n in enumerate(res["eval_loops"]):
            ax.plot(ks, [grid[str(n)][str(k)] for k in ks], color=cmap(i / len(res["eval_loops"])), marker=".",
                    label=f"{n} loops")
        for dname, a in res["arms"].items():
            if not a["loops"]:
                g = _mean_grid(a)["dense"]
                ax.plot(ks, [g[str(k)] for k in ks], ls="--", color="k" if "flops" in dname else "tab:red",
                        label=dname)
        ax.axhline(res["chance"], color="gray", ls=":", label="chance")
        ax.axvspan(0.5, max(res["train_k"]) + 0.5, color="orange", alpha=0.1, label="trained k")
        ax.set_title(f"{res['task']}: {name}", fontsize=9)
        ax.set_xlabel("k (hops / bits)")
        ax.set_ylim(0, 1.02)
    axes[0][0].set_ylabel("accuracy")
    legend_outside(axes[0][-1], fontsize=6)
    return _save(fig, path)


def lines(series: dict[str, tuple[list, list]], path: Path, *, xlabel: str, ylabel: str, title: str,
          hlines: dict[str, float] | None = None, logx: bool = False, logy: bool = False) -> Path:
    """Generic line plot: name -> (xs, ys), plus labelled horizontal reference lines."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", ms=3, label=name)
    for name, y in (hlines or {}).items():
        ax.axhline(y, ls="--", color="gray", lw=1)
        ax.annotate(name, (ax.get_xlim()[0], y), fontsize=7, va="bottom")
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    legend_outside(ax, fontsize=7)
    return _save(fig, path)


_COLORS = {"n/2": "tab:blue", "n": "tab:green", "2n": "tab:purple", "dense": "tab:red"}
_ARM_ORDER = ("loops=n", "independent", "loops=n-nopos", "dense-params", "dense-flops")


def _parity_arms(res: dict) -> list[str]:
    """The headline arms and the no-RoPE ablation (the other ablations have their own table and plot)."""
    arms = {r["arm"] for r in res["runs"].values()}
    arms = (arms & set(_ARM_ORDER)) or arms
    return sorted(arms, key=lambda a: (_ARM_ORDER.index(a) if a in _ARM_ORDER else len(_ARM_ORDER), a))


def _parity_mean(res: dict, arm: str, schedule: str) -> tuple[dict[str, list[float]], int]:
    """Mean over an arm's seeds of the per-position accuracy, per length; and the number of seeds."""
    rows = [r["position_acc"][schedule] for r in res["runs"].values() if r["arm"] == arm]
    return {n: [sum(v) / len(rows) for v in zip(*(r[n] for r in rows))] for n in rows[0]}, len(rows)


def parity_vs_length(res: dict, path: Path) -> Path:
    """Last-bit accuracy against length, one panel per looped arm, one line per loop schedule (mean over seeds, thin
    lines per seed); dense arms dashed in every panel; the trained lengths shaded."""
    plt = _plt()
    arms = _parity_arms(res)
    looped = [a for a in arms if "dense" not in a] or arms
    dense = [a for a in arms if "dense" in a]
    sc = res["scale"]
    fig, axes = plt.subplots(1, len(looped), figsize=(4.6 * len(looped), 3.5), sharey=True, squeeze=False)
    for ax, arm in zip(axes[0], looped):
        for sch in (res["schedules"] if arm not in dense else ["dense"]):
            mean, k = _parity_mean(res, arm, sch)
            ns = [int(n) for n in mean]
            for r in res["runs"].values():
                if r["arm"] == arm and k > 1:
                    ax.plot(ns, [r["last_bit"][sch][str(n)] for n in ns], color=_COLORS[sch], lw=0.5, alpha=0.4)
            ax.plot(ns, [mean[str(n)][-1] for n in ns], color=_COLORS[sch], marker=".", label=f"{sch} loops ({k} seeds)")
        for i, d in enumerate(dense):
            mean, k = _parity_mean(res, d, "dense")
            ns = [int(n) for n in mean]
            ax.plot(ns, [mean[str(n)][-1] for n in ns], ls="--", color="k" if "flops" in d else "tab:red",
                    label=f"{d} ({k} seeds)")
        ax.axhline(res["chance"], color="gray", ls=":", label="chance")
        ax.axvspan(0.5, sc["n_train"] + 0.5, color="orange", alpha=0.1, label="trained lengths")
        ax.axvline(sc["n_probe"], color="gray", lw=0.5)
        ax.set_title(f"prefix parity: {arm}", fontsize=9)
        ax.set_xlabel("length n (bits)")
        ax.set_ylim(0.3, 1.02)
    axes[0][0].set_ylabel("last-bit accuracy")
    axes[0][0].legend(fontsize=6, loc="lower left")
    return _save(fig, path)


def parity_by_position(res: dict, path: Path) -> Path:
    """Accuracy at each bit position of the longest test sequences, per arm and loop schedule (mean over seeds):
    shows where the errors start."""
    plt = _plt()
    arms = _parity_arms(res)
    sc = res["scale"]
    n = str(sc["n_test"])
    fig, axes = plt.subplots(1, len(arms), figsize=(3.6 * len(arms), 3.2), sharey=True, squeeze=False)
    for ax, arm in zip(axes[0], arms):
        for sch in (["dense"] if "dense" in arm else res["schedules"]):
            mean, k = _parity_mean(res, arm, sch)
            ax.plot(range(1, len(mean[n]) + 1), mean[n], marker=".", ms=3, color=_COLORS[sch], label=f"{sch} loops" if sch != "dense"
                    else "dense")
        ax.axvline(sc["n_train"] + 0.5, color="orange", lw=1, label="longest trained")
        ax.axhline(res["chance"], color="gray", ls=":")
        ax.set_title(f"{arm}: n = {n} ({k} seeds)", fontsize=9)
        ax.set_xlabel("bit position")
        ax.set_ylim(0.3, 1.02)
        ax.legend(fontsize=6, loc="lower left")
    axes[0][0].set_ylabel("accuracy")
    return _save(fig, path)


def _last_bit_mean(res: dict, arm: str, sch: str) -> tuple[list[int], list[float], list[dict]]:
    rows = [r for r in res["runs"].values() if r["arm"] == arm]
    ns = sorted(int(n) for n in rows[0]["last_bit"][sch])
    return ns, [sum(r["last_bit"][sch][str(n)] for r in rows) / len(rows) for n in ns], rows


def parity_ablations(res: dict, ablations: list[str], path: Path) -> Path:
    """Last-bit accuracy against length at n loops: one panel per finished ablation arm (per seed thin, mean thick),
    the loops = n baseline (mean of its seeds) dashed in every panel."""
    plt = _plt()
    arms = [a for a in ablations if any(r["arm"] == a for r in res["runs"].values())]
    has_base = any(r["arm"] == "loops=n" for r in res["runs"].values())
    sc = res["scale"]
    fig, axes = plt.subplots(1, len(arms), figsize=(3.4 * len(arms), 3.2), sharey=True, squeeze=False)
    for ax, arm in zip(axes[0], arms):
        ns, mean, rows = _last_bit_mean(res, arm, "n")
        for r in rows:
            ax.plot(ns, [r["last_bit"]["n"][str(n)] for n in ns], color="tab:green", lw=0.6, alpha=0.5)
        ax.plot(ns, mean, color="tab:green", marker=".", label=f"{arm} ({len(rows)} seeds)")
        if has_base:
            bn, bmean, brows = _last_bit_mean(res, "loops=n", "n")
            ax.plot(bn, bmean, color="k", ls="--", label=f"loops=n ({len(brows)} seeds)")
        ax.axhline(res["chance"], color="gray", ls=":")
        ax.axvspan(0.5, sc["n_train"] + 0.5, color="orange", alpha=0.1)
        ax.set_title(arm, fontsize=9)
        ax.set_xlabel("length n (bits), n loops")
        ax.set_ylim(0.3, 1.02)
        ax.legend(fontsize=6, loc="lower left")
    axes[0][0].set_ylabel("last-bit accuracy")
    return _save(fig, path)


def parity_act(res: dict, path: Path) -> Path:
    """ACT on prefix parity: loops the last bit ran before halting against length (per seed; y = n, the loops = n
    schedule, dotted), and last-bit accuracy against length next to the loops = n arm's."""
    plt = _plt()
    rows = [r for r in res["runs"].values() if r["arm"] == "act"]
    caps = list(rows[0]["loops_used"])
    sc = res["scale"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    colors = dict(zip(caps, ("tab:blue", "tab:purple")))
    for c in caps:
        ns = sorted(int(n) for n in rows[0]["loops_used"][c])
        for i, r in enumerate(rows):
            ax1.plot(ns, [r["loops_used"][c][str(n)][-1] for n in ns], color=colors[c], marker=".", lw=0.8,
                     label=f"last bit, {c} loops" if i == 0 else None)
            ax1.plot(ns, [sum(r["loops_used"][c][str(n)]) / n for n in ns], color=colors[c], ls="--", lw=0.6,
                     label=f"mean over bits, {c}" if i == 0 else None)
        ns, mean, _ = _last_bit_mean(res, "act", c)
        ax2.plot(ns, mean, color=colors[c], marker=".", label=f"ACT, {c} loops ({len(rows)} seeds)")
    ax1.plot(ns, ns, color="gray", ls=":", label="loops = n")
    if any(r["arm"] == "loops=n" for r in res["runs"].values()):
        bn, bmean, brows = _last_bit_mean(res, "loops=n", "n")
        ax2.plot(bn, bmean, color="k", ls="--", label=f"loops=n, n loops ({len(brows)} seeds)")
    for ax in (ax1, ax2):
        ax.axvspan(0.5, sc["n_train"] + 0.5, color="orange", alpha=0.1)
        ax.set_xlabel("length n (bits)")
    ax2.axhline(res["chance"], color="gray", ls=":")
    ax1.set_ylabel("loops used before halting")
    ax2.set_ylabel("last-bit accuracy")
    ax2.set_ylim(0.3, 1.02)
    ax1.set_title("ACT: loops used against length", fontsize=9)
    ax2.set_title("ACT vs loops = n", fontsize=9)
    legend_outside(ax1, fontsize=6)
    ax2.legend(fontsize=6, loc="lower left")
    return _save(fig, path)
