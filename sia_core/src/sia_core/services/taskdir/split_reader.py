"""Reading the splits and private labels: JSONL/CSV/JSON rows, dev carved from train, and
the checks across them (duplicate or shared ids and inputs, missing or invalid labels)
(:class:`SplitReading`)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from sia_core.services.taskdir.answers import _WS_RE, _canonical_json, normalize
from sia_core.services.taskdir.layout import (
    ANSWER_TYPES,
    BUILTIN_SCORERS,
    EVAL_SPLITS,
    PRIVATE_DIR,
    PUBLIC_DIR,
    SPLITS,
)
from sia_core.services.taskdir.loader_state import LoaderState, _is_under
from sia_core.services.taskdir.records import TaskConfig, _Row
from sia_core.services.taskdir.splitting import carve_dev

_FIRST_FEW = 5


class SplitReading(LoaderState):
    """Reads the declared splits and labels into rows, noting every bad row or overlap."""

    def load_splits(self, config: TaskConfig, only: tuple[str, ...] = SPLITS) -> None:
        private = self.root / PRIVATE_DIR
        if config.labels and not private.is_dir():
            self.problem(
                PRIVATE_DIR,
                "missing: dev/test labels are declared there ("
                + ", ".join(config.labels[s] for s in sorted(config.labels))
                + ")",
            )
        for split in only:
            if split not in config.splits:
                continue
            rel = config.splits[split]
            path = self.root / rel
            if not path.is_file():
                self.problem(rel, f"split file missing ({split})")
                continue
            raw_rows = self.read_rows(path, required=(config.id_field,))
            if raw_rows is None:
                continue
            with_label = split == "train"
            if split in EVAL_SPLITS:
                carrying = [line for line, row in raw_rows if config.label_field in row]
                if carrying:
                    self.problem(
                        rel,
                        f"carries a {config.label_field!r} field ({len(carrying)} rows, first at "
                        f"line {carrying[0]}); {split} labels belong in {PRIVATE_DIR}/",
                    )
            self.rows[split] = self.to_rows(raw_rows, rel, config, with_label)
        if config.dev_from_train is not None and "train" in self.rows and "dev" in only:
            dft = config.dev_from_train
            train, dev = carve_dev(self.rows["train"], dft.fraction, dft.seed, dft.stratify)
            self.rows["train"], self.rows["dev"] = train, dev
            self.labels["dev"] = {r.id: r.label for r in dev}
            how = ", stratified by label" if dft.stratify else ""
            self.notes.append(
                f"no dev split declared: carved {dft.fraction:.0%} of train ({len(dev)} items) "
                f"with seed {dft.seed}{how}; {config.splits['train']} still shows their labels "
                "to a scaffold that reads it directly, so ship a dev file for a sealed dev split"
            )
        if "train" in self.rows:
            self.labels["train"] = {r.id: r.label for r in self.rows["train"]}
        for split in EVAL_SPLITS:
            if split in only and split in config.labels and split in self.rows:
                self.load_labels(split, config)
        self.check_ids_and_inputs(config)
        self.check_label_values(config)

    def read_rows(
        self, path: Path, required: tuple[str, ...]
    ) -> list[tuple[int, dict[str, Any]]] | None:
        """Rows as (line number, mapping); ``None`` (with a problem) if unreadable."""
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            self.problem(path, f"cannot be read as UTF-8 text: {exc}")
            return None
        rows: list[tuple[int, dict[str, Any]]] = []
        suffix = path.suffix.lower()
        if suffix == ".csv":
            reader = csv.DictReader(io.StringIO(text, newline=""))
            header = reader.fieldnames or []
            missing = [col for col in required if col not in header]
            if missing:
                self.problem(
                    path,
                    f"no {', '.join(repr(c) for c in missing)} column "
                    f"(columns: {', '.join(header) or 'none'})",
                )
                return None
            try:
                for row in reader:
                    rows.append((reader.line_num, {k: v for k, v in row.items() if k is not None}))
            except csv.Error as exc:
                self.problem(path, f"line {reader.line_num}: malformed CSV: {exc}")
                return None
        elif suffix == ".json":
            try:
                data = json.loads(text)
            except ValueError as exc:
                self.problem(path, f"not valid JSON: {exc}")
                return None
            if not isinstance(data, list):
                self.problem(path, "a .json split must hold a list of objects")
                return None
            for index, row in enumerate(data):
                if isinstance(row, dict):
                    rows.append((index + 1, row))
                else:
                    self.problem(path, f"entry {index + 1}: expected a JSON object")
        else:
            for number, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    self.problem(path, f"line {number}: not valid JSON ({exc})")
                    continue
                if not isinstance(row, dict):
                    self.problem(path, f"line {number}: expected a JSON object")
                    continue
                rows.append((number, row))
        where = "entry" if suffix == ".json" else "line"
        good = []
        for number, row in rows:
            absent = [f for f in required if f not in row or row[f] in (None, "")]
            if absent:
                self.problem(path, f"{where} {number}: no {absent[0]!r} field")
            else:
                good.append((number, row))
        return good

    def to_rows(
        self,
        raw_rows: list[tuple[int, dict[str, Any]]],
        rel: str,
        config: TaskConfig,
        with_label: bool,
    ) -> list[_Row]:
        out: list[_Row] = []
        seen: dict[str, int] = {}
        duplicates: list[str] = []
        missing_input: list[int] = []
        missing_label: list[int] = []
        for number, row in raw_rows:
            item_id = str(row[config.id_field])
            if item_id in seen:
                duplicates.append(item_id)
                continue
            seen[item_id] = number
            absent = [f for f in config.input_fields if f not in row]
            if absent:
                missing_input.append(number)
                continue
            if len(config.input_fields) == 1:
                value = row[config.input_fields[0]]
            else:
                value = {f: row[f] for f in config.input_fields}
            label = None
            if with_label:
                if config.label_field not in row:
                    missing_label.append(number)
                    continue
                label = row[config.label_field]
            out.append(_Row(id=item_id, input=value, label=label))
        if duplicates:
            self.problem(rel, f"{len(duplicates)} duplicate ids: {_few(duplicates)}")
        if missing_input:
            fields = ", ".join(repr(f) for f in config.input_fields)
            self.problem(
                rel,
                f"{len(missing_input)} rows lack input field(s) {fields} "
                f"(first at line {missing_input[0]})",
            )
        if missing_label:
            self.problem(
                rel,
                f"{len(missing_label)} train rows have no {config.label_field!r} "
                f"(first at line {missing_label[0]})",
            )
        return out

    def load_labels(self, split: str, config: TaskConfig) -> None:
        rel = config.labels[split]
        path = self.root / rel
        if _is_under(path, self.root / PUBLIC_DIR):
            self.problem(rel, "a labels file under data/public: the scaffold can read it")
        if not path.is_file():
            self.problem(rel, f"missing: the {split} labels")
            return
        raw_rows = self.read_rows(path, required=(config.id_field,))
        if raw_rows is None:
            return
        labels: dict[str, Any] = {}
        no_label: list[int] = []
        for number, row in raw_rows:
            if config.label_field not in row:
                no_label.append(number)
                continue
            labels[str(row[config.id_field])] = row[config.label_field]
        if no_label:
            self.problem(
                rel,
                f"{len(no_label)} rows have no {config.label_field!r} (first at line {no_label[0]})",
            )
        unlabelled = [r.id for r in self.rows[split] if r.id not in labels]
        if unlabelled:
            self.problem(rel, f"{len(unlabelled)} {split} items have no label: {_few(unlabelled)}")
        self.labels[split] = labels

    def check_ids_and_inputs(self, config: TaskConfig) -> None:
        present = [s for s in SPLITS if s in self.rows]
        for i, first in enumerate(present):
            for second in present[i + 1 :]:
                file = self.split_file(second, config)
                ids = {r.id for r in self.rows[first]}
                shared = [r.id for r in self.rows[second] if r.id in ids]
                if shared:
                    self.problem(
                        file,
                        f"{len(shared)} ids also in {first} "
                        f"({self.split_file(first, config)}): {_few(shared)}",
                    )
                inputs = {_input_key(r.input) for r in self.rows[first]}
                same = [r.id for r in self.rows[second] if _input_key(r.input) in inputs]
                if same:
                    message = (
                        f"{len(same)} items have an input identical to one in {first}: {_few(same)}"
                    )
                    if config.allow_shared_inputs:
                        self.notes.append(f"{file}: {message} (allowed by allow_shared_inputs)")
                    else:
                        self.problem(file, message + " (set allow_shared_inputs = true to accept)")

    def split_file(self, split: str, config: TaskConfig) -> str:
        if split == "dev" and config.dev_from_train is not None:
            return config.splits.get("train", "train")
        return config.splits.get(split, split)

    def check_label_values(self, config: TaskConfig) -> None:
        if config.scorer not in BUILTIN_SCORERS:
            return
        answer_type = "float" if config.scorer == "numeric" else config.answer_type
        if answer_type not in ANSWER_TYPES:
            return
        for split, labels in self.labels.items():
            bad = [i for i, label in labels.items() if normalize(label, answer_type) is None]
            if bad:
                file = config.labels.get(split) or self.split_file(split, config)
                self.problem(
                    file, f"{len(bad)} {split} labels are not valid {answer_type}: {_few(bad)}"
                )


def _few(ids: list[str]) -> str:
    shown = ", ".join(ids[:_FIRST_FEW])
    return shown + (", ..." if len(ids) > _FIRST_FEW else "")


def _input_key(value: Any) -> str:
    if isinstance(value, str):
        return _WS_RE.sub(" ", value).strip()
    try:
        return _canonical_json(value)
    except (TypeError, ValueError):
        return repr(value)
