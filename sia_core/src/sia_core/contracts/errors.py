"""Errors the CLI prints as one line (``--debug`` shows the traceback)."""

from __future__ import annotations


class SiaError(Exception):
    """A problem the user can fix: the message says what is wrong and what would be right."""


class PluginConflictError(SiaError):
    """Two plugins registered a record under the same name."""


class UnknownNameError(SiaError):
    """A backend/task/sandbox/algorithm name that no installed plugin provides."""

    def __init__(self, kind: str, name: str, choices: list[str]) -> None:
        listed = ", ".join(sorted(choices)) or "(none installed)"
        super().__init__(
            f"unknown {kind} {name!r}; choose one of: {listed} (`sia doctor` says what this "
            "environment has and where the rest lives)"
        )
        self.kind, self.name, self.choices = kind, name, choices


class TaskError(SiaError):
    """A task directory that cannot be used; ``problems`` lists every problem found."""

    def __init__(self, task: str, problems: list[str]) -> None:
        super().__init__(f"task {task!r} is not valid: " + "; ".join(problems))
        self.problems = problems


class BudgetExceeded(SiaError):
    """A run or generation budget (calls, tokens, cost) was used up."""
