"""A scaffold's declared parameters: ``PARAMS`` (defaults) and ``SEARCH_SPACE`` (ranges).

See docs/scaffolds.md. Task validation checks a reference scaffold's declarations with
:func:`read_declared`; a search rewrites the ``PARAMS`` literal with :func:`write_params`.
"""

from __future__ import annotations

import ast
import json
from typing import Any

import attrs


class SpaceError(ValueError):
    """A scaffold's PARAMS / SEARCH_SPACE cannot be searched (the message says why)."""


@attrs.frozen(kw_only=True)
class Declared:
    """A scaffold's declared parameters: defaults, space, and where the PARAMS literal sits."""

    params: dict[str, Any]
    space: dict[str, dict[str, Any]]
    start: tuple[int, int]  # (line, col) of the PARAMS dict literal, 1-based line
    end: tuple[int, int]
    #: where each value of the PARAMS literal sits: key -> (line, col, end line, end col)
    value_spans: dict[str, tuple[int, int, int, int]] = attrs.field(factory=dict)


def read_declared(source: str) -> Declared:
    """Find the module-level ``PARAMS`` and ``SEARCH_SPACE`` literals of a scaffold."""
    tree = ast.parse(source)
    found: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and target.id in ("PARAMS", "SEARCH_SPACE"):
                found[target.id] = node.value
    if "PARAMS" not in found:
        raise SpaceError("the scaffold declares no PARAMS")
    if "SEARCH_SPACE" not in found:
        raise SpaceError("the scaffold declares no SEARCH_SPACE")
    try:
        params = ast.literal_eval(found["PARAMS"])
        space = ast.literal_eval(found["SEARCH_SPACE"])
    except ValueError as exc:
        raise SpaceError(f"PARAMS and SEARCH_SPACE must be plain literals ({exc})") from exc
    if not isinstance(params, dict) or not isinstance(space, dict):
        raise SpaceError("PARAMS and SEARCH_SPACE must be dicts")
    for key, spec in space.items():
        if key not in params:
            raise SpaceError(f"SEARCH_SPACE names {key!r}, which PARAMS does not define")
        if not isinstance(spec, dict) or not ({"choices", "int", "float"} & set(spec)):
            raise SpaceError(f"SEARCH_SPACE[{key!r}] needs 'choices', 'int' or 'float'")
        check_default(key, params[key], spec)
    literal = found["PARAMS"]
    assert literal.end_lineno is not None and literal.end_col_offset is not None
    spans: dict[str, tuple[int, int, int, int]] = {}
    if isinstance(literal, ast.Dict):
        for key_node, value in zip(literal.keys, literal.values, strict=True):
            if (
                isinstance(key_node, ast.Constant)
                and isinstance(key_node.value, str)
                and value.end_lineno is not None
            ):
                end_col = value.end_col_offset or 0
                spans[key_node.value] = (value.lineno, value.col_offset, value.end_lineno, end_col)
    return Declared(
        params=params,
        space=space,
        value_spans=spans,
        start=(literal.lineno, literal.col_offset),
        end=(literal.end_lineno, literal.end_col_offset),
    )


def check_default(key: str, value: Any, spec: dict[str, Any]) -> None:
    """Raise :class:`SpaceError` if a default lies outside its declared range."""
    if "choices" in spec:
        if not isinstance(spec["choices"], list | tuple) or not spec["choices"]:
            raise SpaceError(f"SEARCH_SPACE[{key!r}]['choices'] must be a non-empty list")
        if value not in spec["choices"]:
            raise SpaceError(f"PARAMS[{key!r}] = {value!r} is not one of its choices")
        return
    kind = "int" if "int" in spec else "float"
    bounds = spec[kind]
    if not (isinstance(bounds, list | tuple) and len(bounds) == 2 and bounds[0] <= bounds[1]):
        raise SpaceError(f"SEARCH_SPACE[{key!r}][{kind!r}] must be [low, high] with low <= high")
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise SpaceError(f"PARAMS[{key!r}] = {value!r} is not an int")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpaceError(f"PARAMS[{key!r}] = {value!r} is not a number")
    if not bounds[0] <= value <= bounds[1]:
        raise SpaceError(f"PARAMS[{key!r}] = {value!r} is outside {list(bounds)}")


def distributions(space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """optuna distributions for a SEARCH_SPACE (optuna is imported here, lazily)."""
    import optuna

    out: dict[str, Any] = {}
    for key, spec in space.items():
        if "choices" in spec:
            out[key] = optuna.distributions.CategoricalDistribution(list(spec["choices"]))
        elif "int" in spec:
            low, high = spec["int"]
            out[key] = optuna.distributions.IntDistribution(
                int(low), int(high), step=int(spec.get("step", 1)), log=bool(spec.get("log"))
            )
        else:
            low, high = spec["float"]
            out[key] = optuna.distributions.FloatDistribution(
                float(low), float(high), log=bool(spec.get("log"))
            )
    return out


def write_params(source: str, declared: Declared, params: dict[str, Any]) -> str:
    """The scaffold with the changed values of its PARAMS literal rewritten in place.

    Only the changed values' source text is replaced, so comments and layout stay and
    ``diff.patch`` shows exactly the settings that changed. New keys, or a literal whose values
    cannot be located, fall back to rewriting the whole literal.
    """
    changed = {
        k: v for k, v in params.items() if k not in declared.params or declared.params[k] != v
    }
    if not changed:
        return source
    if all(k in declared.value_spans for k in changed) and set(params) == set(declared.params):
        lines = source.splitlines(keepends=True)
        for key in sorted(changed, key=lambda k: declared.value_spans[k], reverse=True):
            l1, c1, l2, c2 = declared.value_spans[key]
            text = _literal(changed[key])
            lines[l1 - 1 : l2] = [lines[l1 - 1][:c1] + text + lines[l2 - 1][c2:]]
        return "".join(lines)
    lines = source.splitlines(keepends=True)
    (l1, c1), (l2, c2) = declared.start, declared.end
    before = "".join(lines[: l1 - 1]) + lines[l1 - 1][:c1]
    after = lines[l2 - 1][c2:] + "".join(lines[l2:])
    items = [f"{json.dumps(k)}: {_literal(v)}" for k, v in params.items()]
    one_line = "{" + ", ".join(items) + "}"
    if len(one_line) + c1 + len("PARAMS = ") <= 100:
        literal = one_line
    else:
        literal = "{\n" + "".join(f"    {item},\n" for item in items) + "}"
    return before + literal + after


def _literal(value: Any) -> str:
    """A Python literal for a JSON-like value, double-quoted strings like ruff's style."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple | dict):
        return repr(value)
    return repr(value)  # numbers, True/False/None
