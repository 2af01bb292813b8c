"""What scores a task: a built-in or custom (``file.py:function``) per-item scorer,
imported from the task folder, or a program task's ``evaluate.py`` (:class:`ScorerLoading`)."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from sia_core.services.taskdir.answers import _exact_scorer, _numeric_scorer
from sia_core.services.taskdir.layout import BUILTIN_SCORERS, PRIVATE_DIR, PUBLIC_DIR, TASK_TOML
from sia_core.services.taskdir.loader_state import LoaderState, _is_under
from sia_core.services.taskdir.records import TaskConfig


class ScorerLoading(LoaderState):
    """Loads the per-item scorer (and ``aggregate``), or checks a program task's setup."""

    def load_scorer(self, config: TaskConfig) -> None:
        scorer = config.scorer
        if scorer == "exact":
            self.score_item = _exact_scorer(config.answer_type)
        elif scorer == "numeric":
            self.score_item = _numeric_scorer(config.tolerance)
        elif scorer.partition(":")[0].endswith(".py"):
            self.load_custom_scorer(scorer)
        else:
            self.problem(
                TASK_TOML,
                f"unknown scorer {scorer!r}; choose one of: exact, numeric, "
                "or 'file.py:function' for a custom per-item scorer",
            )
        if config.direction == "minimize" and scorer in BUILTIN_SCORERS:
            self.problem(
                TASK_TOML,
                f"direction 'minimize' needs a custom scorer returning a per-item loss; "
                f"the built-in {scorer!r} scores 1 for a correct answer",
            )

    def load_custom_scorer(self, scorer: str) -> None:
        file, _, func = scorer.partition(":")
        func = func or "score_item"
        path = (self.root / file).resolve()
        if not path.is_file():
            self.problem(file, "missing: the custom scorer named in task.toml")
            return
        if _is_under(path, self.root / PUBLIC_DIR):
            self.problem(
                file, "the scorer must live outside data/public (the scaffold can read it)"
            )
        module = self.import_file(path)
        if module is None:
            return
        score_item = getattr(module, func, None)
        if not callable(score_item):
            self.problem(file, f"defines no function {func}(answer, label, item) -> float")
            return
        self.score_item = score_item
        steps = getattr(module, "score_steps", None)
        if steps is not None and not callable(steps):
            self.problem(file, "score_steps is not a function")
        else:
            self.score_steps = steps
        aggregate = getattr(module, "aggregate", None)
        if aggregate is not None and not callable(aggregate):
            self.problem(file, "aggregate is not a function")
        else:
            self.aggregate = aggregate

    def import_file(self, path: Path) -> ModuleType | None:
        name = "_sia_task_scorer_" + hashlib.sha256(str(path).encode()).hexdigest()[:16]
        try:
            source = path.read_bytes()
            compile(source, str(path), "exec")
        except SyntaxError as exc:
            self.problem(path, f"syntax error at line {exc.lineno}: {exc.msg}")
            return None
        except (OSError, ValueError) as exc:
            self.problem(path, f"cannot be read: {exc}")
            return None
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            self.problem(path, "cannot be imported")
            return None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # trusted task code, but a broken file must become a Problem
            sys.modules.pop(name, None)
            self.problem(path, f"importing it raised {type(exc).__name__}: {exc}")
            return None
        return module

    def check_program(self, config: TaskConfig) -> None:
        if not (self.root / PRIVATE_DIR).is_dir():
            self.notes.append(f"no {PRIVATE_DIR}/: evaluate.py has no private labels to read")
        if config.evaluate.startswith(PUBLIC_DIR + "/"):
            self.notes.append(
                f"{config.evaluate} sits in data/public, which the scaffold can read; it must "
                "hold no labels itself"
            )
        self.notes.append(
            f"whole-run scorer {config.evaluate or 'evaluate.py'}: dev/test are carved by a "
            f"seeded hash of the ids in results.json items[] (dev fraction "
            f"{config.program_dev_fraction:g}, seed {config.program_seed}); without items[] "
            "decisions and reported scores use the same items"
        )
