"""LongCoT's ``knight_path`` template: parse, format, solve exactly and generate items.

An item gives a board size, a knight's starting square and target squares; the answer is the
least number of knight moves that touches every target. The exact answer is

1. knight distances by breadth-first search on the (finite) board, from the start and from each
   target, and
2. the shortest open tour (a Hamiltonian path from the start through all targets) over those
   distances, solved as an integer program with subtour-elimination cuts (HiGHS through
   ``scipy.optimize.milp``, relative gap 0), so the optimum is proven, not estimated.

Step 2 is exact for "touch all targets": in any walk, the squares where targets are first
reached appear in some order, and each leg between two of them is at least their BFS distance.
"""

from __future__ import annotations

import functools
import itertools
import random
import re
from collections import deque
from collections.abc import Sequence

import attrs

__all__ = [
    "KnightProblem",
    "bfs_distances",
    "distance_matrix",
    "format_prompt",
    "generate_problem",
    "parse_prompt",
    "path_length",
    "shortest_open_tour",
    "solve",
]

Square = tuple[int, int]

#: LongCoT's prompt, verbatim (its spelling "Postion" included)
PROMPT_TEMPLATE = (
    "There is a chess board of size {rows}x{cols} and certain target squares. Calculate the "
    "minimum number of moves it takes for the knight at the given starting position to touch all "
    "the target squares. Both target squares and the starting position is given in a 0-indexed "
    "format:\n\nStarting Postion: ({sx}, {sy})\nTarget Squares: [{targets}]\n\n"
    "Return your answer in the format: solution = <integer>"
)

_SIZE_RE = re.compile(r"board of size (\d+)x(\d+)")
_START_RE = re.compile(r"Starting Postion: \((\d+), (\d+)\)")
_SQUARE_RE = re.compile(r"\((\d+), (\d+)\)")
_MOVES: tuple[Square, ...] = (
    (1, 2),
    (2, 1),
    (2, -1),
    (1, -2),
    (-1, -2),
    (-2, -1),
    (-2, 1),
    (-1, 2),
)


@attrs.frozen
class KnightProblem:
    """A ``knight_path`` instance: board ``rows`` x ``cols``, a start and distinct targets."""

    rows: int
    cols: int
    start: Square
    targets: tuple[Square, ...]


def format_prompt(problem: KnightProblem) -> str:
    """The item's prompt, exactly as LongCoT writes it."""
    targets = ", ".join(f"({a}, {b})" for a, b in problem.targets)
    return PROMPT_TEMPLATE.format(
        rows=problem.rows,
        cols=problem.cols,
        sx=problem.start[0],
        sy=problem.start[1],
        targets=targets,
    )


def parse_prompt(prompt: str) -> KnightProblem:
    """The problem a ``knight_path`` prompt states; ``ValueError`` if it is not one."""
    size, start = _SIZE_RE.search(prompt), _START_RE.search(prompt)
    if size is None or start is None or "Target Squares:" not in prompt:
        raise ValueError("not a knight_path prompt")
    listed = prompt.split("Target Squares:", 1)[1].split("]", 1)[0]
    targets = tuple((int(a), int(b)) for a, b in _SQUARE_RE.findall(listed))
    return KnightProblem(
        rows=int(size.group(1)),
        cols=int(size.group(2)),
        start=(int(start.group(1)), int(start.group(2))),
        targets=targets,
    )


@functools.cache
def _neighbours(rows: int, cols: int) -> tuple[tuple[int, ...], ...]:
    """For each square (as ``row * cols + col``), the squares a knight reaches from it."""
    out = []
    for r in range(rows):
        for c in range(cols):
            out.append(
                tuple(
                    (r + dr) * cols + c + dc
                    for dr, dc in _MOVES
                    if 0 <= r + dr < rows and 0 <= c + dc < cols
                )
            )
    return tuple(out)


def bfs_distances(
    rows: int, cols: int, source: Square, wanted: Sequence[Square] | None = None
) -> dict[Square, int]:
    """Knight distances from ``source`` on a ``rows`` x ``cols`` board.

    With ``wanted`` the search stops once all of those squares are reached and only they are
    returned; an unreachable square is absent from the result.
    """
    for r, c in [source, *(wanted or ())]:
        if not (0 <= r < rows and 0 <= c < cols):
            raise ValueError(f"square {(r, c)} is off the {rows}x{cols} board")
    nbrs = _neighbours(rows, cols)
    dist = [-1] * (rows * cols)
    start = source[0] * cols + source[1]
    dist[start] = 0
    goal = bytearray(rows * cols)
    left = -1
    if wanted is not None:
        for r, c in wanted:
            goal[r * cols + c] = 1
        goal[start] = 0
        left = sum(goal)
    queue = deque([start])
    pop, push = queue.popleft, queue.append
    while queue and left != 0:
        u = pop()
        d = dist[u] + 1
        for v in nbrs[u]:
            if dist[v] < 0:
                dist[v] = d
                push(v)
                if goal[v]:
                    left -= 1
    squares = wanted if wanted is not None else [(r, c) for r in range(rows) for c in range(cols)]
    return {s: dist[s[0] * cols + s[1]] for s in squares if dist[s[0] * cols + s[1]] >= 0}


def distance_matrix(problem: KnightProblem) -> list[list[int]]:
    """Pairwise knight distances; index 0 is the start, 1.. the targets in order.

    Raises ``ValueError`` when a square is off the board or a target cannot be reached.
    """
    points = [problem.start, *problem.targets]
    matrix: list[list[int]] = []
    for point in points:
        found = bfs_distances(problem.rows, problem.cols, point, points)
        missing = [p for p in points if p not in found]
        if missing:
            raise ValueError(f"square {missing[0]} cannot be reached from {point}")
        matrix.append([found[p] for p in points])
    return matrix


def path_length(dist: Sequence[Sequence[int]], order: Sequence[int]) -> int:
    """The length of visiting ``order``'s nodes in turn."""
    return sum(dist[a][b] for a, b in itertools.pairwise(order))


def shortest_open_tour(dist: Sequence[Sequence[int]]) -> tuple[int, list[int]]:
    """Exact shortest path from node 0 through every other node: ``(length, order)``.

    ``dist`` is a symmetric matrix of non-negative integers. Small cases are enumerated; larger
    ones are solved as an integer program (a dummy node closes the path into a cycle; degree-2
    constraints; subtour-elimination cuts added until the solution is one cycle), which HiGHS
    solves to proven optimality.
    """
    n = len(dist)
    if n <= 1:
        return 0, [0]
    if n <= 3:
        orders = [[0, 1, 2], [0, 2, 1]] if n == 3 else [[0, 1]]
        best = min(orders, key=lambda order: path_length(dist, order))
        return path_length(dist, best), best
    return _milp_tour(dist)


def _milp_tour(dist: Sequence[Sequence[int]]) -> tuple[int, list[int]]:
    import numpy as np
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import lil_matrix

    n = len(dist)
    dummy = n  # joined to every node at cost 0, and forced next to the start
    nodes = n + 1
    edges = [(i, j) for i in range(nodes) for j in range(i + 1, nodes)]
    index = {e: k for k, e in enumerate(edges)}
    cost = np.array([0.0 if j == dummy else float(dist[i][j]) for i, j in edges])
    degree = lil_matrix((nodes, len(edges)))
    for k, (i, j) in enumerate(edges):
        degree[i, k] = 1
        degree[j, k] = 1
    lower = np.zeros(len(edges))
    lower[index[(0, dummy)]] = 1.0
    constraints = [LinearConstraint(degree.tocsr(), 2, 2)]
    while True:
        result = milp(
            cost,
            integrality=np.ones(len(edges)),
            bounds=Bounds(lower, np.ones(len(edges))),
            constraints=constraints,
            options={"mip_rel_gap": 0.0, "disp": False},
        )
        if not result.success:
            raise RuntimeError(f"the tour program failed: {result.message}")
        chosen = [e for k, e in enumerate(edges) if result.x[k] > 0.5]
        components = _components(nodes, chosen)
        if len(components) == 1:
            break
        cut = lil_matrix((len(components), len(edges)))
        for row, comp in enumerate(components):
            inside = set(comp)
            for k, (i, j) in enumerate(edges):
                if (i in inside) != (j in inside):
                    cut[row, k] = 1
        constraints.append(LinearConstraint(cut.tocsr(), 2, np.inf))
    order = _walk(nodes, chosen, start=0, skip=dummy)
    length = path_length(dist, order)
    if round(result.fun) != length:
        raise RuntimeError("the tour program's objective disagrees with its tour")
    return length, order


def _components(nodes: int, edges: list[tuple[int, int]]) -> list[list[int]]:
    adjacent: dict[int, list[int]] = {v: [] for v in range(nodes)}
    for i, j in edges:
        adjacent[i].append(j)
        adjacent[j].append(i)
    seen: set[int] = set()
    out = []
    for v in range(nodes):
        if v in seen:
            continue
        comp, stack = [], [v]
        seen.add(v)
        while stack:
            u = stack.pop()
            comp.append(u)
            for w in adjacent[u]:
                if w not in seen:
                    seen.add(w)
                    stack.append(w)
        out.append(sorted(comp))
    return out


def _walk(nodes: int, edges: list[tuple[int, int]], start: int, skip: int) -> list[int]:
    """The cycle through ``edges`` read from ``start`` away from ``skip``, ``skip`` left out."""
    adjacent: dict[int, list[int]] = {v: [] for v in range(nodes)}
    for i, j in edges:
        adjacent[i].append(j)
        adjacent[j].append(i)
    order, prev, cur = [start], skip, start
    while True:
        nxt = next(v for v in adjacent[cur] if v != prev)
        if nxt == skip:
            return order
        order.append(nxt)
        prev, cur = cur, nxt


def solve(problem: KnightProblem) -> int:
    """The exact answer: least knight moves from the start that touch every target."""
    length, _ = shortest_open_tour(distance_matrix(problem))
    return length


def generate_problem(
    rng: random.Random, rows: int = 100, cols: int = 100, n_targets: int = 30
) -> KnightProblem:
    """A random instance like LongCoT's: a start and ``n_targets`` distinct other squares.

    Every target is reachable (resampled otherwise, which only happens on tiny boards).
    """
    if n_targets + 1 > rows * cols:
        raise ValueError(f"{n_targets} targets do not fit on a {rows}x{cols} board")
    while True:
        squares = rng.sample(range(rows * cols), n_targets + 1)
        start, *targets = [(s // cols, s % cols) for s in squares]
        problem = KnightProblem(rows=rows, cols=cols, start=start, targets=tuple(targets))
        reach = bfs_distances(rows, cols, start, problem.targets)
        if len(reach) == n_targets:
            return problem
