"""Dataset kind "tickets": a user's own fault tickets (CSV or JSONL); also the split every file-based kind uses."""

from __future__ import annotations

import csv
import random
from collections.abc import Mapping
from pathlib import Path

from joulebench.data import (
    DATASET_KINDS,
    SPLIT_NAMES,
    DatasetError,
    Example,
    Splits,
    dataset_error,
    read_jsonl,
)
from joulebench.prompts import format_prompt, format_target

# The fields a ticket record has; each is a column of the same name unless cfg["columns"] maps it elsewhere.
TICKET_FIELDS = ("id", "category", "error_codes", "symptoms", "logs", "metadata", "cause", "resolution")
REQUIRED_FIELDS = ("cause",)
DEFAULT_SPLIT = {"train": 0.8, "validation": 0.1, "test": 0.1}


@DATASET_KINDS.register("tickets")
def tickets_dataset(cfg: dict, inputs: dict[str, Path]) -> Splits:
    """``inputs["tickets"]`` (or else ``cfg["path"]``) read through ``cfg["columns"]``, split by category."""
    if "tickets" not in inputs and "path" not in cfg:
        raise DatasetError("dataset kind 'tickets' needs 'path' in its config")
    path = Path(inputs.get("tickets", cfg.get("path", "")))
    return split_tickets(read_tickets(path, cfg.get("columns", {})), cfg)


def read_tickets(path: Path, columns: Mapping[str, str]) -> list[dict[str, str]]:
    """Ticket records with every field in TICKET_FIELDS; an absent optional field is ""."""
    unknown = sorted(set(columns) - set(TICKET_FIELDS))
    if unknown:
        known = ", ".join(TICKET_FIELDS)
        raise dataset_error(path, f"'columns' maps unknown fields {unknown}; known fields: {known}")
    rows, present = read_table(path)
    source = {field: columns.get(field, field) for field in TICKET_FIELDS}
    for field, column in source.items():
        if column not in present and (field in REQUIRED_FIELDS or field in columns):
            found = ", ".join(present) or "none"
            problem = f"column missing (for field {field!r}); the file's columns: {found}"
            raise dataset_error(path, problem, column=column)
    records = []
    for number, row in enumerate(rows, start=1):
        record = {field: cell(row.get(column), path, number, column) for field, column in source.items()}
        for field in REQUIRED_FIELDS:
            if not record[field]:
                raise dataset_error(path, "empty required value", row=number, column=source[field])
        record["id"] = record["id"] or f"row-{number}"
        records.append(record)
    return records


def read_table(path: Path) -> tuple[list[dict], list[str]]:
    """The rows of a CSV or JSONL file and the column names it has, in file order."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise dataset_error(path, f"unknown file type {path.suffix!r}; use .csv or .jsonl")
    if not path.is_file():
        raise dataset_error(path, "file not found")
    if suffix == ".jsonl":
        rows = read_jsonl(path)
        return rows, list(dict.fromkeys(key for row in rows for key in row))
    with path.open(encoding="utf-8-sig", newline="") as lines:
        reader = csv.DictReader(lines)
        rows = list(reader)
        return rows, list(reader.fieldnames or [])


def cell(value: object, path: Path, row: int, column: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise dataset_error(path, f"expected text, got {type(value).__name__}", row=row, column=column)
    return str(value).strip()


def split_tickets(tickets: list[dict[str, str]], cfg: dict) -> Splits:
    """Split by the fractions ``cfg["split"]``, stratified by category; Example.label is the category."""
    return split_examples([ticket_example(ticket) for ticket in tickets], cfg)


def split_examples(examples: list[Example], cfg: dict) -> Splits:
    """Split by the fractions ``cfg["split"]``, stratified by Example.label (all "": a seeded shuffle)."""
    fractions = split_fractions(cfg.get("split", DEFAULT_SPLIT))
    examples = stratified_order(examples, random.Random(cfg.get("seed", 0)))
    n_train, n_validation, _ = split_sizes(len(examples), fractions)
    return Splits(
        train=examples[:n_train],
        validation=examples[n_train:n_train + n_validation],
        test=examples[n_train + n_validation:],
    )


def split_fractions(split: Mapping[str, float]) -> dict[str, float]:
    if not isinstance(split, Mapping) or set(split) - set(SPLIT_NAMES):
        raise DatasetError(f"dataset 'split' must map {', '.join(SPLIT_NAMES)} to fractions, got {split!r}")
    fractions = {name: split.get(name, 0.0) for name in SPLIT_NAMES}
    if any(isinstance(f, bool) or not isinstance(f, int | float) or f < 0 for f in fractions.values()):
        raise DatasetError(f"dataset 'split' fractions must be non-negative numbers, got {split!r}")
    if abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise DatasetError(f"dataset 'split' fractions must sum to 1, got {split!r}")
    return fractions


def split_sizes(n: int, fractions: Mapping[str, float]) -> tuple[int, int, int]:
    """How many of ``n`` tickets go to train, validation and test: the last two rounded, train the rest."""
    n_validation = round(n * fractions["validation"])
    n_test = round(n * fractions["test"])
    return n - n_validation - n_test, n_validation, n_test


def stratified_order(examples: list[Example], rng: random.Random) -> list[Example]:
    """Shuffle each label's examples, then interleave the labels evenly.

    Every contiguous stretch of the result then holds each label in proportion to its size (within one
    example), so cutting it into train/validation/test stratifies the split.
    """
    groups: dict[str, list[Example]] = {}
    for example in examples:
        groups.setdefault(example.label, []).append(example)
    keyed = []
    for name in sorted(groups):
        members = list(groups[name])
        rng.shuffle(members)
        tie_break = rng.random()
        keyed += [((i + 0.5) / len(members), tie_break, example) for i, example in enumerate(members)]
    keyed.sort(key=lambda entry: entry[:2])
    return [example for *_, example in keyed]


def ticket_example(ticket: dict[str, str]) -> Example:
    return Example(
        id=ticket["id"],
        prompt=format_prompt("rca", ticket),
        target=format_target("rca", ticket),
        label=ticket["category"],
    )
