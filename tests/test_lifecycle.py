from __future__ import annotations

from typing import Any

import pytest

from joulebench.lifecycle import (
    LIFECYCLE_COLUMNS,
    MEASURED,
    STAGES,
    LifecycleSettings,
    add_lifecycle,
    change_pct,
    find_baseline,
    lifecycle_of,
    measured_factor_g_per_kwh,
    optimised_vs_baseline,
)

TEST_QUERIES = 40


def cell(bits: int = 32, epochs: int = 3, pruning: str = "none", rank: int | None = None, **extra: Any) -> dict:
    """A summary row as `joulebench.summary.cell_row` writes it (typed): one inference pass is TEST_QUERIES queries,
    and the run's factor is 30 g CO2e/kWh."""
    train, infer = 0.02 * epochs * bits / 32, 0.0001 * (1 + bits / 32)
    row: dict[str, Any] = {
        "dataset": "rca", "model": "tiny-llama", "bits": bits, "epochs": epochs, "pruning": pruning,
        "status": "ok", "is_reference": int(epochs == 0), "precision": "32-true", "sparse_training": "dense",
        "build_kwh": 0.5, "train_kwh": train, "prepare_kwh": 0.001, "infer_kwh": infer,
        "total_kwh": train + 0.001 + infer, "emissions_kg": (train + 0.001 + infer) * 0.03,
        "wh_per_query": infer * 1000 / TEST_QUERIES, "train_wall_s": 100.0 * epochs, "peak_mem_mb": 800.0,
        "model_size_mb": bits * 2.0, "batch_latency_s": 0.04 * bits / 32 + 0.01, "ttft_s": 0.002 * bits / 32 + 0.001,
        "tpot_s": 0.001 * bits / 32 + 0.0005, "accuracy": 0.8, "auc_roc": 0.9,
        "cpu_source": "rapl", "gpu_source": "nvml-counter", "ram_source": "codecarbon-estimate",
        "rank": rank, "score": None if rank is None else 1 - rank / 10, "rho": 0.4,
    }  # fmt: skip
    row.update(extra)
    return row


def grid() -> list[dict[str, Any]]:
    return [
        cell(32, 0, is_reference=1, train_kwh=0.0),
        cell(32, 3, rank=4), cell(32, 1, rank=3), cell(16, 3, rank=5), cell(4, 1, rank=2),
        cell(4, 1, "magnitude 2:4", rank=1, accuracy=0.78, auc_roc=0.91),
        cell(32, 3, precision="bf16-mixed", rank=6),
        cell(16, 1, status="failed", rank=None),
    ]  # fmt: skip


def test_settings_defaults_and_checks():
    settings = LifecycleSettings.from_config({})
    assert settings == LifecycleSettings() == LifecycleSettings.from_config(None)
    assert settings.queries == 1_000_000 and settings.emission_factors_g_per_kwh == dict.fromkeys(STAGES)
    given = LifecycleSettings.from_config({"queries": 5000, "emission_factors_g_per_kwh": {"build": 400, "inference":
                                          None}, "baseline": {"bits": 16}})  # fmt: skip
    assert given.emission_factors_g_per_kwh == {"build": 400.0, "finetune": None, "compress": None, "inference": None}
    assert given.queries == 5000 and given.baseline == {"bits": 16}
    for bad in ({"query": 1}, {"queries": -1}, {"queries": 1.5}, {"queries": True},
                {"emission_factors_g_per_kwh": {"training": 1}}, {"emission_factors_g_per_kwh": {"build": -1}},
                {"emission_factors_g_per_kwh": {"build": "x"}}, {"baseline": {"pruning": "none"}}):  # fmt: skip
        with pytest.raises(ValueError, match="lifecycle"):
            LifecycleSettings.from_config(bad)


def test_sum_is_each_stage_energy_times_its_factor():
    row = cell(16, 3)
    settings = LifecycleSettings.from_config({"queries": 250_000, "emission_factors_g_per_kwh": {"build": 420.0,
                                              "inference": 35.5}})  # fmt: skip
    measured = row["emissions_kg"] / row["total_kwh"] * 1000
    assert measured_factor_g_per_kwh(row) == measured and measured == pytest.approx(30.0)
    cycle = lifecycle_of(row, settings)
    energies = {"build": 0.5, "finetune": row["train_kwh"], "compress": row["prepare_kwh"],
                "inference": row["wh_per_query"] * 250_000 / 1000}  # fmt: skip
    factors = {"build": 420.0, "finetune": measured, "compress": measured, "inference": 35.5}
    assert {s.stage: s.kwh for s in cycle.stages} == energies
    assert {s.stage: s.g_per_kwh for s in cycle.stages} == factors
    assert [s.factor_source for s in cycle.stages] == ["configured", MEASURED, MEASURED, "configured"]
    assert cycle.kwh == sum(energies.values())
    assert cycle.kg == sum(energies[stage] * factors[stage] / 1000 for stage in STAGES)
    assert cycle.inference_share == energies["inference"] / cycle.kwh
    # The inference stage is the energy per query scaled to the volume: 3.75 mWh × 250k = 937.5 Wh.
    assert row["wh_per_query"] == pytest.approx(0.00375) and energies["inference"] == pytest.approx(0.9375)


def test_unset_factors_reproduce_the_runs_own_emissions():
    """With every factor the measured one and the volume of one test pass, the lifecycle of a cell without build
    energy is its own measured total and emissions."""
    row = cell(8, 1, build_kwh=None)
    cycle = lifecycle_of(row, LifecycleSettings(queries=TEST_QUERIES))
    assert cycle.kwh == pytest.approx(row["total_kwh"]) and cycle.kg == pytest.approx(row["emissions_kg"])


def test_add_lifecycle_fills_ok_rows_and_leaves_failed_ones():
    rows = [cell(32, 3), cell(4, 1, status="failed"), {"dataset": "rca", "status": "skipped", "error": "x"}]
    add_lifecycle(rows, LifecycleSettings())
    assert set(LIFECYCLE_COLUMNS) <= set(rows[0])
    assert rows[0]["lifecycle_kwh"] == sum(rows[0][f"lifecycle_{stage}_kwh"] for stage in STAGES)
    assert not any(key.startswith("lifecycle") for row in rows[1:] for key in row)


def test_missing_values_stay_blank():
    rows = [
        cell(32, 3, build_kwh=""),  # a hub model: no build energy, so the build stage is not counted
        cell(16, 3, wh_per_query=""),  # no inference figure: no lifecycle at all
        cell(8, 3, emissions_kg=None),  # no measured factor: energy but no carbon
        cell(4, 3, total_kwh=0.0),
    ]
    add_lifecycle(rows, LifecycleSettings())
    hub, no_inference, no_emissions, zero = rows
    assert "lifecycle_build_kwh" not in hub
    assert hub["lifecycle_kwh"] == hub["lifecycle_finetune_kwh"] + hub["lifecycle_compress_kwh"] \
        + hub["lifecycle_inference_kwh"]  # fmt: skip
    assert hub["lifecycle_kg"] == pytest.approx(hub["lifecycle_kwh"] * 0.03)
    assert "lifecycle_kwh" not in no_inference and "lifecycle_kg" not in no_inference
    assert no_inference["lifecycle_build_kwh"] == 0.5  # the stages that were measured are still given
    assert "lifecycle_kg" not in no_emissions and "lifecycle_kwh" in no_emissions
    assert "lifecycle_kg" not in zero
    # A configured factor needs no measured one.
    configured = lifecycle_of(cell(8, 3, emissions_kg=None), LifecycleSettings(emission_factors_g_per_kwh=dict.fromkeys(
        STAGES, 100.0)))  # fmt: skip
    assert configured.kg == pytest.approx(configured.kwh * 0.1)


def test_rows_read_back_as_strings_give_the_same_sums():
    typed = cell(16, 3)
    text = {key: "" if value is None else str(value) for key, value in typed.items()}
    settings = LifecycleSettings(queries=12_345)
    assert lifecycle_of(text, settings) == lifecycle_of(typed, settings)


def test_baseline_defaults_to_largest_bits_and_epochs_in_full_precision_dense():
    rows = grid()
    settings = LifecycleSettings()
    table = optimised_vs_baseline(rows, settings, "rca")
    assert table is not None and not table["same_cell"]
    assert table["baseline_row"] is rows[1] and table["optimised_row"] is rows[5]
    assert table["baseline"]["bits"] == "32" and table["baseline"]["precision"] == "32-true"
    assert table["optimised"]["pruning"] == "magnitude 2:4"
    # The other variants, reference, failed and pruned rows are never the baseline.
    assert find_baseline(rows, LifecycleSettings(baseline={"precision": "bf16-mixed"}), "rca") is rows[6]
    assert find_baseline(rows, LifecycleSettings(baseline={"bits": 16, "epochs": 1}), "rca") is None
    assert find_baseline(rows, LifecycleSettings(baseline={"bits": 4}), "rca") is rows[4]
    assert find_baseline(rows, LifecycleSettings(baseline={"epochs": 1}), "rca") is rows[2]
    # A failed largest cell narrows the choice instead of leaving no baseline.
    rows[1]["status"] = "failed"
    assert find_baseline(rows, settings, "rca") is rows[2]


def test_empty_variant_columns_are_the_default_variant():
    """Summaries from before precision and sparse training existed: every fine-tuning was 32-true, dense."""
    rows = [cell(32, 3, precision="", sparse_training=""), cell(4, 1, rank=1, precision=None)]
    table = optimised_vs_baseline(rows, LifecycleSettings(), "rca")
    assert table is not None and table["baseline_row"] is rows[0]
    assert table["baseline"]["sparse_training"] == "dense" and table["optimised"]["precision"] == "32-true"


def test_changes_and_directions():
    table = optimised_vs_baseline(grid(), LifecycleSettings(queries=10_000), "rca")
    assert table is not None
    measures = {m["key"]: m for m in table["measures"]}
    assert list(measures) == ["train_wall_s", "peak_mem_mb", "model_size_mb", "batch_latency_s", "ttft_s", "tpot_s",
                              "train_kwh", "wh_per_query", "lifecycle_kwh", "lifecycle_kg", "accuracy", "auc_roc"]
    size = measures["model_size_mb"]
    assert (size["baseline"], size["optimised"], size["change_pct"]) == (64.0, 8.0, -87.5)
    assert size["better"] == "lower" and size["improved"] is True
    assert measures["train_wall_s"]["change_pct"] == pytest.approx(-200 / 3)
    assert measures["peak_mem_mb"]["change_pct"] == 0 and measures["peak_mem_mb"]["improved"] is None
    assert measures["accuracy"]["better"] == "higher" and measures["accuracy"]["improved"] is False
    assert measures["auc_roc"]["improved"] is True
    assert measures["wh_per_query"]["baseline"] == pytest.approx(0.005)  # 0.2 Wh per 40 queries
    assert measures["ttft_s"]["better"] == "lower" and measures["tpot_s"]["improved"] is True
    cycles = table["lifecycle"]
    assert measures["lifecycle_kwh"]["optimised"] == cycles["optimised"].kwh
    assert measures["lifecycle_kg"]["baseline"] == cycles["baseline"].kg
    assert "10,000 queries" in next(m["name"] for m in table["measures"] if m["key"] == "lifecycle_kwh")
    assert change_pct(0.0, 1.0) is None and change_pct(None, 1.0) is None and change_pct(2.0, None) is None
    assert change_pct(-2.0, -1.0) == 50.0  # a negative baseline keeps the sign of the change


def test_missing_measures_are_blank_not_errors():
    rows = [cell(32, 3, batch_latency_s="", accuracy=None, train_wall_s="n/a"), cell(4, 1, rank=1, auc_roc="")]
    table = optimised_vs_baseline(rows, LifecycleSettings(), "rca")
    assert table is not None
    measures = {m["key"]: m for m in table["measures"]}
    for key in ("batch_latency_s", "accuracy", "train_wall_s", "auc_roc"):
        assert measures[key]["change_pct"] is None and measures[key]["improved"] is None
    assert measures["batch_latency_s"]["baseline"] is None and measures["batch_latency_s"]["optimised"] is not None


def test_the_best_cell_can_be_the_baseline():
    rows = [cell(32, 3, rank=1), cell(4, 1, rank=2)]
    table = optimised_vs_baseline(rows, LifecycleSettings(), "rca")
    assert table is not None and table["same_cell"]
    assert all(m["change_pct"] in (0, None) for m in table["measures"])


def test_no_comparison_without_a_ranked_cell_or_a_baseline():
    assert optimised_vs_baseline([cell(32, 3)], LifecycleSettings(), "rca") is None
    assert optimised_vs_baseline([cell(4, 1, "magnitude 2:4", rank=1)], LifecycleSettings(), "rca") is None
    assert optimised_vs_baseline(grid(), LifecycleSettings(), "saf") is None
    failed_best = [cell(32, 3), cell(4, 1, rank=1, status="failed")]
    assert optimised_vs_baseline(failed_best, LifecycleSettings(), "rca") is None


def test_several_models_compare_within_the_optimised_cells_model():
    rows = [cell(32, 3, model="big"), cell(32, 3, model="small"), cell(16, 1, model="small", rank=1)]
    assert optimised_vs_baseline(rows, LifecycleSettings(), "rca")["baseline_row"] is rows[1]
    chosen = LifecycleSettings(baseline={"model": "big"})
    assert optimised_vs_baseline(rows, chosen, "rca")["baseline_row"] is rows[0]


def test_cell_description_flags_estimated_components():
    table = optimised_vs_baseline(grid(), LifecycleSettings(), "rca")
    assert table is not None
    assert table["baseline"]["estimated"] == ["ram"]
    assert table["baseline"]["sources"] == {"cpu": "rapl", "gpu": "nvml-counter", "ram": "codecarbon-estimate"}
    exit_row = cell(32, 3, "early exit τ=0.90", rank=1, early_exit="early exit τ=0.90", mean_exit_layer="2.5")
    table = optimised_vs_baseline([cell(32, 3), exit_row], LifecycleSettings(), "rca")
    assert table is not None
    assert table["optimised"]["pruning"] == "early exit τ=0.90" and table["optimised"]["early_exit"] == ""
    assert table["optimised"]["mean_exit_layer"] == 2.5
