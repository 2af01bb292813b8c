"""The Training section: per weights generation, the training job's facts and settings and its
reward, KL and loss curves as SVG charts."""

from __future__ import annotations

from html import escape
from typing import Any

from ..data import GenInfo, RunInfo, TrainInfo, as_int
from ..markup import status_badge
from ..svg import Point, Series, chart


def train_charts(g: GenInfo, t: TrainInfo) -> str:
    """Reward (mean ± std), KL and loss per logged step of one training job."""
    steps = [s for s in t.steps if isinstance(s.get("step"), int | float)]

    def series(key: str, color: str, name: str, band_key: str | None = None) -> Series:
        pts = tuple(
            Point(
                x=float(s["step"]),
                y=float(s[key]),
                title=f"step {s['step']}: {name} {s[key]:.4g}",
                data={"step": str(s["step"])},
            )
            for s in steps
            if isinstance(s.get(key), int | float)
        )
        band: tuple[tuple[float, float, float], ...] = ()
        if band_key:
            band = tuple(
                (
                    float(s["step"]),
                    float(s[key]) - float(s[band_key]),
                    float(s[key]) + float(s[band_key]),
                )
                for s in steps
                if isinstance(s.get(key), int | float) and isinstance(s.get(band_key), int | float)
            )
        return Series(name=name, points=pts, color=color, band=band, css=key)

    total = as_int(t.settings.get("steps"))
    kw: dict[str, Any] = {
        "x_label": "step",
        "width": 480,
        "height": 230,
        "x_range": (0.6, total + 0.4) if total else None,
    }
    return (
        f'<div class="train-charts" data-gen="{g.gen}">'
        + chart(
            [series("reward_mean", "#c05621", "reward mean ± std", "reward_std")],
            title=f"gen {g.gen}: reward per step",
            y_label="reward",
            css="chart train-reward",
            **kw,
        )
        + chart(
            [series("kl", "#6b46c1", "KL")],
            title=f"gen {g.gen}: KL to the base model",
            y_label="KL",
            css="chart train-kl",
            **kw,
        )
        + chart(
            [series("loss", "#2b6cb0", "loss")],
            title=f"gen {g.gen}: loss",
            y_label="loss",
            css="chart train-loss",
            **kw,
        )
        + "</div>"
    )


def training_section(run: RunInfo) -> str:
    """Every weights generation's training job: facts, settings, error, curves."""
    out = []
    for g in run.gens:
        t = g.train
        if t is None:
            continue
        head = (
            f"<h3>gen {g.gen}: {escape(t.algorithm or g.rl_algorithm or '?')} "
            f"{status_badge(t.status)}</h3>"
        )
        facts = []
        if t.executor:
            facts.append(f"executor {t.executor}")
        total = as_int(t.settings.get("steps"))
        facts.append(f"{len(t.steps)}" + (f" of {total}" if total else "") + " step(s) logged")
        for key in (
            "reward_first",
            "reward_last",
            "kl_last",
            "seconds",
            "seconds_per_step",
            "device",
            "peak_rss_mb",
        ):
            v = t.metrics.get(key)
            if v is not None:
                facts.append(f"{key} {v:.4g}" if isinstance(v, float) else f"{key} {v}")
        settings = ", ".join(
            f"{k}={t.settings[k]}"
            for k in (
                "steps",
                "group_size",
                "items_per_step",
                "learning_rate",
                "lora_rank",
                "kl_coef",
            )
            if k in t.settings
        )
        zero = [s.get("zero_variance_groups") for s in t.steps]
        groups = as_int(t.settings.get("items_per_step"))
        if zero and all(isinstance(z, int) for z in zero):
            facts.append(
                "zero-variance reward groups per step: "
                + ", ".join(str(z) for z in zero)
                + (f" (of {groups})" if groups else "")
            )
        body = f"<p class='small'>{escape(' · '.join(facts))}</p>"
        if settings:
            body += f"<p class='small'>settings: {escape(settings)}</p>"
        if t.status == "running":
            body += (
                "<p class='warn'>training in progress: the curves show the steps logged so far</p>"
            )
        if t.error:
            body += f"<details><summary>error</summary><pre>{escape(t.error)}</pre></details>"
        out.append(head + body + train_charts(g, t))
    return "".join(out) or '<p class="small">no weights generation in this run</p>'
