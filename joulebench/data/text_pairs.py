"""Dataset kind "text-pairs": any CSV or JSONL file of input/target pairs (and optionally a class label), turned into
prompts and targets by templates in the config, like lm-evaluation-harness's ``doc_to_text`` / ``doc_to_target``."""

from __future__ import annotations

import string
from collections.abc import Mapping
from pathlib import Path

from joulebench.data import DATASET_KINDS, DatasetError, Example, Splits, dataset_error
from joulebench.data.tickets import cell, read_table, split_examples

# The fields a pair has; each is a column of the same name unless cfg["columns"] maps it elsewhere.
PAIR_FIELDS = ("id", "input", "target", "label")
REQUIRED_FIELDS = ("input", "target")
DEFAULT_TARGET_TEMPLATE = "{target}"


@DATASET_KINDS.register("text-pairs")
def text_pairs_dataset(cfg: dict, inputs: dict[str, Path]) -> Splits:
    """``cfg["path"]`` read through ``cfg["columns"]``, formatted by ``cfg["prompt"]`` and ``cfg["target_template"]``,
    split like the tickets (stratified by label when the file has labels)."""
    for key in ("path", "prompt"):
        if key not in cfg:
            raise DatasetError(f"dataset kind 'text-pairs' needs {key!r} in its config")
    path = Path(cfg["path"])
    templates = {"prompt": cfg["prompt"], "target_template": cfg.get("target_template", DEFAULT_TARGET_TEMPLATE)}
    return split_examples(read_pairs(path, cfg.get("columns", {}), templates), cfg)


def read_pairs(path: Path, columns: Mapping[str, str], templates: Mapping[str, str]) -> list[Example]:
    """One example per row; ``templates`` maps "prompt" and "target_template" to ``str.format`` templates that may
    name the fields (``{input}``, ``{target}``, ``{label}``, ``{id}``) or any column of the file."""
    unknown = sorted(set(columns) - set(PAIR_FIELDS))
    if unknown:
        raise dataset_error(path, f"'columns' maps unknown fields {unknown}; known fields: {', '.join(PAIR_FIELDS)}")
    rows, present = read_table(path)
    found = ", ".join(present) or "none"
    source = {field: columns.get(field, field) for field in PAIR_FIELDS}
    for field, column in source.items():
        if column not in present and (field in REQUIRED_FIELDS or field in columns):
            raise dataset_error(path, f"column missing (for field {field!r}); the file's columns: {found}",
                                column=column)  # fmt: skip
    for key, text in templates.items():
        for name in template_names(path, key, text):
            if name not in PAIR_FIELDS and name not in present:
                raise dataset_error(path, f"{key!r} names column {name!r}, which the file does not have; "
                                          f"its columns: {found}")  # fmt: skip
            if name in PAIR_FIELDS and name != "id" and source[name] not in present:
                raise dataset_error(path, f"{key!r} names field {name!r}, but its column {source[name]!r} is not in "
                                          f"the file; its columns: {found}")  # fmt: skip
    required = [*REQUIRED_FIELDS, *(["label"] if source["label"] in present else [])]
    examples = []
    for number, row in enumerate(rows, start=1):
        values = {column: cell(row.get(column), path, number, column) for column in present}
        record = {**values, **{field: values.get(column, "") for field, column in source.items()}}
        for field in required:
            if not record[field]:
                raise dataset_error(path, "empty required value", row=number, column=source[field])
        record["id"] = record["id"] or f"row-{number}"
        examples.append(Example(
            id=record["id"],
            # The trainer joins prompt and target with one space, so neither brings its own.
            prompt=templates["prompt"].format_map(record).rstrip(),
            target=templates["target_template"].format_map(record).strip(),
            label=record["label"],
        ))
    return examples


def template_names(path: Path, key: str, text: object) -> list[str]:
    """The fields a template fills: only plain names (``{input}``), no indexing or attributes."""
    if not isinstance(text, str) or not text.strip():
        raise dataset_error(path, f"{key!r} must be a non-empty template text, got {text!r}")
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as err:
        problem = f"{key!r} is not a valid template ({err}); write a literal brace as {{{{ or }}}}"
        raise dataset_error(path, problem) from None
    names = []
    for _, name, spec, _ in parsed:
        if name is None:
            continue
        if not name.strip() or name.isdigit() or any(mark in name for mark in ".[]"):
            raise dataset_error(path, f"{key!r} has the placeholder {{{name}}}; name a column, as in {{input}}")
        if spec and "{" in spec:
            raise dataset_error(path, f"{key!r} nests a placeholder in a format spec ({{{name}:{spec}}})")
        names.append(name)
    return names
