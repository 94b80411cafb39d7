from __future__ import annotations

import copy

import pytest
import yaml

from joulebench import cells


@pytest.fixture
def config(root):
    return yaml.safe_load((root / "config.yaml").read_text())


def test_default_grid_covers_the_acceptance_grid(config):
    assert set(config["bits"]) == {4, 8, 16, 32}
    assert len(config["epochs"]) >= 2
    labels = {p.label for p in cells.pruning_settings(config).values()}
    assert "none" in labels and "2:4" in labels and any(label.startswith("magnitude") for label in labels)


def test_one_eval_cell_per_finetune_cell_and_pruning_plus_references(config):
    tuned = cells.finetune_cells(config)
    evaluated = cells.eval_cells(config)
    n_prune = len(config["pruning"])
    assert len(tuned) == len(config["datasets"]) * len(config["models"]) * len(config["bits"]) * len(config["epochs"])
    references = [c for c in evaluated if c.is_reference]
    assert len(references) == len(config["datasets"]) * len(config["models"])
    assert len(evaluated) == len(tuned) * n_prune + len(references)
    assert len({c.dir for c in evaluated}) == len(evaluated)


def test_adding_an_epoch_only_adds_paths(config):
    before = {c.dir for c in cells.eval_cells(config)}
    bigger = copy.deepcopy(config)
    bigger["epochs"].append(7)
    after = {c.dir for c in cells.eval_cells(bigger)}
    assert before < after
    assert all("-e7-" in path for path in after - before)


@pytest.mark.parametrize(
    ("entry", "expected_id", "label"),
    [
        ({"method": "none"}, "none", "none"),
        ({"method": "magnitude", "ratio": 0.3}, "magnitude30", "magnitude 30%"),
        ({"method": "nm", "n": 2, "m": 4}, "nm2of4", "2:4"),
        ({"method": "nm", "n": 4, "m": 8}, "nm4of8", "4:8"),
    ],
)
def test_pruning_ids(entry, expected_id, label):
    pruning = cells.Pruning.from_config(entry)
    assert pruning.id == expected_id and pruning.label == label


@pytest.mark.parametrize(
    "entry", [{"method": "nm", "n": 4, "m": 4}, {"method": "magnitude", "ratio": 0.333}, {"method": "random"}]
)
def test_bad_pruning_is_refused(entry):
    with pytest.raises(ValueError):
        cells.Pruning.from_config(entry)


def test_duplicate_pruning_is_refused(config):
    config["pruning"].append({"method": "nm", "n": 2, "m": 4})
    with pytest.raises(ValueError, match="listed twice"):
        cells.pruning_settings(config)
