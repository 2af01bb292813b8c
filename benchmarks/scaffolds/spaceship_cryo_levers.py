"""Spaceship Titanic, one fact, every answer from the task model: the variant of bench_levers.py.

The prompt states only whether the passenger was in cryosleep (on dev, "transported = was in
cryosleep" is right ~68-73% of the time, "never transported" ~58%). The answer is always the task
model's: the scaffold has no rule of its own, and a reply that is neither yes nor no stays
wrong (a default answer in its place would be the scaffold answering, not the model). What the
harness lever may tune is declared below — the wording of the instruction and the question,
decoding, and where in the reply the yes / no is looked for — so a parameter search can work on
the answer format (the base model, greedy, replies with neither "yes" nor "no" to most
passengers) but cannot put the cryosleep rule into the answers; only the model can, by learning
to condition its yes / no on the one fact it is shown. That is the weights lever's job.

An earlier form let the search choose what an unreadable reply becomes ("no"): it did (dev 0.58,
every passenger "no"), and the weights lever, training through that scaffold, then learned
nothing in 30 steps: a reply that is not "yes" scored as "no" either way, so 7 of 8 reward groups
per step had zero variance (docs/levers.md).
"""

PARAMS = {
    "system": "answer",
    "question": "transported",
    "read": "first_word",
    "max_tokens": 3,
    "temperature": 0.0,
}
SEARCH_SPACE = {
    "system": {"choices": ["answer", "one_word", "classifier", "none"]},
    "question": {"choices": ["transported", "fact_last", "yes_or_no"]},
    "read": {"choices": ["first_word", "anywhere"]},
    "max_tokens": {"int": [1, 8]},
    "temperature": {"float": [0.0, 1.0]},
}

SYSTEMS = {
    "answer": "Answer yes or no.",
    "one_word": "Reply with one word: yes or no.",
    "classifier": "You are a careful classifier. Reply only yes or no.",
    "none": None,
}


def _question(style, fact):
    if style == "fact_last":
        return f"Was this passenger of the Spaceship Titanic transported? In cryosleep: {fact}."
    if style == "yes_or_no":
        return (
            f"Spaceship Titanic passenger, in cryosleep: {fact}. Transported to another "
            "dimension, yes or no?"
        )
    return (
        f"A passenger of the Spaceship Titanic. In cryosleep: {fact}. "
        "Was the passenger transported?"
    )


def _read(reply, how):
    words = [w.strip(".,!:;\"'*()") for w in reply.strip().lower().split()]
    words = [w for w in words if w]
    if how == "anywhere":
        seen = [w for w in words if w in ("yes", "no")]
        return seen[0] if seen else ""
    return words[0] if words else ""


def solve(item, ctx):
    """``True`` / ``False`` from the model's yes / no."""
    p = ctx.params
    cryo = item.input.get("CryoSleep")
    fact = "unknown" if cryo is None else "yes" if cryo else "no"
    messages = [{"role": "user", "content": _question(p["question"], fact)}]
    if SYSTEMS[p["system"]]:
        messages.insert(0, {"role": "system", "content": SYSTEMS[p["system"]]})
    reply = ctx.llm(messages, max_tokens=p["max_tokens"], temperature=p["temperature"])
    word = _read(reply, p["read"])
    if word in ("yes", "no"):
        return word == "yes"
    return reply  # neither: scored wrong
