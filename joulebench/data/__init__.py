"""Datasets as prompt/target examples: one registered loader per dataset kind, plus JSONL storage."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from joulebench.io import write_jsonl
from joulebench.registry import Registry

SPLIT_NAMES = ("train", "validation", "test")


class DatasetError(ValueError):
    """Bad dataset input. The message is one line naming the file and, where known, the row and column."""


def dataset_error(path: str | os.PathLike[str], problem: str, *, row: int | None = None,
                  line: int | None = None, column: str | None = None) -> DatasetError:
    """A one-line error; ``row`` counts records from 1 (not a CSV header), ``line`` counts file lines."""
    where = str(path)
    if line is not None:
        where += f", line {line}"
    if row is not None:
        where += f", row {row}"
    if column is not None:
        where += f", column {column!r}"
    return DatasetError(" ".join(f"{where}: {problem}".split()))


@dataclass(frozen=True)
class Example:
    id: str
    prompt: str
    target: str
    label: str


@dataclass
class Splits:
    train: list[Example]
    validation: list[Example]
    test: list[Example]


DatasetKind = Callable[[dict, dict[str, Path]], Splits]
DATASET_KINDS: Registry[DatasetKind] = Registry("dataset kind")


def prepare_splits(cfg: dict, inputs: dict[str, Path]) -> Splits:
    """Build the splits of the dataset ``cfg`` describes, capped by its ``max_<split>`` entries."""
    return cap_splits(load_splits(cfg, inputs), cfg)


def load_splits(cfg: dict, inputs: dict[str, Path]) -> Splits:
    """The splits as the dataset's kind reads them, before the caps (the checks before a run count these)."""
    if "kind" not in cfg:
        raise DatasetError(f"dataset config has no 'kind'; known: {', '.join(DATASET_KINDS.names())}")
    return DATASET_KINDS.get(cfg["kind"])(cfg, inputs)


def cap_splits(splits: Splits, cfg: dict) -> Splits:
    """Each split capped by the ``max_<split>`` entry of ``cfg``; no example id may then occur twice."""
    seed = cfg.get("seed", 0)
    capped = Splits(
        **{name: cap(getattr(splits, name), cfg.get(f"max_{name}"), seed) for name in SPLIT_NAMES}
    )
    check_unique_ids(capped)
    return capped


def cap(examples: list[Example], limit: int | None, seed: int) -> list[Example]:
    """The first ``limit`` examples after a seeded shuffle; a larger limit keeps a smaller one's examples."""
    if limit is None:
        return examples
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise DatasetError(f"split caps (max_train, max_validation, max_test) must be ints >= 0: {limit!r}")
    shuffled = list(examples)
    random.Random(seed).shuffle(shuffled)
    return shuffled[:limit]


def check_unique_ids(splits: Splits) -> None:
    """No example id may occur twice, in one split or across two: that would leak test data into training."""
    seen: dict[str, str] = {}
    for name in SPLIT_NAMES:
        for example in getattr(splits, name):
            if example.id in seen:
                first = seen[example.id]
                where = f"twice in {name}" if first == name else f"in {first} and in {name}"
                raise DatasetError(f"example id {example.id!r} occurs {where}")
            seen[example.id] = name


def read_jsonl(path: str | os.PathLike[str]) -> list[dict]:
    """One dict per non-blank line (row N is the Nth); a line that is not a JSON object is an error."""
    path = Path(path)
    if not path.is_file():
        raise dataset_error(path, "file not found")
    rows = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                problem = f"malformed JSON ({err.msg}, character {err.colno})"
                raise dataset_error(path, problem, line=number) from None
            if not isinstance(row, dict):
                raise dataset_error(path, f"expected a JSON object, got {type(row).__name__}", line=number)
            rows.append(row)
    return rows


def write_examples(path: str | os.PathLike[str], examples: Iterable[Example]) -> None:
    write_jsonl(path, (asdict(example) for example in examples))


def read_examples(path: str | os.PathLike[str]) -> list[Example]:
    keys = [field.name for field in fields(Example)]
    examples = []
    for number, row in enumerate(read_jsonl(path), start=1):
        for key in keys:
            if not isinstance(row.get(key), str):
                raise dataset_error(path, "missing or not a string", row=number, column=key)
        examples.append(Example(**{key: row[key] for key in keys}))
    return examples


# Imported last so that each kind module finds DATASET_KINDS defined when it registers itself.
from joulebench.data import rca, saf, text_pairs, tickets  # noqa: E402, F401
