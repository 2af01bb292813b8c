"""Reference scaffold for the example task: ask the task model for the numeral's value.

Per-item entry ``solve(item, ctx)``: ``item.input`` is the numeral, ``ctx.llm`` calls the task
model, ``ctx.params`` holds ``PARAMS`` with the run's overrides, ``ctx.train`` the train items
with labels, ``ctx.log`` adds a note to the trajectory. Standard library only.
"""

import re

PARAMS = {
    "instruction": "Convert the Roman numeral to a whole number. Reply with the number only.",
    "max_tokens": 8,
    "temperature": 0.0,
    "few_shot": 0,
}
SEARCH_SPACE = {
    "max_tokens": {"int": [4, 64], "step": 4},
    "temperature": {"float": [0.0, 1.0]},
    "few_shot": {"int": [0, 6]},
}

_INT = re.compile(r"\d+")


def _param(ctx, name):
    params = getattr(ctx, "params", None) or {}
    return params.get(name, PARAMS[name])


def solve(item, ctx):
    """Ask the task model once; return the first integer of its reply (None if it has none)."""
    messages = [{"role": "system", "content": _param(ctx, "instruction")}]
    for example in (getattr(ctx, "train", None) or [])[: int(_param(ctx, "few_shot"))]:
        messages.append({"role": "user", "content": str(example["input"])})
        messages.append({"role": "assistant", "content": str(example["label"])})
    messages.append({"role": "user", "content": str(item.input)})
    reply = ctx.llm(
        messages,
        temperature=_param(ctx, "temperature"),
        max_tokens=_param(ctx, "max_tokens"),
    )
    match = _INT.search(str(reply))
    if match is None:
        ctx.log("note", "no number in the reply")
        return None
    return int(match.group())
