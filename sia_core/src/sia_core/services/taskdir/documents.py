"""The task's documents: ``task.md``, the reference scaffold (parsed, its declared
``PARAMS``/``SEARCH_SPACE`` checked) and the sample task descriptions (:class:`DocumentChecks`)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from sia_core.services.taskdir.layout import (
    LEGACY_REFERENCE_DIR,
    REFERENCE_SCAFFOLD,
    SAMPLE_DESCRIPTIONS,
    TASK_MD,
)
from sia_core.services.taskdir.loader_state import LoaderState
from sia_core.services.taskdir.params import SpaceError, read_declared


class DocumentChecks(LoaderState):
    """Reads the task's documents and reference scaffold, noting what is missing or broken."""

    def check_documents(self) -> None:
        task_md = self.root / TASK_MD
        if task_md.is_file():
            self.task_md = task_md.read_text(encoding="utf-8", errors="replace")
            if not self.task_md.strip():
                self.problem(TASK_MD, "is empty: describe the task, the answer format and metric")
        else:
            self.problem(TASK_MD, "missing: the task description (task, answer format, metric)")
        reference = self.root / REFERENCE_SCAFFOLD
        legacy = self.root / LEGACY_REFERENCE_DIR / Path(REFERENCE_SCAFFOLD).name
        if not reference.is_file() and legacy.is_file():
            reference = legacy
            self.notes.append(f"reference scaffold read from {self.rel(legacy)} (SIA v0 layout)")
        self.reference = reference
        if reference.is_file():
            try:
                source = reference.read_bytes()
                ast.parse(source, filename=str(reference))
            except SyntaxError as exc:
                self.problem(reference, f"syntax error at line {exc.lineno}: {exc.msg}")
            except ValueError as exc:
                self.problem(reference, f"cannot be parsed: {exc}")
            else:
                self.check_declared(reference, source.decode("utf-8", "replace"))
        else:
            self.problem(REFERENCE_SCAFFOLD, "missing: the reference scaffold (generation 1)")
        samples = self.root / SAMPLE_DESCRIPTIONS
        if not samples.is_file():
            samples = self.root / LEGACY_REFERENCE_DIR / Path(SAMPLE_DESCRIPTIONS).name
        if samples.is_file():
            self.sample_descriptions = samples.read_text(encoding="utf-8", errors="replace")
        else:
            self.notes.append(f"no {SAMPLE_DESCRIPTIONS}: the Meta-Agent gets no sample tasks")

    def check_declared(self, path: Path, source: str) -> None:
        """A scaffold that declares PARAMS or SEARCH_SPACE must declare them searchably."""
        if not re.search(r"^(PARAMS|SEARCH_SPACE)\s*=", source, re.M):
            return
        try:
            read_declared(source)
        except SpaceError as exc:
            self.problem(path, f"declared parameters: {exc} (see docs/scaffolds.md)")
