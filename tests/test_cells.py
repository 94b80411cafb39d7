from __future__ import annotations

import copy
import json
import re

import pytest
import yaml

from joulebench import cells


@pytest.fixture
def config(root):
    return yaml.safe_load((root / "config.yaml").read_text())


def test_default_grid_covers_the_acceptance_grid(config):
    assert set(config["bits"]) == {4, 8, 16, 32}
    assert len(config["epochs"]) >= 2
    settings = cells.pruning_settings(config).values()
    assert {s.method for s in settings} >= {"magnitude", "wanda", "sparsegpt"}
    assert any(s.is_nm and (s.n, s.m) == (2, 4) for s in settings) and any(not s.is_nm for s in settings)
    assert config["pruning"]["select"] == "top_k" and not cells.prunes_all(config)
    tuned = cells.finetune_cells(config)
    assert {c.bits for c in tuned} == {4, 8, 16, 32} and len({c.epochs for c in tuned}) >= 2
    variants = cells.training_variants(config)
    assert any(v.precision != "32-true" and v.sparsity.method != "dense" for v in variants.values())
    assert {"magnitude30", "magnitude2of4", "wanda2of4", "sparsegpt2of4"} <= set(cells.pruning_settings(config))
    assert cells.early_exit_settings(config) and config["lifecycle"]["queries"] > 0


def full_cross_product(config):
    """The config with every setting applied to every (bits, epochs) cell, and one requantize merge form."""
    config = copy.deepcopy(config)
    for entry in [*config["training_variants"], *config["pruning"]["methods"], *config["early_exit"]]:
        entry.pop("bits", None), entry.pop("epochs", None)
    config["training_variants"] = list({json.dumps(e, sort_keys=True): e for e in config["training_variants"]}.values())
    config["merge"] = ["requantize"]
    return config


def test_one_eval_cell_per_finetune_cell_and_pruning_plus_references(config):
    config = full_cross_product(config)
    tuned = cells.finetune_cells(config)
    evaluated = cells.eval_cells(config)
    n_prune = len(cells.post_training_variants(config))
    variants = len(config["training_variants"])
    assert len(tuned) == len(config["datasets"]) * len(config["models"]) * variants * len(config["bits"]) * len(
        config["epochs"]
    )
    references = [c for c in evaluated if c.is_reference]
    assert len(references) == len(config["datasets"]) * len(config["models"])
    merged = cells.merged_cells(config)
    dense_quantized = [c for c in tuned if c.bits in (4, 8) and c.training.endswith("_dense")]
    assert len(merged) == len(dense_quantized) * len(config["merge"]) > 0
    assert len(evaluated) == len(tuned) * (1 + n_prune) + len(references) + len(merged)
    assert len({c.dir for c in evaluated}) == len(evaluated)
    unpruned = cells.unpruned_cells(config)
    assert len(unpruned) == len(tuned) + len(references) and all(c.pruning == "none" for c in unpruned)


def test_a_setting_applies_to_the_cells_its_bits_and_epochs_name(config):
    config = full_cross_product(config)
    config["bits"], config["epochs"] = [4, 8, 16, 32], [1, 2]
    config["training_variants"] = [
        {"precision": "32-true", "epochs": [2]},
        {"precision": "32-true", "bits": [16], "epochs": [1]},
        {"precision": "bf16-mixed", "sparsity": {"method": "gradual", "target": 0.5}, "bits": [16]},
    ]
    config["pruning"]["methods"] = [{"method": "magnitude", "ratio": 0.3}, {"method": "wanda", "n": 2, "m": 4,
                                                                            "bits": [32]}]  # fmt: skip
    config["early_exit"] = [{"threshold": 0.5, "epochs": [1]}]
    config["merge"] = [{"form": "requantize", "bits": [4]}]
    tuned = {(c.training, c.bits, c.epochs) for c in cells.finetune_cells(config)}
    assert tuned == {("32-true_dense", b, 2) for b in (4, 8, 16, 32)} | {("32-true_dense", 16, 1)} | {
        ("bf16-mixed_gradual50", 16, e) for e in (1, 2)}  # fmt: skip
    assert {(c.bits, c.epochs, c.pruning) for c in cells.merged_cells(config)} == {(4, 2, "merge-requantize")}
    selected = [cells.FinetuneCell("rca", "tiny-llama", bits, epochs) for bits, epochs in ((16, 1), (32, 2))]
    pruned = {(c.bits, c.epochs, c.pruning) for c in cells.pruned_cells(config, selected)}
    assert pruned == {(16, 1, "magnitude30"), (16, 1, "exit50"), (32, 2, "magnitude30"), (32, 2, "wanda2of4")}


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"precision": "32-true", "bits": [12]}], "training_variants[0]: bits [12] not in the grid's bits"),
        ([{"precision": "32-true", "epochs": []}], "training_variants[0]: epochs must be a non-empty list"),
        ([{"precision": "32-true", "epochs": [2]}, {"precision": "32-true", "bits": [16]}],
         "training_variants[1]: '32-true' is listed twice for the same cells"),
    ],
)
def test_a_setting_naming_cells_off_the_grid_or_twice_is_refused(config, entries, message):
    config["bits"], config["epochs"] = [4, 8, 16, 32], [1, 2]
    config["training_variants"] = entries
    with pytest.raises(ValueError, match=re.escape(message)):
        cells.finetune_cells(config)


def test_pruned_cells_are_the_selected_cells_times_the_methods(config, tmp_path):
    config = full_cross_product(config)
    chosen = cells.finetune_cells(config)[:2]
    selection = tmp_path / "rca.json"
    entries = [{"model": c.model, "training": c.training, "bits": c.bits, "epochs": c.epochs} for c in chosen]
    selection.write_text(json.dumps({"selected": entries}))
    assert cells.read_selection(selection, "rca") == chosen
    pruned = cells.pruned_cells(config, chosen)
    assert {(c.training, c.bits, c.epochs) for c in pruned} == {(c.training, c.bits, c.epochs) for c in chosen}
    assert len(pruned) == 2 * len(cells.post_training_variants(config))


def test_adding_an_epoch_only_adds_paths(config):
    config = full_cross_product(config)
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
        ({"method": "magnitude", "ratio": 0.5, "scope": "global"}, "magnitude-global50", "magnitude 50% (global)"),
        ({"method": "magnitude", "n": 2, "m": 4}, "magnitude2of4", "magnitude 2:4"),
        ({"method": "wanda", "n": 4, "m": 8}, "wanda4of8", "wanda 4:8"),
        ({"method": "sparsegpt", "ratio": 0.5}, "sparsegpt50", "sparsegpt 50%"),
    ],
)
def test_pruning_ids(entry, expected_id, label):
    pruning = cells.Pruning.from_config(entry)
    assert pruning.id == expected_id and pruning.label == label
    assert cells.Pruning(**vars(pruning)) == pruning


@pytest.mark.parametrize(
    "entry",
    [
        {"method": "magnitude", "n": 4, "m": 4},
        {"method": "magnitude", "ratio": 0.333},
        {"method": "magnitude", "ratio": 0.5, "n": 2, "m": 4},
        {"method": "wanda"},
        {"method": "wanda", "n": 2, "m": 4, "scope": "global"},
        {"method": "Wanda-2", "ratio": 0.5},
    ],
)
def test_bad_pruning_is_refused(entry):
    with pytest.raises(ValueError):
        cells.Pruning.from_config(entry)


def test_duplicate_or_none_pruning_is_refused(config):
    config["pruning"]["methods"].append(dict(config["pruning"]["methods"][0]))
    with pytest.raises(ValueError, match=r"pruning.methods\[\d+\]: .* listed twice"):
        cells.pruning_settings(config)
    config["pruning"]["methods"] = [{"method": "none"}]
    with pytest.raises(ValueError, match="implied"):
        cells.pruning_settings(config)


def test_training_variants_and_early_exits_are_grid_values(config):
    variants = cells.training_variants(config)
    assert cells.REFERENCE_TRAINING.id in variants
    listed = {(e.get("precision"), json.dumps(e.get("sparsity"))) for e in config["training_variants"]}
    assert len(variants) == len(listed)
    assert cells.training_variants({}) == {cells.REFERENCE_TRAINING.id: cells.REFERENCE_TRAINING}
    lottery = cells.TrainVariant.from_config(
        {"precision": "16-mixed", "sparsity": {"method": "lottery", "rounds": 2, "rate": 0.3, "rewind_epoch": 1}}
    )
    assert lottery.id == "16-mixed_lottery2x30r1" and lottery.sparsity.final_sparsity == pytest.approx(0.51)
    gradual = cells.SparseTraining.from_config({"method": "gradual", "target": 0.5})
    assert (gradual.id, gradual.label, gradual.final_sparsity) == ("gradual50", "gradual 50%", 0.5)
    assert [e.id for e in cells.EarlyExit.expand({"threshold": 1.0})] == ["exit100"]
    assert [e.id for e in cells.EarlyExit.expand({"threshold": 0.9, "heads": "trained"})] == ["exit90trained"]
    curve = cells.EarlyExit.expand({"thresholds": [0.9, 0.5], "measure": "saturation"})
    assert [e.id for e in curve] == ["exit90sat", "exit50sat"]
    assert curve[0].label == "early exit saturation > 0.90, shared (untrained) heads"
    with pytest.raises(ValueError, match="either threshold"):
        cells.EarlyExit.expand({"threshold": 0.9, "thresholds": [0.5]})
    exits = cells.early_exit_settings(config)
    assert set(exits) <= set(cells.post_training_variants(config))


@pytest.mark.parametrize(
    ("key", "entry", "message"),
    [
        ("training_variants", [{"precision": "bf16-mixed", "sparsity": {"method": "gradual", "rounds": 2}}],
         "training_variants[0]: sparse training gradual: rounds does not apply"),
        ("training_variants", [{"precision": "32-true"}, {}], "training_variants[1]: '32-true' is listed twice"),
        ("training_variants", [{"precision": "BF16"}], "training_variants[0]: precision 'BF16' must be lower-case"),
        ("early_exit", [{"threshold": 0.905}], "early_exit[0]: early exit threshold 0.905 must be a whole percent"),
        ("early_exit", [{"threshold": 0.9}, {"threshold": 0.9}],
         "early_exit[1]: 'early exit softmax-gap > 0.90, shared (untrained) heads' is listed twice"),
        ("early_exit", [{"thresholds": [0.9, 0.9]}], "early_exit[0]: 'early exit softmax-gap > 0.90"),
    ],
)
def test_bad_technique_settings_name_their_entry(config, key, entry, message):
    config[key] = entry
    read = cells.training_variants if key == "training_variants" else cells.early_exit_settings
    with pytest.raises(ValueError, match=re.escape(message)):
        read(config)
