"""Baselines for the longcot-chess and gpqa tasks, scored by the tasks' own scorers.

longcot-chess: the exact solver on ``knight_path``; Stockfish's own line on ``best_3_moves``
at the judge's depth and deeper, each scored by the task's scorer (engine-tolerant) and by
strict reference match; the reference scaffold's non-LLM path (``knight_solver = "only"``:
BFS distances + nearest-target walk + 2-opt/or-opt) through sia's real runner (process sandbox,
2 workers, a gateway in front of the scripted task model, which it does not call). gpqa: the
random-guess expectation only (no GPQA data here). Prints markdown tables; asserts nothing.

    .venv/bin/python benchmarks/baselines_chess_gpqa.py [--deep-depth 20]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sia_core.contracts.records import ScoreResult
from sia_core.services.gateway import Gateway
from sia_core.services.process_sandbox import ProcessSandbox
from sia_core.services.runner import RunSpec, run_items
from sia_core.services.taskdir import Task, load_task
from sia_core.surface.builtin.scripted import ScriptedTaskModel
from sia_task_longcot_chess import knight, plugin, scoring

Row = tuple[str, str, ScoreResult, float]


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def _items(task: Task, split: str, template: str) -> list[Any]:
    return [i for i in task.items(split) if i.input["template"] == template]


def exact_knight(task: Task, split: str) -> dict[str, Any]:
    """The exact solver's answers to the split's knight_path items."""
    return {
        i.id: f"solution = {knight.solve(knight.parse_prompt(i.input['prompt']))}"
        for i in _items(task, split, "knight_path")
    }


def stockfish_lines(task: Task, split: str, depth: int) -> dict[str, Any]:
    """Stockfish's 3-move line (best move at each ply, searched afresh) at ``depth``."""
    import chess
    import chess.engine

    path, why = scoring.JUDGE.locate()
    if path is None:
        raise SystemExit(f"Stockfish is needed for this baseline: {why}")
    answers: dict[str, Any] = {}
    with chess.engine.SimpleEngine.popen_uci(path) as engine:
        engine.configure({"Threads": 1, "Hash": 16})
        for item in _items(task, split, "best_3_moves"):
            board = chess.Board(scoring.fen_of(item.input["prompt"]))
            line = []
            for _ in range(3):
                move = engine.analyse(board, chess.engine.Limit(depth=depth), game=object())["pv"][
                    0
                ]
                line.append(board.san(move))
                board.push(move)
            answers[item.id] = line
    return answers


def scaffold_knight_only(task: Task, split: str) -> dict[str, Any]:
    """The reference scaffold with ``knight_solver = "only"`` on the knight_path items."""
    with tempfile.TemporaryDirectory() as tmp, Gateway(ScriptedTaskModel()) as gateway:
        gateway.begin(1)
        spec = RunSpec(
            scaffold_path=task.reference_scaffold,
            work_dir=Path(tmp),
            public_dir=task.public_dir,
            train_examples=tuple(task.train_examples()),
            params={"knight_solver": "only"},
            parallel=task.config.parallel,
            item_timeout_s=task.config.item_timeout_s,
        )
        items = _items(task, split, "knight_path")
        results = run_items(spec, items, sandbox=ProcessSandbox(), gateway=gateway)
        if gateway.calls():
            raise SystemExit("the scaffold called the model with knight_solver=only")
    failed = [r for r in results if r.status != "ok"]
    if failed:
        raise SystemExit(f"{len(failed)} items failed: {failed[0].error[:500]}")
    return {r.item_id: r.answer for r in results}


def chess_rows(deep_depth: int) -> list[Row]:
    """Every longcot-chess baseline on dev and test."""
    task = load_task(Path(plugin.__file__).parent / "task")
    rows: list[Row] = []
    exact: dict[str, dict[str, Any]] = {}
    deep: dict[str, dict[str, Any]] = {}
    for split in ("dev", "test"):
        exact[split], s = _timed(lambda split=split: exact_knight(task, split))
        label = "exact solver (BFS + MILP tour), knight_path only"
        rows.append((label, split, task.score(split, exact[split]), s))
    for depth in (scoring.DEPTH, deep_depth):
        for split in ("dev", "test"):
            answers, s = _timed(
                lambda split=split, depth=depth: stockfish_lines(task, split, depth)
            )
            deep[split] = answers
            label = f"Stockfish line, depth {depth}, best_3_moves only"
            rows.append((label, split, task.score(split, answers), s))
    for split in ("dev", "test"):
        label = f"exact solver + Stockfish depth {deep_depth} (no LLM)"
        rows.append((label, split, task.score(split, exact[split] | deep[split]), 0.0))
    for split in ("dev", "test"):
        answers, s = _timed(lambda split=split: scaffold_knight_only(task, split))
        label = "reference scaffold, knight_solver=only (no LLM), knight_path only"
        rows.append((label, split, task.score(split, answers), s))
    return rows


def print_chess(rows: list[Row]) -> None:
    """The longcot-chess table."""
    print(
        "| method | split | accuracy (all items) | knight_path | best_3_moves (engine rule) "
        "| best_3_moves (strict) | seconds |"
    )
    print("|---|---|---|---|---|---|---|")
    for method, split, score, seconds in rows:
        x = score.extra

        def frac(key: str, n_key: str, x: dict[str, Any] = x) -> str:
            return f"{round(x[key] * x[n_key])} / {x[n_key]}"

        print(
            f"| {method} | {split} | {score.score:.2%} | {frac('accuracy_knight_path', 'n_knight_path')} "
            f"| {frac('accuracy_best_3_moves', 'n_best_3_moves')} "
            f"| {frac('accuracy_best_3_moves_strict', 'n_best_3_moves')} | {seconds:.1f} |"
        )
    print()
    print(f"best_3_moves scoring: {rows[-1][2].extra['best_3_moves_scoring']}")


def print_gpqa() -> None:
    """Random guessing on gpqa: an expectation, not a measurement (no GPQA data here)."""
    print()
    print("| gpqa method | split | expected accuracy | standard deviation |")
    print("|---|---|---|---|")
    for split, n in (("test", 99), ("dev", 50), ("all of Diamond", 198)):
        sd = math.sqrt(0.25 * 0.75 / n)
        print(f"| uniform random letter | {split} ({n} items) | 25.00% | ±{sd:.2%} |")


def main() -> None:
    """Measure and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deep-depth", type=int, default=20, help="the deeper Stockfish line")
    args = parser.parse_args()
    print_chess(chess_rows(args.deep_depth))
    print_gpqa()


if __name__ == "__main__":
    main()
