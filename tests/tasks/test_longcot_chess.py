"""sia-task-longcot-chess: the task folder, its scorer, the exact knight_path solver, Stockfish."""

from __future__ import annotations

import importlib.util
import itertools
import json
import random
import subprocess
import sys
import zipfile
from collections import deque
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sia_core.contracts.records import Item
from sia_core.services.taskdir import Task, load_task
from sia_core.testing.conformance.task import TaskConformance
from sia_task_longcot_chess import knight, plugin, scoring

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "tasks" / "longcot-chess"
TASK_DIR = Path(plugin.__file__).parent / "task"


def _load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def task() -> Task:
    return load_task(TASK_DIR)


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Score without Stockfish: a path that does not exist makes the scorer fall back."""
    monkeypatch.setenv(scoring.ENV_ENGINE, "/nonexistent/stockfish")


def _engine_or_skip() -> None:
    ok, why = scoring.JUDGE.available()
    if not ok:
        pytest.skip(f"Stockfish is not available: {why}")


# -- the task folder ------------------------------------------------------------------------------


class TestLongcotChessConformance(TaskConformance):
    @pytest.fixture
    def task_dir(self) -> Path:
        return TASK_DIR


def test_plugin_registers_the_task_directory(sia_pm: Any, register_plugin: Any) -> None:
    register_plugin(plugin, "task-longcot-chess")
    spec = sia_pm.tasks().get("longcot-chess")
    assert Path(spec.path) == TASK_DIR
    assert (Path(spec.path) / "task.toml").is_file()


def test_split_sizes_and_template_mix(task: Task) -> None:
    def mix(split: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for item in task.items(split):
            out[item.input["template"]] = out.get(item.input["template"], 0) + 1
            assert item.id.startswith(item.input["template"])
        return out

    assert mix("test") == {"best_3_moves": 11, "knight_path": 39}
    assert mix("dev") == {"best_3_moves": 11, "knight_path": 39}
    assert mix("train") == {"best_3_moves": 28, "knight_path": 100}
    assert sum(i.id.startswith("knight_path_gen_") for i in task.items("dev")) == 28


def test_test_split_is_sias_fifty_with_sias_answers(task: Task) -> None:
    ids = [i.id for i in task.items("test")]
    assert ids[0] == "best_3_moves_hard_1" and ids[-1] == "best_3_moves_hard_11"
    labels = task.private_labels("test")
    assert labels["best_3_moves_hard_1"] == ["c4", "bxc4", "bxc4"]
    assert labels["knight_path_hard_1"] == "218"


def test_generated_items_are_reproducible_from_the_seed(task: Task) -> None:
    make_splits = _load_module(PACKAGE_ROOT / "make_splits.py", "longcot_make_splits")
    fresh = make_splits.generated_items(2)
    dev = {i.id: i.input for i in task.items("dev")}
    labels = task.private_labels("dev")
    for row in fresh:
        assert dev[row["id"]]["prompt"] == row["prompt"]
        assert labels[row["id"]] == row["label"]


def test_wheel_ships_data_licences_and_scorer(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path)]
    if importlib.util.find_spec("hatchling") is not None:
        command.append("--no-build-isolation")  # offline and fast: the backend is installed
    subprocess.run(
        [*command, str(PACKAGE_ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("sia_task_longcot_chess-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    base = "sia_task_longcot_chess/"
    for rel in (
        "plugin.py",
        "LICENSE.longcot-MIT",
        "LICENSE.sia-agent-MIT",
        "NOTICE.md",
        "task/task.toml",
        "task/scorer.py",
        "task/data/public/task.md",
        "task/data/public/train.jsonl",
        "task/data/public/test.jsonl",
        "task/data/private/test_labels.jsonl",
        "task/data/private/dev_labels.jsonl",
        "task/reference/reference_target_agent.py",
    ):
        assert base + rel in names, rel
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "task-longcot-chess = sia_task_longcot_chess.plugin" in text


# -- the scorer, without an engine (exact figures) ------------------------------------------------


def _answers_from_labels(task: Task, split: str) -> dict[str, Any]:
    return dict(task.private_labels(split))


@pytest.mark.usefixtures("no_engine")
class TestScorer:
    def test_perfect_answers_in_every_form(self, task: Task) -> None:
        labels = task.private_labels("test")
        answers: dict[str, Any] = {}
        for k, (item_id, label) in enumerate(sorted(labels.items())):
            if isinstance(label, list):
                forms = [label, "solution = [" + ", ".join(label) + "]", f"solution = {label}"]
            else:
                forms = [int(label), f"solution = {label}", f"The walk takes {label} moves."]
            answers[item_id] = forms[k % 3]
        result = task.score("test", answers)
        assert result.score == 1.0
        assert result.extra["accuracy_best_3_moves"] == 1.0
        assert result.extra["accuracy_knight_path"] == 1.0

    def test_all_wrong(self, task: Task) -> None:
        answers = {
            i.id: "solution = [a3, a6, h3]"
            if i.input["template"] == "best_3_moves"
            else "solution = 1"
            for i in task.items("test")
        }
        result = task.score("test", answers)
        assert result.score == 0.0
        assert result.n_answered == 50
        assert result.extra["parse_failures_best_3_moves"] == 0
        assert result.extra["parse_failures_knight_path"] == 0

    def test_empty_and_malformed(self, task: Task) -> None:
        empty = task.score("test", {})
        assert empty.score == 0.0 and empty.n_answered == 0
        assert empty.extra["parse_failures_knight_path"] == 39
        malformed = {i.id: "I do not know." for i in task.items("test")}
        malformed["knight_path_hard_1"] = "solution = two hundred"
        malformed["best_3_moves_hard_1"] = "solution = [c4, bxc4]"
        result = task.score("test", malformed)
        assert result.score == 0.0
        assert result.extra["parse_failures_best_3_moves"] == 11
        assert result.extra["parse_failures_knight_path"] == 39

    def test_partial_answers_divide_by_all_items(self, task: Task) -> None:
        labels = task.private_labels("test")
        knights = sorted(i for i in labels if i.startswith("knight_path"))[:10]
        best3 = sorted(i for i in labels if i.startswith("best_3_moves"))[:3]
        answers = {i: labels[i] for i in knights + best3}
        answers[knights[0]] = str(int(labels[knights[0]]) + 1)  # one wrong knight answer
        result = task.score("test", answers)
        assert result.score == pytest.approx(12 / 50)
        assert result.n_answered == 13
        assert result.extra["accuracy_knight_path"] == pytest.approx(9 / 39)
        assert result.extra["accuracy_best_3_moves"] == pytest.approx(3 / 11)
        assert result.extra["accuracy_best_3_moves_strict"] == pytest.approx(3 / 11)
        assert result.extra["n_best_3_moves"] == 11 and result.extra["n_knight_path"] == 39

    def test_check_and_mate_marks_are_stripped_but_order_counts(self) -> None:
        item = Item(id="best_3_moves_x", input={"template": "best_3_moves", "prompt": ""})
        label = ["Rd6", "Qh6", "Qxh6+"]
        assert scoring.score_item("solution = [Rd6, Qh6, Qxh6]", label, item) == 1.0
        assert scoring.score_item("solution = [Rd6+, Qh6, Qxh6#]", label, item) == 1.0
        assert scoring.score_item("solution = 1. Rd6 Qh6 2. Qxh6+", label, item) == 1.0
        assert scoring.score_item("Line: [Rd6, Qh6, Qxh6+] is best", label, item) == 1.0
        assert scoring.score_item(["Rd6!", "Qh6?", "Qxh6+"], label, item) == 1.0
        with_engine_off = scoring.score_item("solution = [Qh6, Rd6, Qxh6]", label, item)
        assert with_engine_off == 0.0

    def test_integers_compare_as_numbers(self) -> None:
        item = Item(id="knight_path_x", input={"template": "knight_path", "prompt": ""})
        right = ["solution = 218", "SOLUTION=0218", "solution = 218 moves", 218, "so 218"]
        for answer in right:
            assert scoring.score_item(answer, "218", item) == 1.0, answer
        wrong = ["solution = -218", "solution = 2180", "218 ... solution = 217", "", "none"]
        for answer in wrong:
            assert scoring.score_item(answer, "218", item) == 0.0, answer
        # LongCoT reads the first integer after the LAST "solution ="
        assert scoring.score_item("solution = 5\nsolution = 218", "218", item) == 1.0

    def test_fallback_is_reported(self, task: Task) -> None:
        result = task.score("test", {})
        note = result.extra["best_3_moves_scoring"]
        assert note.startswith("reference match only")
        assert "SIA_STOCKFISH=/nonexistent/stockfish" in note


def test_engine_off_setting_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(scoring.ENV_ENGINE, "off")
    ok, why = scoring.JUDGE.available()
    assert not ok and "off" in why


def test_parsers_follow_longcot() -> None:
    assert scoring.parse_moves_answer("solution = [e4, e5, Nf3]\nmore text") == ["e4", "e5", "Nf3"]
    assert scoring.parse_moves_answer("solution = [e4, e5]") is None
    assert scoring.parse_moves_answer("e4 then e5 then Nf3 then Nc6") == ["e5", "Nf3", "Nc6"]
    assert scoring.parse_moves_answer("solution = 1... Kf8 2. Nxe6+ Kxe7") == [
        "Kf8",
        "Nxe6+",
        "Kxe7",
    ]
    assert scoring.parse_int_answer("no number here") is None
    assert scoring.strip_suffix("d1=Q+!?") == "d1=Q"


# -- the exact knight_path solver -----------------------------------------------------------------


KNIGHT_MOVES = [(a, b) for a in (-2, -1, 1, 2) for b in (-2, -1, 1, 2) if abs(a) != abs(b)]


def brute_force_moves(problem: knight.KnightProblem) -> int | None:
    """BFS over (square, targets touched so far): the least moves that touch every target.

    Independent of the solver: no pairwise distances, no tour, just the state graph.
    """
    index = {t: k for k, t in enumerate(problem.targets)}
    full = (1 << len(problem.targets)) - 1

    def touched(square: tuple[int, int], mask: int) -> int:
        return mask | (1 << index[square]) if square in index else mask

    start = (problem.start, touched(problem.start, 0))
    seen = {start}
    queue = deque([(start, 0)])
    while queue:
        (square, mask), moves = queue.popleft()
        if mask == full:
            return moves
        for dr, dc in KNIGHT_MOVES:
            nxt = (square[0] + dr, square[1] + dc)
            if 0 <= nxt[0] < problem.rows and 0 <= nxt[1] < problem.cols:
                state = (nxt, touched(nxt, mask))
                if state not in seen:
                    seen.add(state)
                    queue.append((state, moves + 1))
    return None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10**6),
    rows=st.integers(4, 8),
    cols=st.integers(4, 8),
    n_targets=st.integers(1, 6),
)
def test_generator_answers_match_brute_force(
    seed: int, rows: int, cols: int, n_targets: int
) -> None:
    problem = knight.generate_problem(random.Random(seed), rows, cols, n_targets)
    assert len(set(problem.targets)) == n_targets and problem.start not in problem.targets
    assert knight.solve(problem) == brute_force_moves(problem)
    assert knight.parse_prompt(knight.format_prompt(problem)) == problem


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10**6), st.integers(2, 7))
def test_tour_solver_matches_enumeration(seed: int, n: int) -> None:
    rng = random.Random(seed)
    points = [(rng.randrange(12), rng.randrange(12)) for _ in range(n)]
    dist = [[abs(a[0] - b[0]) + abs(a[1] - b[1]) for b in points] for a in points]
    length, order = knight.shortest_open_tour(dist)
    best = min(
        sum(dist[a][b] for a, b in zip((0, *p), p, strict=False))
        for p in itertools.permutations(range(1, n))
    )
    assert length == best
    assert order[0] == 0 and sorted(order) == list(range(n))
    assert sum(dist[a][b] for a, b in itertools.pairwise(order)) == length


def test_all_39_sia_knight_path_references_match_the_exact_solver(task: Task) -> None:
    labels = task.private_labels("test")
    knights = [i for i in task.items("test") if i.input["template"] == "knight_path"]
    assert len(knights) == 39
    mismatches = [
        i.id
        for i in knights
        if knight.solve(knight.parse_prompt(i.input["prompt"])) != int(labels[i.id])
    ]
    assert mismatches == []


def test_bfs_distances_on_a_finite_board() -> None:
    # a corner: (0, 0) -> (1, 1) takes 4 moves on a board, 2 on an infinite one
    assert knight.bfs_distances(8, 8, (0, 0), [(1, 1), (2, 1), (7, 7)]) == {
        (1, 1): 4,
        (2, 1): 1,
        (7, 7): 6,
    }
    with pytest.raises(ValueError, match="off the"):
        knight.bfs_distances(8, 8, (8, 0))


# -- the reference scaffold -----------------------------------------------------------------------


class _Ctx:
    def __init__(self, reply: str, params: dict[str, Any] | None = None) -> None:
        self.reply, self.params, self.calls, self.train = reply, params or {}, 0, []
        self.notes: list[str] = []

    def llm(self, messages: Any, **params: Any) -> str:
        self.calls += 1
        return self.reply

    def log(self, kind: str, content: str) -> None:
        self.notes.append(content)


@pytest.fixture(scope="module")
def scaffold() -> ModuleType:
    return _load_module(TASK_DIR / "reference" / "reference_target_agent.py", "longcot_reference")


def test_scaffold_params_lie_in_the_search_space(scaffold: ModuleType) -> None:
    for key, space in scaffold.SEARCH_SPACE.items():
        value = scaffold.PARAMS[key]
        if "choices" in space:
            assert value in space["choices"], key
        else:
            low, high = next(v for k, v in space.items() if k in ("int", "float"))
            assert low <= value <= high, key


def test_scaffold_answers_in_longcot_form(task: Task, scaffold: ModuleType) -> None:
    b3 = next(i for i in task.items("test") if i.input["template"] == "best_3_moves")
    ctx = _Ctx("Sure.\nsolution = [c4, bxc4, bxc4]\nbye")
    assert scaffold.solve(b3, ctx) == "solution = [c4, bxc4, bxc4]"
    kp = next(i for i in task.items("test") if i.input["template"] == "knight_path")
    assert scaffold.solve(kp, _Ctx("solution = 42")) == "solution = 42"


def test_scaffold_knight_fallback_only_when_the_reply_has_no_integer(
    task: Task, scaffold: ModuleType
) -> None:
    kp = next(i for i in task.items("test") if i.input["template"] == "knight_path")
    exact = int(task.private_labels("test")[kp.id])
    ctx = _Ctx("I cannot tell.")
    answer = scaffold.solve(kp, ctx)
    estimate = scoring.parse_int_answer(answer)
    assert estimate is not None and estimate >= exact  # a tour can never beat the optimum
    assert ctx.notes and ctx.calls == 1
    assert scaffold.solve(kp, _Ctx("I cannot tell.", {"knight_solver": "off"})) is None
    only = _Ctx("solution = 1", {"knight_solver": "only"})
    assert scaffold.solve(kp, only) == answer and only.calls == 0


# -- Stockfish ------------------------------------------------------------------------------------


def test_stockfish_accepts_its_own_line_that_differs_from_the_reference(task: Task) -> None:
    _engine_or_skip()
    labels = task.private_labels("test")
    for item in task.items("test"):
        if item.input["template"] != "best_3_moves":
            continue
        line = scoring.JUDGE.best_line(scoring.fen_of(item.input["prompt"]))
        assert line is not None and len(line) == 3
        if not scoring.reference_match(line, labels[item.id]):
            break
    else:
        pytest.fail("Stockfish's line equals the reference on every test item")
    result = task.score("test", {item.id: line})
    assert result.per_item[item.id] == 1.0
    assert result.extra["accuracy_best_3_moves"] == pytest.approx(1 / 11)
    assert result.extra["accuracy_best_3_moves_strict"] == 0.0
    assert "Stockfish" in result.extra["best_3_moves_scoring"]


def test_stockfish_rejects_a_blunder_and_an_illegal_line() -> None:
    _engine_or_skip()
    fen = "2kr3r/ppq1b3/2p2p1p/4nN2/2bPN3/7P/PPP1QPP1/R3R1K1 w - - 1 20"
    prompt = f"You are given a chess position using this FEN: {fen}\nGive the 3 best next moves"
    item = Item(id="best_3_moves_x", input={"template": "best_3_moves", "prompt": prompt})
    label = ["Qe3", "Ng6", "Nd2"]
    # the queen takes a defended bishop and is lost for it
    assert scoring.score_item("solution = [Qxc4, Nxc4, Nd2]", label, item) == 0.0
    assert scoring.score_item("solution = [Qe3, Qe3, Nd2]", label, item) == 0.0  # illegal
    assert scoring.score_item("solution = [Qe3, Ng6, Nd2]", label, item) == 1.0


def test_stockfish_verdicts_are_cached_and_deterministic(
    task: Task, monkeypatch: pytest.MonkeyPatch
) -> None:
    _engine_or_skip()
    labels = task.private_labels("dev")
    item = next(i for i in task.items("dev") if i.input["template"] == "best_3_moves")
    fen, reference = scoring.fen_of(item.input["prompt"]), labels[item.id]
    verdicts = [scoring.JUDGE.accepts(fen, reference)]
    scoring.JUDGE._cache.clear()  # judged afresh: the same verdict
    verdicts.append(scoring.JUDGE.accepts(fen, reference))
    assert verdicts == [True, True]

    def no_engine() -> None:
        raise AssertionError("a cached verdict must not start the engine")

    monkeypatch.setattr(scoring.JUDGE, "_engine", no_engine)
    assert scoring.JUDGE.accepts(fen, reference) is True


def test_references_of_the_test_split_pass_the_engine_rule(task: Task) -> None:
    """The tolerance is set so LongCoT's own reference lines pass it (checked for SIA's 11)."""
    _engine_or_skip()
    labels = task.private_labels("test")
    rejected = [
        i.id
        for i in task.items("test")
        if i.input["template"] == "best_3_moves"
        and not scoring.JUDGE.accepts(scoring.fen_of(i.input["prompt"]), labels[i.id])
    ]
    assert rejected == []


def test_dev_and_test_share_no_prompt_with_train(task: Task) -> None:
    train = {json.dumps(i.input, sort_keys=True) for i in task.items("train")}
    for split in ("dev", "test"):
        assert not any(json.dumps(i.input, sort_keys=True) in train for i in task.items(split))
