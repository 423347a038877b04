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
