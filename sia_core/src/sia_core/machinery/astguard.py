"""On CPython 3.11.0-3.11.7 and 3.12.0-3.12.1 two threads in ``ast.parse`` at once can fail with
``SystemError: AST constructor recursion depth mismatch`` (python/cpython#106905). The loop parses
scaffolds while tracker threads import libraries that parse source (wandb, through pydantic):
there :func:`guard_ast_parse` makes ``ast.parse`` take one process-wide lock."""

from __future__ import annotations

import ast
import functools
import sys
import threading
from typing import Any

#: (first affected, first fixed) version pairs
AFFECTED = (((3, 11, 0), (3, 11, 8)), ((3, 12, 0), (3, 12, 2)))

_LOCK = threading.RLock()  # re-entrant: a finalizer run by the collector mid-parse may parse too


def affected(version: tuple[int, ...] | None = None) -> bool:
    """Whether ``version`` (default: this interpreter) has the racy AST constructor."""
    v = tuple(version or sys.version_info[:3])
    return any(lo <= v < hi for lo, hi in AFFECTED)


def guard_ast_parse() -> bool:
    """Serialize ``ast.parse`` across threads if this interpreter needs it (idempotent).
    Returns whether the guard is in place."""
    if not affected():
        return False
    if getattr(ast.parse, "__sia_guarded__", False):
        return True
    unguarded = ast.parse

    @functools.wraps(unguarded)
    def parse(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return unguarded(*args, **kwargs)

    parse.__sia_guarded__ = True  # type: ignore[attr-defined]
    ast.parse = parse  # type: ignore[assignment]
    return True
