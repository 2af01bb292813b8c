"""Reference scaffold for gpqa: show the question and options, ask the task model for a letter.

Per-item entry ``solve(item, ctx)``. ``item.input`` is ``{"question", "options", "domain",
"subdomain"}``. The reply's letter is returned (``Answer: X`` first, else the first standalone
A-D); a reply without one is returned as it is, and the scorer counts it as a parse failure.
``few_shot`` puts that many solved train questions before the question. Standard library only.
"""

import re

PARAMS = {
    "instruction": "letter",
    "max_tokens": 16,
    "temperature": 0.0,
    "few_shot": 0,
}
SEARCH_SPACE = {
    "instruction": {"choices": ["letter", "reason_then_letter"]},
    "max_tokens": {"int": [4, 512], "step": 4},
    "temperature": {"float": [0.0, 1.0]},
    "few_shot": {"int": [0, 3]},
}

INSTRUCTIONS = {
    "letter": "Answer with the letter of the correct option only: A, B, C or D.",
    "reason_then_letter": (
        "Think briefly, then end with one line 'Answer: X', where X is A, B, C or D."
    ),
}

_ANSWER = re.compile(r"answer\s*(?:is|:)?\s*\(?([A-D])\)?(?![A-Za-z])", re.IGNORECASE)
_LETTER = re.compile(r"(?<![A-Za-z])([A-D])(?![A-Za-z])")


def _param(ctx, name):
    params = getattr(ctx, "params", None) or {}
    return params.get(name, PARAMS[name])


def format_question(data):
    """The question followed by its options, one per line."""
    options = data.get("options") or {}
    lines = [str(data.get("question", "")).strip(), ""]
    lines += [f"{letter}) {options[letter]}" for letter in "ABCD" if letter in options]
    return "\n".join(lines)


def parse_letter(reply):
    """The letter after the last 'answer', else the first standalone A-D; None if neither."""
    text = reply or ""
    found = [m.group(1) for m in _ANSWER.finditer(text) if m.group(1).isupper()]
    if found:
        return found[-1]
    first = _LETTER.search(text)
    return first.group(1) if first else None


def _shots(ctx, count):
    messages = []
    for example in (getattr(ctx, "train", None) or [])[:count]:
        messages.append({"role": "user", "content": format_question(example["input"])})
        messages.append({"role": "assistant", "content": f"Answer: {example['label']}"})
    return messages


def solve(item, ctx):
    """Answer one question with a letter (or the raw reply when it names none)."""
    data = item.input if hasattr(item, "input") else item["input"]
    messages = [{"role": "system", "content": INSTRUCTIONS[_param(ctx, "instruction")]}]
    messages += _shots(ctx, int(_param(ctx, "few_shot")))
    messages.append({"role": "user", "content": format_question(data)})
    reply = ctx.llm(
        messages,
        temperature=_param(ctx, "temperature"),
        max_tokens=_param(ctx, "max_tokens"),
    )
    text = reply if isinstance(reply, str) else str(reply)
    letter = parse_letter(text)
    if letter is None:
        ctx.log("note", "no option letter in the reply")
        return text.strip()
    return letter
