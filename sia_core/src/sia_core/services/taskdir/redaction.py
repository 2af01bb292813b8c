"""Redaction: the private label values a task knows, and scrubbing them out of text that
leaves the task (an evaluate.py error, a log) (:class:`LabelRedaction`)."""

from __future__ import annotations

import re

from sia_core.services.taskdir.answers import _canonical_json
from sia_core.services.taskdir.layout import EVAL_SPLITS
from sia_core.services.taskdir.task_core import TaskCore

#: what separates the cells of a label file or of text (kept by split: it has a group)
_SEPARATORS = re.compile(r"([\s,;:\"'\[\]{}()|=<>]+)")


class LabelRedaction(TaskCore):
    """Private label values (cached) and :meth:`redact`, which replaces them in text."""

    def secret_values(self) -> frozenset[str]:
        """Private label values long enough to recognise (4+ characters), for :meth:`redact`.

        Per-item tasks: every dev/test label. Program tasks: every cell of the files under
        ``data/private`` (split on separators; the first 32 MB).
        """
        if self._secrets is not None:
            return self._secrets
        values: set[str] = set()
        for split in EVAL_SPLITS:
            for label in self._labels.get(split, {}).values():
                text = label if isinstance(label, str) else _canonical_json(label)
                values.add(text.strip())
                values.update(_SEPARATORS.split(text)[::2])
        if self.config.kind == "program" and self.private_dir.is_dir():
            budget = 32 * 1024 * 1024
            for path in sorted(self.private_dir.rglob("*")):
                if budget <= 0:
                    break
                if not path.is_file() or path.is_symlink():
                    continue
                try:
                    with open(path, "rb") as f:
                        data = f.read(budget)
                except OSError:
                    continue
                budget -= len(data)
                for line in data.decode("utf-8", "replace").splitlines():
                    values.add(line.strip())
                    values.update(_SEPARATORS.split(line)[::2])
        secrets = frozenset(v.strip() for v in values if len(v.strip()) >= 4)
        self._secrets = secrets
        return secrets

    def redact(self, text: str) -> str:
        """``text`` with every private label value in it replaced, and a note saying so."""
        if not text:
            return text
        secrets = self.secret_values()
        if not secrets:
            return text
        pieces = _SEPARATORS.split(text)
        hits = 0
        for i, piece in enumerate(pieces):
            if i % 2 == 0 and piece in secrets:
                pieces[i] = "[redacted]"
                hits += 1
        out = "".join(pieces)
        lines = out.split("\n")
        for i, line in enumerate(lines):
            if line.strip() in secrets:
                lines[i] = "[redacted]"
                hits += 1
        if not hits:
            return text
        return "\n".join(lines) + f"\n[sia: {hits} private label value(s) redacted]"
