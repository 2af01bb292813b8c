"""The offline Feedback-Agent: a rule-based lever policy and a search over declared parameters.

Lever rule: pull the harness lever while the dev score keeps improving; once the incumbent has
not been beaten for ``stall_generations`` generations, pull the weights lever if the run can
update weights (else keep searching the harness, and say why).

Harness search: the scaffold declares ``PARAMS`` (defaults) and ``SEARCH_SPACE`` (ranges; see
docs/scaffolds.md). Every earlier generation whose scaffold has the same space is a finished
trial (its ``PARAMS`` and its dev score); an optuna TPE sampler, seeded by the run's seed and the
generation number, proposes the next point, which is written into the incumbent's scaffold by
rewriting its ``PARAMS`` literal. The policy is a pure function of the run's history, so a
resumed run proposes exactly what an uninterrupted one would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sia_core.contracts.backend import AgentOutcome, FeedbackRequest
from sia_core.contracts.records import Decision
from sia_core.services.taskdir.params import (
    Declared,
    SpaceError,
    distributions,
    read_declared,
    write_params,
)

#: generations without a new incumbent before the weights lever is pulled
DEFAULT_STALL_GENERATIONS = 2


def _trials(
    request: FeedbackRequest, declared: Declared
) -> list[tuple[int, dict[str, Any], float]]:
    """``(gen, params, dev score)`` of every earlier generation searchable in this space."""
    runs_root = request.parent_gen_dir.parent
    out = []
    for row in request.history:
        if row.get("dev_score") is None:
            continue
        path = runs_root / f"gen_{row['gen']}" / "target_agent.py"
        try:
            theirs = read_declared(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, SpaceError):
            continue
        if theirs.space != declared.space:
            continue
        params = {k: theirs.params[k] for k in declared.space}
        out.append((int(row["gen"]), params, float(row["dev_score"])))
    return out


def propose_params(
    request: FeedbackRequest, declared: Declared, maximize: bool = True
) -> tuple[dict[str, Any], list[tuple[int, dict[str, Any], float]], str]:
    """The next point to try: ``(params, earlier trials, how it was chosen)``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = distributions(declared.space)
    trials = _trials(request, declared)
    seed = request.seed * 10_007 + request.next_gen
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=4, multivariate=True)
    study = optuna.create_study(direction="maximize" if maximize else "minimize", sampler=sampler)
    tried = set()
    for _, params, value in trials:
        try:
            study.add_trial(
                optuna.trial.create_trial(params=params, distributions=dists, value=value)
            )
            tried.add(json.dumps(params, sort_keys=True))
        except ValueError:
            continue  # a value outside the space (hand-edited scaffold): not a trial of it
    how = f"optuna TPE (seed {seed}) over {len(dists)} declared parameters, {len(tried)} earlier trials"
    for _ in range(20):  # avoid re-proposing a point already measured
        trial = study.ask(dists)
        if json.dumps(trial.params, sort_keys=True) not in tried:
            return dict(trial.params), trials, how
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return dict(trial.params), trials, how + " (no untried point found in 20 draws)"


def _rounded(params: dict[str, Any]) -> dict[str, Any]:
    """Floats to 4 significant digits: readable diffs; the value written is the trial's value."""
    return {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in params.items()}


def stalled_for(history: tuple[dict[str, Any], ...]) -> int:
    """Generations since the incumbent was made (0 when the last generation is the incumbent)."""
    gens = [int(r["gen"]) for r in history]
    incumbent = next((int(r["gen"]) for r in history if r.get("incumbent")), None)
    if not gens or incumbent is None:
        return 0
    return sum(1 for g in gens if g > incumbent)


def offline_feedback(
    request: FeedbackRequest,
    *,
    stall_generations: int = DEFAULT_STALL_GENERATIONS,
    maximize: bool = True,
) -> AgentOutcome:
    """Decide the next generation without an LLM."""
    stall = stalled_for(request.history)
    last = request.history[-1] if request.history else {}
    # under --lever harness the search goes on: proposing weights there would be overridden to
    # a harness generation without a scaffold edit, i.e. the parent run again
    if request.lever_override == "weights" or (
        stall >= stall_generations
        and not request.weights_blockers
        and request.lever_override != "harness"
    ):
        why = (
            "--lever weights"
            if request.lever_override == "weights"
            else f"the dev score has not beaten the incumbent for {stall} generation(s)"
        )
        rationale = f"weights: {why}; train the task model through the frozen scaffold"
        return AgentOutcome(
            decision=Decision(lever="weights", rationale=rationale, parent_gen=request.parent_gen),
            improvement_md=f"# Generation {request.next_gen}: weight update\n\n{rationale}.\n",
            transcript=({"policy": "offline", "stalled_for": stall, "lever": "weights"},),
        )

    if stall == 0 and last:
        trend = f"generation {last['gen']} is the incumbent (dev {last['dev_score']:.4f})"
    else:
        trend = f"no new incumbent for {stall} generation(s)"
    notes = []
    if stall >= stall_generations and request.weights_blockers:
        notes.append("weights would be next, but " + "; ".join(request.weights_blockers))

    try:
        declared = read_declared(request.parent_scaffold)
    except (SpaceError, SyntaxError) as exc:
        rationale = f"stop: nothing left to change offline ({exc}); {trend}"
        return AgentOutcome(
            decision=Decision(lever="stop", rationale=rationale, parent_gen=request.parent_gen),
            improvement_md=f"# Generation {request.next_gen}: stop\n\n{rationale}.\n",
            transcript=({"policy": "offline", "error": str(exc)},),
        )

    params, trials, how = propose_params(request, declared, maximize)
    new_params = {**declared.params, **_rounded(params)}
    scaffold = write_params(request.parent_scaffold, declared, new_params)
    changes = [
        f"`{k}`: {declared.params[k]!r} → {new_params[k]!r}"
        for k in declared.params
        if new_params[k] != declared.params[k]
    ]
    rationale = f"harness: {trend}; next point of the parameter search ({how})"
    table = "\n".join(
        f"| {g} | {score:.4f} | `{json.dumps(p, ensure_ascii=False)}` |" for g, p, score in trials
    )
    md = (
        f"# Generation {request.next_gen}: harness (parameter search)\n\n"
        f"Parent: generation {request.parent_gen} (the incumbent). {trend.capitalize()}.\n\n"
        f"## What changed\n\n"
        + (
            "".join(f"- {c}\n" for c in changes)
            or "- nothing (the search re-proposed the parent)\n"
        )
        + f"\n## Why\n\nThe offline Feedback-Agent searches the parameters the scaffold declares "
        f"(`SEARCH_SPACE`). {how}; each earlier generation's dev score is a finished trial:\n\n"
        f"| gen | dev | params |\n|---|---|---|\n{table}\n" + "".join(f"\n{n}.\n" for n in notes)
    )
    return AgentOutcome(
        decision=Decision(
            lever="harness", rationale=rationale, parent_gen=request.parent_gen, notes=tuple(notes)
        ),
        improvement_md=md,
        scaffold=scaffold,
        transcript=(
            {"policy": "offline", "stalled_for": stall, "trials": trials, "proposed": params},
        ),
    )


def offline_meta_note(path: Path | None = None) -> str:
    """The improvement.md of generation 1 without a Meta-Agent LLM."""
    return (
        "# Generation 1: the reference scaffold\n\n"
        "No Meta-Agent LLM is configured (offline default), so the task's reference scaffold is "
        "generation 1, unchanged.\n"
    )
