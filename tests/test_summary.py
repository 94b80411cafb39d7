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


# --- blank figures: no number from nothing (issue 19) ------------------------------------------------------------


def evaluation(quality: dict, quality_info: dict, tokens: int = 480) -> dict:
    """An eval.json record as joulebench.jobs.evaluate writes it, with what cell_row reads."""
    window = {"total_kwh": 1e-5, "net_kwh": 5e-6, "cpu_kwh": 4e-6, "gpu_kwh": 0.0, "ram_kwh": 6e-6,
              "emissions_kg": 1e-7}
    blank = {"n": 2, "mean": None, "ci95": None, "cv": None, "reason": "no token was generated"}
    figure = {"n": 2, "mean": 1.0, "ci95": 0.1, "cv": 0.05}
    return {
        "cell": {"dataset": "rca", "model": "m", "bits": 4, "epochs": 1, "pruning": "none", "pruning_label": "none"},
        "status": "ok",
        "result": {
            "infer_kwh": figure, "pass_energy": window, "prepare_energy": window, "wh_per_query": figure,
            "answer_tokens_per_query": 12.0, "answer_tokens": 480, "quality": quality, "quality_info": quality_info,
            "energy": {"sources": {"cpu": "rapl", "gpu": "none", "ram": "rapl"}, "tracking_mode": "process"},
            "idle": {}, "j_per_token": figure if tokens else blank, "tokens_per_s": figure if tokens else blank,
            "repeats": [{"energy": window, "tokens": tokens, "generation_s": 2.0}] * 2, "peak_mem_mb": 1.0,
            "model_size_mb": 1.0, "peak_mem_kind": "rss", "model_form": "", "batch_s": figure,
            "tokens_per_repeat": tokens, "prune": {"achieved": 0.0}, "kernel": {}, "speedup_vs_dense": None,
        },
    }  # fmt: skip


def test_blank_metrics_stay_blank_in_the_row_and_the_csv_and_leave_no_rho(tmp_path):
    import csv

    from joulebench.metrics import EMPTY_ANSWERS
    from joulebench.summary import cell_row, write_summary

    quality = {**dict.fromkeys(QUALITY_COLUMNS), "bertscore_f1_raw": None, "cosine_raw": None}
    info = {"skipped": dict.fromkeys(quality, EMPTY_ANSWERS),
            "answers": {"sha256": "a" * 64, "count": 40, "empty": 40, "distinct": 1}}  # fmt: skip
    row = cell_row(evaluation(quality, info), None)
    assert row["rho"] is None and row["bleu"] is None
    assert row["rho_note"] == f"no ρ, so not ranked: {', '.join(QUALITY_COLUMNS)}: {EMPTY_ANSWERS}"
    assert row["quality_note"].endswith(f": no value: {EMPTY_ANSWERS}")
    assert (row["answers_empty"], row["answers_distinct"], row["answers_count"]) == (40, 1, 40)
    write_summary([row], tmp_path / "summary.csv")
    written = next(csv.DictReader((tmp_path / "summary.csv").open()))
    # Before: the text "None" in every blank cell.
    assert all(written[column] == "" for column in (*QUALITY_COLUMNS, "rho", "bertscore_f1_raw", "cosine_raw"))
    assert written["answers_sha256"] == "a" * 64 and "None" not in written.values()


def test_a_metric_over_fewer_items_is_said_so_and_rho_still_counts_it():
    from joulebench.metrics import BLANK_ANSWER
    from joulebench.summary import cell_row

    quality = dict.fromkeys(QUALITY_COLUMNS, 0.5)
    gap = {"items": 1, "of": 40, "reasons": {BLANK_ANSWER: 1}}
    row = cell_row(evaluation(quality, {"unscored": {"bertscore_f1": gap, "cosine": gap}}), None)
    assert row["rho"] == pytest.approx(0.5) and row["rho_note"] == ""
    assert row["quality_note"] == f"bertscore_f1, cosine: mean over 39 of 40 items (1 × {BLANK_ANSWER})"


def test_a_pass_without_tokens_gives_no_per_token_figure_and_no_verdict_repeats():
    from joulebench.summary import cell_row

    row = cell_row(evaluation(dict.fromkeys(QUALITY_COLUMNS, 0.5), {}, tokens=0), None)
    # Before: cell_row raised ValueError (joules_per_token divides by 0 tokens).
    assert row["infer_j_per_token"] is None and row["tokens_per_s"] is None
    assert "j_per_token_repeats" not in row and "tokens_per_s_repeats" not in row


def test_a_cell_without_rho_is_not_ranked_and_the_others_are():
    rows = [row(32, 0, "none", 1.0, 0.1), row(4, 1, "none", 2.0, 0.6), row(8, 1, "none", 1.5, None)]
    add_ranking(rows, SETTINGS, 1)
    assert rows[1]["rank"] == 1 and "rank" not in rows[2] and "score" not in rows[2]
