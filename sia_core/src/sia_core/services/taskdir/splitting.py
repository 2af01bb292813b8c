"""Which split an item lands in: dev carved from train (:func:`carve_dev`) and a program
task's ids hashed to dev or test (:func:`program_split_of`), both the same in every process."""

from __future__ import annotations

import hashlib
import random
from typing import Any

from sia_core.services.taskdir.answers import _canonical_json
from sia_core.services.taskdir.records import _Row


def _unit_hash(text: str) -> float:
    """A number in [0, 1) from ``text``, the same in every Python process (unlike ``hash``)."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def program_split_of(item_id: str, dev_fraction: float = 0.5, seed: int = 0) -> str:
    """Which split (``"dev"``/``"test"``) a program-style task's item id belongs to."""
    return "dev" if _unit_hash(f"{seed}:{item_id}") < dev_fraction else "test"


def carve_dev(
    rows: list[_Row], fraction: float, seed: int, stratify: bool
) -> tuple[list[_Row], list[_Row]]:
    """Split train rows into (train, dev) with a seeded ``random.Random``; deterministic.

    With ``stratify`` the dev count is spread over labels by largest remainder, ties broken in a
    seeded order, so even one-item-per-label data gets a dev split of the requested size.
    """
    n = len(rows)
    if n < 2:
        return list(rows), []
    n_dev = min(n - 1, max(1, round(fraction * n)))
    rng = random.Random(seed)
    chosen: set[str] = set()
    if stratify:
        groups: dict[str, list[str]] = {}
        for row in rows:
            groups.setdefault(_label_key(row.label), []).append(row.id)
        keys = sorted(groups)
        rng.shuffle(keys)
        quotas = {k: n_dev * len(groups[k]) / n for k in keys}
        counts = {k: int(quotas[k]) for k in keys}
        left = n_dev - sum(counts.values())
        # stable sort keeps the seeded order among equal remainders
        for k in sorted(keys, key=lambda k: quotas[k] - counts[k], reverse=True)[:left]:
            counts[k] += 1
        for k in keys:
            ids = sorted(groups[k])
            rng.shuffle(ids)
            chosen.update(ids[: counts[k]])
    else:
        ids = sorted(row.id for row in rows)
        rng.shuffle(ids)
        chosen.update(ids[:n_dev])
    return [r for r in rows if r.id not in chosen], [r for r in rows if r.id in chosen]


def _label_key(label: Any) -> str:
    try:
        return _canonical_json(label)
    except (TypeError, ValueError):
        return repr(label)
