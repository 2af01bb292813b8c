"""Baselines for the lawbench and spaceship-titanic tasks, scored by the tasks' own scorers.

lawbench: majority class; character 1-3-gram TF-IDF + LinearSVC trained on train; the reference
scaffold's non-LLM strategy (``knn_vote``). spaceship-titanic: all-True; gradient boosting with
light feature engineering; the reference scaffold's defaults. Both scaffolds run through sia's
real runner (process sandbox, 2 workers, a gateway in front of the scripted task model, which
neither calls). Prints a markdown table; asserts nothing.

    .venv/bin/python benchmarks/baselines_lawbench_spaceship.py [--only lawbench|spaceship-titanic]
"""

from __future__ import annotations

import argparse
import functools
import math
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sia_core.contracts.records import ScoreResult
from sia_core.machinery.plugins import new_plugin_manager
from sia_core.services.gateway import Gateway
from sia_core.services.process_sandbox import ProcessSandbox
from sia_core.services.runner import RunSpec, run_items
from sia_core.services.taskdir import Task, load_task
from sia_core.surface.builtin.scripted import ScriptedTaskModel

Row = tuple[str, str, str, ScoreResult, float]


def _task(name: str) -> Task:
    return load_task(new_plugin_manager().tasks().get(name).path)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def run_scaffold(task: Task, split: str, params: dict[str, Any]) -> ScoreResult:
    """Run the task's reference scaffold on a split through sia's runner; its score."""
    with tempfile.TemporaryDirectory() as tmp, Gateway(ScriptedTaskModel()) as gateway:
        gateway.begin(1)
        spec = RunSpec(
            scaffold_path=task.reference_scaffold,
            work_dir=Path(tmp),
            public_dir=task.public_dir,
            train_examples=tuple(task.train_examples()),
            params=params,
            parallel=task.config.parallel,
            item_timeout_s=task.config.item_timeout_s,
        )
        results = run_items(spec, task.items(split), sandbox=ProcessSandbox(), gateway=gateway)
        if gateway.calls():
            raise SystemExit(f"{task.name}: the scaffold called the model with {params}")
    failed = [r for r in results if r.status != "ok"]
    if failed:
        raise SystemExit(f"{task.name}: {len(failed)} items failed: {failed[0].error[:500]}")
    return task.score(split, {r.item_id: r.answer for r in results})


# --------------------------------------------------------------------------------------------
# lawbench
# --------------------------------------------------------------------------------------------


def _predict(model: Any, vectorizer: Any, texts: list[str]) -> Any:
    return model.predict(vectorizer.transform(texts))


def lawbench_rows() -> list[Row]:
    """Majority class, TF-IDF + LinearSVC, and the scaffold's knn_vote."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.svm import LinearSVC

    task = _task("lawbench")
    train = task.train_examples()
    rows: list[Row] = []

    majority = Counter(r["label"] for r in train).most_common(1)[0][0]
    for split in ("test",):
        answers = {item.id: majority for item in task.items(split)}
        rows.append(("lawbench", "majority class (train)", split, task.score(split, answers), 0.0))

    def fit() -> tuple[TfidfVectorizer, LinearSVC]:
        vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)
        matrix = vectorizer.fit_transform([r["input"] for r in train])
        return vectorizer, LinearSVC(C=1.0).fit(matrix, [r["label"] for r in train])

    (vectorizer, svc), fit_s = _timed(fit)
    for split in ("dev", "test"):
        items = task.items(split)
        texts = [i.input for i in items]
        predicted, s = _timed(functools.partial(_predict, svc, vectorizer, texts))
        answers = {item.id: str(p) for item, p in zip(items, predicted, strict=True)}
        method = "char 1-3-gram TF-IDF + LinearSVC (C=1)"
        rows.append(("lawbench", method, split, task.score(split, answers), fit_s + s))

    for split in ("dev", "test"):
        score, s = _timed(functools.partial(run_scaffold, task, split, {"strategy": "knn_vote"}))
        rows.append(("lawbench", "reference scaffold, strategy knn_vote", split, score, s))
    return rows


# --------------------------------------------------------------------------------------------
# spaceship-titanic
# --------------------------------------------------------------------------------------------

SPEND = ("RoomService", "FoodCourt", "ShoppingMall", "Spa", "VRDeck")
CATEGORIES = {
    "HomePlanet": ("Earth", "Europa", "Mars"),
    "Destination": ("TRAPPIST-1e", "55 Cancri e", "PSO J318.5-22"),
    "deck": tuple("ABCDEFGT"),
    "side": ("P", "S"),
}


def _num(value: Any) -> float:
    if value is None:
        return math.nan
    return float(value)


def spaceship_features(row: dict[str, Any], group_size: Counter[str]) -> list[float]:
    """Light feature engineering, Kaggle style: cabin parts, spending, travel-group size."""
    deck, number, side = (row["Cabin"] or "//").split("/")
    values = {"HomePlanet": row["HomePlanet"], "Destination": row["Destination"]}
    values |= {"deck": deck, "side": side}
    out = [1.0 if values[k] == c else 0.0 for k, cs in CATEGORIES.items() for c in cs]
    spend = [_num(row[c]) for c in SPEND]
    total = sum(s for s in spend if not math.isnan(s))
    out += [_num(row["CryoSleep"]), _num(row["VIP"]), _num(row["Age"])]
    out += [math.log1p(s) if not math.isnan(s) else math.nan for s in spend]
    out += [math.log1p(total), float(total == 0), float(number) if number else math.nan]
    group = row["PassengerId"].split("_")[0]
    out += [float(group_size[group]), float(group_size[group] == 1)]
    return out


def spaceship_rows() -> list[Row]:
    """All-True, gradient boosting, and the scaffold's defaults."""
    import numpy as np
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline

    task = _task("spaceship-titanic")
    train = task.train_examples()
    rows: list[Row] = []
    for split in ("test",):
        answers = {item.id: True for item in task.items(split)}
        rows.append(("spaceship-titanic", "all True", split, task.score(split, answers), 0.0))

    # group sizes over every passenger's public inputs (no labels), as Kaggle notebooks do
    everyone = [r["input"] for r in train] + [
        i.input for s in ("dev", "test") for i in task.items(s)
    ]
    group_size = Counter(r["PassengerId"].split("_")[0] for r in everyone)

    def fit() -> Any:
        x = np.array([spaceship_features(r["input"], group_size) for r in train])
        y = np.array([r["label"] for r in train])
        model = make_pipeline(
            SimpleImputer(strategy="median"), GradientBoostingClassifier(random_state=0)
        )
        return model.fit(x, y)

    model, fit_s = _timed(fit)
    for split in ("dev", "test"):
        items = task.items(split)
        x = np.array([spaceship_features(i.input, group_size) for i in items])
        answers = {i.id: bool(p) for i, p in zip(items, model.predict(x), strict=True)}
        method = "gradient boosting (100 trees, depth 3) + light features"
        rows.append(("spaceship-titanic", method, split, task.score(split, answers), fit_s))

    for split in ("dev", "test"):
        score, s = _timed(functools.partial(run_scaffold, task, split, {}))
        rows.append(("spaceship-titanic", "reference scaffold, defaults", split, score, s))
    return rows


def main() -> None:
    """Measure and print the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["lawbench", "spaceship-titanic"])
    args = parser.parse_args()
    rows: list[Row] = []
    if args.only in (None, "lawbench"):
        rows += lawbench_rows()
    if args.only in (None, "spaceship-titanic"):
        rows += spaceship_rows()
    print("| task | method | split | accuracy | macro-F1 | correct / items | seconds |")
    print("|---|---|---|---|---|---|---|")
    for task, method, split, score, seconds in rows:
        f1 = score.extra.get("macro_f1")
        correct = round(sum(score.per_item.values()))
        print(
            f"| {task} | {method} | {split} | {score.score:.2%} | "
            f"{'-' if f1 is None else f'{f1:.3f}'} | {correct} / {score.n_items} | {seconds:.1f} |"
        )


if __name__ == "__main__":
    main()
