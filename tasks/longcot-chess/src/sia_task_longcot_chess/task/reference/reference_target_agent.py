"""Reference scaffold for longcot-chess: ask the task model, answer in LongCoT's format.

Per-item entry ``solve(item, ctx)``. ``item.input`` is ``{"template", "prompt"}``. The prompt
goes to the task model with a short instruction; the reply's ``solution = ...`` is returned. For
``knight_path`` a reply without an integer falls back (``knight_solver = "fallback"``) to a
programmatic answer: knight distances by breadth-first search, a nearest-target walk, then 2-opt
and or-opt improvement (a good tour, not a proven optimum). ``"only"`` skips the model for
knight_path, ``"off"`` never uses the solver. Standard library only.
"""

import re
from collections import deque

PARAMS = {
    "instruction": "direct",
    "max_tokens": 64,
    "temperature": 0.0,
    "few_shot": 0,
    "knight_solver": "fallback",
}
SEARCH_SPACE = {
    "instruction": {"choices": ["direct", "step_by_step"]},
    "max_tokens": {"int": [16, 512], "step": 16},
    "temperature": {"float": [0.0, 1.0]},
    "few_shot": {"int": [0, 2]},
    "knight_solver": {"choices": ["off", "fallback", "only"]},
}

INSTRUCTIONS = {
    "direct": "Reply with one line only: solution = ...",
    "step_by_step": "Think step by step, briefly. End with one line: solution = ...",
}

_SOLUTION = re.compile(r"solution\s*=\s*", re.IGNORECASE)
_INT = re.compile(r"-?\d+")
_MOVES = ((1, 2), (2, 1), (2, -1), (1, -2), (-1, -2), (-2, -1), (-2, 1), (-1, 2))


def _param(ctx, name):
    params = getattr(ctx, "params", None) or {}
    return params.get(name, PARAMS[name])


def _field(item, name):
    data = item.input if hasattr(item, "input") else item["input"]
    return data.get(name, "") if isinstance(data, dict) else str(data)


def parse_int(reply):
    """The integer after the last ``solution =``, else the last integer; None if none."""
    parts = _SOLUTION.split(reply or "")
    tail = parts[-1] if len(parts) > 1 else None
    if tail is not None:
        match = _INT.search(tail)
        return int(match.group()) if match else None
    found = _INT.findall(reply or "")
    return int(found[-1]) if found else None


def solution_line(reply):
    """The reply from its last ``solution =`` to the end of that line, else the whole reply."""
    text = (reply or "").strip()
    matches = list(_SOLUTION.finditer(text))
    if not matches:
        return text
    return "solution = " + text[matches[-1].end() :].split("\n")[0].strip()


# -- knight_path without the model ----------------------------------------------------------------


def parse_knight(prompt):
    """(rows, cols, start, targets) from a knight_path prompt."""
    rows, cols = map(int, re.search(r"size (\d+)x(\d+)", prompt).groups())
    start = tuple(map(int, re.search(r"Postion: \((\d+), (\d+)\)", prompt).groups()))
    listed = prompt.split("Target Squares:", 1)[1].split("]", 1)[0]
    targets = [tuple(map(int, t)) for t in re.findall(r"\((\d+), (\d+)\)", listed)]
    return rows, cols, start, targets


def bfs(rows, cols, source, wanted):
    """Knight distances from source to each wanted square (BFS, stops when all are found)."""
    dist = {source: 0}
    left = set(wanted) - {source}
    queue = deque([source])
    while queue and left:
        r, c = queue.popleft()
        for dr, dc in _MOVES:
            nxt = (r + dr, c + dc)
            if 0 <= nxt[0] < rows and 0 <= nxt[1] < cols and nxt not in dist:
                dist[nxt] = dist[(r, c)] + 1
                left.discard(nxt)
                queue.append(nxt)
    return [dist.get(w, 10**6) for w in wanted]


def path_length(order, d):
    return sum(d[a][b] for a, b in zip(order, order[1:]))


def improve(order, d):
    """2-opt and or-opt moves on an open path with a fixed first node, until none helps."""
    best = path_length(order, d)
    improved = True
    while improved:
        improved = False
        n = len(order)
        for i in range(1, n - 1):
            for j in range(i + 1, n):
                cand = order[:i] + order[i : j + 1][::-1] + order[j + 1 :]
                length = path_length(cand, d)
                if length < best:
                    order, best, improved = cand, length, True
        for size in (1, 2, 3):
            for i in range(1, n - size + 1):
                seg, rest = order[i : i + size], order[:i] + order[i + size :]
                for k in range(1, len(rest) + 1):
                    cand = rest[:k] + seg + rest[k:]
                    length = path_length(cand, d)
                    if length < best:
                        order, best, improved = cand, length, True
                        break
                if improved:
                    break
            if improved:
                break
    return best


def knight_estimate(prompt):
    """A short tour's length: nearest target first, then local improvement."""
    rows, cols, start, targets = parse_knight(prompt)
    points = [start, *targets]
    d = [bfs(rows, cols, p, points) for p in points]
    order, left = [0], set(range(1, len(points)))
    while left:
        nxt = min(left, key=lambda j: (d[order[-1]][j], j))
        order.append(nxt)
        left.remove(nxt)
    return improve(order, d)


# -- the model ------------------------------------------------------------------------------------


def _shots(ctx, template, count):
    examples = [ex for ex in (getattr(ctx, "train", None) or []) if _field_of(ex) == template]
    messages = []
    for ex in examples[:count]:
        label = ex["label"]
        answer = "[" + ", ".join(label) + "]" if isinstance(label, list) else str(label)
        messages.append({"role": "user", "content": ex["input"]["prompt"]})
        messages.append({"role": "assistant", "content": f"solution = {answer}"})
    return messages


def _field_of(example):
    data = example.get("input")
    return data.get("template") if isinstance(data, dict) else None


def solve(item, ctx):
    """Answer one item in LongCoT's ``solution = ...`` form."""
    template, prompt = _field(item, "template"), _field(item, "prompt")
    solver = _param(ctx, "knight_solver")
    if template == "knight_path" and solver == "only":
        return f"solution = {knight_estimate(prompt)}"
    messages = [{"role": "system", "content": INSTRUCTIONS[_param(ctx, "instruction")]}]
    messages += _shots(ctx, template, int(_param(ctx, "few_shot")))
    messages.append({"role": "user", "content": prompt})
    reply = ctx.llm(
        messages,
        temperature=_param(ctx, "temperature"),
        max_tokens=_param(ctx, "max_tokens"),
    )
    text = reply if isinstance(reply, str) else str(reply)
    if template == "knight_path":
        value = parse_int(text)
        if value is None and solver == "fallback":
            ctx.log("note", "no integer in the reply: answering with the search estimate")
            value = knight_estimate(prompt)
        return None if value is None else f"solution = {value}"
    return solution_line(text)
