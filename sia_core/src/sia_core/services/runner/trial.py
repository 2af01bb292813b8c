"""Trying a candidate scaffold on a few public train items: the agents' ``try_scaffold`` tool."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from sia_core.contracts.records import to_dict
from sia_core.contracts.sandbox import Limits, Sandbox
from sia_core.services.gateway import Budget, Gateway
from sia_core.services.runner.items import run_items
from sia_core.services.runner.spec import RunSpec, scaffold_kind
from sia_core.services.taskdir import Task


def try_on_train(
    task: Task,
    code: str,
    n_items: int,
    *,
    trials_dir: Path,
    gateway: Gateway,
    sandbox: Sandbox,
    gen: int,
    max_calls: int | None,
    model_name: str,
    parallel: int,
    item_timeout_s: float,
) -> dict[str, Any]:
    """Run ``code`` on the first ``n_items`` public train items, in ``trials_dir/trial_K``.

    Train labels are public, so the result shows them beside each answer. The calls go through
    ``gateway`` (budgeted to ``max_calls``) and ``sandbox``; their usage is returned, not booked
    to a split.
    """
    train = task.items("train")[: max(1, n_items)]
    if not train:
        return {"error": "this task has no train items to test on; only syntax was checked"}
    k = len(list(trials_dir.glob("trial_*"))) + 1 if trials_dir.exists() else 1
    tdir = trials_dir / f"trial_{k}"
    (tdir / "work").mkdir(parents=True, exist_ok=True)
    scaffold = tdir / "target_agent.py"
    scaffold.write_text(code, encoding="utf-8")
    if scaffold_kind(scaffold) != "per_item":
        return {"error": "a program-style scaffold (no solve) cannot be tried on a few items"}
    gateway.begin(gen, Budget(max_calls=max_calls))
    spec = RunSpec(
        scaffold_path=scaffold,
        work_dir=tdir / "work",
        public_dir=task.public_dir,
        train_examples=tuple(task.train_examples()),
        model_name=model_name,
        parallel=min(len(train), parallel),
        item_timeout_s=item_timeout_s,
        limits=Limits(),
    )
    results = run_items(spec, train, sandbox=sandbox, gateway=gateway)
    labels = {e["id"]: e["label"] for e in task.train_examples()}
    inputs = {i.id: i.input for i in train}
    items = []
    for r in results:
        score = None
        if task.config.kind == "per_item":
            score = task.score_answer("train", r.item_id, r.answer)
        items.append(
            {
                "id": r.item_id,
                "input": inputs.get(r.item_id),
                "answer": r.answer,
                "label": labels.get(r.item_id),
                "score": score,
                "status": r.status,
                "error": (r.error or "")[:1500],
                "seconds": r.seconds,
                "trajectory": json.dumps(to_dict(r.trajectory), default=str)[:2000],
            }
        )
    scores = [i["score"] for i in items if i["score"] is not None]
    shutil.rmtree(tdir / "work", ignore_errors=True)
    return {
        "score": sum(scores) / len(train) if scores else None,
        "n_items": len(train),
        "items": items,
        "usage": gateway.usage(),
    }
