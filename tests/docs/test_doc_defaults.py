"""Every default the docs state equals the code's: the settings tables of docs/training.md and
docs/rl-objectives.md, and any "`setting` value" written in the prose of a doc."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import attrs
import pytest

from sia_core.contracts.training import DEFAULT_TRAIN_SETTINGS
from sia_rl_entropic.objective import EntropicObjective
from sia_rl_grpo.objective import GRPOObjective
from sia_rl_ppo.objective import PPOObjective
from sia_train.objective import ClippedPolicyObjective
from sia_train.train_loop import WORKER_DEFAULTS

DOCS = Path(__file__).resolve().parents[2] / "docs"
UNPARSED = object()
TRAIN_DEFAULTS = {**DEFAULT_TRAIN_SETTINGS, **WORKER_DEFAULTS}


def field_defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in attrs.fields(cls) if f.init}


OBJECTIVES = {
    "grpo": {**field_defaults(ClippedPolicyObjective), **field_defaults(GRPOObjective)},
    "ppo": {**field_defaults(ClippedPolicyObjective), **field_defaults(PPOObjective)},
    "entropic": {**field_defaults(ClippedPolicyObjective), **field_defaults(EntropicObjective)},
    "": field_defaults(ClippedPolicyObjective),  # the shared table, before any objective
}


def parse_value(text: str) -> Any:
    """A documented default as a Python value (UNPARSED for prose such as "CPUs − 1")."""
    t = text.strip().strip("`").strip()
    low = t.lower()
    if low in ("null", "none"):
        return None
    if low in ("true", "false"):
        return low == "true"
    if low == "ln 2":
        return math.log(2)
    try:
        return float(t)
    except ValueError:
        pass
    if re.fullmatch(r"[a-z0-9_.-]+", t):
        return t
    return UNPARSED


def same(documented: Any, code: Any) -> bool:
    if (
        isinstance(documented, float)
        and isinstance(code, (int, float))
        and not isinstance(code, bool)
    ):
        return math.isclose(documented, float(code), rel_tol=1e-9)
    return documented == code


def table_rows(doc: Path) -> list[tuple[str, str, str, str]]:
    """(section objective, setting, documented default, line) for each settings-table row."""
    rows = []
    section = ""
    for line in doc.read_text().splitlines():
        heading = re.match(r"^## .*\(`([a-z_]+)`\)", line)
        if heading:
            section = heading.group(1)
        cells = (
            [c.strip() for c in line.strip().strip("|").split("|")]
            if line.startswith("| `")
            else []
        )
        if len(cells) < 2:
            continue
        names = re.findall(r"`([a-z_]+)`", cells[0])
        values = [v.strip() for v in cells[1].split(" / ")] if len(names) > 1 else [cells[1]]
        if len(values) != len(names):
            continue
        rows += [(section, n, v, line) for n, v in zip(names, values, strict=True)]
    return rows


def check(rows: list[tuple[str, Any, str]], known: dict[str, Any]) -> int:
    """Compare (setting, documented, where) to ``known``; return how many were compared."""
    compared = 0
    for name, documented, where in rows:
        if name not in known or documented is UNPARSED:
            continue
        compared += 1
        assert same(documented, known[name]), (
            f"{where}: the docs give {name} = {documented!r}, the code {known[name]!r}"
        )
    return compared


def test_training_table_matches_the_worker() -> None:
    rows = table_rows(DOCS / "training.md")
    compared = check([(n, parse_value(v), line) for _, n, v, line in rows], TRAIN_DEFAULTS)
    assert compared >= 14  # the table is found and read (steps, group_size, ...)


@pytest.mark.parametrize("objective", ["grpo", "ppo", "entropic"])
def test_objective_tables_match_the_objectives(objective: str) -> None:
    rows = [r for r in table_rows(DOCS / "rl-objectives.md") if r[0] in (objective, "")]
    known = OBJECTIVES[objective]
    compared = check([(n, parse_value(v), line) for _, n, v, line in rows], known)
    assert compared >= 4


def test_local_backend_table_matches_the_backend() -> None:
    """docs/backends.md lists every ``--backend-opt`` key of the local backend, with its default."""
    from sia_backend_local.backend import SETTINGS, LocalBackend

    text = (DOCS / "backends.md").read_text()
    table = text[text.index("| `stall_generations`") :].split("\n\n")[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()]
    documented = {r[0].strip("`"): parse_value(r[1]) for r in rows}
    assert set(documented) == SETTINGS
    backend = LocalBackend()
    known = {
        "stall_generations": backend.stall_generations,
        "n_ctx": backend.n_ctx,
        "gguf_outtype": backend.gguf_outtype,
        "serve_type": backend.serve_type,
        "flash_attn": 1 if backend.flash_attn else 0,
    }
    found = [(n, v, f"backends.md: {n}") for n, v in documented.items()]
    assert check(found, known) == 5  # n_threads / n_threads_batch: prose ("half the CPUs")


PROSE = re.compile(r"`([a-z_]+)` (-?\d[\d.]*(?:e-?\d+)?)\b")


def test_prose_defaults_match_the_code() -> None:
    """A "`steps` 20" written anywhere in the docs or README states the code's default."""
    known = {**TRAIN_DEFAULTS}
    compared = 0
    for doc in [*DOCS.glob("*.md"), DOCS.parent / "README.md"]:
        for line in doc.read_text().splitlines():
            if line.startswith("|") or "--train-opt" in line:  # tables: above; examples set values
                continue
            found = [(n, float(v), f"{doc.name}: {line.strip()}") for n, v in PROSE.findall(line)]
            compared += check(found, known)
    assert compared >= 3  # e.g. rl-objectives.md's "`steps` 10 and `group_size` 4"


def test_the_check_can_fail() -> None:
    with pytest.raises(AssertionError, match=r"the docs give steps = 20\.0, the code 10"):
        check([("steps", 20.0, "docs/x.md")], {"steps": 10})
    assert parse_value("`null`") is None and parse_value("ln 2") == math.log(2)
