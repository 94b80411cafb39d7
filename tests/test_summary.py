"""Joining the cells' records for the report: uncertainty against the base and the parent, run facts, examples."""

from __future__ import annotations

import random

import pytest

from joulebench.metrics import QUALITY_COLUMNS
from joulebench.rank import PAPER_LITERAL, RankingSettings, add_ranking
from joulebench.summary import add_uncertainty, answer_examples, cell_key, run_summary

SETTINGS = RankingSettings(w=0.7, energy=PAPER_LITERAL)  # these rows carry total_kwh only

ITEMS = 40


def row(bits: int, epochs: int, pruning: str, kwh: float, rho: float) -> dict:
    return {"dataset": "rca", "model": "m", "training": "32-true_dense", "bits": bits, "epochs": epochs,
            "pruning": pruning, "status": "ok",
            "is_reference": int(epochs == 0), "total_kwh": kwh, "rho": rho}  # fmt: skip


def items(level: float, noise: float, seed: int) -> list[dict]:
    generator = random.Random(seed)
    return [
        {"id": f"T{i:03d}", "target": f"target {i}", "prediction": f"answer {i}",
         "scores": {m: min(1.0, max(0.0, level + generator.gauss(0, noise))) for m in QUALITY_COLUMNS}}
        for i in range(ITEMS)
    ]  # fmt: skip


@pytest.fixture
def grid():
    rows = [row(32, 0, "none", 1.0, 0.1), row(4, 1, "none", 2.0, 0.6), row(4, 1, "wanda 2:4", 2.0, 0.6),
            row(8, 1, "none", 4.0, 0.6)]  # fmt: skip
    predictions = {
        cell_key(rows[0]): items(0.1, 0.05, 0),
        cell_key(rows[1]): items(0.6, 0.05, 1),
        cell_key(rows[2]): [dict(item) for item in items(0.6, 0.05, 1)],  # the same answers as its parent
        cell_key(rows[3]): items(0.6, 0.05, 3),
    }
    add_ranking(rows, SETTINGS, 1)
    return rows, predictions


def test_quality_differences_carry_intervals_and_honest_verdicts(grid):
    rows, predictions = grid
    add_uncertainty(rows, predictions, SETTINGS, resamples=500)
    base, tuned, pruned, eight = rows
    assert "delta_rho" not in base and "p_first" not in base
    for metric in (*QUALITY_COLUMNS, "rho"):
        assert tuned[f"delta_{metric}_lo"] <= tuned[f"delta_{metric}"] <= tuned[f"delta_{metric}_hi"]
        assert tuned[f"verdict_{metric}"] == "better"
    assert pruned["delta_parent_rho"] == pytest.approx(0.0) and pruned["verdict_parent_rho"] == "no clear difference"
    assert "delta_parent_rho" not in tuned
    # Same quality, half the energy of the 8-bit cell: the 4-bit cells rank first on every resample (tied).
    assert tuned["p_first"] == pruned["p_first"] == 1.0 and eight["p_first"] == 0.0
    assert tuned["finetune_p_first"] == 1.0 and eight["finetune_p_first"] == 0.0 and "finetune_p_first" not in pruned


def test_cells_without_per_item_scores_get_no_intervals(grid):
    rows, predictions = grid
    for entry in predictions[cell_key(rows[3])]:
        del entry["scores"]
    add_uncertainty(rows, predictions, SETTINGS, resamples=100)
    assert "delta_rho" in rows[1] and "delta_rho" not in rows[3]


def test_examples_show_the_best_cell_beside_the_base(grid):
    rows, predictions = grid
    examples = answer_examples(rows, predictions, count=2)
    best = min((r for r in rows if r.get("rank")), key=lambda r: r["rank"])
    assert [e["id"] for e in examples] == ["T000", "T001"]
    assert examples[0]["cell"] == f"b{best['bits']} e{best['epochs']} {best['pruning']}"
    assert examples[0]["base_prediction"] == "answer 0"


def test_run_summary_spans_the_jobs_and_names_the_meters():
    def record(started: str, finished: str, seconds: float, source: str) -> dict:
        measurement = {"sources": {"cpu": source, "gpu": "none", "ram": source}, "carbon_kg_per_kwh": 0.0012,
                       "pue": 1.2, "tracking_mode": "process"}  # fmt: skip
        return {"provenance": {"started_utc": started, "finished_utc": finished, "job_seconds": seconds,
                               "measurement": measurement}}  # fmt: skip

    summary = run_summary([record("2026-01-01T10:00:00+00:00", "2026-01-01T10:05:00+00:00", 300, "rapl"),
                           record("2026-01-01T09:00:00+00:00", "2026-01-01T09:01:00+00:00", 60, "codecarbon-estimate")])
    assert summary["first_job_started"] == "2026-01-01T09:00:00+00:00"
    assert summary["last_job_finished"] == "2026-01-01T10:05:00+00:00"
    assert summary["job_seconds"] == 360 and summary["jobs"] == 2
    assert summary["meters"]["cpu"] == ["codecarbon-estimate", "rapl"]
    assert summary["grid_intensity_g_per_kwh"] == [1.2] and summary["pue"] == [1.2]
