"""Fixtures of the hostile-scaffold suite: a fresh task/run layout and a leftover-process check."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Arena, kill_all, still_running


class Leftovers:
    """Finds (and kills) processes a test left behind; see :func:`harness.running`."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def sweep(self) -> dict[int, str]:
        """Kill whatever of the test is still running; what was found."""
        found = still_running(self.marker)
        kill_all(list(found))
        return found


@pytest.fixture
def arena(tmp_path: Path) -> Arena:
    return Arena(tmp_path)


@pytest.fixture(autouse=True)
def nothing_left_running(tmp_path: Path) -> Iterator[Leftovers]:
    """After each case nothing it started may be running (the runner has returned by then)."""
    leftovers = Leftovers(str(tmp_path))
    yield leftovers
    found = leftovers.sweep()
    assert not found, f"left running after the case: {found}"
