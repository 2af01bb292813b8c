"""Reference scaffold for lawbench: retrieve similar training cases, let the task model choose.

``setup(ctx)`` builds a character n-gram TF-IDF index over ``ctx.train``. ``solve(item, ctx)``
finds the ``n_neighbors`` most similar training cases and ranks their charges by summed cosine
similarity, then, by ``strategy``:

- ``"llm_choose"`` (default): when the neighbours disagree (the top charge has less than
  ``ask_below`` of the similarity-weighted vote), the task model sees the case (its first
  ``max_chars`` characters) and the top ``k`` candidate charges as a numbered list, and answers
  with a number. A reply that names no candidate (or a failed call) falls back to the top
  candidate. When the neighbours clearly agree, the top charge is the answer and no call is made:
  on a CPU the model's time goes to the cases where retrieval is unsure.
- ``"knn_vote"``: the top candidate (a similarity-weighted vote), no model call.

The model is called only through ``ctx.llm``; settings come from ``ctx.params``.
"""

import re

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

PARAMS = {
    "strategy": "llm_choose",
    "k": 5,  # candidate charges shown to the model
    "n_neighbors": 10,  # training cases retrieved; their charges are the candidates
    # SmolLM2 spends ~1.9 tokens per Chinese character: 100 characters of case text plus 5
    # charge names keep the prompt under ~400 tokens (~300 on average)
    "max_chars": 100,
    "ngram_min": 1,  # character n-grams of the TF-IDF index: 1-2 is the usual start for Chinese
    "ngram_max": 2,
    "temperature": 0.0,
    "max_tokens": 8,  # the answer is one number
    "ask_below": 0.5,  # ask the model only when the top charge has under half of the vote
}

SEARCH_SPACE = {
    "strategy": {"choices": ["llm_choose", "knn_vote"]},
    # prompt size bounds the search: on 2 CPU cores a 135M model processes ~200-400 prompt
    # tokens/s, and every generation asks it about up to 191 dev cases
    "k": {"int": [2, 6]},
    "n_neighbors": {"int": [1, 50]},
    "max_chars": {"int": [50, 150], "step": 25},
    "ngram_min": {"int": [1, 2]},
    "ngram_max": {"int": [1, 3]},
    "temperature": {"float": [0.0, 1.0]},
    "ask_below": {"float": [0.0, 1.0]},
}

_INT = re.compile(r"\d+")
_INDEX = {}


def _param(ctx, name):
    params = getattr(ctx, "params", None) or {}
    return params.get(name, PARAMS[name])


def setup(ctx):
    """Fit the TF-IDF index on the training cases (once per worker)."""
    low, high = sorted((int(_param(ctx, "ngram_min")), int(_param(ctx, "ngram_max"))))
    vectorizer = TfidfVectorizer(
        analyzer="char", ngram_range=(low, high), sublinear_tf=True, dtype=np.float32
    )
    _INDEX["matrix"] = vectorizer.fit_transform([str(row["input"]) for row in ctx.train])
    _INDEX["vectorizer"] = vectorizer
    _INDEX["labels"] = [row["label"] for row in ctx.train]
    _INDEX["ids"] = [row["id"] for row in ctx.train]


def retrieve(text, n_neighbors):
    """The most similar training cases ``[(id, label, sim)]`` and the charges ranked by vote."""
    query = _INDEX["vectorizer"].transform([text])
    sims = (query @ _INDEX["matrix"].T).toarray().ravel()
    n = max(1, min(int(n_neighbors), sims.size))
    top = np.argpartition(-sims, n - 1)[:n]
    top = top[np.argsort(-sims[top], kind="stable")]
    neighbours = [(_INDEX["ids"][j], _INDEX["labels"][j], float(sims[j])) for j in top]
    ranked, _ = vote(neighbours)
    return neighbours, ranked


def vote(neighbours):
    """Charges ranked by summed similarity, and the top charge's share of the vote."""
    votes = {}
    for _, label, sim in neighbours:  # dict order = rank of first appearance, the tie-break
        votes[label] = votes.get(label, 0.0) + sim
    ranked = sorted(votes, key=lambda label: -votes[label])
    total = sum(votes.values())
    return ranked, (votes[ranked[0]] / total if total > 0 else 1.0)


def build_prompt(text, candidates, max_chars):
    """The question for the task model: the (truncated) case and the numbered candidates."""
    case = text if len(text) <= max_chars else text[:max_chars] + "…"
    options = "\n".join(f"{i}. {name}" for i, name in enumerate(candidates, start=1))
    # the fixed instruction comes first: llama.cpp reuses the cached prefix across calls
    return (
        "Which criminal charge fits this Chinese criminal case? "
        "Answer with the option number only.\n"
        f"Case: {case}\n\n"
        f"Options:\n{options}\n"
        "Answer:"
    )


def parse_choice(reply, candidates):
    """The candidate the reply picks: its first number if in range, else a name it quotes."""
    for match in _INT.finditer(reply or ""):
        number = int(match.group())
        if 1 <= number <= len(candidates):
            return candidates[number - 1]
        break  # the first number is out of range: do not guess from later ones
    named = [(reply.find(name), name) for name in candidates if name in (reply or "")]
    return min(named)[1] if named else None


def solve(item, ctx):
    """Answer one case with a charge name from classes.json."""
    text = str(item.input)
    neighbours, ranked = retrieve(text, _param(ctx, "n_neighbors"))
    ctx.log(
        "retrieval",
        {"neighbours": [[i, label, round(sim, 4)] for i, label, sim in neighbours]},
    )
    best = ranked[0]
    if _param(ctx, "strategy") == "knn_vote":
        ctx.log("answer", {"label": best, "how": "knn_vote"})
        return best
    candidates = ranked[: max(1, int(_param(ctx, "k")))]
    _, share = vote(neighbours)
    if len(candidates) == 1 or share >= float(_param(ctx, "ask_below")):
        ctx.log("answer", {"label": best, "how": f"neighbours agree ({share:.2f}): no model call"})
        return best
    prompt = build_prompt(text, candidates, int(_param(ctx, "max_chars")))
    try:
        reply = ctx.llm(
            [{"role": "user", "content": prompt}],
            temperature=_param(ctx, "temperature"),
            max_tokens=_param(ctx, "max_tokens"),
        )
    except ctx.LLMError as exc:
        ctx.log("llm_error", str(exc))
        reply = ""
    choice = parse_choice(reply, candidates)
    if choice is None:
        ctx.log("answer", {"label": best, "how": "fallback: reply names no candidate"})
        return best
    ctx.log("answer", {"label": choice, "how": "model chose", "rank": candidates.index(choice) + 1})
    return choice
