"""Where things live in a task directory, and the fixed vocabularies ``task.toml`` chooses
from (splits, answer types, directions, built-in scorers, kinds) with their defaults."""

from __future__ import annotations

SPLITS: tuple[str, ...] = ("train", "dev", "test")
EVAL_SPLITS: tuple[str, ...] = ("dev", "test")
ANSWER_TYPES: tuple[str, ...] = ("text", "int", "float", "choice", "json")
DIRECTIONS: tuple[str, ...] = ("maximize", "minimize")
BUILTIN_SCORERS: tuple[str, ...] = ("exact", "numeric")
KINDS: tuple[str, ...] = ("per_item", "program")
SPLIT_SUFFIXES: tuple[str, ...] = (".jsonl", ".csv", ".json")

TASK_TOML = "task.toml"
TASK_MD = "data/public/task.md"
PUBLIC_DIR = "data/public"
PRIVATE_DIR = "data/private"
REFERENCE_SCAFFOLD = "reference/reference_target_agent.py"
SAMPLE_DESCRIPTIONS = "reference/SAMPLE_TASK_DESCRIPTIONS.md"
# SIA v0 called the reference folder spec/
LEGACY_REFERENCE_DIR = "spec"
EVALUATE_CANDIDATES: tuple[str, ...] = ("data/public/evaluate.py", "evaluate.py")

FLOAT_TOLERANCE = 1e-6
DEFAULT_PASS_STATUSES: tuple[str, ...] = ("correct", "pass", "passed", "success", "solved")
