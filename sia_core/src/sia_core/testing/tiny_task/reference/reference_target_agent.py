"""Reference scaffold for tiny-add: ask the task model once, read the first integer it says.

Per-item entry: ``solve(item, ctx)``. It calls the task model only through ``ctx.llm`` and reads
its settings from ``ctx.params`` (falling back to ``PARAMS``), so a harness search can tune them.
"""

import re

PARAMS = {"temperature": 0.0, "max_tokens": 16, "instruction": "Answer with the number only."}
SEARCH_SPACE = {
    "temperature": {"float": [0.0, 1.0]},
    "max_tokens": {"int": [4, 64], "step": 4},
    "instruction": {
        "choices": [
            "Answer with the number only.",
            "Add the two numbers. Reply with the sum as digits and nothing else.",
        ]
    },
}

_INT = re.compile(r"[-+]?\d+")


def _param(ctx, name):
    params = getattr(ctx, "params", None) or {}
    return params.get(name, PARAMS[name])


def parse_answer(reply):
    """The first integer in the model's reply, or None if it gave none."""
    match = _INT.search(reply or "")
    return int(match.group()) if match else None


def solve(item, ctx):
    """Answer one item: the question goes to the task model with a short instruction."""
    messages = [
        {"role": "system", "content": _param(ctx, "instruction")},
        {"role": "user", "content": str(item.input)},
    ]
    reply = ctx.llm(
        messages,
        temperature=_param(ctx, "temperature"),
        max_tokens=_param(ctx, "max_tokens"),
    )
    text = reply if isinstance(reply, str) else getattr(reply, "text", str(reply))
    return parse_answer(text)
