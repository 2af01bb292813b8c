"""The gate's rule: does a candidate's dev score beat the incumbent's beyond noise?

By default (``--gate-margin`` not given) the two generations' per-item dev scores are paired (the
same items, scored by the same scorer) and the candidate must gain on average more than a noise
bar: ``mean(d) > z * SE(d)`` (``z`` = 1.645, or Student's t below 30 items) with ``d_i`` = candidate − incumbent on item ``i`` (reversed for
a task that minimises) and ``SE = stdev(d) / sqrt(n)``, a one-sided test at about 5 %. On 191
lawbench dev items a gain of one item (+0.005) is within noise; +0.07 is well beyond it. Where
items cannot be paired (a program-style task reports one score), the plain comparison decides
and the verdict says so. ``--gate-margin M`` replaces the rule by "beats it by more than M".
"""

from __future__ import annotations

import math
import statistics

import attrs

from sia_core.contracts.records import ScoreResult

#: z of the one-sided noise bar (95 %), used from 30 paired items on
NOISE_Z = 1.645
#: Student's t (one-sided 95 %) by degrees of freedom, for fewer paired items
T95 = {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860, 9: 1.833}
T95 |= {10: 1.812, 11: 1.796, 12: 1.782, 13: 1.771, 14: 1.761, 15: 1.753, 16: 1.746}
T95 |= {17: 1.740, 18: 1.734, 19: 1.729, 20: 1.725, 21: 1.721, 22: 1.717, 23: 1.714}
T95 |= {24: 1.711, 25: 1.708, 26: 1.706, 27: 1.703, 28: 1.701}


def critical_value(n: int) -> float:
    """The bar's multiplier for ``n`` paired items: Student's t below 30, else ``NOISE_Z``."""
    return T95.get(n - 1, NOISE_Z) if n < 30 else NOISE_Z


@attrs.frozen(kw_only=True)
class GateVerdict:
    """Whether the candidate replaces the incumbent, why, and the figures behind it."""

    accepted: bool
    reason: str
    rule: str  # "noise" | "margin" | "plain"
    paired_gain: float | None = None
    noise_bar: float | None = None
    n_paired: int = 0


def judge(
    candidate: ScoreResult,
    incumbent: ScoreResult,
    incumbent_gen: int,
    *,
    maximize: bool = True,
    margin: float | None = None,
) -> GateVerdict:
    """The gate's verdict on ``candidate`` against the incumbent's dev scores."""
    dev, inc = candidate.score, incumbent.score
    sign = 1.0 if maximize else -1.0
    if margin is not None:
        accepted = sign * (dev - inc) > margin
        verb = "beats" if accepted else "does not beat"
        return GateVerdict(
            accepted=accepted,
            rule="margin",
            reason=f"dev {dev:.4f} {verb} the incumbent gen {incumbent_gen} ({inc:.4f}) by more "
            f"than --gate-margin {margin}",
        )
    common = sorted(set(candidate.per_item) & set(incumbent.per_item))
    if len(common) < 2:
        accepted = sign * (dev - inc) > 0
        verb = "beats" if accepted else "does not beat"
        return GateVerdict(
            accepted=accepted,
            rule="plain",
            reason=f"dev {dev:.4f} {verb} the incumbent gen {incumbent_gen} ({inc:.4f}); no "
            "per-item scores to pair, so no noise bar",
        )
    diffs = [sign * (float(candidate.per_item[i]) - float(incumbent.per_item[i])) for i in common]
    gain = statistics.fmean(diffs)
    z = critical_value(len(diffs))
    bar = z * statistics.stdev(diffs) / math.sqrt(len(diffs))
    accepted = gain > bar and gain > 0
    verdict = "beyond" if accepted else ("within" if gain > 0 else "no gain, below")
    return GateVerdict(
        accepted=accepted,
        rule="noise",
        paired_gain=gain,
        noise_bar=bar,
        n_paired=len(diffs),
        reason=f"dev {dev:.4f} vs the incumbent gen {incumbent_gen} ({inc:.4f}): paired gain "
        f"{gain:+.4f} over {len(diffs)} items, {verdict} the noise bar {bar:.4f} "
        f"({z} x SE)",
    )
