"""Placeholder: the gpqa task has no data yet (see data/public/task.md)."""


def solve(item, ctx):
    """Never called: the placeholder task cannot be loaded."""
    return None
