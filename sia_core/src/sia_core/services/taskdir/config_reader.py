"""Reading ``task.toml`` into a :class:`~sia_core.services.taskdir.records.TaskConfig`:
typed values, the kind inferred for a SIA folder, split and label paths, the canary table
(:class:`ConfigReading`)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from sia_core.services.canary import CanarySpec
from sia_core.services.taskdir.layout import (
    ANSWER_TYPES,
    DEFAULT_PASS_STATUSES,
    DIRECTIONS,
    EVAL_SPLITS,
    EVALUATE_CANDIDATES,
    FLOAT_TOLERANCE,
    KINDS,
    PRIVATE_DIR,
    PUBLIC_DIR,
    SPLIT_SUFFIXES,
    SPLITS,
    TASK_TOML,
)
from sia_core.services.taskdir.loader_state import LoaderState
from sia_core.services.taskdir.records import DevFromTrain, TaskConfig
from sia_core.services.untrusted import DEFAULT_OUTPUTS

_KNOWN_KEYS: dict[str, frozenset[str]] = {
    "": frozenset(
        {
            "name",
            "description",
            "metric",
            "direction",
            "answer_type",
            "scorer",
            "kind",
            "tolerance",
            "allow_shared_inputs",
            "splits",
            "labels",
            "fields",
            "dev_from_train",
            "limits",
            "program",
            "canary",
        }
    ),
    "splits": frozenset(SPLITS),
    "labels": frozenset(EVAL_SPLITS),
    "fields": frozenset({"id", "input", "label"}),
    "dev_from_train": frozenset({"fraction", "seed", "stratify"}),
    "limits": frozenset({"item_timeout_s", "parallel", "eval_timeout_s"}),
    "program": frozenset({"dev_fraction", "seed", "pass_statuses", "outputs", "max_output_mb"}),
    "canary": frozenset({"n", "labels", "alpha", "inputs"}),
}


class ConfigReading(LoaderState):
    """Builds the task's config from ``task.toml`` (or defaults), noting every bad value."""

    def read_toml(self) -> dict[str, Any] | None:
        path = self.root / TASK_TOML
        if not path.is_file():
            return None
        try:
            return tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            self.problem(TASK_TOML, f"not valid TOML: {exc}")
        except (OSError, UnicodeDecodeError) as exc:
            self.problem(TASK_TOML, f"cannot be read: {exc}")
        return {}

    def table(self, raw: Mapping[str, Any], key: str) -> dict[str, Any]:
        value = raw.get(key, {})
        if not isinstance(value, dict):
            self.problem(TASK_TOML, f"[{key}] must be a table")
            return {}
        return value

    def value(
        self, table: Mapping[str, Any], key: str, kinds: tuple[type, ...], default: Any, where: str
    ) -> Any:
        if key not in table:
            return default
        value = table[key]
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok:
            names = " or ".join(k.__name__ for k in kinds)
            self.problem(TASK_TOML, f"{where}{key} must be {names}, got {value!r}")
            return default
        return value

    def check_choice(self, key: str, value: str, choices: tuple[str, ...]) -> None:
        if value not in choices:
            self.problem(
                TASK_TOML if self.has_toml else ".",
                f"unknown {key} {value!r}; choose one of: {', '.join(choices)}",
            )

    @property
    def has_toml(self) -> bool:
        return (self.root / TASK_TOML).is_file()

    def build_config(self, raw: dict[str, Any] | None) -> TaskConfig:
        from_toml = raw is not None
        raw = raw or {}
        for section, known in _KNOWN_KEYS.items():
            table = raw if not section else raw.get(section, {})
            if not isinstance(table, dict):
                continue
            for key in table:
                if key not in known:
                    where = f"[{section}] " if section else ""
                    self.notes.append(f"task.toml: unknown key {where}{key!r} ignored")
        get = self.value
        name = get(raw, "name", (str,), self.root.name, "") or self.root.name
        scorer = get(raw, "scorer", (str,), "", "")
        kind = get(raw, "kind", (str,), "", "")
        splits_t = self.table(raw, "splits")
        if not kind:
            kind = self.infer_kind(from_toml, scorer, splits_t)
        self.check_choice("kind", kind, KINDS)
        limits = self.table(raw, "limits")
        fields = self.table(raw, "fields")
        program = self.table(raw, "program")
        input_fields = fields.get("input", ["input"])
        if isinstance(input_fields, str):
            input_fields = [input_fields]
        if (
            not isinstance(input_fields, list)
            or not input_fields
            or not all(isinstance(f, str) for f in input_fields)
        ):
            self.problem(
                TASK_TOML, f"[fields] input must be a name or a list of names, got {input_fields!r}"
            )
            input_fields = ["input"]
        pass_statuses = get(
            program, "pass_statuses", (list,), list(DEFAULT_PASS_STATUSES), "[program] "
        )
        outputs = get(program, "outputs", (list,), list(DEFAULT_OUTPUTS), "[program] ")
        if not all(
            isinstance(o, str)
            and o
            and not o.startswith("/")
            and ".." not in o.split("/")
            and o.count("/") <= 1
            for o in outputs
        ):
            self.problem(
                TASK_TOML,
                f"[program] outputs must be relative file names or patterns at most one folder "
                f'deep (e.g. ["submission.csv", "results/*.json"]), got {outputs!r}',
            )
            outputs = list(DEFAULT_OUTPUTS)
        config = TaskConfig(
            name=name,
            description=get(raw, "description", (str,), "", ""),
            metric=get(raw, "metric", (str,), "accuracy", "") or "accuracy",
            direction=get(raw, "direction", (str,), "maximize", ""),
            answer_type=get(raw, "answer_type", (str,), "text", ""),
            scorer=scorer or ("exact" if kind == "per_item" else ""),
            kind=kind,
            item_timeout_s=float(get(limits, "item_timeout_s", (int, float), 120.0, "[limits] ")),
            parallel=int(get(limits, "parallel", (int,), 2, "[limits] ")),
            eval_timeout_s=float(get(limits, "eval_timeout_s", (int, float), 600.0, "[limits] ")),
            tolerance=float(get(raw, "tolerance", (int, float), FLOAT_TOLERANCE, "")),
            allow_shared_inputs=get(raw, "allow_shared_inputs", (bool,), False, ""),
            id_field=get(fields, "id", (str,), "id", "[fields] "),
            input_fields=tuple(input_fields),
            label_field=get(fields, "label", (str,), "label", "[fields] "),
            program_dev_fraction=float(
                get(program, "dev_fraction", (int, float), 0.5, "[program] ")
            ),
            program_seed=get(program, "seed", (int,), 0, "[program] "),
            pass_statuses=tuple(str(s) for s in pass_statuses),
            outputs=tuple(outputs),
            max_output_mb=float(get(program, "max_output_mb", (int, float), 64.0, "[program] ")),
            canary=self.canary_spec(raw, kind, get(raw, "direction", (str,), "maximize", "")),
            from_toml=from_toml,
        )
        self.check_choice("direction", config.direction, DIRECTIONS)
        self.check_choice("answer_type", config.answer_type, ANSWER_TYPES)
        if config.parallel < 1:
            self.problem(TASK_TOML, f"[limits] parallel must be at least 1, got {config.parallel}")
        if config.item_timeout_s <= 0:
            self.problem(TASK_TOML, "[limits] item_timeout_s must be positive")
        if not 0.0 < config.program_dev_fraction < 1.0:
            self.problem(TASK_TOML, "[program] dev_fraction must be between 0 and 1")
        if not from_toml:
            self.notes.append(
                "no task.toml: SIA-style folder, defaults used (name = folder name, "
                "direction maximize, whole-run evaluate.py scorer)"
            )
        if kind == "per_item":
            config = self.resolve_split_paths(config, raw, splits_t)
        elif kind == "program":
            splits = {}
            if isinstance(splits_t.get("train"), str):
                splits["train"] = splits_t["train"]
            evaluate = self.find_evaluate(scorer)
            config = attrs.evolve(config, splits=splits, evaluate=evaluate, scorer=evaluate)
        return config

    def canary_spec(self, raw: dict[str, Any], kind: str, direction: str) -> CanarySpec | None:
        if "canary" not in raw:
            return None
        table = self.table(raw, "canary")
        get = self.value
        n = get(table, "n", (int,), 20, "[canary] ")
        labels = get(table, "labels", (list,), [], "[canary] ")
        alpha = float(get(table, "alpha", (int, float), 0.001, "[canary] "))
        inputs = get(table, "inputs", (str,), "dev", "[canary] ")
        bad = []
        if kind != "per_item":
            bad.append("needs a per-item task (a program task's evaluate.py owns its labels)")
        if direction != "maximize":
            bad.append('needs direction = "maximize" (a canary is answered right or not)')
        if not 1 <= n <= 10_000:
            bad.append(f"n must be 1..10000, got {n}")
        if not all(isinstance(v, str) and v for v in labels) or len(set(labels)) < 2:
            bad.append(
                f'labels must be 2 or more distinct strings (e.g. ["A", "B", "C", "D"]), '
                f"got {labels!r}"
            )
        if not 0.0 < alpha < 0.5:
            bad.append(f"alpha must be between 0 and 0.5 (e.g. 0.001), got {alpha}")
        if inputs not in ("dev", "train"):
            bad.append(f'inputs must be "dev" or "train", got {inputs!r}')
        for why in bad:
            self.problem(TASK_TOML, f"[canary] {why}")
        if bad:
            return None
        return CanarySpec(n=n, labels=tuple(str(v) for v in labels), alpha=alpha, inputs=inputs)

    def infer_kind(self, from_toml: bool, scorer: str, splits_t: Mapping[str, Any]) -> str:
        if not from_toml:
            return "program"
        if scorer and ":" not in scorer and Path(scorer).name == "evaluate.py":
            return "program"
        if (
            not scorer
            and not splits_t
            and any((self.root / c).is_file() for c in EVALUATE_CANDIDATES)
        ):
            return "program"
        return "per_item"

    def find_evaluate(self, scorer: str) -> str:
        if scorer:
            if not (self.root / scorer).is_file():
                self.problem(scorer, "missing: the whole-run scorer named by scorer")
            return scorer
        for candidate in EVALUATE_CANDIDATES:
            if (self.root / candidate).is_file():
                return candidate
        self.problem(
            EVALUATE_CANDIDATES[0],
            "missing: a program-style task needs evaluate.py in data/public/ or the task root "
            "(or a task.toml with a per-item scorer)",
        )
        return ""

    def resolve_split_paths(
        self, config: TaskConfig, raw: Mapping[str, Any], splits_t: Mapping[str, Any]
    ) -> TaskConfig:
        labels_t = self.table(raw, "labels")
        splits: dict[str, str] = {}
        for split in SPLITS:
            declared = self.value(splits_t, split, (str,), "", "[splits] ")
            path = declared or self.default_path(PUBLIC_DIR, split)
            if path:
                splits[split] = path
        dev_from_train: DevFromTrain | None = None
        dft_t = self.table(raw, "dev_from_train")
        if "dev" not in splits:
            if "train" in splits:
                dev_from_train = DevFromTrain(
                    fraction=float(
                        self.value(dft_t, "fraction", (int, float), 0.1, "[dev_from_train] ")
                    ),
                    seed=self.value(dft_t, "seed", (int,), 0, "[dev_from_train] "),
                    stratify=self.value(dft_t, "stratify", (bool,), True, "[dev_from_train] "),
                )
                if not 0.0 < dev_from_train.fraction < 1.0:
                    self.problem(TASK_TOML, "[dev_from_train] fraction must be between 0 and 1")
            else:
                self.problem(
                    f"{PUBLIC_DIR}/dev.jsonl",
                    "missing: no dev split and no train split to carve one from",
                )
        elif dft_t:
            self.notes.append("[dev_from_train] ignored: the task ships a dev file")
        if "test" not in splits:
            self.problem(
                f"{PUBLIC_DIR}/test.jsonl", "missing: no test split (declare [splits] test)"
            )
        if "train" not in splits:
            self.notes.append("no train split: nothing for the scaffold to fit on or for RL")
        labels: dict[str, str] = {}
        for split in EVAL_SPLITS:
            if split == "dev" and dev_from_train is not None:
                continue
            declared = self.value(labels_t, split, (str,), "", "[labels] ")
            suffix = Path(splits[split]).suffix if split in splits else ".jsonl"
            path = declared or self.default_path(PRIVATE_DIR, f"{split}_labels", prefer=suffix)
            labels[split] = path or f"{PRIVATE_DIR}/{split}_labels{suffix or '.jsonl'}"
        return attrs.evolve(config, splits=splits, labels=labels, dev_from_train=dev_from_train)

    def default_path(self, folder: str, stem: str, prefer: str = ".jsonl") -> str:
        suffixes = (prefer, *[s for s in SPLIT_SUFFIXES if s != prefer])
        for suffix in suffixes:
            candidate = f"{folder}/{stem}{suffix}"
            if (self.root / candidate).is_file():
                return candidate
        return ""
