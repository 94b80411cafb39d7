from __future__ import annotations

import csv
import json
import shutil
import string
from collections import Counter
from pathlib import Path

import pytest

from joulebench.data import (
    DATASET_KINDS,
    DatasetError,
    Example,
    Splits,
    prepare_splits,
    read_examples,
    write_examples,
)
from joulebench.data.rca import CATEGORIES, METADATA, TICKET_KEYS, generate_tickets, write_tickets
from joulebench.io import write_jsonl
from joulebench.prompts import TEMPLATES, format_prompt, format_target

from .conftest import SAF_DIR

SAF_ROW = {
    "question": "What is a MAC address?",
    "reference_answer": "A hardware address of a network interface.",
    "provided_answer": "The address of the network card.",
    "answer_feedback": "The response is correct.",
    "verification_feedback": "Correct",
    "score": 1.0,
}


def fields_of(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def all_examples(splits: Splits) -> list[Example]:
    return splits.train + splits.validation + splits.test


def one_line_error(excinfo: pytest.ExceptionInfo[DatasetError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.fixture
def tickets_file(tmp_path: Path) -> Path:
    path = tmp_path / "tickets.jsonl"
    write_tickets(path, generate_tickets(1300, seed=5))
    return path


def rca_splits(tickets_file: Path, **cfg: object) -> Splits:
    return prepare_splits({"kind": "rca-synthetic", "seed": 1, **cfg}, {"tickets": tickets_file})


# --- the generator


def test_generator_is_deterministic() -> None:
    assert generate_tickets(200, seed=3) == generate_tickets(200, seed=3)
    assert generate_tickets(200, seed=3) != generate_tickets(200, seed=4)


def test_thirteen_categories_all_present_and_balanced() -> None:
    assert len(CATEGORIES) == 13
    assert len({category.name for category in CATEGORIES}) == 13
    counts = Counter(ticket["category"] for ticket in generate_tickets(1049, seed=13))
    assert set(counts) == {category.name for category in CATEGORIES}
    assert max(counts.values()) - min(counts.values()) <= 1


def test_every_ticket_has_every_field_non_empty() -> None:
    tickets = generate_tickets(300, seed=0)
    for ticket in tickets:
        assert tuple(ticket) == TICKET_KEYS
        assert all(isinstance(value, str) and value.strip() for value in ticket.values())
    assert len({ticket["ticket_id"] for ticket in tickets}) == len(tickets)
    assert len({ticket["logs"] for ticket in tickets}) == len(tickets), "slot values make tickets differ"


def test_categories_have_several_variants_each_with_its_own_code() -> None:
    codes = [variant.code for category in CATEGORIES for variant in category.variants]
    assert len(codes) == len(set(codes))
    for category in CATEGORIES:
        assert len(category.variants) >= 3
        assert len(category.codes) >= 2 and len(category.symptoms) >= 2 and len(category.logs) >= 2


def test_cause_and_fix_use_only_slots_the_ticket_shows() -> None:
    # The variant's own log line and the metadata are in every ticket of that variant, so a model can copy
    # every slot value of the target from the prompt.
    for category in CATEGORIES:
        for variant in category.variants:
            visible = fields_of(variant.log) | fields_of(METADATA)
            assert fields_of(variant.cause) <= visible, variant.code
            assert fields_of(variant.resolution) <= visible, variant.code


def test_primary_error_code_determines_the_target_template() -> None:
    by_code: dict[str, set[str]] = {}
    for category in CATEGORIES:
        for variant in category.variants:
            by_code.setdefault(variant.code, set()).add(variant.cause + variant.resolution)
    for ticket in generate_tickets(260, seed=2):
        primary = ticket["error_codes"].split(", ")[0]
        assert len(by_code[primary]) == 1
        assert primary in format_prompt("rca", ticket)


def test_rca_prompt_and_target_are_short() -> None:
    for ticket in generate_tickets(1049, seed=13):
        text = format_prompt("rca", ticket) + " " + format_target("rca", ticket)
        assert len(text) < 1200


# --- prompts


def test_prompts_end_with_their_cue_and_targets_have_their_shape() -> None:
    ticket = generate_tickets(1, seed=0)[0]
    assert format_prompt("rca", ticket).endswith("\nDiagnosis:")
    assert format_target("rca", ticket) == f"Cause: {ticket['cause']} Fix: {ticket['resolution']}"
    assert format_prompt("saf", SAF_ROW).endswith("\nFeedback:")
    assert format_target("saf", SAF_ROW) == "Correct. The response is correct."
    assert set(TEMPLATES) == {"rca", "saf"}
    with pytest.raises(KeyError, match="known: rca, saf"):
        format_prompt("qa", SAF_ROW)


# --- rca-synthetic splits


def test_split_fractions_and_stratification(tickets_file: Path) -> None:
    splits = rca_splits(tickets_file, split={"train": 0.8, "validation": 0.1, "test": 0.1})
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (1040, 130, 130)
    for name, per_category in (("train", 80), ("validation", 10), ("test", 10)):
        counts = Counter(example.label for example in getattr(splits, name))
        assert counts == {category.name: per_category for category in CATEGORIES}, name


def test_stratification_with_uneven_counts(tmp_path: Path) -> None:
    path = tmp_path / "tickets.jsonl"
    write_tickets(path, generate_tickets(1049, seed=13))
    splits = prepare_splits({"kind": "rca-synthetic", "seed": 13}, {"tickets": path})
    total = Counter(example.label for example in all_examples(splits))
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (839, 105, 105)
    for name, fraction in (("train", 0.8), ("validation", 0.1), ("test", 0.1)):
        counts = Counter(example.label for example in getattr(splits, name))
        for label, n in total.items():
            assert abs(counts[label] - n * fraction) <= 1.5, (name, label)


def test_no_example_id_in_two_splits(tickets_file: Path) -> None:
    splits = rca_splits(tickets_file)
    ids = [example.id for example in all_examples(splits)]
    assert len(ids) == len(set(ids)) == 1300


def test_split_examples_come_from_the_prompts_module(tickets_file: Path) -> None:
    tickets = {ticket["ticket_id"]: ticket for ticket in generate_tickets(1300, seed=5)}
    for example in rca_splits(tickets_file).test:
        ticket = tickets[example.id]
        assert example.prompt == format_prompt("rca", ticket)
        assert example.target == format_target("rca", ticket)
        assert example.label == ticket["category"]


def test_split_is_seeded(tickets_file: Path) -> None:
    def test_ids(seed: int) -> list[str]:
        return [example.id for example in rca_splits(tickets_file, seed=seed).test]

    assert test_ids(1) == test_ids(1)
    assert set(test_ids(1)) != set(test_ids(2))


@pytest.mark.parametrize(
    "split",
    [{"train": 0.8, "validation": 0.1}, {"train": 0.8, "validation": 0.3, "test": -0.1}, {"training": 1.0}],
)
def test_bad_split_fractions_are_refused(tickets_file: Path, split: dict) -> None:
    with pytest.raises(DatasetError, match="split"):
        rca_splits(tickets_file, split=split)


def test_caps_take_a_seeded_sample(tickets_file: Path) -> None:
    full = rca_splits(tickets_file)
    capped = rca_splits(tickets_file, max_train=50, max_test=5)
    assert (len(capped.train), len(capped.validation), len(capped.test)) == (50, 130, 5)
    assert set(capped.train) <= set(full.train) and set(capped.test) <= set(full.test)
    assert capped.validation == full.validation
    assert capped == rca_splits(tickets_file, max_train=50, max_test=5)
    assert set(capped.train) <= set(rca_splits(tickets_file, max_train=80).train)
    assert capped.train != full.train[:50], "a cap samples across the split, not its head"
    assert len(rca_splits(tickets_file, max_validation=10_000).validation) == 130
    with pytest.raises(DatasetError, match="cap"):
        rca_splits(tickets_file, max_train=-1)


def test_rca_synthetic_needs_its_ticket_file() -> None:
    with pytest.raises(DatasetError, match="tickets"):
        prepare_splits({"kind": "rca-synthetic"}, {})


def test_unknown_kind_names_the_known_ones() -> None:
    assert {"rca-synthetic", "tickets", "saf"} <= set(DATASET_KINDS.names())
    with pytest.raises(KeyError, match="rca-synthetic"):
        prepare_splits({"kind": "nope"}, {})


# --- JSONL storage


def test_examples_round_trip_through_jsonl(tmp_path: Path) -> None:
    examples = [Example("a", "prompt\nwith lines", "target ü", "x"), Example("b", "p", "t", "y")]
    path = tmp_path / "out" / "train.jsonl"
    write_examples(path, examples)
    assert read_examples(path) == examples
    write_examples(path, examples[:1])
    assert read_examples(path) == examples[:1]
    assert [p.name for p in path.parent.iterdir()] == ["train.jsonl"], "no temporary file is left behind"


def test_read_examples_names_a_missing_key(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"id": "a", "prompt": "p", "target": "t", "label": "l"}\n{"id": "b", "prompt": "p"}\n')
    with pytest.raises(DatasetError) as excinfo:
        read_examples(path)
    message = one_line_error(excinfo)
    assert "row 2" in message and "'target'" in message


# --- the "tickets" kind

OWN_COLUMNS = {"cause": "Root Cause", "resolution": "Action Taken", "category": "Type", "logs": "Syslog"}


def own_tickets(n: int) -> list[dict[str, str]]:
    return [
        {
            "Ticket": f"INC{i:04d}",
            "Type": "fiber" if i % 2 else "power",
            "Syslog": f"link down, port {i}\nsecond line",
            "Root Cause": f"cut number {i}",
            "Action Taken": "splice, then test",
            "Notes": "ignored",
        }
        for i in range(n)
    ]


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_table(path: Path, rows: list[dict[str, str]]) -> Path:
    if path.suffix == ".csv":
        return write_csv(path, rows)
    write_jsonl(path, rows)
    return path


def tickets_cfg(path: Path, **extra: object) -> dict:
    return {"kind": "tickets", "path": str(path), "columns": OWN_COLUMNS, "seed": 0, **extra}


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_own_tickets_with_custom_column_names(tmp_path: Path, suffix: str) -> None:
    rows = own_tickets(20)
    splits = prepare_splits(tickets_cfg(write_table(tmp_path / f"mine{suffix}", rows)), {})
    examples = all_examples(splits)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (16, 2, 2)
    assert sorted(example.id for example in examples) == sorted(f"row-{i}" for i in range(1, 21))
    assert Counter(example.label for example in splits.test) == {"fiber": 1, "power": 1}
    first = next(example for example in examples if example.id == "row-1")
    assert first.target == "Cause: cut number 0 Fix: splice, then test"
    assert "Logs:\nlink down, port 0\nsecond line\n" in first.prompt
    assert "Error codes: \n" in first.prompt, "an absent optional field is empty"


def test_own_tickets_id_column_and_input_path(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "mine.csv", own_tickets(10))
    cfg = {"kind": "tickets", "columns": {**OWN_COLUMNS, "id": "Ticket"}}
    splits = prepare_splits(cfg, {"tickets": path})
    assert sorted(example.id for example in all_examples(splits)) == [f"INC{i:04d}" for i in range(10)]


def test_own_tickets_split_like_the_synthetic_ones(tmp_path: Path, tickets_file: Path) -> None:
    csv_path = write_csv(tmp_path / "same.csv", generate_tickets(1300, seed=5))
    cfg = {"kind": "tickets", "path": str(csv_path), "seed": 1, "columns": {"id": "ticket_id"}}
    assert prepare_splits(cfg, {}) == rca_splits(tickets_file)


def test_ticket_file_missing(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as excinfo:
        prepare_splits(tickets_cfg(tmp_path / "absent.csv"), {})
    assert "absent.csv" in one_line_error(excinfo) and "not found" in str(excinfo.value)


def test_ticket_file_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "tickets.xlsx"
    path.write_text("whatever")
    with pytest.raises(DatasetError) as excinfo:
        prepare_splits(tickets_cfg(path), {})
    assert "'.xlsx'" in one_line_error(excinfo)


def test_required_column_absent_is_named_with_the_file_columns(tmp_path: Path) -> None:
    rows = [{key: value for key, value in row.items() if key != "Action Taken"} for row in own_tickets(3)]
    path = write_csv(tmp_path / "mine.csv", rows)
    with pytest.raises(DatasetError) as excinfo:
        prepare_splits(tickets_cfg(path), {})
    message = one_line_error(excinfo)
    assert "mine.csv" in message and "'Action Taken'" in message
    assert "Ticket, Type, Syslog, Root Cause, Notes" in message


def test_mapped_optional_column_absent(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "mine.csv", own_tickets(3))
    with pytest.raises(DatasetError, match="'Codes'"):
        prepare_splits(tickets_cfg(path, columns={**OWN_COLUMNS, "error_codes": "Codes"}), {})


def test_unknown_field_in_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "mine.csv", own_tickets(3))
    with pytest.raises(DatasetError, match="severity"):
        prepare_splits(tickets_cfg(path, columns={**OWN_COLUMNS, "severity": "Sev"}), {})


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_empty_required_value_names_row_and_column(tmp_path: Path, suffix: str) -> None:
    rows = own_tickets(5)
    rows[2]["Root Cause"] = "  "
    with pytest.raises(DatasetError) as excinfo:
        prepare_splits(tickets_cfg(write_table(tmp_path / f"mine{suffix}", rows)), {})
    message = one_line_error(excinfo)
    assert f"mine{suffix}" in message and "row 3" in message and "'Root Cause'" in message


def test_malformed_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    write_jsonl(path, own_tickets(3))
    path.write_text(path.read_text() + '{"Root Cause": "x", "Action Taken": \n')
    with pytest.raises(DatasetError) as excinfo:
        prepare_splits(tickets_cfg(path), {})
    message = one_line_error(excinfo)
    assert "mine.jsonl" in message and "line 4" in message and "malformed JSON" in message


def test_duplicate_ticket_ids_are_refused(tmp_path: Path) -> None:
    rows = own_tickets(10)
    rows[7]["Ticket"] = rows[1]["Ticket"]
    path = write_csv(tmp_path / "mine.csv", rows)
    with pytest.raises(DatasetError, match="INC0001"):
        prepare_splits(tickets_cfg(path, columns={**OWN_COLUMNS, "id": "Ticket"}), {})


# --- the "saf" kind


def saf_rows(n: int, split: str) -> list[dict]:
    labels = ("Correct", "Partially correct", "Incorrect")
    return [
        {**SAF_ROW, "id": f"{split}{i}" if i % 2 else "", "verification_feedback": labels[i % 3],
         "answer_feedback": f"Feedback {i}."}
        for i in range(n)
    ]


@pytest.fixture
def saf_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "saf"
    sizes = {"train": 6, "validation": 3, "test_unseen_answers": 4, "test_unseen_questions": 2}
    for split, n in sizes.items():
        write_jsonl(directory / f"{split}.jsonl", saf_rows(n, split))
    return directory


def test_saf_from_a_local_directory(saf_dir: Path) -> None:
    splits = prepare_splits({"kind": "saf", "source": str(saf_dir)}, {})
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (6, 3, 4)
    assert [example.id for example in splits.test] == [
        "test_unseen_answers-1", "test_unseen_answers1", "test_unseen_answers-3", "test_unseen_answers3"
    ]
    for example in all_examples(splits):
        assert example.target.startswith(example.label + ". Feedback ")
        assert example.prompt == format_prompt("saf", SAF_ROW)


def test_saf_split_names_and_caps(saf_dir: Path) -> None:
    names = {"train": "train", "validation": "validation", "test": "test_unseen_questions"}
    splits = prepare_splits({"kind": "saf", "source": str(saf_dir), "splits": names, "max_train": 2}, {})
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (2, 3, 2)
    with pytest.raises(DatasetError) as excinfo:
        prepare_splits({"kind": "saf", "source": str(saf_dir), "splits": {**names, "test": "test_x"}}, {})
    assert "test_x.jsonl" in one_line_error(excinfo) and "test_unseen_questions" in str(excinfo.value)


def test_saf_missing_column_is_named(saf_dir: Path) -> None:
    rows = saf_rows(3, "validation")
    del rows[1]["reference_answer"]
    write_jsonl(saf_dir / "validation.jsonl", rows)
    with pytest.raises(DatasetError) as excinfo:
        prepare_splits({"kind": "saf", "source": str(saf_dir)}, {})
    message = one_line_error(excinfo)
    assert "validation.jsonl" in message and "row 2" in message and "'reference_answer'" in message


def test_saf_hub_id_not_cached_says_how_to_fix(tmp_path: Path) -> None:
    cfg = {"kind": "saf", "source": "Short-Answer-Feedback/saf_communication_networks_english",
           "cache_dir": str(tmp_path / "empty-cache")}
    with pytest.raises(DatasetError) as excinfo:
        prepare_splits(cfg, {})
    message = one_line_error(excinfo)
    assert "saf_communication_networks_english" in message and "Hugging Face datasets cache" in message
    assert "connected machine" in message and "directory" in message


def cache_like_a_download(cache: Path, hub_id: str, source: Path, splits: list[str]) -> None:
    """Lay out ``source``'s splits in ``cache`` the way datasets leaves a downloaded hub dataset."""
    datasets = pytest.importorskip("datasets")
    build = cache.parent / "build"
    files = {split: str(source / f"{split}.jsonl") for split in splits}
    datasets.load_dataset("json", data_files=files, cache_dir=str(build))
    [built] = [path for path in build.glob("json/*/*/*") if path.is_dir()]
    owner, name = hub_id.split("/")
    target = cache / f"{owner}___{name}" / "default" / "0.0.0" / "0123abc"
    target.mkdir(parents=True)
    shutil.copy(built / "dataset_info.json", target)
    for arrow in built.glob("json-*.arrow"):
        shutil.copy(arrow, target / arrow.name.replace("json-", f"{name}-", 1))


def test_saf_hub_id_from_the_local_cache(tmp_path: Path, saf_dir: Path) -> None:
    cache = tmp_path / "hf-cache"
    cache_like_a_download(cache, "someone/tiny_saf", saf_dir, ["train", "validation", "test_unseen_answers"])
    splits = prepare_splits({"kind": "saf", "source": "someone/tiny_saf", "cache_dir": str(cache)}, {})
    local = prepare_splits({"kind": "saf", "source": str(saf_dir)}, {})
    assert splits == local


def test_real_saf_data() -> None:
    if not SAF_DIR.is_dir():
        pytest.skip(f"the shared SAF data is not at {SAF_DIR}")
    splits = prepare_splits({"kind": "saf", "source": str(SAF_DIR)}, {})
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (1700, 427, 375)
    for example in all_examples(splits):
        assert example.label in {"Correct", "Partially correct", "Incorrect"}
        assert example.target.startswith(example.label + ". ")
        assert example.prompt.endswith("\nFeedback:")
    first = json.loads((SAF_DIR / "train.jsonl").open().readline())
    assert splits.train[0].id == first["id"]


# --- tickets without a resolution


def test_tickets_without_resolution_target_the_cause_alone(tmp_path: Path) -> None:
    rows = [{key: value for key, value in row.items() if key != "Action Taken"} for row in own_tickets(10)]
    rows[3]["Action Taken"] = ""  # a JSONL row may still carry an empty one
    columns = {key: value for key, value in OWN_COLUMNS.items() if key != "resolution"}
    path = tmp_path / "mine.jsonl"
    write_jsonl(path, rows)
    examples = {e.id: e for e in all_examples(prepare_splits(tickets_cfg(path, columns=columns), {}))}
    assert examples["row-1"].target == "Cause: cut number 0"
    assert examples["row-4"].target == "Cause: cut number 3"
    assert format_target("rca", {"cause": "a", "resolution": "b"}) == "Cause: a Fix: b"


# --- the "text-pairs" kind

ALARMS = [
    {"alarm_report": f"LOS on port {i}", "diagnosis": f"fibre cut {i}", "fault_class": ("optical", "power")[i % 2],
     "site": f"site-{i}"}
    for i in range(40)
]  # fmt: skip


def pairs_cfg(path: Path, **extra: object) -> dict:
    return {"kind": "text-pairs", "path": str(path), "prompt": "Alarm: {input} at {site}\nDiagnosis:",
            "columns": {"input": "alarm_report", "target": "diagnosis", "label": "fault_class"}, "seed": 3,
            **extra}  # fmt: skip


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_text_pairs_map_columns_and_fill_templates_from_any_column(tmp_path: Path, suffix: str) -> None:
    path = write_table(tmp_path / f"alarms{suffix}", ALARMS)
    splits = prepare_splits(pairs_cfg(path, target_template=" {target} ({label})"), {})
    first = next(e for e in all_examples(splits) if e.id == "row-1")
    assert first == Example(id="row-1", prompt="Alarm: LOS on port 0 at site-0\nDiagnosis:",
                            target="fibre cut 0 (optical)", label="optical")  # fmt: skip
    plain = prepare_splits(pairs_cfg(path), {})
    assert next(e for e in all_examples(plain) if e.id == "row-1").target == "fibre cut 0"


def test_text_pairs_with_labels_split_stratified(tmp_path: Path) -> None:
    path = write_table(tmp_path / "alarms.jsonl", ALARMS)
    splits = prepare_splits(pairs_cfg(path, split={"train": 0.6, "validation": 0.2, "test": 0.2}), {})
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (24, 8, 8)
    for name, half in (("train", 12), ("validation", 4), ("test", 4)):
        assert Counter(e.label for e in getattr(splits, name)) == {"optical": half, "power": half}, name
    assert prepare_splits(pairs_cfg(path, seed=4), {}) != splits


def test_text_pairs_label_is_optional(tmp_path: Path) -> None:
    rows = [{"question": f"What is {i} plus one?", "answer": str(i + 1)} for i in range(20)]
    path = write_table(tmp_path / "qa.jsonl", rows)
    cfg = {"kind": "text-pairs", "path": str(path), "prompt": "Q: {input}\nA:",
           "columns": {"input": "question", "target": "answer"}}  # fmt: skip
    splits = prepare_splits(cfg, {})
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (16, 2, 2)
    assert {e.label for e in all_examples(splits)} == {""}
    assert sorted(e.target for e in all_examples(splits)) == sorted(str(i + 1) for i in range(20))
    # the default columns: input, target (and label when the file has one)
    write_table(tmp_path / "plain.csv", [{"id": f"q{i}", "input": f"x{i}", "target": f"y{i}"} for i in range(10)])
    plain = prepare_splits({"kind": "text-pairs", "path": str(tmp_path / "plain.csv"), "prompt": "{input} ->"}, {})
    assert sorted(e.id for e in all_examples(plain)) == [f"q{i}" for i in range(10)]


@pytest.mark.parametrize(("key", "template"), [("prompt", "Alarm: {input} on {vendor}"),
                                               ("target_template", "{diagnosis} {vendor}")])
def test_text_pairs_template_naming_a_missing_column_names_key_and_column(tmp_path: Path, key: str,
                                                                          template: str) -> None:
    path = write_table(tmp_path / "alarms.csv", ALARMS)
    with pytest.raises(DatasetError) as excinfo:
        prepare_splits(pairs_cfg(path, **{key: template}), {})
    message = one_line_error(excinfo)
    assert "alarms.csv" in message and f"'{key}' names column 'vendor'" in message
    assert "its columns: alarm_report, diagnosis, fault_class, site" in message


@pytest.mark.parametrize(("change", "expected"), [
    ({"columns": {"input": "alarm", "target": "diagnosis"}}, "column 'alarm': column missing (for field 'input')"),
    ({"columns": {"input": "alarm_report", "target": "diagnosis", "category": "x"}}, "unknown fields ['category']"),
    ({"prompt": "Alarm: {input[0]}"}, "'prompt' has the placeholder {input[0]}"),
    ({"prompt": "Alarm: {input"}, "'prompt' is not a valid template"),
    ({"prompt": ""}, "'prompt' must be a non-empty template"),
])  # fmt: skip
def test_text_pairs_bad_config_is_one_line(tmp_path: Path, change: dict, expected: str) -> None:
    path = write_table(tmp_path / "alarms.jsonl", ALARMS)
    with pytest.raises(DatasetError) as excinfo:
        prepare_splits(pairs_cfg(path, **change), {})
    assert expected in one_line_error(excinfo)
    with pytest.raises(DatasetError, match="needs 'prompt'"):
        prepare_splits({"kind": "text-pairs", "path": str(path)}, {})


@pytest.mark.parametrize(("column", "row"), [("diagnosis", 5), ("alarm_report", 9), ("fault_class", 2)])
def test_text_pairs_empty_required_value_names_row_and_column(tmp_path: Path, column: str, row: int) -> None:
    rows = [dict(r) for r in ALARMS]
    rows[row - 1][column] = " "
    path = write_table(tmp_path / "alarms.csv", rows)
    with pytest.raises(DatasetError) as excinfo:
        prepare_splits(pairs_cfg(path), {})
    message = one_line_error(excinfo)
    assert "alarms.csv" in message and f"row {row}" in message and f"column '{column}'" in message
    assert "empty required value" in message
    assert "text-pairs" in DATASET_KINDS.names()
