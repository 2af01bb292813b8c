"""Spaceship Titanic scaffold for the RL benchmark: the task model answers "yes" or "no".

One model call per passenger and nothing else (no tabular model, no train rows): the prompt
shows the passenger's record in words and asks whether they were transported. The reply's first
word decides: "yes" → ``True``, "no" → ``False``; any other reply is returned as is (scored
wrong). So the scaffold's accuracy is the task model's own: what RL on the weights can move.
"""

SPEND = ("RoomService", "FoodCourt", "ShoppingMall", "Spa", "VRDeck")


def _flag(value):
    return "?" if value is None else "yes" if value else "no"


def describe(p):
    """The passenger's record in one short line."""
    spent = sum(p.get(k) or 0 for k in SPEND)
    deck, _, side = [*str(p.get("Cabin") or "?/?/?").split("/"), "?", "?"][:3]
    age = p.get("Age")
    return (
        f"from {p.get('HomePlanet') or '?'} to {p.get('Destination') or '?'}, "
        f"age {'?' if age is None else int(age)}, cryosleep {_flag(p.get('CryoSleep'))}, "
        f"VIP {_flag(p.get('VIP'))}, cabin {deck}/{side}, spent {int(spent)}"
    )


def solve(item, ctx):
    """``True`` / ``False`` from the model's yes / no."""
    messages = [
        {"role": "system", "content": "Answer yes or no."},
        {
            "role": "user",
            "content": f"Spaceship Titanic passenger {describe(item.input)}. Transported?",
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
