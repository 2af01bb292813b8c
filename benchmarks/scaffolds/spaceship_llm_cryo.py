"""Spaceship Titanic scaffold for the RL benchmark: one feature, the task model answers yes/no.

The prompt states only whether the passenger was in cryosleep — the strongest single feature of
the data (on dev, "transported = was in cryosleep" is right ~73% of the time; "never
transported" ~53-58%). The base model does not use it (greedy, it answers "no" to everything), so
the scaffold's accuracy is the task model's own and RL on the weights can move it: a policy has
to learn to condition its yes/no on the one fact shown. The reply's first word decides: "yes" →
``True``, "no" → ``False``; any other reply is returned as is (scored wrong).
"""


def solve(item, ctx):
    """``True`` / ``False`` from the model's yes / no."""
    cryo = item.input.get("CryoSleep")
    fact = "unknown" if cryo is None else "yes" if cryo else "no"
    messages = [
        {"role": "system", "content": "Answer yes or no."},
        {
            "role": "user",
            "content": f"A passenger of the Spaceship Titanic. In cryosleep: {fact}. "
            "Was the passenger transported?",
        },
    ]
    reply = ctx.llm(messages, max_tokens=3, temperature=0.0)
    word = reply.strip().lower().lstrip("\"'*").split(maxsplit=1)
    word = word[0].strip(".,!:;\"'*") if word else ""
    if word == "yes":
        return True
    if word == "no":
        return False
    return reply
