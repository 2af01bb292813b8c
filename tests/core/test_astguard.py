"""The ast.parse guard against CPython's thread race in the AST constructor (cpython#106905)."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap

import pytest

from sia_core.machinery.astguard import affected, guard_ast_parse

# Two threads parse a large module while collecting cycles whose finalizers run Python code, with
# the smallest switch interval: on an affected interpreter this fails within a handful of parses
# unguarded (2-6 on this machine, 5 tries), so 2 x 150 guarded parses without one is the test.
RACE = textwrap.dedent(
    """
    import ast, sys, threading
    from sia_core.machinery.astguard import guard_ast_parse
    if sys.argv[1] == "guarded":
        assert guard_ast_parse()
    src = "\\n".join(
        f"def f{i}(a, b=1, *c, **d):\\n    return [x * {i} for x in range(a) if x % 2]"
        for i in range(300)
    )
    class Finalized:
        def __del__(self):
            sum(range(50))
    errors = []
    def work():
        for _ in range(150):
            junk = [Finalized() for _ in range(50)]
            for j in junk:
                j.me = j  # a cycle: only the collector frees it, mid-parse
            del junk
            try:
                ast.parse(src)
            except SystemError as exc:
                errors.append(str(exc))
                return
    sys.setswitchinterval(1e-6)
    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("errors:", len(errors), errors[:1])
    """
)


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ((3, 11, 7), True),
        ((3, 11, 8), False),
        ((3, 12, 1), True),
        ((3, 12, 2), False),
        ((3, 13, 0), False),
        ((3, 10, 14), False),
    ],
)
def test_affected_versions(version, expected) -> None:
    assert affected(version) is expected


@pytest.mark.skipif(not affected(), reason="this interpreter's AST constructor has no thread race")
def test_guarded_parses_survive_the_thread_race() -> None:
    out = subprocess.run(
        [sys.executable, "-c", RACE, "guarded"], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("errors: 0"), out.stdout


def test_guard_is_idempotent_and_only_where_needed() -> None:
    first = guard_ast_parse()
    parse = ast.parse
    assert guard_ast_parse() is first and ast.parse is parse
    assert first is affected()
    assert getattr(ast.parse, "__sia_guarded__", False) is first
    assert isinstance(ast.parse("x = 1"), ast.Module)
