"""Scoring for longcot-chess: LongCoT's own answer parsing, plus an engine-tolerant best_3_moves.

Answers are read as LongCoT's verifier (``src/_verify/_chess.py`` at 39190f01) reads them:

- ``knight_path``: the first integer after the last ``solution =`` (case-insensitive); with no
  ``solution =``, the last integer anywhere. Compared with the reference as integers.
- ``best_3_moves``: the first line after the last ``solution =``, brackets, commas and move
  numbers (``1.``, ``1...``) dropped, must be exactly three SAN moves; failing that, the last
  ``[m1, m2, m3]`` triplet in the text, else its last three SAN moves. ``+ # ! ?`` suffixes are
  stripped on both sides and the three moves must equal the reference in order.

A non-string answer is written as LongCoT expects first: ``218`` -> ``"solution = 218"``,
``["e4", "e5", "Nf3"]`` -> ``"solution = [e4, e5, Nf3]"``.

**Engine tolerance (best_3_moves).** LongCoT's reference lines agree with Stockfish on the first
move but often not on the opponent's reply, so exact matching of a whole 3-ply line is noisy. When
a Stockfish binary is available an answer that does not match the reference is still correct if
the three moves are legal in sequence from the item's FEN and *each* move loses at most
:data:`MAX_WIN_PCT_LOSS` points of winning chance against Stockfish's best move in that position
(Stockfish at depth :data:`DEPTH`, one thread, hash cleared before every search, at most
:data:`MAX_SECONDS` per search; centipawns -> winning chance with Lichess's formula, mate = +-100000
cp). At this depth and margin all 50 LongCoT hard reference lines pass the rule. A reference match
always counts, so the engine score is never below the strict score. Without Stockfish the score
falls back to reference match and :func:`aggregate` says so in ``best_3_moves_scoring``.
``SIA_STOCKFISH`` names the binary (default: ``stockfish`` on PATH or ``/usr/games/stockfish``);
``SIA_STOCKFISH=off`` forces the reference-match fallback.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import threading
from collections.abc import Iterator, Mapping
from typing import Any

log = logging.getLogger("sia.task.longcot-chess")

TEMPLATES = ("best_3_moves", "knight_path")
ENV_ENGINE = "SIA_STOCKFISH"
DEPTH = 14
MAX_SECONDS = 2.0
MAX_WIN_PCT_LOSS = 8.0
MATE_CP = 100_000
_DEFAULT_ENGINE_PATHS = ("/usr/games/stockfish", "/usr/local/bin/stockfish")

# LongCoT's regexes (src/_verify/_regexes.py), verbatim
SOLUTION_PATTERN = r"solution\s*=\s*"
INT_PATTERN = r"-?\d+"
SAN_MOVE_PATTERN = (
    r"(?:"
    r"O-O-O|O-O|"
    r"(?:[KQRBN](?:[a-h]|[1-8]|[a-h][1-8])?)?x?[a-h][1-8](?:=[QRBN])?|"
    r"[a-h]x[a-h][1-8](?:=[QRBN])?"
    r")"
    r"(?:[+#])?"
    r"(?:[!?]{1,2})?"
)
SAN_TRIPLET_LIST_PATTERN = (
    r"\[\s*"
    r"(" + SAN_MOVE_PATTERN + r")\s*(?:,\s*|\s+)"
    r"(" + SAN_MOVE_PATTERN + r")\s*(?:,\s*|\s+)"
    r"(" + SAN_MOVE_PATTERN + r")\s*"
    r"\]"
)
SAN_SUFFIX_PATTERN = r"[+#!?]+$"
MOVE_NUMBER_TOKEN_PATTERN = r"^\d+\.+$"
_FEN_RE = re.compile(r"FEN: (.+)")


# -- LongCoT's parsing ---------------------------------------------------------------------------


def answer_text(answer: Any) -> str:
    """The answer as text, non-string answers written in LongCoT's ``solution = ...`` form."""
    if isinstance(answer, str):
        return answer
    if isinstance(answer, bool) or answer is None:
        return ""
    if isinstance(answer, int | float):
        return f"solution = {answer}"
    if isinstance(answer, list | tuple):
        return "solution = [" + ", ".join(str(a) for a in answer) + "]"
    return str(answer)


def extract_solution(text: str) -> str | None:
    """Text after the last ``solution =`` (case-insensitive), or ``None``."""
    matches = list(re.finditer(SOLUTION_PATTERN, text, re.IGNORECASE))
    if not matches:
        return None
    solution = text[matches[-1].end() :].strip()
    return solution or None


def _first_line(text: str) -> str:
    return text.split("\n")[0].strip()


def parse_int_answer(answer: Any) -> int | None:
    """A ``knight_path`` answer as an integer (LongCoT's rule), ``None`` if it has none."""
    text = answer_text(answer)
    solution = extract_solution(text)
    if solution:
        match = re.search(INT_PATTERN, solution)
        return int(match.group()) if match else None
    found = list(re.finditer(INT_PATTERN, text))
    return int(found[-1].group()) if found else None


def _move_tokens(text: str) -> list[str]:
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1].strip()
    tokens = re.split(r"[,\s]+", text)
    return [t for t in tokens if t and not re.match(MOVE_NUMBER_TOKEN_PATTERN, t)]


def parse_moves_answer(answer: Any) -> list[str] | None:
    """A ``best_3_moves`` answer as three SAN moves (LongCoT's rule), ``None`` if unparsable."""
    text = answer_text(answer)
    solution = extract_solution(text)
    if solution is not None:
        tokens = _move_tokens(_first_line(solution))
        if len(tokens) == 3 and all(re.fullmatch(SAN_MOVE_PATTERN, t) for t in tokens):
            return tokens
    last: list[str] | None = None
    for match in re.finditer(SAN_TRIPLET_LIST_PATTERN, text):
        last = [match.group(1), match.group(2), match.group(3)]
    if last is not None:
        return last
    moves = [m.group(0) for m in re.finditer(SAN_MOVE_PATTERN, text)]
    return moves[-3:] if len(moves) >= 3 else None


def strip_suffix(move: str) -> str:
    """``"Qxh6+"`` -> ``"Qxh6"``: check, mate and annotation marks dropped."""
    return re.sub(SAN_SUFFIX_PATTERN, "", move)


def reference_match(moves: list[str] | None, label: Any) -> bool:
    """Whether parsed moves equal the reference line, in order, suffixes stripped."""
    if moves is None:
        return False
    expected = [str(t).strip() for t in label] if isinstance(label, list) else _move_tokens(label)
    return [strip_suffix(m) for m in moves] == [strip_suffix(m) for m in expected]


def template_of(item_id: str, label: Any = None, item_input: Any = None) -> str:
    """An item's template: from its input, else its id prefix, else the label's shape."""
    if isinstance(item_input, Mapping) and item_input.get("template") in TEMPLATES:
        return str(item_input["template"])
    for template in TEMPLATES:
        if item_id.startswith(template):
            return template
    return "best_3_moves" if isinstance(label, list) else "knight_path"


def fen_of(prompt: str) -> str:
    """The FEN a ``best_3_moves`` prompt states."""
    match = _FEN_RE.search(prompt)
    if match is None:
        raise ValueError("no FEN in the prompt")
    return match.group(1).strip()


# -- the engine ----------------------------------------------------------------------------------


def win_pct(cp: int) -> float:
    """Winning chance (0..100) for the side with ``cp`` centipawns (Lichess's formula)."""
    return 50.0 + 50.0 * (2.0 / (1.0 + math.exp(-0.00368208 * cp)) - 1.0)


class EngineJudge:
    """Judges 3-move lines with Stockfish.

    The engine runs only while a line is judged (python-chess's engine thread would otherwise
    keep the interpreter from exiting). ``available()`` says whether a binary can be used and,
    if not, why. Verdicts are cached by (FEN, moves, setting), so scoring the same answers again
    (every generation) costs nothing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._broken: dict[str, str] = {}  # path -> why it could not be started
        self._names: dict[str, str] = {}  # path -> the engine's own name
        self._cache: dict[tuple[str, tuple[str, ...], str], bool] = {}

    def _setting(self) -> str:
        return os.environ.get(ENV_ENGINE, "").strip()

    def locate(self) -> tuple[str | None, str]:
        """``(path of the engine binary, "")`` or ``(None, why there is none)``."""
        setting = self._setting()
        if setting.lower() in ("off", "none", "0", "false"):
            return None, f"{ENV_ENGINE}={setting} turns the engine off"
        if setting:
            path = shutil.which(setting)
            if path is None or not os.path.isfile(path):
                return None, f"{ENV_ENGINE}={setting} is not an executable file"
        else:
            candidates = (shutil.which("stockfish"), *_DEFAULT_ENGINE_PATHS)
            path = next((c for c in candidates if c and shutil.which(c)), None)
            if path is None:
                return None, (
                    "Stockfish not found (install the Debian package `stockfish`, or set "
                    f"{ENV_ENGINE}=/path/to/stockfish)"
                )
        if path in self._broken:
            return None, self._broken[path]
        return path, ""

    def available(self) -> tuple[bool, str]:
        """``(True, engine name or path)`` or ``(False, why not)``."""
        path, reason = self.locate()
        if path is None:
            return False, reason
        return True, self._names.get(path, f"Stockfish ({path})")

    def describe(self) -> str:
        """How best_3_moves answers that differ from the reference are judged, in one line."""
        ok, what = self.available()
        if ok:
            return (
                f"reference match, or every move within {MAX_WIN_PCT_LOSS:g} win-% points of "
                f"{what}'s best (depth {DEPTH}, <= {MAX_SECONDS:g} s per search)"
            )
        return f"reference match only: {what}"

    @contextlib.contextmanager
    def _engine(self) -> Iterator[Any]:
        """A started engine (``None`` when there is none), stopped on exit."""
        path, _ = self.locate()
        if path is None:
            yield None
            return
        import chess.engine

        try:
            engine = chess.engine.SimpleEngine.popen_uci(path, timeout=30)
            engine.configure({"Threads": 1, "Hash": 16})
        except Exception as exc:  # a broken binary must not stop scoring
            self._broken[path] = f"could not start {path}: {type(exc).__name__}: {exc}"
            log.warning("longcot-chess: best_3_moves falls back to reference match: %s", exc)
            yield None
            return
        self._names[path] = str(engine.id.get("name", "Stockfish"))
        try:
            yield engine
        finally:
            engine.quit()

    def accepts(self, fen: str, moves: list[str]) -> bool | None:
        """Whether the line is good enough; ``None`` when no engine is available."""
        cache_key = (fen, tuple(moves), self._setting())
        if cache_key in self._cache:
            return self._cache[cache_key]
        with self._lock, self._engine() as engine:
            if engine is None:
                return None
            verdict = self._judge(engine, fen, moves)
        self._cache[cache_key] = verdict
        return verdict

    def best_line(self, fen: str, plies: int = 3) -> list[str] | None:
        """Stockfish's own line from ``fen`` (its best move at each ply, searched afresh, as the
        judge searches), in SAN; ``None`` when no engine is available."""
        import chess
        import chess.engine

        with self._lock, self._engine() as engine:
            if engine is None:
                return None
            board = chess.Board(fen)
            line = []
            for _ in range(plies):
                if board.is_game_over():
                    break
                limit = chess.engine.Limit(depth=DEPTH, time=MAX_SECONDS)
                move = engine.analyse(board, limit, game=object())["pv"][0]
                line.append(board.san(move))
                board.push(move)
        return line

    def _judge(self, engine: Any, fen: str, moves: list[str]) -> bool:
        import chess
        import chess.engine

        try:
            board = chess.Board(fen)
        except ValueError:
            return False
        limit = chess.engine.Limit(depth=DEPTH, time=MAX_SECONDS)
        for san in moves:
            try:
                move = board.parse_san(strip_suffix(san))
            except ValueError:  # illegal, ambiguous or not SAN
                return False
            # a fresh game per search clears the hash, so verdicts do not depend on history
            best = engine.analyse(board, limit, game=object())
            if not best.get("pv") or best["pv"][0] != move:
                played = engine.analyse(board, limit, root_moves=[move], game=object())
                loss = win_pct(_cp(best, board.turn)) - win_pct(_cp(played, board.turn))
                if loss > MAX_WIN_PCT_LOSS:
                    return False
            board.push(move)
        return True


def _cp(info: Mapping[str, Any], turn: bool) -> int:
    return int(info["score"].pov(turn).score(mate_score=MATE_CP))


JUDGE = EngineJudge()


# -- the scorer contract ---------------------------------------------------------------------------


def score_item(answer: Any, label: Any, item: Any) -> float:
    """1.0 if correct, else 0.0 (see the module docstring for the rules)."""
    item_input = getattr(item, "input", None)
    template = template_of(str(getattr(item, "id", "")), label, item_input)
    if template == "knight_path":
        got = parse_int_answer(answer)
        want = parse_int_answer(label)
        return 1.0 if got is not None and got == want else 0.0
    moves = parse_moves_answer(answer)
    if moves is None:
        return 0.0
    if reference_match(moves, label):
        return 1.0
    if not JUDGE.available()[0]:
        return 0.0  # reference match only; aggregate() says so
    prompt = item_input.get("prompt", "") if isinstance(item_input, Mapping) else str(item_input)
    return 1.0 if JUDGE.accepts(fen_of(prompt), moves) else 0.0


def aggregate(
    per_item: Mapping[str, float], answers: Mapping[str, Any], labels: Mapping[str, Any]
) -> dict[str, Any]:
    """Per-template accuracy and counts, strict reference-match accuracy, parse failures."""
    out: dict[str, Any] = {}
    for template in TEMPLATES:
        ids = [i for i in per_item if template_of(i, labels.get(i)) == template]
        if not ids:
            continue
        parse = parse_int_answer if template == "knight_path" else parse_moves_answer
        unparsed = [i for i in ids if answers.get(i) is None or parse(answers[i]) is None]
        out[f"n_{template}"] = len(ids)
        out[f"accuracy_{template}"] = math.fsum(per_item[i] for i in ids) / len(ids)
        out[f"parse_failures_{template}"] = len(unparsed)
        if template == "best_3_moves":
            strict = sum(
                1
                for i in ids
                if answers.get(i) is not None
                and reference_match(parse_moves_answer(answers[i]), labels[i])
            )
            out["accuracy_best_3_moves_strict"] = strict / len(ids)
            out["best_3_moves_scoring"] = JUDGE.describe()
    return out
