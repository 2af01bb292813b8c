"""The files of a run an agent may read, by an allowlist.

Never the task's ``data/private``, a generation's ``sealed/`` folder or its working folders (where
test outputs live); ``..`` and symlinks that leave an allowed folder are refused.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath

from sia_core.services.agents.protocol import ToolError

#: files of a generation folder an agent may read (dev-only artifacts)
GEN_FILES = frozenset(
    {
        "target_agent.py",
        "diff.patch",
        "decision.json",
        "improvement.md",
        "agent_execution.json",
        "metrics.json",
        "agent_transcript.json",
        "train_result.json",
        "rejected_target_agent.py",
    }
)
#: files at the top of the run folder an agent may read
RUN_FILES = frozenset({"context.md", "archive.json"})
#: path parts that are never readable, wherever they occur
FORBIDDEN_PARTS = frozenset({"private", "sealed"})


def _run_rule(rel: PurePosixPath) -> bool:
    """Whether a path inside the run folder is agent-readable (dev artifacts only)."""
    parts = rel.parts
    if len(parts) == 1:
        return parts[0] in RUN_FILES
    return len(parts) == 2 and parts[0].startswith("gen_") and parts[1] in GEN_FILES


def _any_rule(rel: PurePosixPath) -> bool:
    return True


class Workspace:
    """The files an agent may read, under virtual names: ``run/...`` (the run folder),
    ``task/public/...`` (the task's public data) and in-memory ``documents``."""

    def __init__(
        self,
        *,
        run_dir: Path | None = None,
        public_dir: Path | None = None,
        documents: Mapping[str, str] | None = None,
    ) -> None:
        self.roots: dict[str, tuple[Path, Callable[[PurePosixPath], bool]]] = {}
        if run_dir is not None:
            self.roots["run"] = (Path(run_dir), _run_rule)
        if public_dir is not None:
            self.roots["task/public"] = (Path(public_dir), _any_rule)
        self.documents = dict(documents or {})

    def _allowed(self, prefix: str, path: Path) -> bool:
        """``path`` (inside root ``prefix``) is a regular file whose real location stays in the
        root and passes the root's rule, with no forbidden part, before or after symlinks."""
        root, rule = self.roots[prefix]
        try:
            real_root = root.resolve(strict=True)
            rel = path.relative_to(root)
            real = path.resolve(strict=True)
            real_rel = real.relative_to(real_root)
        except (OSError, ValueError, RuntimeError):
            return False
        for candidate in (rel, real_rel):
            posix = PurePosixPath(candidate.as_posix())
            if FORBIDDEN_PARTS.intersection(posix.parts) or not rule(posix):
                return False
        return real.is_file()

    def list(self) -> list[tuple[str, int]]:
        """Every readable file as ``(virtual path, size in bytes)``, sorted."""
        found: list[tuple[str, int]] = [(n, len(t.encode())) for n, t in self.documents.items()]
        for prefix, (root, _) in self.roots.items():
            if not root.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = [d for d in dirnames if d not in FORBIDDEN_PARTS]
                for name in filenames:
                    path = Path(dirpath) / name
                    if self._allowed(prefix, path):
                        rel = path.relative_to(root).as_posix()
                        found.append((f"{prefix}/{rel}", path.stat().st_size))
        return sorted(found)

    def resolve(self, name: str) -> Path | str:
        """The file (or document text) behind a virtual path; :class:`ToolError` if refused."""
        clean = str(name).strip()
        clean = clean[2:] if clean.startswith("./") else clean
        if clean in self.documents:
            return self.documents[clean]
        posix = PurePosixPath(clean)
        if posix.is_absolute() or ".." in posix.parts:
            raise ToolError(f"{name!r}: give a path from list_files (no absolute paths, no '..')")
        for prefix in sorted(self.roots, key=len, reverse=True):
            if clean.startswith(prefix + "/"):
                root, _ = self.roots[prefix]
                path = root / clean[len(prefix) + 1 :]
                if self._allowed(prefix, path):
                    return path
                break
        raise ToolError(f"{name!r} is not a readable file; call list_files to see which are")

    def read(self, name: str, offset: int = 0, limit: int = 40_000) -> str:
        """Up to ``limit`` characters of a file from ``offset``, with a header saying where."""
        target = self.resolve(name)
        if isinstance(target, Path):
            text = target.read_bytes().decode("utf-8", errors="replace")
        else:
            text = target
        offset = max(0, int(offset))
        chunk = text[offset : offset + max(1, int(limit))]
        end = offset + len(chunk)
        more = f"; read on with offset={end}" if end < len(text) else ""
        return f"[{name}: characters {offset}-{end} of {len(text)}{more}]\n{chunk}"
