"""Dataset kind "saf": Short Answer Feedback (Filighera et al., ACL 2022), Hugging Face column schema."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
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

TEXT_COLUMNS = ("question", "reference_answer", "provided_answer", "answer_feedback", "verification_feedback")
DEFAULT_SPLITS = {"train": "train", "validation": "validation", "test": "test_unseen_answers"}
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


@DATASET_KINDS.register("saf")
def saf_dataset(cfg: dict, inputs: dict[str, Path]) -> Splits:
    """``cfg["source"]``: a directory of ``<split>.jsonl`` files, or a hub id already in the local cache.

    ``cfg["splits"]`` maps our train/validation/test to the source's split names (default DEFAULT_SPLITS).
    """
    source = str(inputs.get("source", cfg.get("source", "")))
    if not source:
        raise DatasetError("dataset kind 'saf' needs 'source': a folder of <split>.jsonl files or a hub id")
    names = split_names(cfg.get("splits", DEFAULT_SPLITS))
    splits = {}
    for ours, theirs in names.items():
        if Path(source).is_dir():
            where, rows = f"{Path(source) / theirs}.jsonl", local_rows(Path(source), theirs)
        else:
            where, rows = f"{source} [split {theirs}]", hub_rows(source, theirs, cfg.get("cache_dir"))
        splits[ours] = saf_examples(rows, where, theirs)
    return Splits(**splits)


def split_names(splits: dict[str, str]) -> dict[str, str]:
    if not isinstance(splits, dict) or set(splits) != set(SPLIT_NAMES):
        raise DatasetError(f"dataset 'splits' must map each of {SPLIT_NAMES} to a split name; got {splits!r}")
    return splits


def local_rows(directory: Path, split: str) -> list[dict]:
    path = directory / f"{split}.jsonl"
    if not path.is_file():
        found = ", ".join(sorted(p.stem for p in directory.glob("*.jsonl"))) or "none"
        raise dataset_error(path, f"no such split file; splits in {directory}: {found}")
    return read_jsonl(path)


def hub_rows(hub_id: str, split: str, cache_dir: str | None) -> list[dict]:
    """One split of a hub dataset, from the local cache only: this never touches the network."""
    with hub_offline():
        import datasets

        try:
            rows = datasets.load_dataset(hub_id, split=split, cache_dir=cache_dir)
        except ValueError as err:
            if "split" not in str(err).lower():
                raise
            raise dataset_error(hub_id, f"no split {split!r} in the cached dataset ({err})") from None
        except (ConnectionError, FileNotFoundError):  # what load_dataset raises offline for an uncached id
            cache = cache_dir or datasets.config.HF_DATASETS_CACHE
            raise dataset_error(
                hub_id,
                f"neither a local directory nor in the local Hugging Face datasets cache ({cache}),"
                " and the hub is never contacted: run"
                f" datasets.load_dataset({hub_id!r}) on a connected machine and copy its cache here,"
                " or set 'source' to a directory of <split>.jsonl files",
            ) from None
    return rows.to_list()


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Offline mode for the duration, even where datasets was imported before the variables were set."""
    saved_env = {name: os.environ.get(name) for name in OFFLINE_VARIABLES}
    os.environ.update(dict.fromkeys(OFFLINE_VARIABLES, "1"))
    import datasets.config
    import huggingface_hub.constants

    # Both libraries read the variables once, at import: set the flags they consult at call time too.
    flags = [(datasets.config, "HF_HUB_OFFLINE"), (huggingface_hub.constants, "HF_HUB_OFFLINE")]
    saved_flags = [getattr(module, name) for module, name in flags]
    for module, name in flags:
        setattr(module, name, True)
    try:
        yield
    finally:
        for (module, name), value in zip(flags, saved_flags, strict=True):
            setattr(module, name, value)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def saf_examples(rows: list[dict], where: str, split: str) -> list[Example]:
    """Examples labelled with verification_feedback; a row without an ``id`` gets ``<split>-<row>``."""
    examples = []
    for number, row in enumerate(rows, start=1):
        for column in TEXT_COLUMNS:
            if column not in row:
                raise dataset_error(where, "required column missing", row=number, column=column)
            if not isinstance(row[column], str):
                raise dataset_error(where, f"expected text, got {type(row[column]).__name__}", row=number,
                                    column=column)
        if not row["verification_feedback"].strip():
            raise dataset_error(where, "empty required value", row=number, column="verification_feedback")
        examples.append(Example(
            id=str(row.get("id") or f"{split}-{number}"),
            prompt=format_prompt("saf", row),
            target=format_target("saf", row),
            label=row["verification_feedback"],
        ))
    return examples
