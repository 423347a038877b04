"""The eval plot: validation loss per loop count, drawn so its differences are not exaggerated.

The y-axis always spans the unigram entropy line (the loss of a model that ignores context), so a 0.01-nat spread
between loop counts looks like what it is next to the gain over token frequencies; error bars are the standard
error over validation batches, and the title names the step, the tokens trained on and the tokens scored.
"""
from __future__ import annotations

from pathlib import Path


def _si(n: int | None) -> str:
    if n is None:
        return "?"
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.1f}{suffix}"
    return str(n)


def plot_loops(results: dict[int, float], stderr: dict[int, float], unigram: float, out: Path, title: str, *,
               step: int | None = None, tokens_seen: int | None = None, scored: int | None = None
               ) -> tuple[float, float]:
    """Writes the PNG; returns the y-axis limits (for tests)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    xs = sorted(results)
    ys = [results[x] for x in xs]
    es = [stderr.get(x, 0.0) for x in xs]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label="validation loss (± s.e. over batches)")
    ax.axhline(unigram, color="grey", linestyle="--", label=f"unigram entropy {unigram:.3f}")
    if len(xs) > 1 and min(xs) > 0:
        ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    lo = min(min(y - e for y, e in zip(ys, es)), unigram)
    hi = max(max(y + e for y, e in zip(ys, es)), unigram)
    pad = 0.08 * (hi - lo) if hi > lo else 0.1
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("loops at inference")
    ax.set_ylabel("validation loss (nats/token)")
    spread = max(ys) - min(ys)
    ax.set_title(f"{title}\nstep {step if step is not None else '?'}, {_si(tokens_seen)} tokens trained, "
                 f"{_si(scored)} scored; spread {spread:.3f} nats, s.e. ≤ {max(es):.3f}", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8, frameon=False)  # below: no overlap
    fig.tight_layout()
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return lo - pad, hi + pad
