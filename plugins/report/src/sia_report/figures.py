"""PNG figures for papers and READMEs (matplotlib, imported only here, Agg backend)."""

from __future__ import annotations

from pathlib import Path

from .data import RunInfo
from .sections.scores import best_so_far
from .svg import DEFAULT_COLOR, LEVER_COLORS


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def score_png(run: RunInfo, path: Path) -> Path | None:
    """Dev (coloured by lever), sealed test, best-so-far and the incumbent; None if no score."""
    dev = [(g.gen, g.dev, g.lever) for g in run.gens if g.dev is not None]
    if not dev:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=150)
    try:
        xs = [d[0] for d in dev]
        ax.plot(xs, [d[1] for d in dev], color="#2d3748", lw=1.2, zorder=2, label="dev")
        for lever in sorted({d[2] or "?" for d in dev}):
            pts = [d for d in dev if (d[2] or "?") == lever]
            ax.scatter(
                [p[0] for p in pts],
                [p[1] for p in pts],
                color=LEVER_COLORS.get(lever, DEFAULT_COLOR),
                s=40,
                zorder=3,
                label=f"dev: {lever}",
            )
        best = best_so_far(run)
        if best:
            ax.step(
                [b[0] for b in best],
                [b[1] for b in best],
                where="post",
                color="#d69e2e",
                ls="--",
                lw=1.5,
                label="best so far",
            )
        test = [(g.gen, g.test) for g in run.gens if g.test is not None]
        if test:
            ax.scatter(
                [t[0] for t in test],
                [t[1] for t in test],
                marker="D",
                color="#38a169",
                s=36,
                zorder=4,
                label="sealed test",
            )
        inc = next((g for g in run.gens if g.gen == run.incumbent and g.dev is not None), None)
        if inc is not None:
            ax.scatter(
                [inc.gen],
                [inc.dev],
                s=220,
                facecolors="none",
                edgecolors="#d69e2e",
                linewidths=2,
                zorder=5,
                label=f"incumbent (gen {inc.gen})",
            )
        ax.set_xlabel("generation")
        ax.set_ylabel("score")
        ax.set_xticks(sorted({g.gen for g in run.gens}))
        ax.set_title(f"sia run {run.run_id}: {run.task or '?'}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def training_png(run: RunInfo, path: Path) -> Path | None:
    """One row per weights generation: reward mean ± std, KL, loss per step; None if no log."""
    rows = [g for g in run.gens if g.train is not None and g.train.steps]
    if not rows:
        return None
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(len(rows), 3, figsize=(10, 2.6 * len(rows)), dpi=150, squeeze=False)
    try:
        for (ax_r, ax_k, ax_l), g in zip(axes, rows, strict=True):
            assert g.train is not None
            steps = [s for s in g.train.steps if isinstance(s.get("step"), int | float)]
            x = [float(s["step"]) for s in steps]
            mean = [float(s.get("reward_mean") or 0.0) for s in steps]
            std = [float(s.get("reward_std") or 0.0) for s in steps]
            ax_r.plot(x, mean, color="#c05621", marker="o", ms=3)
            low = [m - s for m, s in zip(mean, std, strict=True)]
            high = [m + s for m, s in zip(mean, std, strict=True)]
            ax_r.fill_between(x, low, high, color="#c05621", alpha=0.15)
            ax_r.set_title(f"gen {g.gen} ({g.rl_algorithm or '?'}): reward mean ± std", fontsize=9)
            ax_k.plot(
                x, [float(s.get("kl") or 0.0) for s in steps], color="#6b46c1", marker="o", ms=3
            )
            ax_k.set_title("KL", fontsize=9)
            ax_l.plot(
                x, [float(s.get("loss") or 0.0) for s in steps], color="#2b6cb0", marker="o", ms=3
            )
            ax_l.set_title("loss", fontsize=9)
            for ax in (ax_r, ax_k, ax_l):
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.set_xlabel("step", fontsize=8)
                ax.grid(alpha=0.3)
                ax.tick_params(labelsize=7)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
