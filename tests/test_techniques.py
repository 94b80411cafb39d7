"""The second paper's techniques as grid axes, through the whole workflow on configs/micro-techniques.yaml: every
training precision, both sparse trainings, early exit with shared and trained heads, the lifecycle sum and the
optimised-vs-baseline table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from joulebench.cells import REFERENCE_TRAINING, early_exit_settings, training_variants

from .conftest import ROOT
from .test_workflow import run_grid

pytestmark = pytest.mark.integration

CONFIG = ROOT / "configs" / "micro-techniques.yaml"
MAIN_DTYPE = {"32-true": "float32", "bf16-mixed": "bfloat16", "16-mixed": "float16"}


def predictions(workdir: Path, row: dict[str, str]) -> list[str]:
    variant = "none" if not row["early_exit"] else next(
        setting.id for setting in early_exit_settings(yaml.safe_load(CONFIG.read_text())).values()
        if setting.label == row["early_exit"]
    )  # fmt: skip
    path = workdir / "results/eval" / row["dataset"] / row["model"] / row["training"]
    lines = (path / f"b{row['bits']}-e{row['epochs']}-{variant}" / "predictions.jsonl").read_text().splitlines()
    return [json.loads(line)["prediction"] for line in lines]


def test_every_technique_runs_as_a_grid_value(tmp_path):
    config = yaml.safe_load(CONFIG.read_text())
    rows = run_grid(tmp_path, config)
    variants = training_variants(config)
    full_depth = {r["training"]: r for r in rows if r["pruning"] == "none" and r["is_reference"] == "0"}
    assert set(full_depth) == set(variants)

    # Training precision: what the first step's matmuls really ran in.
    for training, row in full_depth.items():
        precision = variants[training].precision
        assert row["precision"] == precision
        if precision in MAIN_DTYPE:
            assert row["train_matmul_dtype"] == MAIN_DTYPE[precision], row

    # Sparse training reached its target during fine-tuning, and the evaluated model is that sparse.
    for training, row in full_depth.items():
        target = variants[training].sparsity.final_sparsity
        if target:
            assert float(row["train_sparsity"]) == pytest.approx(target, abs=0.01), row
            assert float(row["sparsity"]) >= target - 0.01, row
        else:
            assert row["sparse_training"] == "dense" and float(row["sparsity"]) < 0.01
    lottery = next(training for training, v in variants.items() if v.sparsity.method == "lottery")
    record = json.loads((tmp_path / "results/finetune/rca/tiny-llama" / lottery / "b32-e2/train.json").read_text())
    rounds = record["result"]["sparse_training"]["records"]
    assert len(rounds) == variants[lottery].sparsity.rounds + 1 and len(record["result"]["epochs"]) == 2 * len(rounds)

    # Early exit on the selected cell: τ = 1.0 is full depth, token for token; lower τ exits no later.
    exits = [r for r in rows if r["early_exit"]]
    assert len(exits) == len(early_exit_settings(config))
    parent = full_depth[exits[0]["training"]]
    layers = config["models"]["tiny-llama"]["architecture"]["num_hidden_layers"]
    for row in exits:
        assert row["training"] == parent["training"] and int(row["exit_layers"]) == layers
        assert 1 <= float(row["mean_exit_layer"]) <= layers and row["delta_parent_rho"] != ""
    never = next(r for r in exits if r["exit_threshold"] == "1" and r["exit_measure"] == "softmax-gap")
    assert float(never["mean_exit_layer"]) == layers
    assert predictions(tmp_path, never) == predictions(tmp_path, parent)
    assert all(float(r["mean_exit_layer"]) <= layers for r in exits if r is not never)
    # The exit tests' own compute is counted: at τ = 1.0 every softmax-gap test reads the LM head for nothing.
    assert float(never["exit_compute_fraction"]) > 1 and float(never["exit_test_share"]) > 0
    assert {r["exit_measure"] for r in exits} == {"softmax-gap", "saturation"}
    assert "Figure 6. Early exit along its thresholds." in (tmp_path / "results" / "report.html").read_text()
    for setting in early_exit_settings(config).values():
        path = tmp_path / "results/eval/rca/tiny-llama" / parent["training"] / f"b{parent['bits']}-e{parent['epochs']}-"
        heads = json.loads(Path(f"{path}{setting.id}/eval.json").read_text())["result"]["early_exit"]["heads"]
        if setting.heads == "trained":  # the distillation KL per exit layer, never worse than the shared head's
            assert len(heads["kl_after"]) == layers - 1
            assert all(a <= b for a, b in zip(heads["kl_after"], heads["kl_before"], strict=True))
        else:
            assert heads == {}

    # Lifecycle: build + fine-tuning + compression + inference at the configured volume, for every cell.
    for row in rows:
        assert float(row["lifecycle_kwh"]) > float(row["train_kwh"] or 0)
    reference = next(r for r in rows if r["is_reference"] == "1")
    assert reference["training"] == REFERENCE_TRAINING.id
    report = (tmp_path / "results" / "report.html").read_text()
    assert "Optimised vs baseline" in report
